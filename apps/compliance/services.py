"""Writes of the compliance app: attach and detach profiles, set a model's personal-data policy,
store attestations, run evaluations and request reports. Each runs in one transaction with its
audit event."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.audit.services import SYSTEM, Source, raise_purge_floor, record_event
from apps.core.errors import Conflict, ServiceError, _, get_or_404
from apps.registry.models import Model
from inference_backend.private_file import write_private

from .catalog import get_profile, profiles
from .checks import FAIL, Context, run_check
from .models import AnswerScreen, Attestation, ComplianceReport, DeidMode, ModelPolicy, ProfileAttachment, RestoreDrill
from .storage import directory

MAX_ATTESTATION_BYTES = 20 * 1024 * 1024
MAX_REASON_CHARS = 2000

# The de-identification probe (model_id -> evidence dict) of the app that de-identifies: the gateway
# registers it in its AppConfig.ready(). Compliance sits below the gateway and may not import it;
# the check `deid.phi_models` calls what was registered (and fails when nothing was).
_deid_probe: Callable[[int], dict] | None = None


def register_deid_probe(probe: Callable[[int], dict]) -> None:
    """Called once by apps.gateway: `probe(model_id)` pushes synthetic identifiers through that
    model's de-identification to a canary on Triton and returns what reached it (types only)."""
    global _deid_probe
    _deid_probe = probe


def deid_probe() -> Callable[[int], dict] | None:
    return _deid_probe


_numeric_inputs_probe: Callable[[int], dict] | None = None


def register_numeric_inputs_probe(probe: Callable[[int], dict]) -> None:
    """Called once by apps.gateway: `probe(model_id)` sends a PHI model's numeric inputs through the
    gateway's pipeline and says whether it refused them (`refused`, `answered`, `probed_at`)."""
    global _numeric_inputs_probe
    _numeric_inputs_probe = probe


def numeric_inputs_probe() -> Callable[[int], dict] | None:
    return _numeric_inputs_probe


def _profile_or_error(profile_id: str):
    profile = get_profile(profile_id)
    if profile is None:
        known = ", ".join(sorted(profiles()))
        raise ServiceError(
            "unknown_profile",
            _("no compliance profile %(profile_id)s; known: %(known)s")
            % {"profile_id": repr(profile_id), "known": known},
            field="profile",
        )
    return profile


def unmet_requirements(profile_id: str, options: dict) -> list[dict]:
    """The controls whose preconditions fail now: requirements the system's configuration
    cannot meet, so attaching the profile would be a promise nobody keeps."""
    profile = _profile_or_error(profile_id)
    unmet = []
    for control in profile.controls_for(options):
        for name in control.preconditions:
            result = run_check(name, Context(profile=profile_id, control_id=control.id, options=options))
            if result.status == FAIL:
                unmet.append({"control": control.id, "check": name, "reason": result.summary, "remedy": result.remedy})
    return unmet


def attach_profile(
    *, profile: str, model_id: int | None = None, options: dict | None = None, actor, source: Source = SYSTEM
) -> ProfileAttachment:
    """Attach a profile to the installation (model_id None) or to one model. Refused when the
    profile is unknown, an option is unknown, it is already attached there, or the system cannot
    meet one of its controls' preconditions (the error names each control and why)."""
    spec = _profile_or_error(profile)
    options = {k: bool(v) for k, v in (options or {}).items()}
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ServiceError(
            "unknown_option",
            _("profile %(profile)s has no option %(unknown)s") % {"profile": profile, "unknown": ", ".join(unknown)},
            field="options",
        )
    model = None
    if model_id is not None:
        model = get_or_404(
            Model, "model_not_found", _("no model with id %(model_id)s") % {"model_id": model_id}, pk=model_id
        )
    unmet = unmet_requirements(profile, options)
    if unmet:
        reasons = "; ".join(f"{u['control']}: {u['reason']}" for u in unmet)
        raise Conflict(
            "profile_unmeetable",
            _("the system cannot meet %(profile)s: %(reasons)s") % {"profile": profile, "reasons": reasons},
            field="profile",
        )
    try:
        with transaction.atomic():
            attachment = ProfileAttachment.objects.create(
                profile=profile, model=model, options=options, attached_by=_user(actor)
            )
            record_event(
                "compliance.profile.attach",
                actor=actor,
                source=source,
                target=attachment,
                details={"profile": profile, "model": model.name if model else None, "options": options},
            )
            # The database must refuse to purge what this profile keeps (HIPAA: six years).
            raise_purge_floor(spec.audit_retention_days, actor=actor, source=source)
    except IntegrityError as err:
        where = f"model {model.name}" if model else "the installation"
        raise Conflict(
            "profile_attached", _("%(profile)s is already attached to %(where)s") % {"profile": profile, "where": where}
        ) from err
    return attachment


