"""The admin walk: every view of every model registered on the admin site, for every principal,
either refuses or leaves an audit event naming the actor and the change.

Nothing here lists the models: they come from `admin.site._registry`, so a newly registered model
(ours or a third-party app's) is walked as soon as it is registered. For each model and each
principal the walk GETs, then POSTs, the add view, the change and delete views of two objects,
every changelist action the model admin has (its own and the site's enabled ones, such as
`delete_selected` wherever it is enabled), whether or not the principal is shown it, and every
extra URL the model admin adds (password change, QR codes...). POST data is built from the form
the GET rendered: its initial values, required blanks filled with plausible values, one value
changed on change views, inline management forms kept, confirmation pages confirmed.

Around each step a snapshot of every table (but the audit log itself, sessions, Django's admin
message log and django-auditlog's entries, which are bridged into the audit log) is compared.
Every row a step changed must be named by a successful audit event of that request whose actor
is the principal: as the event's target, in its `details["deleted"]` (an event that deletes rows
lists them), as the row it belongs to by foreign key (a role membership, enrolment code or
TOTP device of the user the event targets), or by a unique value in the event's details (the
KEK a rotation deactivates, named by its KEK id). Each step runs in a savepoint that is rolled back,
so the steps do not see each other's writes.

Which principal may write through which view is in WRITERS (exactly: a writer that stopped writing
fails too, so the walk cannot pass by never reaching a service). The user and token admins are
checked for auditing only: who may change users and tokens is the policy table's, checked by the
closure test.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import pytest
from django import forms
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, GUEST, SECURITY_OFFICER
from apps.audit.models import AuditEvent, Outcome
from inference_backend.demo_model import build_test_onnx
from tests.conftest import make_user, otp_login
from tests.factories import DeploymentFactory, ModelVersionFactory, llm_governance_rows, rollout_of, token_for

pytestmark = pytest.mark.django_db

PRINCIPALS = ("superuser", "admin", "security_officer", "auditor", "analyst", "guest")
ROLE_OF = {"admin": ADMIN, "security_officer": SECURITY_OFFICER, "auditor": AUDITOR, "analyst": ANALYST, "guest": GUEST}
MODELS = sorted(m._meta.label_lower for m in admin.site._registry)

# Tables whose rows are not governed state: the audit log (the thing we look for), Django's admin
# message log and django-auditlog's entries (written only beside a change, and bridged into the
# audit log), sessions (every authenticated request may touch its own), and alert deliveries (the
# outbox row record_event writes beside an alerting event, docs/alerts.md: part of the event).
UNWATCHED = {"audit_auditevent", "django_admin_log", "auditlog_logentry", "django_session", "audit_alertdelivery"}
# Audit events that record a read or a refusal, never a change.
NOT_A_CHANGE = {"audit.search", "compliance.report.download", "access.refused", "auth.breakglass.use"}

SU, AD, SO, AU = "superuser", "admin", "security_officer", "auditor"
# (model, view) -> the principals whose walk of that view writes. A view not listed writes for
# nobody. Views: add, change, delete, action:<name>, url:<name>.
WRITERS: dict[str, dict[str, set[str]]] = {
    "registry.modelversion": {"add": {SU, AD}, "action:deploy": {SU, AD}},
    "deployments.inferenceserver": {"add": {SU, AD}},
    "deployments.replicaset": {
        "add": {SU, AD},
        "action:scale": {SU, AD},
        "action:autoscale": {SU, AD},
        "action:retire": {SU, AD},
    },
    "deployments.deployment": {"add": {SU, AD}, "action:undeploy": {SU, AD}, "action:redeploy": {SU, AD}},
    # the world's rollout waits for its replicas: promoting it is refused, rolling back or aborting writes
    "deployments.rollout": {"action:rollback": {SU, AD}, "action:abort": {SU, AD}},
    # quotas (issue 17): set and changed through set_quota (the walk's add form names no subject and no
    # limit, its change changes nothing: neither writes), removed through delete_quota
    "gateway.quota": {"action:remove": {SU, AD, SO}},
    "keys.keyencryptionkey": {"action:rotate": {SU, SO}},
    "keys.kekrotation": {"action:resume": {SU, SO}, "url:keys_kekrotation_start": {SU, SO}},
    "compliance.compliancereport": {"add": {SU, SO, AU}},
    # issue 17: attach (add), detach (delete), evaluate now (docs/admin-site.md)
    "compliance.profileattachment": {"add": {SU, SO}, "delete": {SU, SO}},
    "compliance.controlresult": {"url:compliance_controlresult_evaluate": {SU, SO}},
    # The superuser counts as an officer (apps/accounts/services/policy.py), never on itself.
    "otp_totp.totpdevice": {"action:remove_second_factor": {SU, SO}},
    "accounts.sm3otpdevice": {"action:remove_second_factor": {SU, SO}},
    "axes.accessattempt": {"action:unlock": {SU, SO}},
    "axes.accessfailurelog": {"action:unlock": {SU, SO}},
    # break-glass (docs/access-control.md): the walk's add form names the principal itself (refused,
    # self_change_forbidden); ending a grant early is the officer's
    "accounts.emergencyaccess": {"action:revoke": {SU, SO}},
}
AUDIT_ONLY = {"auth.user", "accounts.apitoken"}  # see the module docstring

STRONG_PASSWORD = "Walk-the-admin-9-Quietly"


# ---------------------------------------------------------------------------------------------
# The world: one principal of each kind, and at least one row of every registered model.


@dataclass
class World:
    users: dict
    clients: dict = field(default_factory=dict)


@pytest.fixture
def world(settings) -> World:
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    from apps.compliance.catalog import profiles
    from apps.compliance.models import (
        ComplianceReport,
        ControlResult,
        EvaluationRun,
        ProfileAttachment,
        RestoreDrill,
    )
    from apps.keys.models import KekRotation, KekState, KeyEncryptionKey, RotationState

    settings.COMPLIANCE_DIR = settings.ARTIFACT_DIR.parent / "compliance-walk"
    users = {"superuser": get_user_model().objects.create_superuser("root", "root@example.org", STRONG_PASSWORD)}
    users.update({p: make_user(f"walk-{p.replace('_', '-')}", ROLE_OF[p]) for p in PRINCIPALS[1:]})
    dep = DeploymentFactory(model_version__actor=users["admin"])
    rollout_of(dep.model_version, users["admin"])  # before "undeployed": the newest version stays undeployed
    from apps.deployments.services import request_replica_set

    fleet = ModelVersionFactory(model_name="fleet", actor=users["admin"])  # a replica set (docs/fleet.md)
    fleet_set = request_replica_set(model_version_id=fleet.pk, replicas=1, actor=users["admin"])
    from apps.deployments.models import BatchingSweep

    BatchingSweep.objects.create(replica_set=fleet_set, rate_per_second=5, slo_p99_ms=100, state="done")
    ModelVersionFactory(model_name="undeployed", actor=users["admin"])  # the deploy action's target (the last)
    token_for(users["analyst"], name="laptop")
    from apps.accounts.models import SM3OTPDevice

    SM3OTPDevice.objects.create(user=users["auditor"], name="sm3 token", confirmed=True)  # 国密 second factor
    llm_governance_rows(dep.model, users["analyst"])
    kek = KeyEncryptionKey.objects.get(state=KekState.ACTIVE)
    KekRotation.objects.create(to_kek=kek, state=RotationState.FAILED, last_error="walk")
    ProfileAttachment.objects.create(profile="hipaa", model=dep.model)
    run = EvaluationRun.objects.create(finished_at=timezone.now())
    for profile in profiles():  # a report of any profile has an evaluation to report on
        ControlResult.objects.create(run=run, profile=profile, control_id="x-1", family="x", status="pass")
    now = timezone.now()
    ComplianceReport.objects.create(profile="hipaa", period_start=now - dt.timedelta(days=1), period_end=now)
    RestoreDrill.objects.create(started_at=now, finished_at=now, ok=True, source_database="walk")
    attempt = dict(user_agent="walk", ip_address="192.0.2.7", username="mallory", http_accept="*/*", path_info="/")
    AccessAttempt.objects.create(**attempt, get_data="", post_data="", failures_since_start=5)
    AccessLog.objects.create(**attempt)
    AccessFailureLog.objects.create(**attempt, locked_out=True)
    from apps.accounts.models import EmergencyAccess

    EmergencyAccess.objects.create(
        user=users["analyst"], role=GUEST, reason="walk", granted_at=now, expires_at=now + dt.timedelta(hours=1)
    )
    w = World(users=users)
    for name, user in users.items():
        client = Client()
        if name in ("analyst", "guest"):
            client.force_login(user)
        else:
            otp_login(client, user)  # also gives every privileged principal a TOTP device row
        w.clients[name] = client
    return w


def test_the_world_has_a_row_of_every_registered_model(world):
    """Otherwise a change or delete view would go unwalked: add a row of the new model to `world`."""
    empty = [label for label in MODELS if not apps.get_model(label)._default_manager.exists()]
    assert not empty


# ---------------------------------------------------------------------------------------------
# Snapshots of the database.


def _plain(value):
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def snapshot() -> dict[str, dict]:
    """Every watched table as {primary key (first column): {column: value}}."""
    tables = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            if table in UNWATCHED:
                continue
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from the catalogue
            columns = [c.name for c in cursor.description]
            tables[table] = {row[0]: dict(zip(columns, map(_plain, row), strict=True)) for row in cursor.fetchall()}
    return tables


def changed_rows(before: dict, after: dict) -> dict[tuple[str, str], dict]:
    """(table, pk) -> the row (as it is now, or as it was if deleted) of every row that changed."""
    changed = {}
    for table, rows in after.items():
        old = before.get(table, {})
        for pk in rows.keys() | old.keys():
            if rows.get(pk) != old.get(pk):
                changed[(table, str(pk))] = rows.get(pk) or old[pk]
    return changed


def _parents(table: str, row: dict) -> set[tuple[str, str]]:
    """The rows this row points at by foreign key: a user's group membership, enrolment code or
    TOTP device is part of that user, and an event naming the user names the change to them."""
    model = _MODEL_OF_TABLE.get(table)
    if model is None:
        return set()
    return {
        (f.related_model._meta.db_table, str(row[f.column]))
        for f in model._meta.concrete_fields
        if f.many_to_one and row.get(f.column) is not None
    }


def _natural_keys(table: str, row: dict) -> set[str]:
    """The row's unique values other than its id (a KEK id, a user name): an event that says
    "rotated from kek-v1" names the row of kek-v1."""
    model = _MODEL_OF_TABLE.get(table)
    if model is None:
        return set()
    fields = [f for f in model._meta.concrete_fields if f.unique and not f.primary_key]
    return {str(row[f.column]) for f in fields if row.get(f.column) not in (None, "")}


def _leaves(value) -> set[str]:
    if isinstance(value, dict):
        return set().union(*map(_leaves, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_leaves, value)) if value else set()
    return {str(value)}


_MODEL_OF_TABLE = {m._meta.db_table: m for m in apps.get_models(include_auto_created=True)}


def _table_of(target_type: str) -> str | None:
    try:
        return apps.get_model(target_type)._meta.db_table
    except (LookupError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Building POST data from a rendered form.


def _onnx() -> SimpleUploadedFile:
    return SimpleUploadedFile("walk.onnx", build_test_onnx(4, 3, seed=99), "application/octet-stream")


def _filler(name: str, fld: forms.Field, principal_user):
    """A plausible value for an empty field, so the walk reaches the service, not a blank-field error."""
    if isinstance(fld, forms.FileField):
        return _onnx()
    if isinstance(fld, forms.ModelMultipleChoiceField):
        first = fld.queryset.first()
        return [str(first.pk)] if first is not None else []
    if isinstance(fld, forms.ModelChoiceField):
        qs = fld.queryset
        if qs.model is get_user_model() and qs.filter(pk=principal_user.pk).exists():
            return str(principal_user.pk)
        last = qs.last()  # the world's newest row: e.g. the model version not deployed yet
        return str(last.pk) if last is not None else ""
    if isinstance(fld, forms.BooleanField):
        return True
    if isinstance(fld, forms.ChoiceField):
        values = [str(v) for v, _ in fld.choices if v not in ("", None)]
        return (values[:1] if isinstance(fld, forms.MultipleChoiceField) else values[0]) if values else ""
    if isinstance(fld, forms.SplitDateTimeField):
        now = timezone.now()
        return [now.strftime("%Y-%m-%d"), now.strftime("%H:%M:%S")]
    if isinstance(fld, forms.DateTimeField):
        shift = dt.timedelta(days=-1) if "start" in name or "from" in name else dt.timedelta(hours=1)
        return (timezone.now() + shift).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(fld, forms.DateField):
        return timezone.now().strftime("%Y-%m-%d")
    if isinstance(fld, forms.IntegerField | forms.FloatField | forms.DecimalField):
        return str(max(1, fld.min_value or 1)) if fld.max_value is None or fld.max_value >= 1 else str(fld.max_value)
    if isinstance(fld, forms.JSONField):
        return "{}"
    if isinstance(fld, forms.EmailField):
        return "walk@example.org"
    if isinstance(fld, forms.URLField) or name.endswith("url"):
        return "http://127.0.0.1:8000"
    if isinstance(fld, forms.GenericIPAddressField):
        return "192.0.2.9"
    if "password" in name:
        return STRONG_PASSWORD
    return "walk-1"


def _changed(value):
    """A different but still plausible value for a change view."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str) and value and not value.isdigit():
        return value[:-1] + ("2" if value[-1] != "2" else "3")
    return None


