"""Files of the compliance app (attestations, reports): under COMPLIANCE_DIR, directories 0700,
files 0600, written atomically (inference_backend.private_file.write_private)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def directory(kind: str) -> Path:
    path = Path(settings.COMPLIANCE_DIR) / kind
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
