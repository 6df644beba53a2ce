"""The operator dashboard draws its charts in a real browser (Chromium) from the portal alone: the
vendored Chart.js and the dashboard's script load under the page's Content-Security-Policy, every
chart has a canvas with pixels on it, nothing goes to another host, the console stays clean, and
the JSON endpoint's refresh redraws (docs/dashboard.md)."""

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client

from apps.accounts.roles import AUDITOR
from apps.compliance.models import ControlResult, EvaluationRun
from apps.observability.services import roll_up_calls
from tests.conftest import make_user, otp_login
from tests.observability.helpers import call, record_sealed

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
BAD = ("error", "warning")  # console message types that fail the test
CHARTS = ["sov-chart-calls", "sov-chart-latency", "sov-chart-errors", "sov-chart-tokens", "sov-chart-compliance"]


def _traffic() -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    llm = {"prompt_tokens": 10, "completion_tokens": 25}
    events = [call("iris", 1, 5.0 + i, now - timedelta(minutes=i % 5)) for i in range(40)]
    events += [call("iris", 1, 300.0, now, status=503, code="triton_unavailable")]
    events += [call("smollm2", 1, 120.0 + i, now - timedelta(minutes=i % 3), llm=llm) for i in range(9)]
    record_sealed(events)
    roll_up_calls()


def _evaluations() -> None:
    """Two finished evaluations (rows of the compliance history, as run_evaluation leaves them)."""
    for passed in (3, 4):
        run = EvaluationRun.objects.create(finished_at=datetime.now(UTC), passed=passed, failed=4 - passed)
        for i in range(4):
            status = "pass" if i < passed else "fail"
            ControlResult.objects.create(run=run, profile="hipaa", control_id=f"c{i}", family="f", status=status)


def _login(page, base: str) -> None:
    client = Client()
    otp_login(client, make_user("audrey", AUDITOR))
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": base}])


def test_dashboard_draws_its_charts_from_the_portal_alone(page, live_server):
    _traffic()
    _evaluations()
    hosts, problems = set(), []
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    page.on(
        "console",
        lambda m: problems.append((m.text, m.location.get("url"))) if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    _login(page, live_server.url)

    page.goto(f"{live_server.url}/admin/")
    page.locator("#sovereign-dashboard[data-drawn='1']").wait_for(state="attached")

    for chart in CHARTS:
        drawn = page.evaluate(
            """id => {
                const canvas = document.getElementById(id);
                const chart = Chart.getChart(canvas);
                const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) painted++;
                return {width: canvas.width, datasets: chart ? chart.data.datasets.length : 0, painted: painted};
            }""",
            chart,
        )
        assert drawn["width"] > 100 and drawn["datasets"] >= 1 and drawn["painted"] > 500, (chart, drawn)
    assert page.locator("#sov-versions tbody tr").count() == 2  # iris v1 and smollm2 v1
    assert "41" in page.locator("#sov-versions tbody tr", has_text="iris").inner_text()
    assert page.locator("#sov-privileged").is_visible()

    page.select_option("#sov-window", "24h")  # a refresh through the JSON endpoint
    page.locator("#sovereign-dashboard[data-drawn='2']").wait_for(state="attached")

    assert page.locator("#sov-error").is_hidden()
    assert hosts == {urlsplit(live_server.url).netloc}, f"requests left the portal: {hosts}"
    assert problems == [], problems


def test_a_chinese_dashboard_labels_its_tokens_chart_and_columns_in_chinese(browser, live_server):
    """A newcomer's Chinese dashboard (the person's own setting, an English browser) said "smollm2 out" /
    "smollm2 in" under the tokens chart, "p50 ms" over the table and "1:21:25 AM" beside "Updated": the
    words now come translated from the page, and times and numbers follow the page's language."""
    from apps.accounts.models import Profile

    _traffic()
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        user = make_user("zhou", AUDITOR)
        Profile.objects.update_or_create(user=user, defaults={"language": "zh-hans"})
        client = Client()
        otp_login(client, user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])
        page.goto(f"{live_server.url}/admin/")
        page.locator("#sovereign-dashboard[data-drawn='1']").wait_for(state="attached")

        legends = page.evaluate(
            "() => Chart.getChart(document.getElementById('sov-chart-tokens')).data.datasets.map(d => d.label)"
        )
        headers = page.locator("#sov-versions thead").inner_text().lower()  # the admin's CSS upper-cases them
        updated = page.locator("#sov-updated").inner_text()
    finally:
        context.close()

    assert "smollm2 输出词元数" in legends and "smollm2 输入词元数" in legends, legends
    assert not any(label.endswith((" out", " in")) for label in legends), legends
    assert "p50（毫秒）" in headers and "p95（毫秒）" in headers and " ms" not in headers, headers
    assert updated and "AM" not in updated and "PM" not in updated, updated
