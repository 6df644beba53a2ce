"""Unit tests of inference_backend.kek."""

import multiprocessing
import os
import stat
import threading

import pytest

from inference_backend.envelope import generate_dek
from inference_backend.kek import KekError, LocalKeystoreProvider, provider_from_env


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_creates_private_keystore(tmp_path):
    path = tmp_path / "new" / "kek.bin"
    provider = LocalKeystoreProvider(path)
    kek_id = provider.kek_id
    assert path.stat().st_size == 32
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert kek_id.startswith("local:") and len(kek_id) == len("local:") + 16
    int(kek_id.removeprefix("local:"), 16)
    assert kek_id.removeprefix("local:") not in path.read_bytes().hex()  # the id is not the key
    assert not [p for p in path.parent.iterdir() if p.name != "kek.bin"]  # no temporary file left behind


def test_wrap_unwrap_round_trip_and_reload(tmp_path):
    path = tmp_path / "kek.bin"
    provider = LocalKeystoreProvider(path)
    dek = generate_dek()
    wrapped = provider.wrap(dek)
    assert dek not in wrapped and len(wrapped) == 40  # RFC 5649: 32-byte key + 8-byte integrity block
    again = LocalKeystoreProvider(path)  # a second process/host reading the same keystore
    assert again.kek_id == provider.kek_id
    assert again.unwrap(wrapped, provider.kek_id) == dek


def test_refuses_group_or_world_readable_file(tmp_path):
    path = tmp_path / "kek.bin"
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    with pytest.raises(KekError, match=r"chmod 600") as err:
        LocalKeystoreProvider(path).kek_id
    assert str(path) in str(err.value)
    path.chmod(0o640)
    with pytest.raises(KekError, match=r"0640"):
        LocalKeystoreProvider(path).wrap(generate_dek())
    path.chmod(0o600)
    assert LocalKeystoreProvider(path).kek_id.startswith("local:")


@pytest.mark.parametrize("size", [0, 16, 33])
def test_refuses_wrong_size(tmp_path, size):
    path = tmp_path / "kek.bin"
    path.write_bytes(os.urandom(size))
    path.chmod(0o600)
    with pytest.raises(KekError, match=f"holds {size} bytes"):
        LocalKeystoreProvider(path).kek_id


def _kek_id_in_child(path, barrier, queue):
    barrier.wait()
    queue.put(LocalKeystoreProvider(path).kek_id)


def test_concurrent_creation_by_processes_agrees_on_one_key(tmp_path):
    path = str(tmp_path / "keystore" / "kek.bin")
    ctx = multiprocessing.get_context("fork")
    count = 8
    barrier, queue = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=_kek_id_in_child, args=(path, barrier, queue)) for _ in range(count)]
    for proc in procs:
        proc.start()
    ids = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert len(set(ids)) == 1
    assert ids[0] == LocalKeystoreProvider(path).kek_id
    assert os.listdir(os.path.dirname(path)) == ["kek.bin"]


def test_concurrent_creation_by_threads_agrees_on_one_key(tmp_path):
    path = tmp_path / "kek.bin"
    barrier, ids, errors = threading.Barrier(8), [], []

    def worker():
        barrier.wait()
        try:
            ids.append(LocalKeystoreProvider(path).kek_id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(ids)) == 1 and len(ids) == 8


def test_unwrap_with_another_kek_is_refused(tmp_path):
    mine = LocalKeystoreProvider(tmp_path / "a" / "kek.bin")
    other = LocalKeystoreProvider(tmp_path / "b" / "kek.bin")
    assert mine.kek_id != other.kek_id
    wrapped = other.wrap(generate_dek())
    with pytest.raises(KekError, match=rf"wrapped with KEK {other.kek_id}, this host has KEK {mine.kek_id}"):
        mine.unwrap(wrapped, other.kek_id)
    # Even if a caller lies about the KEK id, a foreign wrapped key does not unwrap.
    with pytest.raises(KekError, match="does not unwrap"):
        mine.unwrap(wrapped, mine.kek_id)