def form_data(form, principal_user, *, fill: bool, change: bool = False) -> tuple[dict, dict]:
    """(data, files) a browser would post for `form` as rendered, blanks filled if `fill`, and on a
    change view one text or boolean value changed."""
    data, files, altered = {}, {}, not change
    for name, fld in form.fields.items():
        if fld.disabled:
            continue
        bound = form[name]
        value = bound.value()
        if value in (None, "", [], ()) and fill and fld.required:
            value = _filler(name, fld, principal_user)
        elif not altered and isinstance(fld, forms.CharField | forms.BooleanField) and "password" not in name:
            new = _changed(value)
            if new is not None:
                value, altered = new, True
        key = bound.html_name
        if isinstance(value, SimpleUploadedFile):
            files[key] = value
        elif isinstance(fld, forms.MultiValueField):
            parts = value if isinstance(value, list | tuple) else fld.widget.decompress(value)
            for i, part in enumerate(parts):
                data[f"{key}_{i}"] = "" if part is None else str(part)
        elif isinstance(fld, forms.BooleanField) and not isinstance(fld, forms.NullBooleanField):
            if value:
                data[key] = "on"
        elif isinstance(value, list | tuple):
            data[key] = [str(v) for v in value]
        elif isinstance(value, dt.datetime):
            data[key] = value.strftime("%Y-%m-%d %H:%M:%S")
        elif value is not None:
            data[key] = str(value)
    return data, files


