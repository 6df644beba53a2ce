"""The fleet and gateway jobs of issue 17 in real Chromium, in English and in Chinese (tests/e2e/jobs.py):

1. **Servers and their health** (administrator): a server registered from the admin does not answer; the
   deployment requested on it through *Deploy* says which retry it is on and when the next is due, the
   server how many checks failed in a row and why — and the pages refresh themselves while that lasts.
2. **Usage and quotas** (security officer): the usage list sums its rows per model, person and API token;
   a quota set from the admin and then spent to 95 % (through the gateway's own quota gate) is flagged
   near exhaustion; raising it clears the flag. The auditor reads both pages and has no button.
3. **Deploy and roll out** (administrator, real Triton and Celery worker): v2 deployed with *Deploy*
   beside the live v1, a canary 20 → 50 → 100 started from the form, its page following the controller's
   steps by itself, then *Roll back now*. The auditor sees the running rollout without its buttons.

Each job asserts the database and the audit event, and in Chinese that the pages are really Chinese.
Screenshots: <artefacts>/<lang>/<role>/fleet-*.png. The health job runs the reconcile task in this process
(the worker's part): without `celery_worker` its queued tasks reach no worker (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import re
import threading

import pytest
from django.db import connection, connections
from django.utils import translation

from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, SECURITY_OFFICER
from apps.accounts.services import issue_token
from apps.audit.models import AuditEvent
from apps.deployments import services as fleet
from apps.deployments.models import Deployment, InferenceServer, Observed, Rollout, RolloutState
from apps.deployments.tasks import reconcile_deployment_task
from apps.gateway.models import Quota
from apps.gateway.quota import QuotaGate, load_quotas
from apps.gateway.services import record_usage
from apps.registry.services import register_model_version
from inference_backend.client import TritonUnavailable
from inference_backend.demo_model import build_demo_onnx, build_demo_v2_onnx
from tests.conftest import make_user
from tests.e2e.jobs import LANGS, assert_language, axe_serious, dump, go, job_page, shot  # noqa: F401 - job_page: the fixture
from tests.factories import ModelVersionFactory
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
]

UNREACHABLE = "http://127.0.0.1:30399"  # in this worktree's port range; nothing listens there
ZH = "zh-hans"


def _text(page, selector: str = "#content") -> str:
    return page.locator(selector).inner_text()


def _deploy_through_the_admin(page, version, server_name: str) -> Deployment:
    """The model-version list's *Deploy* action: tick the version, run the action, pick the server."""
    go(page, f"/admin/registry/modelversion/?q={version.model.name}")
    page.check(f"input[name=_selected_action][value='{version.pk}']")
    page.select_option("select[name=action]", "deploy")
    page.click("button[name=index]")
    page.select_option("#id_server", label=server_name)
    shot(page, f"fleet-deploy-{version.model.name}-v{version.version}")
    page.click("input[name=apply]")
    page.locator(".messagelist .success").wait_for()
    return Deployment.objects.get(model_version=version, server__name=server_name)


