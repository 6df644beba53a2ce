"""The dashboard on the admin index and its JSON endpoint (docs/dashboard.md): staff only, each
section for whom its permission covers, the audit log's read recorded, a policy that lets only the
portal's own scripts run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, SECURITY_OFFICER
from apps.audit.models import AuditEvent
from apps.deployments.models import DeploymentTransition, Observed
from apps.observability.services import roll_up_calls
from tests.conftest import grant, make_user, otp_login
from tests.factories import DeploymentFactory, ModelVersionFactory

from .helpers import call, record_sealed

pytestmark = pytest.mark.django_db
DATA = "/admin/dashboard/data.json"


def signed_in(role: str, name: str) -> tuple[Client, object]:
    user = make_user(name, role)
    client = Client()
    otp_login(client, user)
    return client, user


@pytest.fixture
def traffic():
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    record_sealed([call("iris", 1, float(ms), now - timedelta(minutes=2)) for ms in range(1, 21)])
    roll_up_calls()


def test_admin_role_sees_figures_fleet_and_failed_deploys_but_not_the_audit_log(traffic):
    failed = DeploymentFactory(observed_state=Observed.FAILED)
    DeploymentTransition.objects.create(deployment=failed, from_state="loading", to_state="failed", message="no GPU")
    client, _ = signed_in(ADMIN, "ops")
    searches = AuditEvent.objects.filter(event_type="audit.search").count()

    page = client.get("/admin/")
    data = client.get(DATA).json()

    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="sov-chart-calls"' in html and "vendor/chart.js/chart.umd.js" in html
    assert (
        "script-src 'self';" in page["Content-Security-Policy"]
        and "unsafe-inline" not in page["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    )
    assert 'id="sov-privileged"' not in html  # the admin role does not read the audit log
    assert AuditEvent.objects.filter(event_type="audit.search").count() == searches
    initial = json.loads(html.split('id="dashboard-initial" type="application/json">')[1].split("</script>")[0])
    assert initial["calls"]["versions"][0]["calls"] == 20
    (iris,) = data["calls"]["versions"]
    assert {k: v for k, v in iris.items() if not k.endswith("_ms")} == {
        "model": "iris", "version": 1, "calls": 20, "errors": 0, "denied": 0, "tokens_in": 0, "tokens_out": 0,
        "error_rate": 0.0,
    }  # fmt: skip
    assert 10 <= iris["p50_ms"] <= 15 and 15 <= iris["p95_ms"] <= 20  # 1..20 ms: buckets [10, 15) and [15, 20)
    assert [d["reason"] for d in data["failed_deploys"]] == ["no GPU"]
    assert data["fleet"]["servers"][0]["name"] == failed.server.name


def test_auditor_sees_recent_privileged_actions_and_the_read_is_recorded(traffic):
    version = ModelVersionFactory(model_name="iris")
    reader = make_user("reader", ANALYST)
    grant(reader, version.model)
    client, auditor = signed_in(AUDITOR, "audrey")

    html = client.get("/admin/").content.decode()

    table = html.split('id="sov-privileged"')[1].split("</table>")[0]
    assert "access.grant.create" in table and "registry.version.create" in table
    assert "inference.infer" not in table  # calls are figures, not privileged actions
    read = AuditEvent.objects.filter(event_type="audit.search", actor_id=auditor.pk).latest("id")
    assert read.details["dashboard"] is True and read.details["shown"] >= 2


def test_officer_sees_only_key_events_among_privileged_actions(traffic):
    ModelVersionFactory(model_name="iris")  # registry.version.create: not a key event
    client, _ = signed_in(SECURITY_OFFICER, "sofia")

    html = client.get("/admin/").content.decode()

    table = html.split('id="sov-privileged"')[1].split("</table>")[0]
    assert "registry.version.create" not in table


@pytest.mark.parametrize("role", [None, ANALYST])
def test_non_staff_are_sent_to_the_login_page(role):
    client = Client()
    if role:
        client.force_login(make_user("alice", role))

    for url in ("/admin/", DATA):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), url


def test_unknown_window_is_refused_with_a_code():
    client, _ = signed_in(ADMIN, "ops")

    response = client.get(DATA, {"window": "1y"})

    assert response.status_code == 400 and response.json()["code"] == "invalid_window"
    for window in ("1h", "24h", "7d"):
        assert client.get(DATA, {"window": window}).json()["calls"]["window"] == window


def test_app_list_names_are_readable():
    client, _ = signed_in(SECURITY_OFFICER, "sofia")

    html = client.get("/admin/").content.decode()

    assert "Login lockouts" in html and "Second factor (TOTP devices)" in html
    assert ">Otp_Totp<" not in html and ">Axes<" not in html
