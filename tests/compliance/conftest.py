from __future__ import annotations

import pytest

from apps.compliance.catalog import get_profile
from apps.compliance.checks import Context
from apps.compliance.evaluation import evaluate_control


@pytest.fixture(autouse=True)
def _compliance_dir(settings, tmp_path):
    settings.COMPLIANCE_DIR = tmp_path / "compliance"


def evaluate(profile: str, control_id: str, **options):
    """(status, evidence, remedy) of one control, evaluated now."""
    control = get_profile(profile).control(control_id)
    return evaluate_control(control, Context(profile=profile, options=options))


def check_of(evidence: list[dict], name: str) -> dict:
    return next(e for e in evidence if e["check"] == name)
