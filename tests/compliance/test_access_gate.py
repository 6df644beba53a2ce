"""access.api_requires_auth probes every API route of the live URLconf with an anonymous request."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent

from .conftest import check_of, evaluate

pytestmark = pytest.mark.django_db


def test_an_open_api_view_fails_the_gate_check_and_closing_it_passes(settings):
    before = AuditEvent.objects.count()
    status, evidence, _ = evaluate("hipaa", "164.312(d)")
    gate = check_of(evidence, "access.api_requires_auth")
    assert gate["status"] == "pass", gate
    assert "anonymous requests" in gate["probed"]
    assert int(gate["probed"].split()[0]) > 50  # every route and method, not a sample
    assert AuditEvent.objects.count() == before  # probing writes nothing

    settings.ROOT_URLCONF = "tests.compliance.open_urls"
    status, evidence, _ = evaluate("hipaa", "164.312(d)")
    gate = check_of(evidence, "access.api_requires_auth")
    assert status == "fail" and gate["status"] == "fail"
    assert gate.get("answered_without_credentials") == ["GET /api/v1/leak/0/ -> 200"]

    settings.ROOT_URLCONF = "portal.urls"
    assert check_of(evaluate("hipaa", "164.312(d)")[1], "access.api_requires_auth")["status"] == "pass"
