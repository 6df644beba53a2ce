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


@register("keys.kek_in_hsm")
def kek_in_hsm(ctx) -> CheckResult:
    evidence = {"KEK_PROVIDER": settings.KEK_PROVIDER, "token": settings.PKCS11["TOKEN"] or None}
    evidence.update(override_evidence("local_kek"))
    if settings.KEK_PROVIDER != "pkcs11" or "insecure_override" in evidence:
        return CheckResult(
            FAIL,
            f"the KEK is held by the {settings.KEK_PROVIDER!r} provider, not an HSM" + override_note(evidence),
            evidence,
            "Set SOVEREIGN_KEK_PROVIDER=pkcs11 (with SOVEREIGN_PKCS11_MODULE, _TOKEN, _PIN_FILE, _KEY_LABEL) and "
            "rotate the KEK so every data key is wrapped inside the HSM.",
        )
    keys = inspect_hsm_keys(_hsm_labels())
    evidence["keys"] = keys
    bad = [
        label
        for label, k in keys.items()
        if not k["present"] or k["extractable"] or not k["sensitive"] or not k["token_object"]
    ]
    if bad:
        return CheckResult(
            FAIL,
            f"KEK(s) missing or extractable on the HSM: {', '.join(bad)}",
            evidence,
            "Create a new KEK version on the HSM with EXTRACTABLE=false, SENSITIVE=true (rotate the KEK) and "
            "retire the listed ones.",
        )
    return CheckResult(PASS, f"{len(keys)} KEK version(s) in the HSM, non-extractable and sensitive", evidence)


@register("keys.artifacts_encrypted")
def artifacts_encrypted(ctx) -> CheckResult:
    from apps.registry.models import Artifact

    live = Artifact.objects.live().select_related("version__model", "data_key").prefetch_related("files")
    problems = []
    for art in live:
        # a language model's set: every ArtifactFile; otherwise the artifact's own file
        files = [(f"{f.name} ", f.path, f.storage_name, f.ciphertext_bytes) for f in art.files.all()]
        files = files or [("", art.path, art.storage_name, art.ciphertext_bytes)]
        if not art.data_key.wrapped:
            problems.append(f"{art.version}: no wrapped data key")
            continue
        for label, path, storage_name, recorded in files:
            if not path.is_file():
                problems.append(f"{art.version}: {label}ciphertext file {storage_name} missing")
            elif path.stat().st_size != recorded:
                problems.append(f"{art.version}: {label}ciphertext size {path.stat().st_size} != recorded {recorded}")
    total = live.count()
    evidence = {"artifacts": total, "problems": problems[:LIST_LIMIT]}
    if problems:
        return CheckResult(
            FAIL,
            f"{len(problems)} of {total} artifact(s) are not fully encrypted at rest",
            evidence,
            "Restore the listed ciphertext files from backup, or shred and re-upload the versions.",
        )
    if not total:
        return CheckResult(NA, "no artifact is stored", evidence)
    return CheckResult(PASS, f"all {total} artifact(s) are ciphertext with a wrapped data key", evidence)


@register("registry.artifact_integrity")
def artifact_integrity(ctx) -> CheckResult:
    from apps.registry.models import Artifact

    live = Artifact.objects.live().select_related("version").prefetch_related("files")

    def lacking(a) -> bool:
        files_bad = any(len(f.sha256) != 64 or len(f.ciphertext_sha256) != 64 or not f.aad for f in a.files.all())
        return len(a.version.sha256) != 64 or len(a.ciphertext_sha256) != 64 or not a.aad or files_bad

    bad = [str(a.version) for a in live if lacking(a)]
    evidence = {
        "artifacts": live.count(),
        "missing_digest_or_aad": bad[:LIST_LIMIT],
        "verified_at_load": "the Triton backend checks every segment's AEAD tag and the plaintext SHA-256",
    }
    if bad:
        return CheckResult(FAIL, f"{len(bad)} artifact(s) lack a digest or AAD binding", evidence, "Re-upload them.")
    if not live.exists():
        return CheckResult(NA, "no artifact is stored", evidence)
    return CheckResult(PASS, "every artifact has plaintext and ciphertext digests and AEAD binding", evidence)


@register("keys.guomi_suite_configured")
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


@register("keys.artifact_suites")
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


@register("keys.no_stray_files")
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


@register("signing.sm2")
def sm2(ctx) -> CheckResult:
    """GB/T 39786 8.4 h: checkpoints and reports are signed with SM2 (the report signer is the
    checkpoint signer, apps/compliance/reports/signing.py)."""
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
    evidence.update(
        signer=signer["signer"],
        key_id=signer["key_id"],
        sig_alg=signer["sig_alg"],
        algorithm="SM2 / SM3, GB/T 32918, user id 1234567812345678" if sm2_in_use else "ECDSA P-256 / SHA-256",
        key_storage=(
            f"local key file {signer['key_file']} (0600); the PKCS#11 token has no SM2 mechanism"
            if sm2_in_use
            else ("HSM (PKCS#11)" if settings.KEK_PROVIDER == "pkcs11" else "local key file")
        ),
    )
    if not sm2_in_use:
        return CheckResult(
            FAIL,
            "checkpoints and reports are signed with ECDSA P-256, not SM2",
            evidence,
            "Set SOVEREIGN_ARTIFACT_SUITE=SM4-GCM: new checkpoints and reports are then signed with SM2 "
            "(list the old key's public key in SOVEREIGN_AUDIT_TRUSTED_KEYS first, see docs/audit.md).",
        )
    older = sum(n for alg, n in by_alg.items() if alg != signer["sig_alg"])  # the signer is SM2 here
    note = f"; {older} checkpoint(s) from before the switch remain ECDSA" if older else ""
    return CheckResult(PASS, f"checkpoints and reports are signed with SM2 (key {signer['key_id']}){note}", evidence)