def page_data(response, principal_user, *, fill: bool, change: bool = False) -> dict:
    """The POST body for a rendered admin page: its main form and every inline formset."""
    context = response.context or {}
    form = context["adminform"].form if "adminform" in context else context.get("form")
    data, files = form_data(form, principal_user, fill=fill, change=change) if form is not None else ({}, {})
    for inline in context.get("inline_admin_formsets", []):
        formset = inline.formset
        data.update(form_data(formset.management_form, principal_user, fill=False)[0])
        for sub in formset.forms:
            data.update(form_data(sub, principal_user, fill=False)[0])
    return {**data, **files}


# ---------------------------------------------------------------------------------------------
# The walk.


class _Rollback(Exception):
    pass


@dataclass
class Step:
    view: str
    url: str
    wrote: bool = False
    problem: str = ""


def _objects(model) -> list:
    qs = model._default_manager.order_by("pk")
    first, last = qs.first(), qs.last()
    return [o for o in (first, last) if o is not None][: 1 if first == last else 2]


def _do(step: Step, user, requests) -> Step:
    """Run `requests` (a function doing the GETs and POSTs) in a savepoint, then judge the change."""
    try:
        with transaction.atomic():
            before = snapshot()
            last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
            requests()
            changed = changed_rows(before, snapshot())
            if changed:
                step.wrote = True
                step.problem = _unaudited(changed, user, last_event)
            raise _Rollback
    except _Rollback:
        pass
    return step