def detach_profile(*, attachment_id: int, actor, source: Source = SYSTEM) -> None:
    with transaction.atomic():
        rows = ProfileAttachment.objects.select_for_update(of=("self",)).order_by()
        attachment = get_or_404(
            rows,
            "attachment_not_found",
            _("no profile attachment with id %(attachment_id)s") % {"attachment_id": attachment_id},
            pk=attachment_id,
        )
        record_event(
            "compliance.profile.detach",
            actor=actor,
            source=source,
            target=attachment,
            details={"profile": attachment.profile, "model": attachment.model.name if attachment.model else None},
        )
        attachment.delete()


def set_model_policy(
    *,
    model_id: int,
    phi: bool,
    deid_mode: str,
    actor,
    source: Source = SYSTEM,
    answer_screen: str | None = None,
    numeric_inputs_reason: str | None = None,
) -> ModelPolicy:
    """Record whether a model receives PHI, its de-identification mode and its answer screen
    (off, redact, alert, or "" for the default; None keeps the current one). A PHI model (marked,
    or under a model-level HIPAA attachment) cannot have de-identification off.
    `numeric_inputs_reason` declares why the model's non-text inputs carry no identifiers ("" withdraws
    the declaration, None keeps it): without one the gateway refuses numeric inputs to a PHI model."""
    from .effective import phi_by_attachment

    if deid_mode not in DeidMode.values:
        raise ServiceError(
            "invalid_deid_mode",
            _("deid_mode must be one of %(values)s") % {"values": ", ".join(DeidMode.values)},
            field="deid_mode",
        )
    if answer_screen is not None and answer_screen not in AnswerScreen.values:
        raise ServiceError(
            "invalid_answer_screen",
            _("answer_screen must be one of %(value)s or empty for the default")
            % {"value": ", ".join(v for v in AnswerScreen.values if v)},
            field="answer_screen",
        )
    if numeric_inputs_reason is not None:
        numeric_inputs_reason = numeric_inputs_reason.strip()
        if len(numeric_inputs_reason) > MAX_REASON_CHARS:
            raise ServiceError(
                "reason_too_long",
                _("numeric_inputs_reason is limited to %(max_reason_chars)s characters")
                % {"max_reason_chars": MAX_REASON_CHARS},
                field="numeric_inputs_reason",
            )
    with transaction.atomic():
        model = get_or_404(
            Model.objects.select_for_update(),
            "model_not_found",
            _("no model with id %(model_id)s") % {"model_id": model_id},
            pk=model_id,
        )
        if deid_mode == DeidMode.OFF and (phi or phi_by_attachment(model_id)):
            raise ServiceError(
                "deid_required",
                _("%(model)s receives PHI: de-identification is mandatory") % {"model": model.name},
                field="deid_mode",
            )
        before = (
            ModelPolicy.objects.filter(model=model)
            .values("phi", "deid_mode", "answer_screen", "numeric_inputs_reason")
            .first()
        )
        if answer_screen is None:
            answer_screen = before["answer_screen"] if before else AnswerScreen.DEFAULT
        if numeric_inputs_reason is None:
            numeric_inputs_reason = before["numeric_inputs_reason"] if before else ""
        policy, _created = ModelPolicy.objects.update_or_create(
            model=model,
            defaults={
                "phi": phi,
                "deid_mode": deid_mode,
                "answer_screen": answer_screen,
                "numeric_inputs_reason": numeric_inputs_reason,
                "updated_by": _user(actor),
                "updated_at": timezone.now(),
            },
        )
        record_event(
            "compliance.policy.update",
            actor=actor,
            source=source,
            target=model,
            details={
                "before": before,
                "after": {
                    "phi": phi,
                    "deid_mode": deid_mode,
                    "answer_screen": answer_screen,
                    "numeric_inputs_reason": numeric_inputs_reason,
                },
            },
        )
    return policy


def upload_attestation(
    *,
    profile: str,
    control_id: str,
    content: bytes,
    file_name: str,
    expires_at: datetime,
    note: str = "",
    actor,
    source: Source = SYSTEM,
) -> Attestation:
    """Store evidence for a manual control (file 0600, SHA-256 recorded) valid until expires_at."""
    spec = _profile_or_error(profile)
    control = spec.control(control_id)
    if control is None:
        raise ServiceError(
            "unknown_control",
            _("profile %(profile)s has no control %(control_id)s")
            % {"profile": profile, "control_id": repr(control_id)},
            field="control_id",
        )
    if "manual.attestation" not in control.checks:
        raise ServiceError(
            "not_manual",
            _("%(control_id)s is checked automatically; it takes no attestation") % {"control_id": control_id},
            field="control_id",
        )
    if expires_at <= timezone.now():
        raise ServiceError("expired", _("expires_at must be in the future"), field="expires_at")
    if not content:
        raise ServiceError("empty_file", _("the attestation file is empty"), field="file")
    if len(content) > MAX_ATTESTATION_BYTES:
        raise ServiceError(
            "file_too_large",
            _("attestations are limited to %(max_attestation_bytes)s bytes")
            % {"max_attestation_bytes": MAX_ATTESTATION_BYTES},
            field="file",
        )
    storage_name = f"att-{secrets.token_hex(12)}"
    sha = hashlib.sha256(content).hexdigest()
    path = directory("attestations") / storage_name
    write_private(path, content)
    try:
        with transaction.atomic():
            att = Attestation.objects.create(
                profile=profile,
                control_id=control_id,
                note=note,
                file_name=file_name[:200],
                storage_name=storage_name,
                sha256=sha,
                size_bytes=len(content),
                expires_at=expires_at,
                uploaded_by=_user(actor),
            )
            record_event(
                "compliance.attestation.upload",
                actor=actor,
                source=source,
                target=att,
                details={
                    "profile": profile,
                    "control": control_id,
                    "sha256": sha,
                    "expires_at": expires_at.isoformat(),
                },
            )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return att


