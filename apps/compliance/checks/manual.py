"""Manual controls: software cannot decide them, a person attests (with an expiry)."""

from __future__ import annotations

from . import FAIL, MANUAL, PASS, CheckResult, register


@register("manual.attestation", proof="attestation")
def attestation(ctx) -> CheckResult:
    from ..models import Attestation

    latest = Attestation.objects.filter(profile=ctx.profile, control_id=ctx.control_id).order_by("-expires_at").first()
    if latest is None:
        return CheckResult(
            MANUAL,
            "needs a person: no attestation uploaded",
            {"attestation": None},
            "Upload an attestation (POST /api/v1/compliance/attestations/) with its expiry.",
        )
    evidence = {
        "attestation": latest.pk,
        "file": latest.file_name,
        "sha256": latest.sha256,
        "uploaded_by": str(latest.uploaded_by or ""),
        "uploaded_at": latest.uploaded_at.isoformat(),
        "expires_at": latest.expires_at.isoformat(),
    }
    if latest.expires_at <= ctx.now:
        return CheckResult(
            FAIL,
            f"the attestation expired on {latest.expires_at:%Y-%m-%d}",
            evidence,
            "Repeat the procedure review or drill and upload a new attestation.",
        )
    return CheckResult(PASS, f"attested until {latest.expires_at:%Y-%m-%d}", evidence)
