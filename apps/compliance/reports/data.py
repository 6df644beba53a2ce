"""Everything a report shows, gathered into plain data (the JSON report is exactly this)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import Count

from ..catalog import get_profile, pick
from ..models import Attestation, ControlResult, EvaluationRun, ModelPolicy, ProfileAttachment

STATUSES = ("pass", "fail", "manual", "not_applicable")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def control_results(profile_id: str, start: datetime, end: datetime, language: str) -> dict:
    """The latest result of each control in the period, and how each fared over all runs in it."""
    profile = get_profile(profile_id)
    runs = EvaluationRun.objects.filter(
        started_at__gte=start, started_at__lt=end, results__profile=profile_id
    ).distinct()
    last_run = runs.order_by("-started_at", "-pk").first()
    latest = {r.control_id: r for r in ControlResult.objects.filter(run=last_run, profile=profile_id)}
    history: dict[str, Counter] = defaultdict(Counter)
    for control_id, status in ControlResult.objects.filter(run__in=runs, profile=profile_id).values_list(
        "control_id", "status"
    ):
        history[control_id][status] += 1
    rows = []
    for control in profile.controls:
        result = latest.get(control.id)
        if result is None and control.option:
            continue  # an option that was off for the whole period
        rows.append(
            {
                "id": control.id,
                "framework": control.framework,
                "family": pick(control.family, language),
                "summary": pick(control.summary, language),
                "evidence_description": pick(control.evidence, language),
                "checks": list(control.checks),
                "status": result.status if result else "not_evaluated",
                "evidence": result.evidence if result else [],
                "remedy": (result.remedy if result else "") or "",
                "remedy_catalogue": pick(control.remedy, language),
                "evaluated_at": _iso(result.evaluated_at if result else None),
                "history": dict(history[control.id]),
            }
        )
    return {"runs": runs.count(), "last_run": last_run.pk if last_run else None, "controls": rows}


def family_summary(rows: list[dict]) -> list[dict]:
    families: dict[str, Counter] = {}
    for row in rows:
        families.setdefault(row["family"], Counter())[row["status"]] += 1
    return [{"family": f, **{s: c.get(s, 0) for s in STATUSES}} for f, c in families.items()]


def users_inventory() -> list[dict]:
    from apps.accounts.selectors import users_with_confirmed_device

    with_2fa = users_with_confirmed_device()
    users = get_user_model().objects.prefetch_related("groups").select_related("profile").order_by("username")
    return [
        {
            "username": u.username,
            "roles": sorted(g.name for g in u.groups.all()) + (["superuser"] if u.is_superuser else []),
            "active": u.is_active,
            "two_factor": u.pk in with_2fa,
            "service_account": bool(getattr(getattr(u, "profile", None), "is_service_account", False)),
            "last_login": _iso(u.last_login),
        }
        for u in users
    ]


def grants_inventory() -> list[dict]:
    from apps.accounts.models import ModelGroupGrant, ModelUserGrant

    rows = [
        {
            "model": g.content_object.name,
            "principal": f"user {g.user.username}",
            "permission": g.permission.codename,
            "expires_at": _iso(g.expires_at),
        }
        for g in ModelUserGrant.objects.select_related("content_object", "user", "permission")
    ]
    rows += [
        {
            "model": g.content_object.name,
            "principal": f"group {g.group.name}",
            "permission": g.permission.codename,
            "expires_at": _iso(g.expires_at),
        }
        for g in ModelGroupGrant.objects.select_related("content_object", "group", "permission")
    ]
    return sorted(rows, key=lambda r: (r["model"], r["principal"], r["permission"]))


def keys_inventory() -> list[dict]:
    from apps.keys.selectors import key_inventory

    keep = ("kek_id", "provider", "version", "state", "algorithm", "artifacts_protected", "suites", "created_at")
    return [
        {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in r.as_dict().items() if k in keep}
        for r in key_inventory()
    ]


def models_inventory() -> list[dict]:
    from apps.registry.models import Model

    policies = {p.model_id: p for p in ModelPolicy.objects.all()}
    attached: dict[int, list[str]] = defaultdict(list)
    for model_id, profile in ProfileAttachment.objects.filter(model__isnull=False).values_list("model_id", "profile"):
        attached[model_id].append(profile)
    return [
        {
            "name": m.name,
            "versions": m.n_versions,
            "phi": bool(policies.get(m.pk) and policies[m.pk].phi),
            "deid_mode": policies[m.pk].deid_mode if m.pk in policies else "off",
            "profiles": sorted(attached[m.pk]),
        }
        for m in Model.objects.annotate(n_versions=Count("versions")).order_by("name")
    ]


def deployments_inventory() -> list[dict]:
    from apps.deployments.models import Deployment

    return [
        {
            "model": d.model.name,
            "version": d.model_version.version,
            "server": d.server.name,
            "server_url": d.server.http_url,
            "desired": d.desired_state,
            "observed": d.observed_state,
        }
        for d in Deployment.objects.select_related("model", "model_version", "server").order_by("model__name", "pk")
    ]


def audit_section(start: datetime, end: datetime) -> dict:
    from apps.audit.models import AuditCheckpoint, AuditEvent
    from apps.audit.selectors import verify_chain

    report = verify_chain()
    checkpoints = AuditCheckpoint.objects.filter(created_at__lt=end).order_by("-sequence")[:10]
    groups = AuditEvent.objects.filter(timestamp__gte=start, timestamp__lt=end).values("event_group")
    return {
        "verification": {k: report.get(k) for k in ("ok", "status", "detail", "last_sequence", "problem", "pending")},
        "checkpoints": [
            {
                "sequence": c.sequence,
                "head": c.head,
                "hash_alg": c.hash_alg,
                "created_at": _iso(c.created_at),
                "key_id": c.key_id,
                "sig_alg": c.sig_alg,
            }
            for c in checkpoints
        ],
        "events_by_group": {r["event_group"]: r["n"] for r in groups.annotate(n=Count("id")).order_by("event_group")},
    }


def attestations(profile_id: str) -> list[dict]:
    """Every attestation of the profile with who uploaded it, when, and until when it holds."""
    from django.utils import timezone

    now = timezone.now()
    return [
        {
            "control": a.control_id,
            "file": a.file_name,
            "sha256": a.sha256,
            "author": str(a.uploaded_by or "") or "(unknown: the uploader's account was deleted)",
            "uploaded_at": _iso(a.uploaded_at),
            "expires_at": _iso(a.expires_at),
            "expired": a.expires_at <= now,
        }
        for a in Attestation.objects.filter(profile=profile_id).select_related("uploaded_by")
    ]


def signing_section() -> dict:
    """Where the key that signs this report (the audit checkpoint signer) and the KEK really are:
    a local file, or a PKCS#11 token named by its model ("software token — development only" for
    SoftHSM2). `in_module` is true only for a hardware token."""
    from django.conf import settings

    from apps.audit.selectors import signing_key_status

    from ..checks.keystore import describe_token, read_token_info, signing_key_provider

    status = signing_key_status()
    if "error" in status:
        out = {"provider": f"unavailable: {status['error']}", "in_module": False}
    else:
        provider = signing_key_provider(status)
        out = {
            "signer": status["signer"],
            "key_id": status["key_id"],
            "sig_alg": status["sig_alg"],
            "provider": provider["text"],
            "in_module": provider["in_module"],
        }
    if settings.KEK_PROVIDER == "pkcs11":
        try:
            out["kek"] = f"PKCS#11 token {settings.PKCS11['TOKEN']!r}: {describe_token(read_token_info())}"
        except Exception as exc:  # noqa: BLE001 - an unreadable token is named, not hidden
            out["kek"] = f"PKCS#11 token (unreadable: {exc})"
    else:
        out["kek"] = f"{settings.KEK_PROVIDER} provider, key file {settings.LOCAL_KEK_FILE} — not in an HSM"
    return out


def development_mode() -> dict:
    """Whether this installation runs as development (not SOVEREIGN_ENV=production), with DEBUG, or
    with SOVEREIGN_INSECURE_OVERRIDE weaknesses in effect: the report says so on its cover."""
    from django.conf import settings

    from apps.core.production import OVERRIDE_VAR, in_effect, is_production

    reasons = []
    if not is_production(settings):
        reasons.append("SOVEREIGN_ENV is not production: development settings, no production start-up refusals")
    if settings.DEBUG:
        reasons.append("DEBUG is on")
    reasons += [f"{OVERRIDE_VAR}={name}: {problem}" for name, problem in in_effect(settings).items()]
    return {"on": bool(reasons), "reasons": reasons}


def time_zone_of(user) -> str:
    """The zone the requester reads times in (their Profile.time_zone), else settings.TIME_ZONE."""
    from django.conf import settings

    from apps.accounts.models import Profile

    chosen = Profile.objects.filter(user=user).values_list("time_zone", flat=True).first() if user else ""
    return chosen or settings.TIME_ZONE


def gather(report, progress=lambda pct: None) -> dict:
    """The report's content for `report` (a ComplianceReport), calling progress(pct) as it goes."""
    profile = get_profile(report.profile)
    language = report.language
    results = control_results(report.profile, report.period_start, report.period_end, language)
    progress(20)
    data = {
        "report": {
            "id": report.pk,
            "profile": profile.id,
            "profile_name": pick(profile.name, language),
            "framework": profile.framework,
            "period_start": _iso(report.period_start),
            "period_end": _iso(report.period_end),
            "language": language,
            "time_zone": time_zone_of(report.requested_by),  # the PDF's times; the JSON keeps ISO 8601 UTC
            "generated_at": None,  # filled by the generator
            "evaluations_in_period": results["runs"],
            "last_evaluation": results["last_run"],
        },
        "controls": results["controls"],
        "summary_by_family": family_summary(results["controls"]),
        "totals": dict(Counter(r["status"] for r in results["controls"])),
    }
    data["inventory"] = {"users": users_inventory(), "grants": grants_inventory(), "keys": keys_inventory()}
    progress(40)
    data["inventory"].update(models=models_inventory(), deployments=deployments_inventory())
    data["attestations"] = attestations(report.profile)
    data["signing"] = signing_section()
    data["development_mode"] = development_mode()
    data["audit"] = audit_section(report.period_start, report.period_end)
    progress(60)
    return data
