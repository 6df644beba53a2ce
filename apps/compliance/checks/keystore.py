"""Checks of the key store: the KEK in an HSM and non-extractable, every artifact encrypted,
cipher suites matching the profile, no stray files in the artifact store."""

from __future__ import annotations

from django.conf import settings

from . import FAIL, NA, PASS, CheckResult, register
from .settings import override_evidence, override_note

LIST_LIMIT = 50
GUOMI_SUITE = "SM4-GCM"


def _hsm_labels() -> list[str]:
    from apps.keys.models import KekState, KeyEncryptionKey

    rows = KeyEncryptionKey.objects.filter(provider="pkcs11").exclude(state=KekState.RETIRED)
    labels = sorted(set(rows.values_list("hsm_label", flat=True)) - {""})
    return labels or [settings.PKCS11["KEY_LABEL"] or "sovereign-kek-v1"]


def inspect_hsm_keys(labels: list[str]) -> dict[str, dict]:
    """Read the attributes (never the value) of each KEK on the configured token, the way
    inference_backend.pkcs11_kek opens it."""
    import pkcs11

    from inference_backend import pkcs11_kek as p11

    cfg = settings.PKCS11
    module = cfg["MODULE"] or p11.DEFAULT_MODULE
    pin = p11.read_pin_file(cfg["PIN_FILE"])
    lib = p11._load_module(module)
    token = p11._get_token(lib, module, cfg["TOKEN"])
    session = p11._open_logged_in(token, module, cfg["TOKEN"], pin)
    found = {}
    try:
        with p11._module_lock(module):
            for label in labels:
                try:
                    key = session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, label=label)
                except pkcs11.NoSuchKey:
                    found[label] = {"present": False}
                    continue
                A = pkcs11.Attribute
                found[label] = {
                    "present": True,
                    "extractable": bool(key[A.EXTRACTABLE]),
                    "sensitive": bool(key[A.SENSITIVE]),
                    "token_object": bool(key[A.TOKEN]),
                }
    finally:
        with p11._module_lock(module):
            session.close()
    return found


# Tokens that are software however they describe themselves: matched (lower case) against the
# token's manufacturer and model and the slot's description and manufacturer.
SOFTWARE_TOKENS = (
    "softhsm",  # SoftHSM v1/v2 ("SoftHSM project" / "SoftHSM v2")
    "softtoken",  # Solaris / Oracle pkcs11_softtoken
    "soft token",
    "swtok",  # openCryptoki's software token
    "software",  # "IBM OS/software", "Software token", ...
    "mozilla foundation",  # NSS softokn
    "nss certificate db",
    "kryoptic",  # a software PKCS#11 token
    "gnome-keyring",
)


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip()


def read_token_info() -> dict:
    """What the configured PKCS#11 module says of the configured token and its slot (CK_TOKEN_INFO,
    CK_SLOT_INFO) and which mechanisms it offers: read live, no login needed."""
    from inference_backend import pkcs11_kek as p11

    cfg = settings.PKCS11
    module = cfg["MODULE"] or p11.DEFAULT_MODULE
    lib = p11._load_module(module)
    token = p11._get_token(lib, module, cfg["TOKEN"])
    with p11._module_lock(module):
        slot = token.slot
        mechanisms = sorted(int(m) for m in slot.get_mechanisms())
        slot_flags = int(slot.flags)
        info = {
            "library": module,
            "token_label": _text(token.label),
            "manufacturer": _text(token.manufacturer_id),
            "model": _text(token.model),
            "serial": _text(token.serial),
            "token_flags": int(token.flags),
            "slot_description": _text(slot.slot_description),
            "slot_manufacturer": _text(slot.manufacturer_id),
            "hardware_slot": bool(slot_flags & 0x4),  # CKF_HW_SLOT
            "mechanisms": mechanisms,
        }
    return info


def software_token_marker(info: dict) -> str | None:
    """The known software-token name found in the token's or slot's description, if any."""
    said = " ".join(info.get(k, "") for k in ("manufacturer", "model", "slot_description", "slot_manufacturer"))
    return next((m for m in SOFTWARE_TOKENS if m in said.lower()), None)


def token_evidence(info: dict) -> dict:
    keys = ("library", "manufacturer", "model", "serial", "slot_description", "hardware_slot")
    return {k: info[k] for k in keys}


