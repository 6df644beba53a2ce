"""Locate the tritonserver shipped in the ``nvidia-pytriton`` wheel and build a backend directory for it.

The wheel does not place a python backend stub where the server looks for it
(``<backend-directory>/python/triton_python_backend_stub``); rather than writing into
site-packages, each local server gets a backend directory of its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import sys
from pathlib import Path


class TritonStartError(Exception):
    """The local tritonserver could not be started or did not become ready."""


def wheel_paths() -> tuple[Path, Path, Path]:
    """Return (``pytriton/tritonserver`` dir, ``nvidia_pytriton.libs`` dir, the stub for this Python)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise TritonStartError(
            f"the tritonserver of nvidia-pytriton runs on x86-64 Linux only (this is {sys.platform}/"
            f"{platform.machine()}); run Triton in its container instead"
        )
    spec = importlib.util.find_spec("pytriton")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError("nvidia-pytriton is not installed: `pip install nvidia-pytriton` in this virtualenv")
    pytriton_dir = Path(next(iter(spec.submodule_search_locations)))
    server_dir = pytriton_dir / "tritonserver"
    libs_dir = pytriton_dir.parent / "nvidia_pytriton.libs"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    for required in (server_dir / "bin" / "tritonserver", libs_dir, stub):
        if not required.exists():
            raise TritonStartError(f"incomplete nvidia-pytriton install: {required} is missing (Python {version})")
    return server_dir, libs_dir, stub


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def prepare_backend_directory(backend_directory: Path) -> tuple[Path, Path]:
    """Fill ``backend_directory/python`` and return (tritonserver binary, shared library dir).

    The two backend files are symlinked; the stub is copied, because the server executes
    it from the backend directory. The stub's own RUNPATH points into the wheel, so the
    server (and the stubs it spawns) need the library dir on ``LD_LIBRARY_PATH``.
    """
    server_dir, libs_dir, stub = wheel_paths()
    python_backend = backend_directory / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _link(server_dir / "backends" / "python" / name, python_backend / name)
    stub_copy = python_backend / "triton_python_backend_stub"
    source = stub.stat()
    current = stub_copy.stat() if stub_copy.exists() else None
    if current is None or (current.st_size, current.st_mtime_ns) != (source.st_size, source.st_mtime_ns):
        tmp = stub_copy.with_name(f".stub.{os.getpid()}.tmp")
        shutil.copy2(stub, tmp)  # keeps the mtime, so an unchanged stub is not copied again
        os.chmod(tmp, 0o755)  # noqa: S103 - an executable, like the wheel's own copy
        os.replace(tmp, stub_copy)
    return server_dir / "bin" / "tritonserver", libs_dir
