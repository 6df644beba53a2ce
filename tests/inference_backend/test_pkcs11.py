"""The PKCS#11 KEK provider against a real SoftHSM2 token (issue 4)."""

import os
import subprocess
import sys
import threading

import pkcs11
import pytest
from pkcs11 import Attribute

from inference_backend import envelope
from inference_backend.kek import KekError, LocalKeystoreProvider, provider_from_env
from inference_backend.pkcs11_kek import Pkcs11KekProvider, create_kek

KEY_LABEL = "sovereign-kek-v1"


@pytest.fixture(scope="module")
def hsm(softhsm_token):
    token = softhsm_token
    kek_id = create_kek(token.module, token.token_label, token.pin, KEY_LABEL)
    assert kek_id == f"pkcs11:{token.token_label}:{KEY_LABEL}"
    return token


@pytest.fixture(scope="module")
def provider(hsm):
    p = Pkcs11KekProvider(hsm.module, hsm.token_label, hsm.pin, KEY_LABEL, pool_size=4)
    yield p
    p.close()


def test_create_kek_is_idempotent_and_kek_is_not_extractable(hsm, provider):
    assert create_kek(hsm.module, hsm.token_label, hsm.pin, KEY_LABEL) == provider.kek_id
    session = pkcs11.lib(hsm.module).get_token(token_label=hsm.token_label).open(rw=True)
    try:
        keys = list(session.get_objects({Attribute.LABEL: KEY_LABEL}))
        assert len(keys) == 1  # the second create_kek did not add a key
        kek = keys[0]
        assert kek[Attribute.EXTRACTABLE] is False and kek[Attribute.SENSITIVE] is True
        assert kek[Attribute.TOKEN] is True and kek[Attribute.KEY_TYPE] == pkcs11.KeyType.AES
        assert kek[Attribute.VALUE_LEN] == 32
        with pytest.raises(pkcs11.AttributeSensitive):
            kek[Attribute.VALUE]
        other = session.generate_key(pkcs11.KeyType.AES, 256, template={Attribute.WRAP: True})
        try:
            with pytest.raises(pkcs11.KeyUnextractable):
                other.wrap_key(kek, mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)
        finally:
            other.destroy()
    finally:
        session.close()


def test_round_trip(provider):
    assert provider.kek_id == f"pkcs11:sovereign-test:{KEY_LABEL}"
    dek = envelope.generate_dek()
    wrapped = provider.wrap(dek)
    assert len(wrapped) == 40 and dek not in wrapped  # RFC 5649
    assert provider.unwrap(wrapped, provider.kek_id) == dek
    assert provider.unwrap(provider.wrap(b"\x01" * 16), provider.kek_id) == b"\x01" * 16  # SM4-sized keys too


def test_unwrap_leaves_no_key_objects_behind(hsm, provider):
    def secret_keys():
        session = pkcs11.lib(hsm.module).get_token(token_label=hsm.token_label).open()
        try:
            objs = list(session.get_objects({Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY}))
            return sorted((o[Attribute.LABEL], o[Attribute.KEY_TYPE]) for o in objs)
        finally:
            session.close()

    before = secret_keys()  # KEKs only (other tests of the session add their own)
    for _ in range(5):
        provider.unwrap(provider.wrap(envelope.generate_dek()), provider.kek_id)
    after = secret_keys()
    assert after == before and (KEY_LABEL, pkcs11.KeyType.AES) in after
    assert all(key_type == pkcs11.KeyType.AES for _, key_type in after)  # no imported/unwrapped data key left


@pytest.mark.parametrize("tamper", ["flip-first", "flip-last", "truncate", "extend", "empty"])
def test_tampered_wrapped_key_is_refused(provider, tamper):
    wrapped = bytearray(provider.wrap(envelope.generate_dek()))
    if tamper == "flip-first":
        wrapped[0] ^= 1
    elif tamper == "flip-last":
        wrapped[-1] ^= 0x80
    elif tamper == "truncate":
        del wrapped[-8:]
    elif tamper == "extend":
        wrapped += bytes(8)
    else:
        wrapped = bytearray()
    with pytest.raises(KekError, match=r"does not unwrap with KEK pkcs11:sovereign-test:sovereign-kek-v1"):
        provider.unwrap(bytes(wrapped), provider.kek_id)


def test_foreign_kek_id_is_named(provider, tmp_path):
    local = LocalKeystoreProvider(tmp_path / "kek.bin")
    wrapped = local.wrap(envelope.generate_dek())
    with pytest.raises(KekError) as err:
        provider.unwrap(wrapped, local.kek_id)
    assert str(err.value) == f"data key was wrapped with KEK {local.kek_id}, this host has KEK {provider.kek_id}"
    with pytest.raises(KekError, match=r"wrapped with KEK pkcs11:other-token:sovereign-kek-v1, this host"):
        provider.unwrap(provider.wrap(envelope.generate_dek()), "pkcs11:other-token:sovereign-kek-v1")
    with pytest.raises(KekError, match=r"wrapped with KEK pkcs11:sovereign-test:other-kek-v1, this host"):
        provider.unwrap(provider.wrap(envelope.generate_dek()), "pkcs11:sovereign-test:other-kek-v1")
    # A version of the same family that is not (or no longer) on the token is named as such.
    with pytest.raises(KekError, match=r"KEK 'sovereign-kek-v99' not found on PKCS#11 token 'sovereign-test'"):
        provider.unwrap(provider.wrap(envelope.generate_dek()), "pkcs11:sovereign-test:sovereign-kek-v99")


