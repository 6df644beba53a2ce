"""Evaluate controls: run each control's checks, combine them, keep the history, and raise an
alert event when a control regresses (pass -> fail) since the previous run."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, record_event

from .catalog import Control, get_profile, pick
from .checks import FAIL, PASS, PROOF_OF, Context, combine, run_check
from .effective import attached_profiles
from .models import ControlResult, EvaluationRun


def evaluate_control(control: Control, ctx: Context) -> tuple[str, list[dict], str]:
    """(status, evidence per check, remedy) for one control."""
    ctx.control_id = control.id
    evidence, remedies = [], []
    for name in control.checks:
        result = run_check(name, ctx)
        evidence.append(
            {
                **result.evidence,
                "check": name,
                "proof": PROOF_OF.get(name, ""),
                "status": result.status,
                "summary": result.summary,
            }
        )
        if result.status == FAIL and result.remedy:
            remedies.append(result.remedy)
    status = combine([e["status"] for e in evidence])
    remedy = " ".join(remedies) if status == FAIL else ""
    if status == FAIL and not remedy:
        remedy = pick(control.remedy, "en")
    return status, evidence, remedy


def _previous(profile: str) -> dict[str, str]:
    last = EvaluationRun.objects.filter(results__profile=profile, finished_at__isnull=False).order_by("-pk").first()
    if last is None:
        return {}
    return dict(last.results.filter(profile=profile).values_list("control_id", "status"))


def run_evaluation(*, trigger: str = "schedule", actor=None, source: Source = SYSTEM) -> EvaluationRun:
    """Evaluate every attached profile (with its options) into one EvaluationRun. Checks run
    outside the write transaction (some talk to the HSM); results, the run's counts and the audit
    events are written together."""
    profiles = attached_profiles()
    cache: dict = {}
    rows: list[ControlResult] = []
    started = timezone.now()
    for profile_id, options in sorted(profiles.items()):
        profile = get_profile(profile_id)
        if profile is None:
            continue
        for control in profile.controls_for(options):
            ctx = Context(profile=profile_id, options=options, now=started, cache=cache)
            status, evidence, remedy = evaluate_control(control, ctx)
            rows.append(
                ControlResult(
                    profile=profile_id,
                    control_id=control.id,
                    family=pick(control.family, "en"),
                    status=status,
                    evidence=evidence,
                    remedy=remedy,
                    evaluated_at=timezone.now(),
                )
            )
    with transaction.atomic():
        previous = {p: _previous(p) for p in profiles}
        run = EvaluationRun.objects.create(
            started_at=started,
            trigger=trigger,
            requested_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        for r in rows:
            r.run = run
        ControlResult.objects.bulk_create(rows)
        counts = {s: sum(1 for r in rows if r.status == s) for s in ("pass", "fail", "manual", "not_applicable")}
        EvaluationRun.objects.filter(pk=run.pk).update(
            finished_at=timezone.now(),
            passed=counts["pass"],
            failed=counts["fail"],
            manual=counts["manual"],
            not_applicable=counts["not_applicable"],
        )
        run.refresh_from_db()
        record_event(
            "compliance.evaluate",
            actor=actor,
            source=source,
            target=run,
            target_display=run.audit_display(),
            details={"trigger": trigger, "profiles": sorted(profiles), **counts},
        )
        for r in rows:
            if r.status == FAIL and previous.get(r.profile, {}).get(r.control_id) == PASS:
                record_event(
                    "compliance.control.regressed",
                    actor=None,
                    target=r,
                    target_display=f"{r.profile} {r.control_id}",
                    outcome=Outcome.FAILURE,
                    error_code="control_regressed",
                    details={
                        "profile": r.profile,
                        "control": r.control_id,
                        "run": run.pk,
                        "was": PASS,
                        "now": FAIL,
                        "checks": [e["check"] for e in r.evidence if e["status"] == FAIL],
                    },
                )
    return run
