"""Checks of what the artifact store holds: no executable content (等保 8.1.4.5), and that
crypto-shredded versions really cannot be decrypted any more and leave nothing behind (HIPAA
164.310(d)(2), `keys.disposal`)."""

from __future__ import annotations

import contextlib

from . import FAIL, NA, PASS, CheckResult, register
from .keystore import plaintext_kind

LIST_LIMIT = 50
HEAD = 64
# Formats that carry code run on load: never acceptable as a model artifact.
EXECUTABLE_KINDS = ("Python pickle", "ZIP (PyTorch checkpoint)", "ELF executable")


def content_problem(name: str, head: bytes) -> str:
    """ "" when the first plaintext bytes of file `name` are what the registry accepts there."""
    kind = plaintext_kind(head)
    if kind in EXECUTABLE_KINDS or head[:2] == b"#!" or head[:2] == b"MZ":
        return f"holds executable content ({kind or 'script or PE executable'})"
    if name.endswith(".onnx") and not kind.startswith("ONNX"):
        return f"is not an ONNX protobuf (first bytes {head[:8].hex()})"
    if name.endswith(".json") and head.lstrip()[:1] != b"{":
        return "is not a JSON object"
    if name.endswith(".jinja") and (b"\x00" in head or not _utf8_prefix(head)):
        return "is not text"
    return ""


