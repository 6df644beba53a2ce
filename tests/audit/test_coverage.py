"""Audit coverage of the service layer: every public service function that writes to the
database records an audit event (itself or through what it calls), and every governed model is
bridged into the chain on any write. A service added without auditing fails here until it
records an event or is listed in EXEMPT with the reason. (Routes: tests/core/test_url_walk.py
checks that every changing request leaves an event, refused ones included.)"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from django.apps import apps as django_apps

from apps.audit.fieldlog import SECRET_FIELDS, governed_models
from apps.audit.models import AuditEvent

ROOT = Path(__file__).resolve().parents[2]
WRITE_METHODS = frozenset(
    {"save", "create", "delete", "bulk_create", "bulk_update", "get_or_create", "update_or_create", "set_password"}
)
# QuerySet.update is a write too, but dict.update is not: count `.update(` only on a query
# (a call chain that starts from `objects` or a filter).
QUERY_WRITES = frozenset({"update"})
QUERY_HINTS = frozenset({"objects", "filter", "exclude", "select_for_update", "all"})

# Functions that write without recording an event, and why that is right.
EXEMPT = {
    "apps.audit.services.record_event": "it is the audit write",
    "apps.audit.services.record_events": "it is the audit write, a batch at a time (the data plane's group commit)",
    "apps.accounts.services.tokens.authenticate_bearer": (
        "writes only the token's last-use time (at most once a minute); the call it authenticates is audited"
    ),
    "apps.keys.services.active_kek": "registers version 1 through _register, which records keys.kek.register",
    "apps.accounts.services.sessions.end_sessions": (
        "a step of disabling an account or resetting a password, inside the callers' transactions, which record "
        "auth.user.update / auth.user.active / auth.password.reset with the number of sessions ended"
    ),
    "apps.observability.services.roll_up_calls": (
        "adds sealed gateway calls to the dashboard's series: derived figures rebuilt from the audit log itself"
    ),
    "apps.observability.services.prune_series": "drops expired points of the same derived series",
    "apps.deployments.services.note_reconcile_retry": (
        "an observation of the reconcile (which retry, when the next), like a server's last_seen_at; the server's "
        "change of state it comes with is audited (deployment.server.state), and so is the deployment's end"
    ),
    "apps.gateway.services.record_usage": (
        "one usage row per chat call, the counts that call's own gateway audit event already carries"
    ),
}


def _service_modules():
    with_services = [p for p in (ROOT / "apps").iterdir() if (p / "services.py").exists() or (p / "services").is_dir()]
    for app in sorted(p.name for p in with_services):
        module = importlib.import_module(f"apps.{app}.services")
        yield module
        for own in ("rollouts", "autoscale", "config_rollouts", "tuning"):  # services kept in modules of their own
            if (ROOT / "apps" / app / f"{own}.py").exists():
                yield importlib.import_module(f"apps.{app}.{own}")
        if hasattr(module, "__path__"):
            for info in pkgutil.iter_modules(module.__path__):
                yield importlib.import_module(f"apps.{app}.services.{info.name}")


def _calls(fn: ast.FunctionDef):
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            yield node


def _chain_names(node: ast.AST) -> set[str]:
    names = set()
    while isinstance(node, ast.Attribute | ast.Call):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
            node = node.value
        else:
            node = node.func
    if isinstance(node, ast.Name):
        names.add(node.id)
    return names


def _analyse():
    functions: dict[str, tuple[str, ast.FunctionDef]] = {}  # qualified name -> (module, def)
    by_name: dict[str, list[str]] = {}
    for module in _service_modules():
        tree = ast.parse(inspect.getsource(module))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                qual = f"{module.__name__}.{node.name}"
                functions[qual] = (module.__name__, node)
                by_name.setdefault(node.name, []).append(qual)
    direct_write, direct_audit, callees = {}, {}, {}
    for qual, (module_name, fn) in functions.items():
        writes, audits, calls = False, False, set()
        for call in _calls(fn):
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "record_event":
                audits = True
            if isinstance(func, ast.Attribute) and name in WRITE_METHODS:
                writes = True
            if isinstance(func, ast.Attribute) and name in QUERY_WRITES and _chain_names(func.value) & QUERY_HINTS:
                writes = True
            for target in by_name.get(name or "", []):
                # same module first; a name from another service module otherwise
                if target.rsplit(".", 1)[0] == module_name or len(by_name[name]) == 1:
                    calls.add(target)
        direct_write[qual], direct_audit[qual], callees[qual] = writes, audits, calls

    def closure(start: str, direct: dict) -> bool:
        seen, todo = set(), [start]
        while todo:
            f = todo.pop()
            if f in seen:
                continue
            seen.add(f)
            if direct[f]:
                return True
            todo.extend(callees[f])
        return False

    public = [q for q in functions if not q.rsplit(".", 1)[1].startswith("_")]
    return {q: (closure(q, direct_write), closure(q, direct_audit)) for q in public}


def test_every_writing_service_function_records_an_audit_event():
    analysis = _analyse()
    assert len(analysis) > 30  # the discovery found the service layer
    unaudited = sorted(q for q, (writes, audits) in analysis.items() if writes and not audits and q not in EXEMPT)
    stale = sorted(set(EXEMPT) - set(analysis))
    assert not unaudited, f"service functions that write but record no audit event: {unaudited}"
    assert not stale, f"EXEMPT names functions that no longer exist: {stale}"


def test_the_analysis_sees_writes_and_events():
    """The analysis itself must be able to fail: known writers are seen as writing and auditing."""
    analysis = _analyse()
    assert analysis["apps.registry.services.shred_model_version"] == (True, True)
    assert analysis["apps.keys.services.retire_kek"] == (True, True)
    assert analysis["apps.accounts.services.tokens.authenticate_bearer"][0] is True  # hence EXEMPT
    assert analysis["apps.registry.services.read_artifact_ciphertext"] == (False, False)


# What the owning apps register in their AppConfig.ready() (apps.audit.services.govern), with the
# fields each keeps out of its history. A model dropped from an app's registration fails here.
EXPECTED_GOVERNED = {
    "registry.Model": (),
    "registry.ModelVersion": (),
    "registry.Artifact": (),  # its wrapped data key lives in keys.DataKey
    "keys.DataKey": ("wrapped",),
    "deployments.InferenceServer": ("credential_ciphertext",),  # its restricted-API credential, sealed
    "deployments.Deployment": (),
    "deployments.ReplicaSet": ("autoscale_state",),  # the autoscaler's per-tick memory; its decisions are events
    "accounts.ApiToken": ("digest", "last_used_at", "last_used_ip"),
    "accounts.ModelUserGrant": (),
    "accounts.ModelGroupGrant": (),
    "accounts.EmergencyAccess": (),
    "accounts.Profile": (),
}


def test_each_app_registers_its_governed_models_with_their_exclusions():
    assert governed_models() == EXPECTED_GOVERNED


def test_a_secret_named_field_is_excluded_even_if_its_app_forgets(monkeypatch):
    """The safety net: govern() adds every field named like a secret to the exclusions."""
    from auditlog.registry import auditlog

    from apps.audit.services import govern

    model = django_apps.get_model("accounts.ApiToken")
    assert "digest" in SECRET_FIELDS
    try:
        govern(model)  # registered again without its exclusions
        assert "digest" in governed_models()["accounts.ApiToken"]
        assert "digest" in auditlog.get_model_fields(model)["exclude_fields"]
    finally:
        govern(model, exclude=EXPECTED_GOVERNED["accounts.ApiToken"])


@pytest.mark.django_db
@pytest.mark.parametrize("label", sorted(EXPECTED_GOVERNED))
def test_every_governed_model_is_bridged_into_the_chain(label):
    """Any write to a governed model, by any code path, leaves an audit.field_change event."""
    from auditlog.registry import auditlog

    model = django_apps.get_model(label)
    assert auditlog.contains(model), f"{label} is not registered with django-auditlog"


@pytest.mark.django_db
def test_a_governed_write_outside_the_services_is_still_recorded(staff_user):
    from tests.factories import InferenceServerFactory

    server = InferenceServerFactory()
    server.hardware = "gpu"
    server.save()

    changes = AuditEvent.objects.filter(event_type="audit.field_change", target_id=str(server.pk))
    assert changes.count() >= 2  # the create and the change
    update = changes.get(details__action="update")
    assert update.details["changes"]["hardware"] == {"before": "cpu", "after": "gpu"}