# --- 1. Servers and their health ----------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_an_unreachable_server_says_why_and_counts_its_retries_live(job_page, lang, settings):  # noqa: F811
    settings.ADMIN_LIVE_REFRESH_SECONDS = 1
    page, admin = job_page(ADMIN, lang)
    tag = lang.replace("-", "")
    version = ModelVersionFactory(model_name=f"health-{tag}", data=build_demo_onnx())

    # the administrator registers the server from the admin
    go(page, "/admin/deployments/inferenceserver/add/")
    page.fill("#id_name", f"gone-{tag}")
    page.fill("#id_http_url", UNREACHABLE)
    shot(page, "fleet-server-add")
    page.click("input[name=_save]")
    page.locator(".messagelist .success").wait_for()
    server = InferenceServer.objects.get(name=f"gone-{tag}")
    assert AuditEvent.objects.filter(
        event_type="deployment.server.create", actor=admin, target_id=str(server.pk)
    ).exists()

    # deploys a version on it, and follows the message's link to the deployment
    dep = _deploy_through_the_admin(page, version, server.name)
    page.locator(f".messagelist a[href$='/deployment/{dep.pk}/change/']").click()
    page.wait_for_url(re.compile(rf"/deployment/{dep.pk}/change/$"))
    assert page.locator("#sv-live").count() == 1  # pending: the page refreshes itself

    # the worker's part: the reconcile cannot reach the server and will retry (in this process, so that the
    # page shows the first retry, whatever a Celery worker elsewhere does with the queued task)
    with pytest.raises(TritonUnavailable):
        reconcile_deployment_task(dep.pk)
    connections.close_all()
    dep.refresh_from_db()
    server.refresh_from_db()
    assert server.state == "down" and server.failures >= 1 and server.last_error
    assert dep.observed_state == Observed.FAILED or dep.retries == 1, (dep.observed_state, dep.retries)
    # no reload by the test: the page refreshes itself and now says why it is waiting
    waiting = "服务器无响应：第 1 次重试" if lang == ZH else "server not answering: retry 1 of"
    down = "离线" if lang == ZH else "Down"
    health = page.locator(".field-server_health")
    wait_for(lambda: down in health.inner_text(), 20, "the page to refresh itself with the server's state")
    state = page.locator(".field-state_badge").inner_text()
    assert waiting in state or dep.observed_state == Observed.FAILED, state
    health = health.inner_text()
    assert ("连续检查失败次数" if lang == ZH else "failed checks in a row") in health
    assert server.last_error[:40] in health  # why, in the server's own words
    shot(page, "fleet-deployment-waiting-on-server")

    # a second probe (beat's part) fails too: the server list counts it up by itself
    go(page, "/admin/deployments/inferenceserver/")
    assert page.locator("#sv-live").count() == 1
    before = server.failures
    fleet.probe_server(server.pk)
    connections.close_all()
    row = page.locator("#result_list tr", has_text=server.name)
    counted = f"连续检查失败次数：{before + 1}" if lang == ZH else f"failed checks in a row: {before + 1}"
    wait_for(lambda: counted in row.inner_text(), 20, "the list to refresh itself with the new count")
    assert_language(page, lang)
    if lang == ZH:
        assert "推理服务器" in _text(page)
    shot(page, "fleet-servers-down")
    settings.ADMIN_LIVE_REFRESH_SECONDS = 600  # axe reads a page that holds still: its next reload says so
    page.locator("#sv-live[data-refresh-seconds='600']").wait_for()
    assert not (found := axe_serious(page)), dump(found)


# --- 2. Usage and quotas ------------------------------------------------------------------------------


def _spend(quota: Quota, user, model, tokens: int) -> None:
    """What the data plane does for a chat call: reserve in every applicable window, then settle."""
    limits = load_quotas(connection).applicable(user_id=user.pk, token_id=None, model_id=model.pk)
    assert [q.id for q in limits] == [quota.pk]

    async def call() -> None:
        gate = QuotaGate.from_settings()
        try:
            await gate.settle(await gate.reserve(limits, tokens), tokens)
        finally:
            await gate.close()

    # Playwright's loop lives in this thread: the gate's own loop runs in another
    worker = threading.Thread(target=asyncio.run, args=(call(),))
    worker.start()
    worker.join(30)


