"""Refusals in the asker's language (issue 17; apps/core/errors.py, docs/i18n.md).

A source guard: every `detail` a service raises — ServiceError, NotFound, Conflict and every other
subclass, get_or_404's, and the detail of any helper that hands its own parameter on as one (found
here, not listed by hand) — is a `_("…")` call or a `%` of one, so a new English-only refusal fails
the suite. A detail that is not ours to translate (Django's already translated validator messages,
the inference server's own words) says so with an `# i18n-ok: <why>` comment on the call.

Then the behaviour: the same `code`, the `detail` in Chinese for an API client sending
`Accept-Language: zh-hans` and in English without; a refused admin action on a Chinese page shows
the Chinese text with the code; the audit event of a refusal keeps its reason in English."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.utils import translation

from apps.core.errors import NotFound, ServiceError, _, english

ROOT = Path(__file__).resolve().parents[2]
BASE = {"ServiceError"}
MARK = "i18n-ok:"


@dataclass(frozen=True)
class Site:
    path: str
    line: int
    text: str


def _sources() -> dict[str, ast.Module]:
    out = {}
    for path in sorted((ROOT / "apps").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        out[str(path.relative_to(ROOT))] = ast.parse(path.read_text(), filename=str(path))
    return out


def _name(func) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _is_translated(node) -> bool:
    if isinstance(node, ast.Call) and _name(node.func) == "_":
        return True
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and _is_translated(node.left)


def _params(func) -> list[str]:
    return [a.arg for a in (*func.args.posonlyargs, *func.args.args)]


class _Walker(ast.NodeVisitor):
    """Each refusal call with the function (and class) it is in."""

    def __init__(self):
        self.stack: list = []
        self.calls: list[tuple[ast.Call, ast.AST | None, ast.ClassDef | None]] = []

    def visit_ClassDef(self, node):
        self.stack.append(node)
        self.generic_visit(node)
        self.stack.pop()

    def visit_FunctionDef(self, node):
        self.stack.append(node)
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node):
        func = next((n for n in reversed(self.stack) if not isinstance(n, ast.ClassDef)), None)
        cls = next((n for n in reversed(self.stack) if isinstance(n, ast.ClassDef)), None)
        self.calls.append((node, func, cls))
        self.generic_visit(node)


def _module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def _imported(path: str, tree: ast.Module) -> dict[str, str]:
    """The names a module imports from another module of apps/: name → that module's path."""
    package = path.rsplit("/", 1)[0].replace("/", ".")
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                out[alias.asname or alias.name] = _module_path(module)
    return out


def _helper(helpers, imports, path: str, func) -> int | None:
    """The detail's position when `func` names a helper: one of this module or one it imports; an
    attribute call (`wire.bad(...)`) matches a helper of that name when only one module has one."""
    if isinstance(func, ast.Name):
        if (path, func.id) in helpers:
            return helpers[(path, func.id)]
        source = imports[path].get(func.id)
        return helpers.get((source, func.id)) if source else None
    if isinstance(func, ast.Attribute):
        found = [index for (_p, name), index in helpers.items() if name == func.attr]
        return found[0] if len(found) == 1 else None
    return None


def _detail(call: ast.Call, index: int):
    for kw in call.keywords:
        if kw.arg == "detail":
            return kw.value
    if any(isinstance(a, ast.Starred) for a in call.args[: index + 1]):
        return None
    return call.args[index] if len(call.args) > index else None