def record_restore_drill(*, outcome: dict, actor, source: Source = SYSTEM) -> RestoreDrill:
    """Record a restore drill's outcome (apps/compliance/backup.py) with its audit event, in one
    transaction. A failed drill is recorded too (outcome failure): it is what the check reads."""
    fields = {f: outcome.get(f) for f in _DRILL_FIELDS if f in outcome}
    with transaction.atomic():
        drill = RestoreDrill.objects.create(requested_by=_user(actor), **fields)
        record_event(
            "compliance.restore_drill",
            actor=actor,
            source=source,
            target=drill,
            outcome="success" if drill.ok else "failure",
            error_code="" if drill.ok else "restore_drill_failed",
            details={
                "ok": drill.ok,
                "events_verified": drill.events_verified,
                "last_sequence": drill.last_sequence,
                "source_database": drill.source_database,
                "dump_sha256": drill.dump_sha256,
                "detail": drill.detail[:500],
            },
        )
    return drill


_DRILL_FIELDS = (
    "started_at",
    "finished_at",
    "ok",
    "events_verified",
    "last_sequence",
    "detail",
    "source_database",
    "scratch_database",
    "dump_bytes",
    "dump_sha256",
    "tool",
)


# pg_try_advisory_lock key of the one evaluation a person asked for (Evaluate now, the API's evaluate/)
EVALUATION_LOCK = 0x534F_5645_5641  # "SOVEVA"


def evaluate_now(*, actor, source: Source = SYSTEM):
    """Evaluate every attached profile now (≈20 s, in the request). One at a time: while another
    person-requested evaluation runs, refused with 409 `evaluation_running` (review 18: busy.js only
    dropped a second submit in the page; posts at once each held a web worker and each run recorded
    the same regressions again). A session-level advisory lock: released when the run ends, or with
    its connection if the process dies."""
    from .evaluation import run_evaluation

    if connection.vendor != "postgresql":
        return run_evaluation(trigger="api", actor=actor, source=source)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [EVALUATION_LOCK])
        if not cursor.fetchone()[0]:
            raise Conflict(
                "evaluation_running",
                _("an evaluation is already running; its results will be on the results page in a moment"),
            )
    try:
        return run_evaluation(trigger="api", actor=actor, source=source)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [EVALUATION_LOCK])


def request_report(
    *,
    profile: str,
    period_start: datetime,
    period_end: datetime,
    language: str | None = None,
    actor,
    source: Source = SYSTEM,
) -> ComplianceReport:
    """Queue a signed report of one profile over a period. Refused for an unknown profile, an
    inverted period, or a period with no evaluation of that profile (nothing to report)."""
    from .models import ControlResult

    spec = _profile_or_error(profile)
    if period_end <= period_start:
        raise ServiceError("invalid_period", _("period_end must be after period_start"), field="period_end")
    evaluated = ControlResult.objects.filter(
        profile=profile, run__started_at__gte=period_start, run__started_at__lt=period_end
    ).exists()
    if not evaluated:
        raise ServiceError(
            "empty_period",
            _(
                "no evaluation of %(profile)s between %(period_start)s and %(period_end)s; run an "
                "evaluation or choose a period that contains one"
            )
            % {
                "profile": profile,
                "period_start": format(period_start, "%Y-%m-%d %H:%M"),
                "period_end": format(period_end, "%Y-%m-%d %H:%M"),
            },
            field="period_start",
        )
    language = language or spec.default_language
    if language not in ("en", "zh-hans"):
        raise ServiceError("invalid_language", _("language must be en or zh-hans"), field="language")
    with transaction.atomic():
        report = ComplianceReport.objects.create(
            profile=profile,
            period_start=period_start,
            period_end=period_end,
            language=language,
            requested_by=_user(actor),
        )
        record_event(
            "compliance.report.request",
            actor=actor,
            source=source,
            target=report,
            details={
                "profile": profile,
                "period_start": period_start.isoformat(),
                "period_end": period_end.isoformat(),
                "language": language,
            },
        )
        from .tasks import generate_report_task

        report_id, actor_id = report.pk, getattr(_user(actor), "pk", None)
        transaction.on_commit(lambda: generate_report_task.delay(report_id, actor_id))
    return report


def record_download(*, report: ComplianceReport, fmt: str, actor, source: Source = SYSTEM) -> None:
    with transaction.atomic():
        record_event(
            "compliance.report.download",
            actor=actor,
            source=source,
            target=report,
            details={"format": fmt, "file": report.files.get(fmt)},
        )


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None