def _utf8_prefix(data: bytes) -> bool:
    for cut in range(4):  # a multi-byte character may straddle the end of the sample
        try:
            data[: len(data) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def upload_probe() -> dict:
    """Feed the upload validator (what register_model_version calls) a harmless pickle: it must be
    refused. Nothing is stored."""
    import pickle

    from inference_backend.signature import InvalidModelError, read_onnx_signature

    probe = pickle.dumps({"sovereign": "probe"}, protocol=4)
    try:
        read_onnx_signature(probe)
    except InvalidModelError as err:
        return {"pickle_refused": True, "code": err.code}
    return {"pickle_refused": False, "code": None}


@register("registry.no_executable_artifacts", proof="probe")
def no_executable_artifacts(ctx) -> CheckResult:
    """Every live version is ONNX or a language-model set of the allowed files, and the decrypted
    start of every file (segment 0, authenticated under its data key) is that format, never a
    pickle, a ZIP checkpoint or an executable; the upload validator refuses a pickle probe."""
    from apps.core.errors import ServiceError
    from apps.keys.services import authenticate_head, open_sealed
    from apps.registry.models import Artifact
    from apps.registry.selectors import allowed_formats
    from inference_backend import envelope

    formats = allowed_formats()
    live = Artifact.objects.live().select_related("version__model", "data_key").prefetch_related("files")
    problems, files = [], 0
    for art in live:
        version = art.version
        if version.format not in formats:
            problems.append(f"{version}: format {version.format!r} is not one the registry accepts")
            continue
        targets = [(f.name, f.path, f.aad) for f in art.files.all()] or [("model.onnx", art.path, art.aad)]
        for name, path, aad in targets:
            if name not in formats[version.format]:
                problems.append(f"{version}: file {name!r} is not allowed in a {version.format} version")
                continue
            try:
                with open(path, "rb") as src:
                    if src.read(5) == envelope.MAGIC + bytes([envelope.FORMAT_VERSION]):
                        src.seek(0)
                        head = open_sealed(src.read(), aad.encode("utf-8"), data_key=art.data_key)[:HEAD]
                    else:
                        src.seek(0)
                        _, head = authenticate_head(src, aad.encode("utf-8"), data_key=art.data_key, keep=HEAD)
            except (OSError, ServiceError, envelope.ArtifactDecryptError) as err:
                problems.append(f"{version}: {name} cannot be decrypted to inspect it ({getattr(err, 'code', err)})")
                continue
            files += 1
            problem = content_problem(name, head)
            if problem:
                problems.append(f"{version}: {name} {problem}")
    probe = upload_probe()
    if not probe["pickle_refused"]:
        problems.append("the upload validator accepted a pickle")
    total = live.count()
    evidence = {
        "artifacts": total,
        "files_inspected": files,
        "accepted_formats": {k: list(v) for k, v in formats.items()},
        "upload_probe": probe,
        "problems": problems[:LIST_LIMIT],
    }
    if problems:
        return CheckResult(
            FAIL,
            f"{len(problems)} problem(s): " + "; ".join(problems[:3]),
            evidence,
            "Shred the listed versions and find out how they were stored past the upload validation; keep the "
            "registry's ONNX/language-model validation in the upload path.",
        )
    if not total:
        return CheckResult(NA, "no artifact is stored (the upload validator refuses a pickle)", evidence)
    return CheckResult(
        PASS,
        f"{files} file(s) of {total} artifact(s) decrypted at their start are ONNX, JSON or text, no pickle or "
        "executable; the upload validator refuses a pickle",
        evidence,
    )


def _residue_roots() -> list:
    """Where plaintext or temporary copies of model files could be left: the artifact store (and
    the import staging directory), and this host's temporary directories of the Triton models."""
    import tempfile
    from pathlib import Path

    from django.conf import settings

    roots = [Path(settings.ARTIFACT_DIR)]
    staging = getattr(settings, "IMPORT_STAGING_DIR", "")
    if staging:
        roots.append(Path(staging))
    temp = Path(getattr(settings, "RESIDUE_TEMP_DIR", "") or tempfile.gettempdir())
    if temp.is_dir():
        with contextlib.suppress(OSError):
            roots += sorted(p for p in temp.iterdir() if p.is_dir() and p.name.startswith("sovereign-"))
    return roots


def residue_files() -> list[str]:
    """Files that are partial decryptions (`*.partial`) or start like a plaintext model format."""
    found = []
    for root in _residue_roots():
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            try:
                if not path.is_file() or path.is_symlink():
                    continue
                if path.name.endswith(".partial"):
                    found.append(f"{path} (partial decryption)")
                    continue
                with open(path, "rb") as f:
                    head = f.read(HEAD)
            except OSError:
                continue
            if head[:4] == b"SVRN":
                continue
            kind = plaintext_kind(head)
            if kind:
                found.append(f"{path} ({kind})")
            if len(found) >= LIST_LIMIT:
                return found
    return found


@register("keys.disposal", proof="probe")
def disposal(ctx) -> CheckResult:
    """HIPAA 164.310(d)(2): what was shredded is gone — destroyed data keys hold no wrapped bytes,
    shredded versions' ciphertext files are deleted, retired KEK versions are refused by the key
    provider (probed), finished imports kept no ephemeral key or staged file, and no plaintext or
    partial decryption is left in the artifact store or the Triton models' temporary directories."""
    from apps.audit.models import AuditEvent
    from apps.keys.models import DataKey, KekState, KeyEncryptionKey
    from apps.keys.services import kek_refuses
    from apps.registry.models import Artifact, ImportJob, ImportState

    problems = []
    destroyed = DataKey.objects.filter(destroyed_at__isnull=False)
    still_wrapped = [f"data key #{pk}" for pk in destroyed.exclude(wrapped=b"").values_list("pk", flat=True)]
    problems += [f"{name} is marked destroyed but its wrapped key remains" for name in still_wrapped]
    shredded = Artifact.objects.filter(data_key__destroyed_at__isnull=False).select_related("version__model")
    leftover = []
    for art in shredded.prefetch_related("files"):
        leftover += [f"{art.version}: {p.name}" for p in art.paths() if p.exists()]
    problems += [f"ciphertext of shredded {x} is still on disk" for x in leftover]
    retired = list(KeyEncryptionKey.objects.filter(state=KekState.RETIRED).values_list("kek_id", flat=True))
    usable = [kek_id for kek_id in retired if not kek_refuses(kek_id)]
    problems += [f"retired KEK {kek_id} is still usable in the key provider" for kek_id in usable]
    control = KeyEncryptionKey.objects.filter(state=KekState.ACTIVE).values_list("kek_id", flat=True).first()
    if retired and control and kek_refuses(control):
        # the provider refuses everything (unreachable, logged out): a refusal proves nothing
        problems.append("the key provider refuses the active KEK too, so the retired ones cannot be proven gone")
    finished = ImportJob.objects.filter(state__in=[ImportState.SUCCEEDED, ImportState.FAILED])
    kept_keys = list(finished.exclude(staging_wrapped_key=b"").values_list("pk", flat=True))
    problems += [f"finished import #{pk} still holds its ephemeral data key" for pk in kept_keys]
    staged = [j.staging_path for j in finished.exclude(staging_name="") if j.staging_path and j.staging_path.exists()]
    problems += [f"staged upload {p.name} of a finished import is still on disk" for p in staged]
    residue = residue_files()
    problems += [f"plaintext or partial file left: {r}" for r in residue]
    destroy_events = AuditEvent.objects.filter(event_type="keys.dek.destroy").count()
    live_kek_ids = set(KeyEncryptionKey.objects.exclude(state=KekState.RETIRED).values_list("kek_id", flat=True))
    evidence = {
        "destroyed_data_keys": destroyed.count(),
        "dek_destroy_events": destroy_events,
        "shredded_versions": shredded.count(),
        "retired_keks_probed": retired,
        "retired_keks_usable": usable,
        # Informational: a database backup taken before a shred still holds these keys wrapped by a
        # KEK the provider still has; retiring that KEK (after a rotation) makes them unrecoverable.
        "shredded_keys_under_live_kek": destroyed.filter(kek_id__in=live_kek_ids).count(),
        "residue_scanned": [str(p) for p in _residue_roots()][:LIST_LIMIT],
        "problems": problems[:LIST_LIMIT],
    }
    if problems:
        return CheckResult(
            FAIL,
            f"{len(problems)} disposal problem(s): " + "; ".join(problems[:3]),
            evidence,
            "Delete (securely wipe) the listed files, retire KEK versions in the provider (manage the HSM object), "
            "and find out which step of the shred or import left them.",
        )
    return CheckResult(
        PASS,
        f"{evidence['destroyed_data_keys']} destroyed data key(s) hold no key material, "
        f"{evidence['shredded_versions']} shredded version(s) left no ciphertext, "
        f"{len(retired)} retired KEK(s) refused by the provider, no plaintext residue",
        evidence,
    )