@pytest.mark.parametrize("mangle", [lambda w: w[:-1], lambda w: bytes([w[0] ^ 1]) + w[1:], lambda w: b""])
def test_corrupt_wrapped_key_is_refused(tmp_path, mangle):
    provider = LocalKeystoreProvider(tmp_path / "kek.bin")
    wrapped = provider.wrap(generate_dek())
    with pytest.raises(KekError, match="does not unwrap"):
        provider.unwrap(mangle(wrapped), provider.kek_id)


def test_provider_from_env(tmp_path):
    provider = provider_from_env({"SOVEREIGN_LOCAL_KEK_FILE": str(tmp_path / "kek.bin")})
    assert isinstance(provider, LocalKeystoreProvider)
    assert (
        provider_from_env(
            {"SOVEREIGN_KEK_PROVIDER": "local", "SOVEREIGN_LOCAL_KEK_FILE": str(tmp_path / "kek.bin")}
        ).kek_id
        == provider.kek_id
    )
    with pytest.raises(KekError, match="SOVEREIGN_LOCAL_KEK_FILE"):
        provider_from_env({})
    with pytest.raises(KekError, match=r"unknown KEK provider 'hsm'; supported: local"):
        provider_from_env({"SOVEREIGN_KEK_PROVIDER": "hsm", "SOVEREIGN_LOCAL_KEK_FILE": "x"})


def test_versions_rotate_and_old_versions_unwrap_until_destroyed(tmp_path):
    path = tmp_path / "kek.bin"
    portal = LocalKeystoreProvider(path)
    host = LocalKeystoreProvider(path)  # another process reading the same keystore
    dek = generate_dek()
    v1 = portal.kek_id
    wrapped_v1 = portal.wrap(dek)
    assert host.kek_id == v1

    v2 = portal.create_version()

    assert v2 != v1 and portal.kek_id == v2 and path.stat().st_size == 64 and _mode(path) == 0o600
    assert (portal.describe(v1).version, portal.describe(v2).version) == (1, 2)
    wrapped_v2 = portal.wrap(dek)  # the current version by default
    assert portal.wrap(dek, v1) != wrapped_v2
    assert host.unwrap(wrapped_v2, v2) == dek  # the host re-reads the file for a version it has not seen
    assert host.unwrap(wrapped_v1, v1) == dek
    with pytest.raises(KekError, match="is the current version"):
        portal.destroy_version(v2)

    portal.destroy_version(v1)

    assert path.stat().st_size == 64  # the slot is zeroed, version numbers do not shift
    assert path.read_bytes()[:32] == bytes(32)
    fresh = LocalKeystoreProvider(path)
    with pytest.raises(KekError, match=rf"wrapped with KEK {v1}, this host has KEK {v2}"):
        fresh.unwrap(wrapped_v1, v1)
    assert fresh.unwrap(wrapped_v2, v2) == dek and fresh.describe(v2).version == 2
    with pytest.raises(KekError, match="already destroyed"):
        portal.destroy_version(v1)
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_concurrent_rotations_lose_no_version(tmp_path):
    path = tmp_path / "kek.bin"
    LocalKeystoreProvider(path).kek_id
    ids, errors = [], []

    def rotate():
        try:
            ids.append(LocalKeystoreProvider(path).create_version())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rotate) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert path.stat().st_size == 32 * 7
    reader = LocalKeystoreProvider(path)
    assert sorted(reader.describe(i).version for i in ids) == [2, 3, 4, 5, 6, 7]


def test_keystore_of_destroyed_versions_only_is_refused(tmp_path):
    path = tmp_path / "kek.bin"
    path.write_bytes(bytes(64))
    path.chmod(0o600)
    with pytest.raises(KekError, match="no live KEK version"):
        LocalKeystoreProvider(path).kek_id