@pytest.mark.parametrize("lang", LANGS)
def test_the_officer_reads_usage_and_sets_a_quota_that_is_flagged_near_exhaustion(job_page, lang):  # noqa: F811
    tag = lang.replace("-", "")
    page, officer = job_page(SECURITY_OFFICER, lang)
    clinician = make_user(f"clinician-{tag}", ANALYST)
    model = ModelVersionFactory(model_name=f"notes-{tag}").model
    token = issue_token(user=clinician, name=f"ward-{tag}", days=1, actor=None)[0]
    for i in range(3):  # what the /v1 adapter records at the end of each chat call
        record_usage(request_id=f"use-{tag}-{i}", user_id=clinician.pk, username=clinician.username,
                     token_id=token.pk, model_id=model.pk, model_name=model.name,
                     model_version=1, prompt_tokens=100, completion_tokens=50, ttft_ms=10.0, duration_ms=80.0,
                     finish_reason="stop")  # fmt: skip

    # the usage page: the rows of the last 24 hours summed per model, person and token
    go(page, "/admin/gateway/llmusage/?period=24h")
    per_model = page.locator("#usage-per-model").inner_text()
    per_person = page.locator("#usage-per-user").inner_text()
    assert model.name in per_model and "450" in per_model  # 3 calls × 150 tokens
    assert clinician.username in per_person and "3" in per_person
    assert token.name in page.locator("#usage-per-token").inner_text()
    if lang == ZH:
        assert "按人员" in _text(page) and "令牌总数" in _text(page)
    shot(page, "fleet-usage")
    assert not (found := axe_serious(page)), dump(found)

    # a quota from the admin: 1000 tokens a day for the clinician on this model
    go(page, "/admin/gateway/quota/add/")
    page.select_option("#id_scope", "user")
    page.select_option("#id_user", label=clinician.username)
    page.select_option("#id_model", label=model.name)
    page.fill("#id_tokens_per_day", "1000")
    shot(page, "fleet-quota-add")
    page.click("input[name=_save]")
    page.locator(".messagelist .success").wait_for()
    quota = Quota.objects.get(user=clinician, model=model)
    assert quota.tokens_per_day == 1000 and quota.updated_by == officer
    event = wait_for(lambda: AuditEvent.objects.filter(event_type="llm.quota.set", target_id=str(quota.pk)).first())
    assert event.actor_id == officer.pk and event.details["after"]["tokens_per_day"] == 1000

    # the clinician's calls spend 950 of it: the list flags it near exhaustion
    _spend(quota, clinician, model, 950)
    go(page, "/admin/gateway/quota/")
    row = page.locator("#result_list tbody tr", has_text=clinician.username)
    assert "950 / 1000 (95%)" in row.locator(".field-used_today").inner_text()
    flag = "即将耗尽" if lang == ZH else "near exhaustion"
    assert flag in row.inner_text()
    assert clinician.username in page.locator("#quotas-near-exhaustion").inner_text()
    shot(page, "fleet-quota-near-exhaustion")
    assert not (found := axe_serious(page)), dump(found)

    # raised to 2000: audited with the limit before, and no longer flagged
    go(page, f"/admin/gateway/quota/{quota.pk}/change/")
    page.fill("#id_tokens_per_day", "2000")
    page.click("input[name=_save]")
    page.locator(".messagelist .success").wait_for()
    raised = wait_for(
        lambda: AuditEvent.objects.filter(event_type="llm.quota.set", target_id=str(quota.pk)).order_by("-id").first()
    )
    assert raised.details["before"]["tokens_per_day"] == 1000 and raised.details["after"]["tokens_per_day"] == 2000
    assert page.locator("#quotas-near-exhaustion").count() == 0
    assert flag not in page.locator("#result_list").inner_text()
    assert_language(page, lang)
    shot(page, "fleet-quota-raised")

    # the auditor reads usage and quotas, and has no button to change them
    audit_page, _auditor = job_page(AUDITOR, lang)
    go(audit_page, "/admin/gateway/quota/")
    assert clinician.username in _text(audit_page)
    assert (
        audit_page.locator(".object-tools a.addlink").count() == 0
        and audit_page.locator("select[name=action]").count() == 0
    )
    shot(audit_page, "fleet-quotas-read-only")
    go(audit_page, f"/admin/gateway/quota/{quota.pk}/change/")
    assert audit_page.locator("input[name=_save]").count() == 0
    assert go(audit_page, "/admin/gateway/quota/add/").status == 403
    go(audit_page, "/admin/gateway/llmusage/")
    assert model.name in audit_page.locator("#usage-per-model").inner_text()
    shot(audit_page, "fleet-usage")


# --- 3. Deploy and roll out, with a real Triton ---------------------------------------------------------


@pytest.fixture
def live_v1(settings, triton, celery_worker, live_server):
    """A server, and v1 of a model loaded on it (a set of one with all the traffic), as bootstrap leaves it."""

    def make(lang: str, admin):
        settings.ROLLOUT_DRAIN_SECONDS = 1.0
        settings.ADMIN_LIVE_REFRESH_SECONDS = 1
        tag = lang.replace("-", "")
        server = fleet.register_server(name=f"triton-{tag}", http_url=triton.http_url, hardware="cpu", actor=admin)
        v1 = register_model_version(model_name=f"triage-{tag}", data=build_demo_onnx(), actor=admin)
        rs1 = fleet.request_replica_set(model_version_id=v1.pk, replicas=1, actor=admin)
        dep1 = wait_for(
            lambda: (d := rs1.deployments.get()).observed_state in (Observed.ACTIVE, Observed.FAILED) and d,
            120,
            "v1 to load",
        )
        assert dep1.observed_state == Observed.ACTIVE, dep1.last_error
        v2 = register_model_version(model_name=v1.model.name, data=build_demo_v2_onnx(), actor=admin)
        return server, v1, v2

    return make