def _unaudited(changed: dict[tuple[str, str], dict], user, last_event: int) -> str:
    """Why the change is not accounted for, or "" if every changed row is named by a successful
    event of `user`: as its target, in its `details["deleted"]`, or through a row it belongs to."""
    events = list(
        AuditEvent.objects.filter(id__gt=last_event, actor_id=user.pk, outcome=Outcome.SUCCESS).exclude(
            event_type__in=NOT_A_CHANGE
        )
    )
    named = set()
    for event in events:
        if event.target_id and (event.details or event.target_display):
            named.add((_table_of(event.target_type), event.target_id))
        # An event that removes rows lists them: {"deleted": {"app.model": [ids]}} (see docs/admin-site.md).
        for target_type, ids in (event.details.get("deleted") or {}).items():
            named |= {(_table_of(target_type), str(pk)) for pk in ids}
    mentioned = set().union(*(_leaves(e.details) for e in events)) if events else set()
    unnamed = sorted(
        key
        for key, row in changed.items()
        if key not in named and not _parents(key[0], row) & named and not _natural_keys(key[0], row) & mentioned
    )
    if not unnamed:
        return ""
    return f"changed {unnamed[:8]} and no audit event by {user} names them (events: {events})"


def walk_model(label: str, principal: str, world: World) -> list[Step]:
    model = apps.get_model(label)
    model_admin = admin.site._registry[model]
    user, client = world.users[principal], world.clients[principal]
    info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
    steps = []

    def add():
        url = reverse(f"{info}_add")
        response = client.get(url)
        data = page_data(response, user, fill=True) if response.status_code == 200 else {"_walk": "blind"}
        client.post(url, {**data, "_save": "Save"})

    steps.append(_do(Step("add", reverse(f"{info}_add")), user, add))

    for obj in _objects(model):
        change_url = reverse(f"{info}_change", args=[obj.pk])
        delete_url = reverse(f"{info}_delete", args=[obj.pk])

        def change(url=change_url):
            response = client.get(url)
            data = page_data(response, user, fill=True, change=True) if response.status_code == 200 else {}
            client.post(url, {**data, "_save": "Save"})

        def delete(url=delete_url):
            client.get(url)
            client.post(url, {"post": "yes"})

        steps.append(_do(Step("change", change_url), user, change))
        steps.append(_do(Step("delete", delete_url), user, delete))
        steps += [
            _do(Step(f"action:{name}", name), user, _action(client, user, info, name, obj))
            for name in _actions(model_admin)
        ]
        steps += [
            _do(Step(f"url:{name}", url), user, _extra(client, user, url))
            for name, url in _extra_urls(model_admin, obj)
        ]
    return steps