def describe_token(info: dict) -> str:
    """How a report names the token: "SoftHSM v2 (SoftHSM project), software token — development
    only" or "<model> (<manufacturer>), hardware slot"."""
    name = f"{info['model']} ({info['manufacturer']})"
    if software_token_marker(info) or not info["hardware_slot"]:
        return f"{name}, software token — development only"
    return f"{name}, hardware slot"


@register("keys.kek_in_hsm", proof="query")
def kek_in_hsm(ctx) -> CheckResult:
    """The KEK is in a hardware token: the PKCS#11 provider, a token whose CK_TOKEN_INFO /
    CK_SLOT_INFO name no known software token and whose slot reports CKF_HW_SLOT, and each KEK
    version non-extractable and sensitive there. SoftHSM2 always fails: it is a software token.
    What it cannot prove: that the hardware is certified (GM/T 0028 / FIPS 140) — the token says
    what it is, the certificate is the assessor's to see."""
    evidence = {"KEK_PROVIDER": settings.KEK_PROVIDER, "token": settings.PKCS11["TOKEN"] or None}
    evidence.update(override_evidence("local_kek"))
    if settings.KEK_PROVIDER != "pkcs11" or "insecure_override" in evidence:
        where = settings.LOCAL_KEK_FILE if settings.KEK_PROVIDER == "local" else None
        if where:
            evidence["local_kek_file"] = where
        return CheckResult(
            FAIL,
            f"the KEK is held by the {settings.KEK_PROVIDER!r} provider"
            + (" (a local file)" if where else "")
            + ", not an HSM"
            + override_note(evidence),
            evidence,
            "Set SOVEREIGN_KEK_PROVIDER=pkcs11 (with SOVEREIGN_PKCS11_MODULE, _TOKEN, _PIN_FILE, _KEY_LABEL) and "
            "rotate the KEK so every data key is wrapped inside the HSM.",
        )
    info = read_token_info()
    evidence["token_info"] = token_evidence(info)
    keys = inspect_hsm_keys(_hsm_labels())
    evidence["keys"] = keys
    bad = [
        label
        for label, k in keys.items()
        if not k["present"] or k["extractable"] or not k["sensitive"] or not k["token_object"]
    ]
    marker = software_token_marker(info)
    problems = []
    if marker:
        problems.append(
            f"software token — development only: {info['model']} by {info['manufacturer']} "
            f"(serial {info['serial']}, library {info['library']}) is a software token ({marker!r}), not an HSM"
        )
    elif not info["hardware_slot"]:
        problems.append(
            f"software token — development only: the slot {info['slot_description']!r} of {info['library']} "
            "does not report a hardware slot (CKF_HW_SLOT)"
        )
    if bad:
        problems.append(f"KEK(s) missing or extractable on the token: {', '.join(bad)}")
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Point SOVEREIGN_PKCS11_MODULE at a hardware HSM's PKCS#11 library (SoftHSM2 is for development), "
            "create a KEK there with EXTRACTABLE=false, SENSITIVE=true and rotate the KEK; retire any listed KEK.",
        )
    return CheckResult(
        PASS,
        f"{len(keys)} KEK version(s) in the hardware token {info['model']} ({info['manufacturer']}, serial "
        f"{info['serial']}), non-extractable and sensitive",
        evidence,
    )


def plaintext_kind(head: bytes) -> str:
    """The plaintext format a file's first bytes announce ("" when none is recognised): what an
    artifact file must never start with."""
    if head[:4] == b"GGUF":
        return "GGUF model"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors header"
    if head[:4] == b"PK\x03\x04":
        return "ZIP (PyTorch checkpoint)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "Python pickle"
    if head[:4] == b"\x7fELF":
        return "ELF executable"
    if (
        len(head) >= 3
        and head[0] == 0x08
        and 1 <= head[1] <= 30
        and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)
    ):
        return "ONNX protobuf (ir_version, then a ModelProto field)"
    if head[:1] in (b"{", b"["):
        return "JSON text"
    return ""