def test_wrong_pin_while_another_provider_is_logged_in(hsm, provider):
    with pytest.raises(KekError, match=r"wrong PIN for PKCS#11 token 'sovereign-test'"):
        Pkcs11KekProvider(hsm.module, hsm.token_label, "0000", KEY_LABEL)
    assert provider.unwrap(provider.wrap(b"k" * 32), provider.kek_id) == b"k" * 32  # still logged in


def test_wrong_pin_in_a_fresh_process(hsm):
    code = (
        "from inference_backend.pkcs11_kek import Pkcs11KekProvider\n"
        "from inference_backend.kek import KekError\n"
        "try:\n"
        f"    Pkcs11KekProvider({hsm.module!r}, {hsm.token_label!r}, '0000', {KEY_LABEL!r})\n"
        "except KekError as e:\n"
        "    print('KekError:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "SOFTHSM2_CONF": str(hsm.conf)},
    )
    assert out.stdout.strip() == "KekError: wrong PIN for PKCS#11 token 'sovereign-test'", out.stderr


def test_missing_label_token_and_module(hsm, provider):
    with pytest.raises(KekError, match=r"KEK 'sovereign-kek-v9' not found on PKCS#11 token 'sovereign-test'"):
        Pkcs11KekProvider(hsm.module, hsm.token_label, hsm.pin, "sovereign-kek-v9")
    with pytest.raises(KekError, match=r"PKCS#11 token 'no-such-token' not found in module"):
        Pkcs11KekProvider(hsm.module, "no-such-token", hsm.pin, KEY_LABEL)
    with pytest.raises(KekError, match=r"PKCS#11 module /nonexistent/libhsm.so not found"):
        Pkcs11KekProvider("/nonexistent/libhsm.so", hsm.token_label, hsm.pin, KEY_LABEL)


