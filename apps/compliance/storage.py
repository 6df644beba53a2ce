"""Files of the compliance app (attestations, reports): under COMPLIANCE_DIR, directories 0700,
files 0600, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings


def directory(kind: str) -> Path:
    path = Path(settings.COMPLIANCE_DIR) / kind
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 (never readable by others, even for a moment)."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    partial.replace(path)