def inspect_ciphertext(path, aad: str, data_key) -> str:
    """ "" when the file is the envelope format of docs/encryption-format.md and its first segment
    authenticates under the artifact's data key (unwrapped through the KEK provider); else the
    problem. Format 1 (one-shot) files are decrypted whole."""
    from apps.core.errors import ServiceError
    from apps.keys.services import authenticate_head, open_sealed
    from inference_backend import envelope, stream

    with open(path, "rb") as src:
        head = src.read(64)
        if head[:4] != stream.MAGIC:
            kind = plaintext_kind(head)
            if kind:
                return f"starts like plaintext ({kind}), not the SVRN envelope"
            return f"not the SVRN envelope (first bytes {head[:8].hex()})"
        src.seek(0)
        try:
            if head[4:5] == bytes([envelope.FORMAT_VERSION]):
                open_sealed(src.read(), aad.encode("utf-8"), data_key=data_key)
                return ""
            header = stream.read_header(src)
            if header.suite != data_key.suite:
                return f"header suite {header.suite} differs from the data key's {data_key.suite}"
            src.seek(0)
            authenticate_head(src, aad.encode("utf-8"), data_key=data_key)
        except stream.StreamError as err:
            return f"malformed envelope header: {err}"
        except envelope.ArtifactDecryptError as err:
            return f"does not decrypt: {err}"
        except ServiceError as err:
            return f"does not decrypt under its data key ({err.code})"
    return ""


@register("keys.artifacts_encrypted", proof="probe")
def artifacts_encrypted(ctx) -> CheckResult:
    """Every file of every live artifact: present with its recorded size, not a plaintext model
    format, the SVRN envelope with the data key's suite, and its first segment authenticates
    under the data key unwrapped through the KEK provider (a cheap, real decryption)."""
    from apps.registry.models import Artifact

    live = Artifact.objects.live().select_related("version__model", "data_key").prefetch_related("files")
    problems = []
    checked = authenticated = 0
    for art in live:
        # a language model's set: every ArtifactFile; otherwise the artifact's own file
        files = [(f"{f.name} ", f.path, f.storage_name, f.ciphertext_bytes, f.aad) for f in art.files.all()]
        files = files or [("", art.path, art.storage_name, art.ciphertext_bytes, art.aad)]
        if not art.data_key.wrapped:
            problems.append(f"{art.version}: no wrapped data key")
            continue
        for label, path, storage_name, recorded, aad in files:
            if not path.is_file():
                problems.append(f"{art.version}: {label}ciphertext file {storage_name} missing")
                continue
            if path.stat().st_size != recorded:
                problems.append(f"{art.version}: {label}ciphertext size {path.stat().st_size} != recorded {recorded}")
            problem = inspect_ciphertext(path, aad, art.data_key)
            checked += 1
            if problem:
                problems.append(f"{art.version}: {label}file {storage_name} {problem}")
            else:
                authenticated += 1
    total = live.count()
    evidence = {
        "artifacts": total,
        "files_inspected": checked,
        "files_authenticated": authenticated,
        "probe": "each file: size, first bytes vs plaintext model formats, SVRN header, segment 0 AEAD tag under "
        "the data key unwrapped by the KEK provider",
        "problems": problems[:LIST_LIMIT],
    }
    if problems:
        return CheckResult(
            FAIL,
            f"{len(problems)} problem(s) in {total} artifact(s): not ciphertext of their data key at rest",
            evidence,
            "Restore the listed ciphertext files from backup, or shred and re-upload the versions; find what wrote "
            "plaintext into the artifact store.",
        )
    if not total:
        return CheckResult(NA, "no artifact is stored", evidence)
    return CheckResult(
        PASS,
        f"all {total} artifact(s) ({checked} file(s)) are SVRN ciphertext whose first segment authenticates under "
        "their wrapped data key",
        evidence,
    )