def _actions(model_admin) -> list[str]:
    return [name for _func, name, _desc in model_admin._get_base_actions()]


def _action(client, user, info, name, obj):
    def run():
        url = reverse(f"{info}_changelist")
        first = {"action": name, "_selected_action": [str(obj.pk)], "index": "0"}
        response = client.post(url, first)
        if response.status_code == 200 and response.context is not None:
            # An intermediate page (confirmation, or a form such as the deploy target): confirm it.
            confirm = {**first, "post": "yes", "apply": "1", **page_data(response, user, fill=True)}
            client.post(url, confirm)

    return run


STANDARD_VIEWS = ("changelist", "add", "history", "delete", "change", "autocomplete")


def _extra_urls(model_admin, obj) -> list[tuple[str, str]]:
    """Every named URL the model admin adds beyond the standard ones, with the object's id."""
    opts = model_admin.model._meta
    standard = {f"{opts.app_label}_{opts.model_name}_{v}" for v in STANDARD_VIEWS}
    urls = []
    for pattern in model_admin.get_urls():
        name = getattr(pattern, "name", None)
        if not name or name in standard:
            continue
        kwargs = {key: obj.pk for key in pattern.pattern.converters}
        urls.append((name, reverse(f"admin:{name}", kwargs=kwargs)))
    return urls


def _extra(client, user, url):
    def run():
        response = client.get(url)
        data = page_data(response, user, fill=True) if response.status_code == 200 and response.context else {}
        client.post(url, data)

    return run


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("label", MODELS)
def test_every_admin_write_is_refused_or_audited(label, principal, world):
    steps = walk_model(label, principal, world)

    unaudited = [f"{s.view} {s.url}: {s.problem}" for s in steps if s.problem]
    assert not unaudited, "\n".join(unaudited)
    if label in AUDIT_ONLY:
        return
    wrote = {s.view for s in steps if s.wrote}
    expected = {view for view, who in WRITERS.get(label, {}).items() if principal in who}
    assert wrote == expected, f"{principal} wrote through {sorted(wrote)}; the policy says {sorted(expected)}"
