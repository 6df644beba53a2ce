"""inference_backend.private_file.write_private: the one writer of keys, secrets and sealed files."""

from __future__ import annotations

import errno
import os
import stat
import threading

import pytest

from inference_backend import private_file
from inference_backend.private_file import write_private


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


class _Witness:
    """Wraps os.write: at the first write, records the file's mode (through its descriptor), what
    the directory holds and what the final name holds, i.e. what another process would see then."""

    def __init__(self, monkeypatch, path, fail_after: int | None = None):
        self.path, self.fail_after, self.calls = path, fail_after, 0
        self.modes: list[int] = []
        self.final_content: list[bytes | None] = []
        self.listing: list[list[str]] = []
        self._write = os.write
        monkeypatch.setattr(private_file.os, "write", self)

    def __call__(self, fd, data):
        self.calls += 1
        self.modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        self.listing.append(sorted(os.listdir(os.path.dirname(self.path))))
        self.final_content.append(open(self.path, "rb").read() if os.path.exists(self.path) else None)  # noqa: SIM115
        if self.fail_after is not None and self.calls > self.fail_after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._write(fd, bytes(data[:3]))  # a short write: the loop must finish it


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o377])
def test_mode_is_0600_from_creation_whatever_the_umask(tmp_path, monkeypatch, umask, mask):
    path = tmp_path / "secret.key"
    witness = _Witness(monkeypatch, path)
    umask(mask)

    assert write_private(path, b"top secret") is True

    assert witness.modes and all(m == 0o600 for m in witness.modes)  # while being written, too
    assert _mode(path) == 0o600
    assert path.read_bytes() == b"top secret"


def test_creates_the_parent_directory_private(tmp_path):
    path = tmp_path / "new" / "deeper" / "f.bin"

    write_private(path, b"x")

    assert _mode(path.parent) == 0o700
    assert os.listdir(path.parent) == ["f.bin"]  # no temporary file left


def test_replace_is_atomic_readers_see_old_or_new(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old content")
    path.chmod(0o644)
    witness = _Witness(monkeypatch, path)

    write_private(path, b"new content, longer")

    assert witness.final_content and all(c == b"old content" for c in witness.final_content)
    assert path.read_bytes() == b"new content, longer"
    assert _mode(path) == 0o600  # the replaced file's mode is not inherited
    assert os.listdir(tmp_path) == ["f.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old content")
    _Witness(monkeypatch, path, fail_after=1)

    with pytest.raises(OSError, match="No space left"):
        write_private(path, b"new content")

    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_a_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(private_file.os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_private(path, b"data")

    assert os.listdir(tmp_path) == []


def test_exclusive_keeps_an_existing_file(tmp_path):
    path = tmp_path / "kek.bin"
    assert write_private(path, b"first", exclusive=True) is True

    assert write_private(path, b"second", exclusive=True) is False

    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["kek.bin"]


def test_exclusive_race_has_exactly_one_winner(tmp_path):
    path = tmp_path / "kek.bin"
    start, results = threading.Barrier(8), {}

    def writer(i: int) -> None:
        start.wait()
        results[i] = write_private(path, f"writer {i}".encode(), exclusive=True)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    [winner] = [i for i, won in results.items() if won]
    assert path.read_bytes() == f"writer {winner}".encode()
    assert os.listdir(tmp_path) == ["kek.bin"]


def test_exclusive_without_hard_links_falls_back_to_o_excl(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(private_file.os, "link", no_links)
    path = tmp_path / "kek.bin"

    assert write_private(path, b"first", exclusive=True) is True
    assert write_private(path, b"second", exclusive=True) is False

    assert path.read_bytes() == b"first"
    assert _mode(path) == 0o600
    assert os.listdir(tmp_path) == ["kek.bin"]


def test_tmp_dir_keeps_temporary_names_out_of_the_target_directory(tmp_path, monkeypatch):
    queue, staging = tmp_path / "queue", tmp_path / "staging"
    queue.mkdir()
    staging.mkdir()
    witness = _Witness(monkeypatch, queue / "1.msg")

    write_private(queue / "1.msg", b"message", tmp_dir=staging, sync=False)

    assert witness.listing and all(listing == [] for listing in witness.listing)
    assert os.listdir(queue) == ["1.msg"] and os.listdir(staging) == []