def refusal_sites() -> tuple[list[Site], dict[str, int]]:
    """(the detail arguments that are not translated, the callables checked with their detail's
    position). A class is a refusal when it derives from ServiceError; a function or class whose
    own parameter becomes a refusal's detail is checked at its callers instead (to a fixpoint)."""
    trees = _sources()
    classes: dict[str, list[str]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = [b for b in (_name(base) for base in node.bases) if b]
    family = set(BASE)
    while grown := {c for c, bases in classes.items() if c not in family and family & set(bases)}:
        family |= grown
    walked = {}
    for path, tree in trees.items():
        walker = _Walker()
        walker.visit(tree)
        walked[path] = walker.calls
    # The detail's position in each checked callable (positional, without self).
    checked = {name: 1 for name in family} | {"get_or_404": 2}
    overridden = {}  # classes whose __init__ takes no (code, detail): their callers pass no detail
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in family:
                init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
                if init is not None:
                    params = _params(init)[1:]
                    overridden[node.name] = params.index("detail") if "detail" in params else None
    for name, index in overridden.items():
        if index is None:
            checked.pop(name, None)
        else:
            checked[name] = index
    helpers: dict[tuple[str, str], int] = {}  # (module path, function) → the detail's position
    imports = {path: _imported(path, tree) for path, tree in trees.items()}
    bad: list[Site] = []
    changed = True
    while changed:
        changed, bad = False, []
        for path, calls in walked.items():
            text = (ROOT / path).read_text()
            lines = text.splitlines()
            for call, func, cls in calls:
                name = _name(call.func)
                is_super = (
                    name == "__init__"
                    and isinstance(call.func, ast.Attribute)
                    and isinstance(call.func.value, ast.Call)
                    and _name(call.func.value.func) == "super"
                    and cls is not None
                    and cls.name in family
                )
                helper = _helper(helpers, imports, path, call.func)
                if is_super:
                    index = 1
                elif helper is not None:
                    index = helper
                elif name in checked and not (name == "get_or_404" and path == "apps/core/errors.py"):
                    index = checked[name]
                else:
                    continue
                detail = _detail(call, index)
                if detail is not None and _is_translated(detail):
                    if imports[path].get("_") != "apps/core/errors.py" and path != "apps/core/errors.py":
                        # Django's own gettext would translate, but forget the English for the audit
                        bad.append(Site(path, call.lineno, "_ is not apps.core.errors._ here"))
                    continue
                if detail is None:
                    continue
                if any(MARK in line for line in lines[call.lineno - 1 : call.end_lineno]):
                    continue
                if isinstance(detail, ast.Name) and func is not None and detail.id in _params(func):
                    params = _params(func)
                    position = params.index(detail.id) - (1 if params and params[0] in ("self", "cls") else 0)
                    if func.name == "__init__" and cls is not None:
                        if checked.get(cls.name) != position:
                            checked[cls.name] = position
                            changed = True
                    elif (path, func.name) not in helpers:
                        helpers[(path, func.name)] = position
                        changed = True
                    continue
                bad.append(Site(path, call.lineno, ast.get_source_segment(text, detail)))
    checked |= {name: index for (_path, name), index in helpers.items()}
    return bad, checked


def test_every_refusal_detail_is_translated():
    bad, checked = refusal_sites()
    # The discovery found the family and the helpers that hand a detail on (a guard that checks
    # nothing would pass too).
    assert {"ServiceError", "NotFound", "Conflict", "Forbidden", "TokenRejected", "get_or_404"} <= set(checked)
    assert {"_invalid", "bad", "invalid", "_refuse"} <= set(checked)
    assert not bad, "refusals whose detail is not a _() call:\n" + "\n".join(
        f"  {s.path}:{s.line}: {s.text[:100]}" for s in bad
    )


def test_the_guard_finds_an_english_refusal(tmp_path, monkeypatch):
    """The guard itself fails on an f-string detail, a concatenation and a helper's English detail."""
    sample = ROOT / "apps" / "core" / "_guard_sample.py"
    sample.write_text(
        "from apps.core.errors import Conflict, ServiceError, _\n\n\n"
        "def helper(detail, field):\n"
        "    return ServiceError('x', detail, field=field)\n\n\n"
        "def refuse(name):\n"
        "    raise Conflict('taken', f'{name} is taken')\n\n\n"
        "def refuse2(name):\n"
        "    raise Conflict('taken', _('%(name)s is') % {'name': name} + ' taken')\n\n\n"
        "def refuse3():\n"
        "    raise helper('in English', 'name')\n\n\n"
        "def fine(name):\n"
        "    raise helper(_('%(name)s is taken') % {'name': name}, 'name')\n"
    )
    try:
        bad, checked = refusal_sites()
    finally:
        sample.unlink()
    found = {s.line for s in bad if s.path == "apps/core/_guard_sample.py"}
    assert found == {9, 13, 17}
    assert checked["helper"] == 0


def test_a_refusal_remembers_its_english():
    with translation.override("zh-hans"):
        err = NotFound(
            "model_version_not_found", _("no model version with id %(model_version_id)s") % {"model_version_id": 7}
        )
        assert err.detail == "没有 id 为 7 的模型版本"
    assert err.detail_en == "no model version with id 7"
    assert err.as_dict() == {"code": "model_version_not_found", "detail": "没有 id 为 7 的模型版本"}
    assert english("plain") == "plain"
    assert ServiceError("x", "plain").detail_en == "plain"


# --- the behaviour -------------------------------------------------------------------------------

TOKENS = "/api/v1/accounts/tokens/"


@pytest.mark.django_db
def test_an_api_refusal_keeps_its_code_and_speaks_the_clients_language(staff_client):
    """A bearer-token client: the same code and status, the detail in the language it asks for."""
    body = {"model_version": 999_999, "server": 999_999}
    english = staff_client.post("/api/v1/deployments/deployments/", body, format="json")
    chinese = staff_client.post(
        "/api/v1/deployments/deployments/", body, format="json", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9"
    )

    assert english.status_code == chinese.status_code == 404
    assert english.json()["code"] == chinese.json()["code"] == "model_version_not_found"
    assert english.json()["detail"] == "no model version with id 999999"
    assert chinese.json()["detail"] == "没有 id 为 999999 的模型版本"


@pytest.mark.django_db
def test_a_session_refusal_with_a_field_speaks_chinese(plain_user, settings):
    from tests.conftest import session_client

    client = session_client(plain_user)
    english = client.post(TOKENS, {"name": "ci", "days": 0}, format="json")
    chinese = client.post(TOKENS, {"name": "ci", "days": 0}, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans")

    assert english.status_code == chinese.status_code == 400
    assert english.json()["code"] == chinese.json()["code"] == "invalid_expiry"
    assert english.json()["field"] == chinese.json()["field"] == "days"
    max_days = settings.TOKEN_MAX_DAYS
    assert english.json()["detail"] == f"expiry must be between 1 and {max_days} days"
    assert chinese.json()["detail"] == f"有效期必须在 1 到 {max_days} 天之间"


@pytest.mark.django_db
def test_a_refused_admin_action_on_a_chinese_page_shows_chinese_and_the_code(admin_user):
    """Deploying a version onto a server that already serves it: the admin's add form shows the
    refusal in Chinese, with the stable code."""
    from django.test import Client

    from apps.deployments.models import Deployment
    from tests.conftest import otp_login
    from tests.factories import DeploymentFactory, ModelVersionFactory

    browser = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    otp_login(browser, admin_user)
    mv = ModelVersionFactory(model_name="triage", actor=admin_user)
    existing = DeploymentFactory(model_version=mv)

    resp = browser.post(
        "/admin/deployments/deployment/add/",
        {
            "model_version": mv.pk,
            "server": existing.server.pk,
            "max_batch_size": 8,
            "dynamic_batching": "on",
            "preferred_batch_sizes": "[]",
            "max_queue_delay_us": 100,
            "instance_count": 1,
            "kind": "KIND_CPU",
        },
        follow=True,
    )

    page = resp.content.decode()
    assert resp.status_code == 200
    # capfirst: the message starts with the model's name, capitalised
    assert f"Triage 的版本 {mv.version} 在 {existing.server.name} 上已有活动部署 (already_deployed)" in page
    assert "already has an active deployment" not in page
    assert list(Deployment.objects.all()) == [existing]


@pytest.mark.django_db
def test_the_audit_event_of_a_refusal_keeps_its_reason_in_english(admin_user):
    """A refusal raised in Chinese is shown in Chinese, and audited in English (searchable and
    exportable whatever the actor's language)."""
    from apps.audit.models import AuditEvent
    from apps.deployments.services import request_deployment
    from tests.factories import InferenceServerFactory, ModelVersionFactory

    mv = ModelVersionFactory(model_name="triage", actor=admin_user)
    server = InferenceServerFactory(name="edge-1", backends=["onnxruntime"])

    with translation.override("zh-hans"), pytest.raises(ServiceError) as info:
        request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=admin_user)

    assert info.value.code == "backend_unavailable"
    assert "需要" in info.value.detail and "edge-1" in info.value.detail
    reason = AuditEvent.objects.get(event_type="deployment.request.rejected").details["reason"]
    assert reason == info.value.detail_en
    assert reason.endswith("backend; server edge-1 declares onnxruntime")
