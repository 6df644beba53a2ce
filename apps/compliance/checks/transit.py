"""GB/T 39786 8.2 (network and communication) and 8.3 (remote administration channel): protection
in transit with TLCP (GB/T 38636, SM2 certificates and ECC-SM4-SM3 suites).

Python's TLS stack (OpenSSL as built here) speaks no TLCP, so nothing on this machine can open a
TLCP handshake to verify one. The check therefore reports what it can see (the portal's TLS
settings, each inference server's URL scheme) and passes only when a TLCP terminator is declared
(SOVEREIGN_TLCP_TERMINATOR) AND a person attested it for this control, with an unexpired
attestation: TLS with international suites alone is a failure, stated as such."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from . import FAIL, PASS, CheckResult, register
from .manual import attestation_evidence, latest_attestation


def _channels() -> list[dict]:
    from apps.deployments.models import InferenceServer

    rows = [
        {
            "channel": "browser/API → portal",
            "scheme": "https" if settings.SECURE_SSL_REDIRECT else "http (no SECURE_SSL_REDIRECT)",
        }
    ]
    for name, url in InferenceServer.objects.order_by("name").values_list("name", "http_url"):
        rows.append({"channel": f"gateway → Triton {name}", "url": url, "scheme": urlsplit(url).scheme})
    return rows


@register("transit.tlcp", proof="attestation")
def tlcp(ctx) -> CheckResult:
    terminator = getattr(settings, "TLCP_TERMINATOR", "") or ""
    evidence = {
        "channels": _channels(),
        "TLCP_TERMINATOR": terminator or None,
        "probe": "none possible: this Python/OpenSSL has no TLCP (GB/T 38636) implementation",
    }
    remedy = (
        "Terminate the portal's and each Triton server's channel with a certified TLCP gateway (SM2 sign and "
        "encryption certificates, ECC-SM4-SM3 / ECDHE-SM4-SM3 suites), declare it in SOVEREIGN_TLCP_TERMINATOR "
        f"and upload an attestation for the control {ctx.control_id or 'GB/T 39786 8.2'} with its expiry."
    )
    if not terminator:
        return CheckResult(FAIL, "no TLCP channel: TLS with international suites only", evidence, remedy)
    latest = latest_attestation(ctx)
    if latest is None:
        return CheckResult(
            FAIL,
            f"no TLCP channel verified: the terminator {terminator!r} is declared but nobody attested it",
            evidence,
            remedy,
        )
    facts = attestation_evidence(latest)
    evidence["attestation"] = {"id": facts.pop("attestation"), "author": facts.pop("uploaded_by"), **facts}
    if latest.expires_at <= ctx.now:
        return CheckResult(
            FAIL,
            f"no TLCP channel verified: the attestation of {terminator!r} expired on {latest.expires_at:%Y-%m-%d}",
            evidence,
            remedy,
        )
    return CheckResult(
        PASS,
        f"TLCP terminator {terminator!r} declared and attested by {evidence['attestation']['author'] or 'unknown'} "
        f"until {latest.expires_at:%Y-%m-%d} (attested, not probed)",
        evidence,
    )