@pytest.mark.parametrize("lang", LANGS)
def test_the_administrator_deploys_v2_starts_a_canary_watches_it_and_rolls_back(job_page, live_v1, lang):  # noqa: F811
    page, admin = job_page(ADMIN, lang)
    server, v1, v2 = live_v1(lang, admin)

    # deploy v2 beside v1 (it joins no traffic: weight 0) and wait until it is loaded
    dep2 = _deploy_through_the_admin(page, v2, server.name)
    assert AuditEvent.objects.filter(event_type="deployment.request", actor=admin, target_id=str(dep2.pk)).exists()
    page.locator(f".messagelist a[href$='/deployment/{dep2.pk}/change/']").click()
    active = "活动" if lang == ZH else "Active"
    page.locator(".field-state_badge .sv-badge--active").wait_for(timeout=120_000)  # the page refreshes itself
    assert active in page.locator(".field-state_badge").inner_text()
    shot(page, "fleet-v2-loaded")

    # the canary, from the form: 20 → 50 → 100 %, each step waiting for 20 calls (none come: it holds)
    go(page, "/admin/deployments/rollout/add/")
    page.select_option("#id_to_version", label=str(v2))
    page.select_option("#id_strategy", "canary")
    page.fill("#id_steps_text", "20, 50, 100")
    page.fill("#id_hold_seconds", "2")
    page.fill("#id_min_calls", "20")
    if lang == ZH:
        assert "每步最少调用数" in _text(page) and "金丝雀" in _text(page)
    shot(page, "fleet-rollout-form")
    page.click("input[name=_save]")
    page.locator(".messagelist .success").wait_for()
    rollout = Rollout.objects.get(model=v1.model)
    page.wait_for_url(re.compile(rf"/rollout/{rollout.pk}/change/$"))

    # the controller's ticks (beat's part) step it to 20 %; the page, reloading itself, follows
    def weights_on_the_page() -> str:
        fleet.advance_rollouts()
        connections.close_all()
        return page.locator(".field-weights .readonly").inner_text()

    wait_for(lambda: "v2: 20%" in weights_on_the_page(), 60, "the first step on the rollout's page", interval=0.5)
    assert page.locator(".field-weights .readonly").inner_text() == "v1: 80%, v2: 20%"
    state = page.locator(".field-state .readonly").inner_text()
    with translation.override(lang):  # the catalogue's word ("Running" is shared with the KEK rotation's state)
        assert state == translation.gettext("Running") and (lang != ZH or state != "Running")
    assert ("立即回滚" if lang == ZH else "Roll back now") in page.locator(".object-tools").inner_text()
    shot(page, "fleet-rollout-running")

    # the auditor watches the same page: no button steers it, and no rollout can be started
    audit_page, _auditor = job_page(AUDITOR, lang)
    go(audit_page, f"/admin/deployments/rollout/{rollout.pk}/change/")
    assert audit_page.locator(".field-weights .readonly").inner_text() == "v1: 80%, v2: 20%"
    assert audit_page.locator("form.rollout-action").count() == 0
    assert go(audit_page, "/admin/deployments/rollout/add/").status == 403
    shot(audit_page, "fleet-rollout-watched")

    # the administrator rolls it back from the page
    page.click("button[name=rollout_rollback]")
    page.locator(".messagelist .success").wait_for()
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.ROLLED_BACK
    assert page.locator(".field-weights .readonly").inner_text() == "v1: 100%, v2: 0%"
    assert ("已回滚" if lang == ZH else "Rolled Back") in page.locator(".field-state .readonly").inner_text()
    assert_language(page, lang)
    shot(page, "fleet-rollout-rolled-back")
    assert not (found := axe_serious(page)), dump(found)  # finished: the page no longer reloads itself
    trail = list(
        AuditEvent.objects.filter(target_type="deployments.rollout", target_id=str(rollout.pk))
        .order_by("id")
        .values_list("event_type", "actor_id")
    )
    assert trail == [
        ("deployment.rollout.start", admin.pk),
        ("deployment.rollout.step", admin.pk),
        ("deployment.rollout.rollback", admin.pk),
    ], trail
