"""`make run` attaches HIPAA and 等保 to the demo installation and prints what a first evaluation
finds, control by control; a second run attaches nothing twice."""

from __future__ import annotations

import io

import pytest

from apps.compliance.catalog import get_profile
from apps.compliance.models import EvaluationRun, ProfileAttachment
from apps.demo.management.commands.bootstrap_demo import DEMO_PROFILES, Command, ensure_demo_accounts

pytestmark = pytest.mark.django_db


def test_the_demo_prints_a_pass_fail_list_per_profile_and_attaches_once():
    officer = ensure_demo_accounts()["demo-officer"].user
    out = io.StringIO()
    command = Command(stdout=out)
    command._compliance(officer)
    command._compliance(officer)

    assert sorted(ProfileAttachment.objects.values_list("profile", flat=True)) == sorted(DEMO_PROFILES)
    assert EvaluationRun.objects.count() == 2
    text = out.getvalue()
    for profile in DEMO_PROFILES:
        assert text.count(f"\n{profile}: ") == 2
        for control in get_profile(profile).controls_for({}):
            assert f" {control.id}: " in text, control.id
    # A development install does not meet everything, and says so (SQLite or SoftHSM, no TLS).
    assert "FAIL" in text and "PASS" in text
    assert "evaluate_compliance" in text
