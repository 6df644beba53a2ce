"""Manual controls: software cannot decide them, a person attests (with an expiry)."""

from __future__ import annotations

from . import FAIL, MANUAL, PASS, CheckResult, register


def latest_attestation(ctx):
    """The attestation for this profile and control that expires last, or None."""
    from ..models import Attestation

    rows = Attestation.objects.filter(profile=ctx.profile, control_id=ctx.control_id).select_related("uploaded_by")
    return rows.order_by("-expires_at").first()


def attestation_evidence(att) -> dict:
    """What a check shows of an attestation: its file, digest, author and dates."""
    return {
        "attestation": att.pk,
        "file": att.file_name,
        "sha256": att.sha256,
        "uploaded_by": str(att.uploaded_by or ""),
        "uploaded_at": att.uploaded_at.isoformat(),
        "expires_at": att.expires_at.isoformat(),
    }


@register("manual.attestation", proof="attestation")
def attestation(ctx) -> CheckResult:
    latest = latest_attestation(ctx)
    if latest is None:
        return CheckResult(
            MANUAL,
            "needs a person: no attestation uploaded",
            {"attestation": None},
            "Upload an attestation (POST /api/v1/compliance/attestations/) with its expiry.",
        )
    evidence = attestation_evidence(latest)
    if latest.expires_at <= ctx.now:
        return CheckResult(
            FAIL,
            f"the attestation expired on {latest.expires_at:%Y-%m-%d}",
            evidence,
            "Repeat the procedure review or drill and upload a new attestation.",
        )
    return CheckResult(PASS, f"attested until {latest.expires_at:%Y-%m-%d}", evidence)
