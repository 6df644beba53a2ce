"""The layering of docs/architecture.md holds, and the contracts that check it can fail.

`make test` runs `lint-imports` before the suite; these tests run it too, on the tree and on a
scratch copy of it with one deliberately wrong import per contract, so a contract that silently
stopped matching anything (a renamed package, a typo in pyproject.toml) fails here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_tree_keeps_every_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A copy of the packages the contracts read, and of the contract code itself."""
    root = tmp_path_factory.mktemp("scratch")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "migrations")
    for package in ("apps", "portal", "inference_backend"):
        shutil.copytree(ROOT / package, root / package, ignore=ignore)
    shutil.copytree(ROOT / "tests" / "architecture", root / "tests" / "architecture", ignore=ignore)
    (root / "tests" / "__init__.py").write_text("")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


WRONG_IMPORTS = [
    # (file, import line, contract that must break, text naming the import)
    ("apps/core/scratch.py", "from apps.registry import models\n", "Apps are layered", "apps.core.scratch"),
    ("apps/audit/scratch.py", "from apps.accounts import models\n", "Apps are layered", "apps.audit.scratch"),
    ("apps/keys/scratch.py", "from apps.registry import models\n", "Apps are layered", "apps.keys.scratch"),
    ("apps/registry/scratch.py", "import apps.deployments.models\n", "Apps are layered", "apps.registry.scratch"),
    ("inference_backend/scratch.py", "import django\n", "inference_backend ships", "inference_backend.scratch"),
    (
        "apps/gateway/scratch.py",
        "from apps.audit import chain\n",
        "Apps import each other only through",
        "apps.gateway.scratch -> apps.audit.chain",
    ),
    (
        "apps/gateway/scratch.py",
        "from apps.deployments import tasks\n",
        "Apps import each other only through",
        "apps.gateway.scratch -> apps.deployments.tasks",
    ),
]


@pytest.mark.parametrize(("path", "line", "contract", "names"), WRONG_IMPORTS)
def test_a_wrong_import_breaks_its_contract(scratch, path, line, contract, names):
    file = scratch / path
    file.write_text(line)
    try:
        result = lint(scratch)
    finally:
        file.unlink()
    assert result.returncode == 1, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert f"{contract}" in broken and names in broken, result.stdout


def test_the_scratch_copy_itself_is_clean(scratch):
    """Without a wrong import the copy keeps every contract (so the breaks above are the lines')."""
    result = lint(scratch)
    assert result.returncode == 0, result.stdout + result.stderr
