"""Streaming writes into the artifact store: ciphertext only, mode 0600 from creation, hashed on
the way. (Single-file artifacts use inference_backend.private_file.write_private; a set of
multi-GB files is encrypted chunk by chunk straight into its file.)"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class PrivateSink:
    """A new file opened O_CREAT|O_EXCL, mode 0600 (parent 0700), that hashes what is written.
    `close()` fsyncs; `discard()` closes and removes it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._hash = hashlib.sha256()
        self.bytes = 0

    def write(self, data) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self.bytes += len(view)
        while view:
            n = self._file.write(view)
            view = view[n:]
        return self.bytes

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        if not self._file.closed:
            os.fsync(self._file.fileno())
            self._file.close()

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)