def _env(hsm, **extra):
    env = {
        "SOVEREIGN_KEK_PROVIDER": "pkcs11",
        "SOVEREIGN_PKCS11_MODULE": hsm.module,
        "SOVEREIGN_PKCS11_TOKEN": hsm.token_label,
        "SOVEREIGN_PKCS11_PIN_FILE": str(hsm.pin_file),
        "SOVEREIGN_PKCS11_KEY_LABEL": KEY_LABEL,
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def test_provider_from_env(hsm, provider):
    p = provider_from_env(_env(hsm, SOVEREIGN_PKCS11_PIN="0000"))  # a plain PIN variable is ignored
    try:
        assert isinstance(p, Pkcs11KekProvider) and p.kek_id == provider.kek_id
        dek = envelope.generate_dek()
        assert p.unwrap(provider.wrap(dek), provider.kek_id) == dek
    finally:
        p.close()
    p = provider_from_env(_env(hsm, SOVEREIGN_PKCS11_MODULE=None))  # defaults to SoftHSM2's library
    p.close()


@pytest.mark.parametrize("var", ["SOVEREIGN_PKCS11_TOKEN", "SOVEREIGN_PKCS11_PIN_FILE", "SOVEREIGN_PKCS11_KEY_LABEL"])
def test_provider_from_env_names_the_missing_variable(hsm, var):
    with pytest.raises(KekError, match=rf"{var} is not set"):
        provider_from_env(_env(hsm, **{var: None}, SOVEREIGN_PKCS11_PIN=hsm.pin))


def test_pin_only_from_file(hsm, provider, tmp_path):
    wrong = tmp_path / "pin"
    wrong.write_text("0000\n")
    wrong.chmod(0o600)
    with pytest.raises(KekError, match=r"wrong PIN"):
        provider_from_env(_env(hsm, SOVEREIGN_PKCS11_PIN_FILE=str(wrong), SOVEREIGN_PKCS11_PIN=hsm.pin))
    with pytest.raises(KekError, match=r"cannot read the PKCS#11 PIN file"):
        provider_from_env(_env(hsm, SOVEREIGN_PKCS11_PIN_FILE=str(tmp_path / "absent")))
    wrong.chmod(0o604)
    with pytest.raises(KekError, match=r"accessible by others; run `chmod 600"):
        provider_from_env(_env(hsm, SOVEREIGN_PKCS11_PIN_FILE=str(wrong)))


def test_concurrent_unwraps_share_the_pool(provider):
    deks = [envelope.generate_dek() for _ in range(8)]
    wrapped = [provider.wrap(d) for d in deks]
    errors, results = [], {}
    start = threading.Barrier(8)

    def work(i):
        try:
            start.wait()
            for _ in range(50):
                results[i] = provider.unwrap(wrapped[i], provider.kek_id)
                assert results[i] == deks[i]
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [results[i] for i in range(8)] == deks
    assert provider._pool.qsize() == 4  # every session went back to the pool


def test_envelope_end_to_end(provider):
    weights = os.urandom(100_000)
    aad = b"model=triage;version=3"
    dek = envelope.generate_dek()
    blob = envelope.encrypt_artifact(weights, dek, aad)
    wrapped, kek_id = provider.wrap(dek), provider.kek_id
    del dek
    assert envelope.decrypt_artifact(blob, provider.unwrap(wrapped, kek_id), aad) == weights


def test_kek_deleted_under_a_running_provider(hsm, provider):
    create_kek(hsm.module, hsm.token_label, hsm.pin, "sovereign-kek-v7")
    doomed = Pkcs11KekProvider(hsm.module, hsm.token_label, hsm.pin, "sovereign-kek-v7", pool_size=1)
    try:
        wrapped = doomed.wrap(envelope.generate_dek())
        session = pkcs11.lib(hsm.module).get_token(token_label=hsm.token_label).open(rw=True)
        try:
            session.get_key(label="sovereign-kek-v7").destroy()
        finally:
            session.close()
        with pytest.raises(KekError, match=r"KEK 'sovereign-kek-v7' is no longer usable on PKCS#11 token"):
            doomed.unwrap(wrapped, doomed.kek_id)
    finally:
        doomed.close()
    with pytest.raises(KekError, match=r"KEK 'sovereign-kek-v7' not found"):
        Pkcs11KekProvider(hsm.module, hsm.token_label, hsm.pin, "sovereign-kek-v7")


def test_rotation_creates_a_non_extractable_next_version_and_old_versions_still_unwrap(hsm):
    create_kek(hsm.module, hsm.token_label, hsm.pin, "rot-kek-v1")
    portal = Pkcs11KekProvider(hsm.module, hsm.token_label, hsm.pin, "rot-kek-v1", pool_size=2)
    triton_host = Pkcs11KekProvider(hsm.module, hsm.token_label, hsm.pin, "rot-kek-v1", pool_size=1)
    try:
        dek = envelope.generate_dek()
        old_id = portal.kek_id
        wrapped_v1 = portal.wrap(dek)

        new_id = portal.create_version()

        assert new_id == f"pkcs11:{hsm.token_label}:rot-kek-v2" == portal.kek_id
        assert portal.describe(new_id).version == 2 and portal.describe(old_id).version == 1
        session = pkcs11.lib(hsm.module).get_token(token_label=hsm.token_label).open()
        try:
            v2 = session.get_key(label="rot-kek-v2")
            assert v2[Attribute.EXTRACTABLE] is False and v2[Attribute.SENSITIVE] is True
            with pytest.raises(pkcs11.AttributeSensitive):
                v2[Attribute.VALUE]
        finally:
            session.close()
        wrapped_v2 = portal.wrap(portal.unwrap(wrapped_v1, old_id))  # the re-wrap step of a rotation
        assert wrapped_v2 != wrapped_v1
        # A host configured with the v1 label unwraps both versions, looked up by label.
        assert triton_host.unwrap(wrapped_v1, old_id) == dek
        assert triton_host.unwrap(wrapped_v2, new_id) == dek
        assert triton_host.wrap(dek, new_id) != triton_host.wrap(dek, old_id)

        with pytest.raises(KekError, match="is the current version"):
            portal.destroy_version(new_id)
        portal.destroy_version(old_id)

        with pytest.raises(KekError, match=r"KEK 'rot-kek-v1' (not found|is no longer usable)"):
            triton_host.unwrap(wrapped_v1, old_id)
        with pytest.raises(KekError, match=r"KEK 'rot-kek-v1' not found"):
            triton_host.unwrap(wrapped_v1, old_id)  # the stale handle was dropped: looked up again
        assert triton_host.unwrap(wrapped_v2, new_id) == dek
        assert portal.create_version().endswith(":rot-kek-v3")
        # A host still configured with the destroyed v1 label serves the newest later version.
        restarted = Pkcs11KekProvider(hsm.module, hsm.token_label, hsm.pin, "rot-kek-v1", pool_size=1)
        try:
            assert restarted.kek_id.endswith(":rot-kek-v3")
            assert restarted.unwrap(wrapped_v2, new_id) == dek
        finally:
            restarted.close()
    finally:
        portal.close()
        triton_host.close()


def test_unversioned_label_cannot_rotate(hsm):
    create_kek(hsm.module, hsm.token_label, hsm.pin, "plain-kek")
    provider = Pkcs11KekProvider(hsm.module, hsm.token_label, hsm.pin, "plain-kek", pool_size=1)
    try:
        with pytest.raises(KekError, match=r"no -vN version suffix.*plain-kek-v1"):
            provider.create_version()
    finally:
        provider.close()
