"""Private files (keys, secrets, sealed artifacts, reports): one writer for all of them.

The file is written to a temporary name created with ``O_CREAT | O_EXCL`` and mode 0600, so it is
never readable by group or others, whatever the umask (a umask only removes bits; ``fchmod`` then
restores the owner's read and write bits a strict umask such as 0377 would have removed). The data
is written and fsynced before the file takes its final name, so a reader (or a crash) sees either
the old content or the whole new one, never a part; the directory is fsynced after the rename.
On any error the temporary file is removed.

Django-free: the Triton host's keystore (:mod:`inference_backend.kek`) uses it as well as the
portal's apps and settings.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading

PRIVATE_MODE = 0o600
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# Filesystems without hard links answer these to link(); `exclusive` then falls back to O_EXCL.
_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV)


def write_private(
    path: str | os.PathLike,
    data: bytes,
    *,
    exclusive: bool = False,
    tmp_dir: str | os.PathLike | None = None,
    sync: bool = True,
) -> bool:
    """Write `data` to `path` atomically, mode 0600 from creation; create the parent directory
    (0700) if missing.

    `exclusive`: only if `path` does not exist yet (first writer wins); returns False, writing
    nothing, if it does. Otherwise an existing file is replaced and True is returned.
    `tmp_dir`: where the temporary file is created (same filesystem), for a directory whose
    readers must never see a temporary name; defaults to the file's own directory.
    `sync`: fsync the data and the directory (turn off only for transient files such as queue messages).
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    name = f"{os.path.basename(path)}.tmp-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
    tmp = os.path.join(os.fspath(tmp_dir) if tmp_dir is not None else parent, name)
    try:
        _write_new(tmp, data, sync)
        if not exclusive:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails with EEXIST if another writer got there first
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                try:
                    _write_new(path, data, sync)  # no hard links here: create the final name exclusively
                except FileExistsError:
                    return False
        if sync:
            _fsync_dir(parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # after replace() it is gone already; after link() this drops the extra name


def _write_new(path: str, data: bytes, sync: bool) -> None:
    """Create `path` (which must not exist) with mode 0600 and write all of `data`. A partial
    file is removed when this fails after creating it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # the umask may have taken the owner's bits; never adds others'
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    os.close(fd)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | _CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems cannot fsync a directory; the rename is still atomic
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)
