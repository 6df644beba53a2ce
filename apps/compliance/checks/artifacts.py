"""Checks of what the artifact store holds: no executable content (等保 8.1.4.5), and that
crypto-shredded versions really cannot be decrypted any more (HIPAA 164.310(d)(2))."""

from __future__ import annotations

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


@register("registry.no_executable_artifacts")
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