@register("registry.artifact_integrity", proof="query")
def artifact_integrity(ctx) -> CheckResult:
    """Passes only on a recent verification run (apps/registry/integrity.py: a sample decrypted
    through the KEK provider, AEAD tags and plaintext SHA-256 checked) that found no failure."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.registry.models import Artifact
    from apps.registry.selectors import latest_integrity_run as latest_run

    now = ctx.now if ctx is not None else timezone.now()
    max_age = timedelta(hours=settings.INTEGRITY_MAX_AGE_HOURS)
    live = Artifact.objects.live().select_related("version").prefetch_related("files")

    def lacking(a) -> bool:
        files_bad = any(len(f.sha256) != 64 or len(f.ciphertext_sha256) != 64 or not f.aad for f in a.files.all())
        return len(a.version.sha256) != 64 or len(a.ciphertext_sha256) != 64 or not a.aad or files_bad

    bad = [str(a.version) for a in live if lacking(a)]
    total = live.count()
    run = latest_run()
    evidence = {
        "artifacts": total,
        "missing_digest_or_aad": bad[:LIST_LIMIT],
        "max_age_hours": settings.INTEGRITY_MAX_AGE_HOURS,
        "last_run": None,
    }
    if run is not None:
        evidence["last_run"] = {
            "id": run.pk,
            "finished_at": run.finished_at.isoformat(),
            "live_artifacts": run.live_artifacts,
            "sampled": run.sampled,
            "verified": run.verified,
            "plaintext_bytes": run.plaintext_bytes,
            "failures": run.failures[:LIST_LIMIT],
        }
    remedy_run = "Run `manage.py verify_artifacts` and make sure Celery beat runs registry-verify-artifacts."
    if bad:
        return CheckResult(FAIL, f"{len(bad)} artifact(s) lack a digest or AAD binding", evidence, "Re-upload them.")
    if not total:
        return CheckResult(NA, "no artifact is stored", evidence)
    if run is None:
        return CheckResult(FAIL, "the stored artifacts were never verified (no verification run)", evidence, remedy_run)
    if run.failures:
        named = sorted({f"{f['version']} {f['file']}".strip() + f" ({f['code']})" for f in run.failures})
        return CheckResult(
            FAIL,
            f"the verification run of {run.finished_at:%Y-%m-%d %H:%M} found {len(run.failures)} failing file(s): "
            + ", ".join(named[:5]),
            evidence,
            "Restore the listed ciphertext files from backup (or shred and re-upload the versions), find what "
            "changed them, then run `manage.py verify_artifacts` again.",
        )
    if run.finished_at < now - max_age:
        return CheckResult(
            FAIL,
            f"the last verification run is from {run.finished_at:%Y-%m-%d %H:%M}, older than "
            f"{settings.INTEGRITY_MAX_AGE_HOURS:g} h",
            evidence,
            remedy_run,
        )
    if run.sampled == 0:
        return CheckResult(FAIL, "the last verification run sampled no artifact", evidence, remedy_run)
    return CheckResult(
        PASS,
        f"{run.verified} of {run.live_artifacts} artifact(s) decrypted through the KEK provider, AEAD tags and "
        f"plaintext SHA-256 verified at {run.finished_at:%Y-%m-%d %H:%M}",
        evidence,
    )


@register("keys.guomi_suite_configured", proof="query")
def guomi_suite_configured(ctx) -> CheckResult:
    evidence = {"ARTIFACT_SUITE": settings.ARTIFACT_SUITE, "required": GUOMI_SUITE}
    if settings.ARTIFACT_SUITE != GUOMI_SUITE:
        return CheckResult(
            FAIL,
            f"the artifact suite is {settings.ARTIFACT_SUITE}; 国密 mode needs {GUOMI_SUITE}",
            evidence,
            "Set SOVEREIGN_ARTIFACT_SUITE=SM4-GCM and restart the portal and workers.",
        )
    return CheckResult(PASS, "new artifacts are encrypted with SM4-GCM", evidence)


# How vendors number their SM4 mechanisms (CKM_VENDOR_DEFINED + n): no PKCS#11 standard defines
# SM4, so an HSM's SM4 wrapping mechanism is declared with SOVEREIGN_PKCS11_SM4_WRAP_MECHANISM (its
# number from the vendor's pkcs11 header) and must then appear in the token's mechanism list.
CKM_VENDOR_DEFINED = 0x80000000


def _mechanism_names(codes: list[int]) -> list[str]:
    import pkcs11

    out = []
    for code in codes:
        try:
            out.append(pkcs11.Mechanism(code).name)
        except ValueError:
            out.append(hex(code))
    return out


@register("keys.sm4_key_wrapping", proof="query")
def sm4_key_wrapping(ctx) -> CheckResult:
    """GB/T 39786 8.4 e / chapter 5: SM4 data keys are wrapped with SM4 inside the cryptographic
    module. Reads how the KEK provider wraps (AES-KWP, CKM_AES_KEY_WRAP_PAD, is the only wrapping
    implemented) and the token's mechanism list: fails naming the module when it offers no SM4
    mechanism, and fails too when it offers one, because the provider does not use it yet."""
    from inference_backend import pkcs11_kek as p11

    declared = settings.PKCS11.get("SM4_WRAP_MECHANISM") or None
    evidence = {
        "KEK_PROVIDER": settings.KEK_PROVIDER,
        "ARTIFACT_SUITE": settings.ARTIFACT_SUITE,
        "wrapping": "AES-KWP (RFC 5649)",
        "declared_sm4_wrap_mechanism": hex(declared) if declared else None,
    }
    if settings.KEK_PROVIDER != "pkcs11":
        return CheckResult(
            FAIL,
            f"data keys are wrapped with AES-KWP in software by the {settings.KEK_PROVIDER!r} KEK provider, "
            "not with SM4 in a cryptographic module",
            evidence,
            "Use SOVEREIGN_KEK_PROVIDER=pkcs11 with an HSM that offers an SM4 wrapping mechanism.",
        )
    info = read_token_info()
    module = info["library"]
    mechanisms = info["mechanisms"]
    vendor = [m for m in mechanisms if m >= CKM_VENDOR_DEFINED]
    evidence.update(
        token_info=token_evidence(info),
        wrapping=f"CKM_AES_KEY_WRAP_PAD (AES-KWP, RFC 5649), as {p11.__name__} wraps",
        mechanisms=len(mechanisms),
        vendor_mechanisms=[hex(m) for m in vendor],
        aes_kwp_offered="AES_KEY_WRAP_PAD" in _mechanism_names(mechanisms),
    )
    offered = declared is not None and declared in mechanisms
    evidence["sm4_mechanism_offered"] = offered
    if not offered:
        why = (
            f"the declared SM4 mechanism {hex(declared)} is not in its mechanism list"
            if declared
            else f"no SM4 mechanism in {module}"
            + (f" ({len(vendor)} vendor mechanism(s), none declared as SM4)" if vendor else "")
        )
        return CheckResult(
            FAIL,
            f"the HSM wraps SM4 data keys with AES-KWP: {why}",
            evidence,
            "Use an HSM whose PKCS#11 module offers SM4 wrapping (GM/T 0028 certified) and declare its mechanism "
            "number in SOVEREIGN_PKCS11_SM4_WRAP_MECHANISM.",
        )
    return CheckResult(
        FAIL,
        f"the HSM wraps SM4 data keys with AES-KWP: {module} offers SM4 mechanism {hex(declared)}, "
        "but Sovereign's PKCS#11 provider implements only CKM_AES_KEY_WRAP_PAD",
        evidence,
        "SM4 wrapping through a vendor mechanism is not implemented yet: the control stays failed until it is.",
    )


@register("keys.artifact_suites", proof="query")
def artifact_suites(ctx) -> CheckResult:
    from apps.registry.models import Artifact

    live = Artifact.objects.live()
    other = sorted(
        {
            f"{a.version} ({a.suite})"
            for a in live.exclude(data_key__suite=GUOMI_SUITE).select_related("version", "data_key")
        }
    )
    evidence = {"artifacts": live.count(), "not_sm4": other[:LIST_LIMIT]}
    if other:
        return CheckResult(
            FAIL,
            f"{len(other)} artifact(s) are not encrypted with SM4-GCM",
            evidence,
            "Re-upload the listed versions with SOVEREIGN_ARTIFACT_SUITE=SM4-GCM and shred the old ones.",
        )
    return CheckResult(PASS if live.exists() else NA, "every stored artifact uses SM4-GCM", evidence)


@register("keys.no_stray_files", proof="query")
def no_stray_files(ctx) -> CheckResult:
    from apps.registry.models import Artifact, ArtifactFile

    directory = settings.ARTIFACT_DIR
    known = set(Artifact.objects.values_list("storage_name", flat=True))
    known |= set(ArtifactFile.objects.values_list("storage_name", flat=True))
    present = [p.name for p in directory.iterdir() if p.is_file()] if directory.is_dir() else []
    stray = sorted(n for n in present if n not in known)
    evidence = {"artifact_dir": str(directory), "files": len(present), "stray": stray[:LIST_LIMIT]}
    if stray:
        return CheckResult(
            FAIL,
            f"{len(stray)} file(s) in the artifact store belong to no artifact (possible plaintext residue)",
            evidence,
            "Inspect and securely wipe the listed files; find the process that wrote them.",
        )
    return CheckResult(PASS, "the artifact store holds only ciphertext of registered artifacts", evidence)


def signing_key_provider(signer: dict) -> dict:
    """Where the audit/report signing key really is, from `signing_key_status()`: a local key file
    (development), or a PKCS#11 token named by its model, "software token — development only" for
    SoftHSM2. `in_module` is true only for a key on a hardware token."""
    if signer.get("key_file"):
        return {
            "kind": "local_file",
            "in_module": False,
            "text": f"local key file {signer['key_file']} (mode 0600) — not in a cryptographic module",
        }
    try:
        info = read_token_info()
    except Exception as exc:  # noqa: BLE001 - an unreadable token is named, not hidden
        return {"kind": "pkcs11", "in_module": False, "text": f"PKCS#11 token (unreadable: {exc})"}
    software = bool(software_token_marker(info)) or not info["hardware_slot"]
    return {
        "kind": "pkcs11",
        "in_module": not software,
        "text": f"PKCS#11 token {settings.PKCS11['TOKEN']!r}: {describe_token(info)}",
        "token_info": token_evidence(info),
    }


@register("signing.sm2", proof="query")
def sm2(ctx) -> CheckResult:
    """GB/T 39786 8.4 h: checkpoints and reports are signed with SM2 (the report signer is the
    checkpoint signer, apps/compliance/reports/signing.py) by a key held in a cryptographic module.
    The SM2 key is a local file (no supported token has an SM2 mechanism): the check fails saying so."""
    from django.db.models import Count

    from apps.audit.models import AuditCheckpoint
    from apps.audit.selectors import signing_key_status

    from ..models import ComplianceReport

    by_alg = dict(AuditCheckpoint.objects.values_list("sig_alg").annotate(n=Count("id")).order_by("sig_alg"))
    last = AuditCheckpoint.objects.order_by("-sequence").values("sequence", "sig_alg", "key_id").first()
    report = ComplianceReport.objects.exclude(key_id="").order_by("-pk").values("pk", "key_id").first()
    evidence = {
        "ARTIFACT_SUITE": settings.ARTIFACT_SUITE,
        "checkpoints_by_sig_alg": by_alg,
        "last_checkpoint": last,
        "last_signed_report": report,
    }
    signer = signing_key_status()
    if "error" in signer:
        evidence["error"] = signer["error"]
        return CheckResult(FAIL, f"the signing key is unavailable: {signer['error']}", evidence, "Fix the signing key.")
    sm2_in_use = signer["sm2"]
    provider = signing_key_provider(signer)
    evidence.update(
        signer=signer["signer"],
        key_id=signer["key_id"],
        sig_alg=signer["sig_alg"],
        algorithm="SM2 / SM3, GB/T 32918, user id 1234567812345678" if sm2_in_use else "ECDSA P-256 / SHA-256",
        key_storage=provider["text"],
        key_in_module=provider["in_module"],
    )
    if not sm2_in_use:
        return CheckResult(
            FAIL,
            "checkpoints and reports are signed with ECDSA P-256, not SM2",
            evidence,
            "Set SOVEREIGN_ARTIFACT_SUITE=SM4-GCM: new checkpoints and reports are then signed with SM2 "
            "(list the old key's public key in SOVEREIGN_AUDIT_TRUSTED_KEYS first, see docs/audit.md).",
        )
    if not provider["in_module"]:
        where = (
            "signing key in a local file, not in a certified cryptographic module"
            if provider["kind"] == "local_file"
            else f"signing key not in a certified cryptographic module: {provider['text']}"
        )
        return CheckResult(
            FAIL,
            f"checkpoints and reports are signed with SM2 (key {signer['key_id']}), but the {where}",
            evidence,
            "Hold the SM2 signing key in an HSM with an SM2 mechanism (GM/T 0028 certified); the local SM2 key "
            "file is for development. Sovereign's supported token (SoftHSM2) has no SM2 mechanism, so this stays "
            "failed on it.",
        )
    older = sum(n for alg, n in by_alg.items() if alg != signer["sig_alg"])  # the signer is SM2 here
    note = f"; {older} checkpoint(s) from before the switch remain ECDSA" if older else ""
    return CheckResult(
        PASS, f"checkpoints and reports are signed with SM2 (key {signer['key_id']}) in the HSM{note}", evidence
    )
