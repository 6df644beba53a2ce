"""The Prometheus alert rules (deploy/prometheus/alerts.yml) pass `promtool check rules`, their unit
tests (`promtool test rules alerts_test.yml`), and the example configuration `promtool check config`;
every metric a rule names is one /metrics exposes (docs/metrics.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
    return path


def run(*args: str, cwd: Path) -> str:
    done = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_check_rules():
    assert "SUCCESS: 6 rules found" in run("check", "rules", "alerts.yml", cwd=RULES)


def test_rule_unit_tests():
    assert "SUCCESS" in run("test", "rules", "alerts_test.yml", cwd=RULES)


def test_example_configuration(tmp_path):
    token = tmp_path / "token"
    token.write_text("x")
    config = (RULES / "prometheus.yml").read_text().replace("/etc/prometheus/sovereign-metrics-token", str(token))
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(RULES / "alerts.yml", tmp_path / "alerts.yml")
    assert "SUCCESS" in run("check", "config", "prometheus.yml", cwd=tmp_path)


def test_rules_name_only_exposed_metrics():
    from portal import metrics

    source = Path(metrics.__file__).read_text()
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        for name in set(re.findall(r"\bsovereign_[a-z_]+", rule["expr"])):
            exposed = name.removesuffix("_total")
            assert f'"{exposed}"' in source, f"{rule['alert']} uses {name}, which /metrics does not expose"
