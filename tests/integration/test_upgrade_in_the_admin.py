"""Upgrading the demo model from v1 to v2 with a canary, done by an administrator through the admin's
pages alone in a real browser (issue 16), while a caller calls the model's unversioned route through
the real data plane all along: the administrator logs in (password, then the authenticator's code),
uploads v2, requests a replica set of it, waits for it to be ready, starts a canary 20 → 50 → 100 %
with short holds from the form, and watches it step and promote on the rollout's page. No call fails;
v2 ends at weight 100, v1's set is retired and its replica unloaded; every step is audited to the
administrator. Screenshots of each page go to `<pytest tmp>/upgrade-admin/`.

The controller's ticks (Celery beat's part, `advance_rollouts`) run in the test's loop between page
reloads; the deployments' reconcile and the drained unload run in the real Celery worker."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import tritonclient.http as httpclient
from django.db import connections
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.roles import ADMIN, ANALYST
from apps.accounts.services import issue_token
from apps.audit.models import AuditEvent
from apps.deployments import services
from apps.deployments.models import Deployment, Observed, ReplicaSet, Rollout, RolloutState
from apps.registry.services import register_model_version
from inference_backend.demo_model import build_demo_onnx, build_demo_v2_onnx
from tests.conftest import grant, make_user
from tests.e2e.conftest import browser  # noqa: F401 - the real Chromium, as tests/e2e launch it
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(600),
]

MODEL = "triage-demo"  # the demo model's name (apps/demo/management/commands/bootstrap_demo.py)
PASSWORD = "correct-horse-battery-9"
KEY = b"12345678901234567890"  # the administrator's authenticator key (TOTP, RFC 6238's test key)


class Caller(threading.Thread):
    """Calls the model's unversioned route through the data plane, one call after another, until
    stopped; counts the answers by the version that gave them."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        self.client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
        self.auth = {"Authorization": f"Bearer {token}"}
        self.x = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
        self.versions: dict[str, int] = {}
        self.failed, self.errors = 0, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            inp = httpclient.InferInput("INPUT", list(self.x.shape), "FP32")
            inp.set_data_from_numpy(self.x)
            try:
                version = self.client.infer(MODEL, [inp], headers=dict(self.auth)).get_response()["model_version"]
                self.versions[version] = self.versions.get(version, 0) + 1
            except Exception as err:  # noqa: BLE001 - counted and shown
                self.failed += 1
                self.errors.append(str(err)[:200])

    def calls(self) -> int:
        return sum(self.versions.values()) + self.failed


@pytest.fixture
def dataplane(live_server):
    """As tests/conftest.py's, with more time to start on a machine shared by many test runs."""
    from apps.gateway.dataplane.server import ServerThread

    server = ServerThread().start(timeout=120)
    yield server
    server.stop()


@pytest.fixture
def installation(settings, triton, celery_worker, live_server, dataplane):
    """What bootstrap_demo leaves: the demo model v1 live on the local tritonserver (a replica set of
    one, all the traffic), an administrator with an enrolled authenticator, an analyst's token."""
    settings.ROLLOUT_DRAIN_SECONDS = 2.0
    admin = make_user("ops", ADMIN)
    TOTPDevice.objects.create(user=admin, name="phone", key=KEY.hex(), confirmed=True)
    server = services.register_server(
        name="triton-1", http_url=triton.http_url, metrics_url=triton.metrics_url, hardware="cpu", actor=admin
    )
    v1 = register_model_version(model_name=MODEL, data=build_demo_onnx(), actor=admin)
    rs1 = services.request_replica_set(model_version_id=v1.pk, replicas=1, actor=admin)
    dep1 = wait_for(
        lambda: (d := rs1.deployments.get()).observed_state in (Observed.ACTIVE, Observed.FAILED) and d,
        180,
        "v1 to load",
    )
    assert dep1.observed_state == Observed.ACTIVE, dep1.last_error
    analyst = make_user("clinician-app", ANALYST)
    grant(analyst, v1.model)
    token = issue_token(user=analyst, name="ward", days=1, actor=None)[1]
    dataplane.sync_policy()
    return {"admin": admin, "server": server, "v1": v1, "rs1": rs1, "dep1": dep1, "token": token}


@pytest.fixture
def window(browser):  # noqa: F811 - the fixture imported above
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15000)
    yield tab
    context.close()


class Shots:
    """Screenshots of the pages, numbered in the order they were taken."""

    def __init__(self, page, folder):
        self.page, self.folder, self.n = page, folder, 0
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        self.n += 1
        self.page.screenshot(path=str(self.folder / f"{self.n:02d}-{name}.png"), full_page=True)


def _login(page, base: str) -> None:
    """Password, then the authenticator's current code on the second-factor page."""
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/accounts/2fa/verify/"))
    page.fill("#id_code", f"{totp(KEY):06d}")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))


def _field(page, name: str) -> str:
    """The text of a read-only field on an admin change page."""
    return page.locator(f".field-{name} .readonly").inner_text().strip()


def _tick_and_read(page, rollout_id: int, seen: list) -> str:
    """Beat's part (one controller tick), then what the administrator sees on reloading the page."""
    try:
        services.advance_rollouts()
    finally:
        connections.close_all()
    page.reload()
    state, weights = _field(page, "state").lower().replace(" ", "_"), _field(page, "weights")
    if not seen or seen[-1] != (state, weights):
        seen.append((state, weights))
    return state


def test_an_administrator_upgrades_the_demo_model_in_the_admin_with_no_failed_call(
    installation, window, live_server, dataplane, tmp_path
):
    page = window
    base, admin = live_server.url, installation["admin"]
    shot = Shots(page, tmp_path / "upgrade-admin")
    caller = Caller(dataplane.url, installation["token"])
    caller.start()
    try:
        wait_for(lambda: caller.versions.get("1", 0) >= 5, 60, "the first calls to v1")
        _login(page, base)

        # 1. upload v2 of the demo model
        v2_file = tmp_path / "triage-demo-v2.onnx"
        v2_file.write_bytes(build_demo_v2_onnx())
        page.goto(f"{base}/admin/registry/modelversion/add/")
        page.fill("#id_model_name", MODEL)
        page.set_input_files("#id_upload", str(v2_file))
        shot("upload-v2")
        page.click("input[name=_save]")
        page.locator(".messagelist .success").wait_for()
        v2 = installation["v1"].model.versions.get(version=2)

        # 2. a replica set of v2, placed by the scheduler; wait until it is ready (weight 0: no traffic yet)
        page.goto(f"{base}/admin/deployments/replicaset/add/")
        page.select_option("#id_model_version", label=str(v2))
        page.fill("#id_replicas", "1")
        shot("replica-set-form")
        page.click("input[name=_save]")
        page.locator(".messagelist .success").wait_for()
        rs2 = ReplicaSet.objects.get(model_version=v2)

        def ready() -> bool:
            page.goto(f"{base}/admin/deployments/replicaset/{rs2.pk}/change/")
            return _field(page, "ready_of_desired") == "1 / 1"

        wait_for(ready, 180, lambda: f"v2's set to be ready: {Deployment.objects.filter(replica_set=rs2).first()}")
        assert _field(page, "traffic_weight") == "0"
        shot("replica-set-ready")

        # 3. the canary, from the form: 20 → 50 → 100 %, each held 2 s, rolled back on any failed call
        page.goto(f"{base}/admin/deployments/rollout/add/")
        page.select_option("#id_to_version", label=str(v2))
        page.select_option("#id_strategy", "canary")
        page.fill("#id_steps_text", "20, 50, 100")
        page.fill("#id_hold_seconds", "2")
        page.fill("#id_slo_max_error_rate", "0")
        page.fill("#id_slo_max_p95_ms", "5000")
        page.fill("#id_min_calls", "5")
        shot("rollout-form")
        page.click("input[name=_save]")
        page.locator(".messagelist .success").wait_for()
        rollout = Rollout.objects.get(model=v2.model)
        page.goto(f"{base}/admin/deployments/rollout/{rollout.pk}/change/")
        shot("rollout-started")

        # 4. watch it step and promote
        seen: list[tuple[str, str]] = []
        wait_for(
            lambda: _tick_and_read(page, rollout.pk, seen) in (RolloutState.PROMOTED, RolloutState.ROLLED_BACK),
            180,
            lambda: f"the rollout to finish: {seen[-1:]} {Rollout.objects.get(pk=rollout.pk).reason}",
            interval=0.3,
        )
        shot("rollout-promoted")
        assert seen[-1] == ("promoted", "v1: 0%, v2: 100%"), seen
        # the administrator saw the canary's steps on the page as they happened
        running = [w for s, w in seen if s == "running"]
        assert "v1: 80%, v2: 20%" in running and "v1: 50%, v2: 50%" in running, seen

        # 5. the sets as the administrator sees them: v2 carries all the traffic, v1 retired
        page.goto(f"{base}/admin/deployments/replicaset/?q={MODEL}")
        rows = {
            row.locator(".field-model_version").inner_text().strip(): (
                row.locator(".field-traffic_weight").inner_text().strip(),
                row.locator(".field-state").inner_text().strip(),
            )
            for row in page.locator("#result_list tbody tr").all()
        }
        shot("replica-sets-after")
        assert rows == {str(v2): ("100", "Active"), str(installation["v1"]): ("0", "Retired")}

        # v1's replica leaves routing, then is unloaded after the drain; the calls go on meanwhile, on v2
        dep1 = installation["dep1"]
        wait_for(lambda: Deployment.objects.get(pk=dep1.pk).observed_state == Observed.INACTIVE, 60, "v1 unloaded")
        seen_v2 = caller.versions.get("2", 0)
        wait_for(lambda: caller.versions.get("2", 0) >= seen_v2 + 20, 60, "calls to v2 after v1 was unloaded")
    finally:
        caller.stop.set()
        caller.join(30)

    print(f"\nupgrade in the admin: {caller.calls()} calls {caller.versions}, {caller.failed} failed; pages: {seen}")
    assert caller.failed == 0, caller.errors[:5]
    assert caller.versions.get("1", 0) > 20 and caller.versions.get("2", 0) > 20

    rollout.refresh_from_db()
    assert rollout.state == RolloutState.PROMOTED and rollout.created_by == admin
    trail = AuditEvent.objects.filter(target_type="deployments.rollout", target_id=str(rollout.pk)).order_by("id")
    assert list(trail.values_list("event_type", flat=True)) == [
        "deployment.rollout.start",
        "deployment.rollout.step",
        "deployment.rollout.step",
        "deployment.rollout.step",
        "deployment.rollout.promote",
    ]
    assert {e.actor_id for e in trail} == {admin.pk}  # the controller's work is the administrator's
    assert AuditEvent.objects.filter(event_type="registry.version.create", actor=admin, target_id=str(v2.pk)).exists()
    assert AuditEvent.objects.filter(
        event_type="deployment.replica_set.create", actor=admin, target_id=str(rs2.pk)
    ).exists()
    assert AuditEvent.objects.filter(
        event_type="deployment.undeploy", actor=admin, target_id=str(installation["dep1"].pk)
    ).exists()
    assert ReplicaSet.objects.get(pk=installation["rs1"].pk).state == "retired"
