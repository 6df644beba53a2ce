"""Registering model versions: validate, read the signature, encrypt at rest, record; and
crypto-shredding them.

Nothing is half-saved: the ciphertext file is written before the database transaction and
removed again if that transaction does not commit; the data key (apps.keys), the version and its
artifact commit together.

Registry knows nothing of deployments: before shredding it asks the checks registered in
`VERSION_IN_USE_CHECKS` (the deployments app adds its own in its AppConfig.ready()).
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.errors import Conflict, ServiceError, _, get_or_404
from apps.keys import services as keys
from apps.keys.models import Purpose
from inference_backend.envelope import sha256_hex
from inference_backend.private_file import write_private
from inference_backend.signature import InvalidModelError, breaking_changes, read_onnx_signature

from . import llm
from .integrity import verify_artifacts  # noqa: F401 - the verification service (apps/registry/integrity.py)
from .models import Artifact, ArtifactFile, Model, ModelFormat, ModelVersion, model_name_validator
from .storage import PrivateSink

# Callables (model_version) -> None that raise a ServiceError (e.g. Conflict "version_deployed")
# while something still uses the version; `shred_model_version` calls each under its lock.
VersionInUseCheck = Callable[[ModelVersion], None]
VERSION_IN_USE_CHECKS: list[VersionInUseCheck] = []


def _breaking_changes(model: Model, version: int, signature: dict) -> list[str]:
    """What changed incompatibly since the model's previous version (the highest below `version`)."""
    previous = model.versions.filter(version__lt=version).order_by("-version").first()
    return breaking_changes(previous.signature, signature) if previous else []


def register_version_in_use_check(check: VersionInUseCheck) -> None:
    """For the apps above the registry (AppConfig.ready()): veto the shredding of a version in use."""
    if check not in VERSION_IN_USE_CHECKS:
        VERSION_IN_USE_CHECKS.append(check)


def register_model_version(
    *,
    model_name: str,
    data: bytes,
    version: int | None = None,
    description: str = "",
    actor,
    source: Source = SYSTEM,
) -> ModelVersion:
    """Validate an ONNX upload, store it encrypted and record it. Raises ServiceError (and
    records a `registry.version.rejected` event) when the upload is refused."""
    try:
        return _register(model_name, data, version, description, actor, source)
    except ServiceError as err:
        record_rejection(
            model_name=model_name, version=version, size_bytes=len(data), error=err, actor=actor, source=source
        )
        raise


def record_rejection(
    *,
    model_name: str,
    version,
    size_bytes: int,
    error: ServiceError,
    actor,
    source: Source = SYSTEM,
    extra: dict | None = None,
) -> None:
    """Record a refused upload (`registry.version.rejected`), whichever layer refused it."""
    with transaction.atomic():
        record_event(
            "registry.version.rejected",
            actor=actor,
            source=source,
            target_type="registry.model",
            target_display=model_name[:200],
            outcome=Outcome.FAILURE,
            error_code=error.code,
            details={
                "model": model_name[:200],
                "version": version,
                "size_bytes": size_bytes,
                "reason": error.detail_en,
                **(extra or {}),
            },
        )


def _register(model_name, data, version, description, actor, source) -> ModelVersion:
    _validate_name(model_name)
    if len(data) > settings.MAX_UPLOAD_BYTES:
        raise ServiceError(
            "file_too_large",
            _("the upload is %(n_data)s bytes; the limit is %(max_upload_bytes)s (SOVEREIGN_MAX_UPLOAD_BYTES)")
            % {"n_data": len(data), "max_upload_bytes": settings.MAX_UPLOAD_BYTES},
            413,
            "file",
        )
    if version is not None and version < 1:
        raise ServiceError("invalid_version", _("version must be a positive integer"), field="version")
    model = Model.objects.filter(name=model_name).first()
    if version is None:
        version = (model.versions.aggregate(m=Max("version"))["m"] or 0) + 1 if model else 1
    elif model and model.versions.filter(version=version).exists():
        raise _duplicate(model_name, version)
    try:
        signature = read_onnx_signature(data)
    except InvalidModelError as err:
        raise ServiceError(err.code, _("not a valid ONNX model: %(err)s") % {"err": err}, field="file") from err
    storage_name = f"{uuid.uuid4().hex}.enc"
    aad = f"sovereign:artifact:{storage_name}:{model_name}:{version}"
    sealed = keys.seal(data, aad.encode(), purpose=Purpose.ARTIFACT)
    path = settings.ARTIFACT_DIR / storage_name
    write_private(path, sealed.ciphertext)
    try:
        with transaction.atomic():
            if model is None:
                model, created = Model.objects.get_or_create(
                    name=model_name, defaults={"description": description, "created_by": acting_user(actor)}
                )
                if created:
                    record_event(
                        "registry.model.create",
                        actor=actor,
                        source=source,
                        target=model,
                        details={"after": {"name": model.name, "description": model.description}},
                    )
            mv = ModelVersion.objects.create(
                model=model,
                version=version,
                sha256=sha256_hex(data),
                size_bytes=len(data),
                signature=signature,
                breaking_changes=_breaking_changes(model, version, signature),
                created_by=acting_user(actor),
            )
            data_key = keys.store_data_key(sealed.data_key, actor=actor, source=source)
            Artifact.objects.create(
                version=mv,
                data_key=data_key,
                storage_name=storage_name,
                aad=aad,
                ciphertext_sha256=sha256_hex(sealed.ciphertext),
                ciphertext_bytes=len(sealed.ciphertext),
            )
            record_event(
                "registry.version.create",
                actor=actor,
                source=source,
                target=mv,
                details={
                    "after": {
                        "model": model_name,
                        "version": version,
                        "sha256": mv.sha256,
                        "size_bytes": mv.size_bytes,
                        "suite": data_key.suite,
                        "kek_id": data_key.kek_id,
                        "signature": signature,
                        "breaking_changes": mv.breaking_changes,
                    }
                },
            )
        return mv
    except IntegrityError as err:
        path.unlink(missing_ok=True)
        raise _duplicate(model_name, version) from err
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def shred_model_version(*, model_version_id: int, reason: str, actor, source: Source = SYSTEM) -> ModelVersion:
    """Crypto-shred a model version: destroy its data key (apps.keys, event `keys.dek.destroy`) so
    the ciphertext can never be decrypted again, then delete the ciphertext file once that is
    committed.

    Refused while a registered check says the version is in use (the deployments app: wanted or
    still loaded, `version_deployed`), and a second time (`already_shredded`). The audit event
    names the KEK, never key bytes.
    """
    with transaction.atomic():
        mv = get_or_404(
            ModelVersion.objects.select_related("model"),
            "model_version_not_found",
            _("no model version with id %(model_version_id)s") % {"model_version_id": model_version_id},
            pk=model_version_id,
        )
        artifact = Artifact.objects.select_for_update().get(version=mv)
        if artifact.is_shredded:
            raise Conflict("already_shredded", _("the data key of %(mv)s was already destroyed") % {"mv": mv})
        for check in VERSION_IN_USE_CHECKS:
            check(mv)
        keys.destroy_data_key(
            data_key_id=artifact.data_key_id,
            reason=reason,
            actor=actor,
            source=source,
            target=mv,
            details={"model": mv.model.name, "version": mv.version},
        )
        paths = artifact.paths()  # one file, or every file of a language model's set
        # The files go only once the key is gone for good: a rollback must leave both intact.
        transaction.on_commit(lambda: [p.unlink(missing_ok=True) for p in paths])
    return mv


def read_artifact_ciphertext(artifact: Artifact) -> bytes:
    try:
        return artifact.path.read_bytes()
    except FileNotFoundError as err:
        raise ServiceError(
            "artifact_missing", _("the encrypted file of %(version)s is missing") % {"version": artifact.version}, 500
        ) from err


def read_artifact_file(artifact_file: ArtifactFile) -> bytes:
    """The ciphertext of one file of a set (for Triton's load request)."""
    try:
        return artifact_file.path.read_bytes()
    except FileNotFoundError as err:
        raise ServiceError(
            "artifact_missing",
            _("the encrypted file %(artifact_file)s of %(version)s is missing")
            % {"artifact_file": artifact_file.name, "version": artifact_file.artifact.version},
            500,
        ) from err


def _validate_name(name: str) -> None:
    try:
        model_name_validator(name)
    except ValidationError as err:
        raise ServiceError(
            "invalid_model_name", err.messages[0], field="name"
        ) from err  # i18n-ok: the model's validator


def _duplicate(model_name: str, version: int) -> Conflict:
    return Conflict(
        "duplicate_version",
        _("model %(model_name)s already has version %(version)s")
        % {"model_name": repr(model_name), "version": version},
        "version",
    )


# --------------------------------------------------------------------------- language models

LLMSource = bytes | bytearray | memoryview | BinaryIO | Iterable[bytes]


class _ViewReader:
    """read/seek over a bytes-like object without copying it (BytesIO(bytearray) would copy)."""

    def __init__(self, data) -> None:
        self.view = memoryview(data).cast("B")
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n is None or n < 0 else min(len(self.view), self.pos + n)
        chunk = self.view[self.pos : end].tobytes()
        self.pos = end
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: len(self.view)}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def chunks(self, size: int = 1 << 20) -> Iterator[memoryview]:
        for start in range(0, len(self.view), size):
            yield self.view[start : start + size]


def _chunks(source, size: int = 1 << 20) -> Iterator:
    """The bytes of one file of the set, chunk by chunk, whatever form it came in."""
    if isinstance(source, _ViewReader):
        yield from source.chunks(size)
    elif hasattr(source, "read"):
        while chunk := source.read(size):
            yield chunk
    else:
        for chunk in source:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise ServiceError("invalid_llm_file", _("a file of the set yielded something other than bytes"))
            yield chunk


def _read_limited(name: str, source, limit: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        parts, total = [], 0
        for chunk in _chunks(source):
            total += len(chunk)
            if total > limit:
                break
            parts.append(bytes(chunk))
        data = b"".join(parts) if total <= limit else b""
        if total > limit:
            raise ServiceError(
                "file_too_large", _("%(name)s is over %(limit)s bytes") % {"name": name, "limit": limit}, 413, "files"
            )
    if len(data) > limit:
        raise ServiceError(
            "file_too_large", _("%(name)s is over %(limit)s bytes") % {"name": name, "limit": limit}, 413, "files"
        )
    return data


def _graph_source(source):
    """model.onnx as something the wire scanner can read and the encryptor read again: bytes are
    wrapped without a copy, a seekable file is rewound, anything else is buffered once (≤ 2 GiB)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return _ViewReader(source), len(memoryview(source).cast("B"))
    if hasattr(source, "read") and hasattr(source, "seek"):
        try:
            start = source.tell()
            size = source.seek(0, io.SEEK_END) - start
            source.seek(start)
            return source, size
        except (OSError, io.UnsupportedOperation):
            pass
    buffer = bytearray()
    for chunk in _chunks(source):
        buffer += chunk
        if len(buffer) > llm.GRAPH_LIMIT:
            raise ServiceError("invalid_model", _("model.onnx exceeds protobuf's 2 GiB"), 413, "files")
    return _ViewReader(buffer), len(buffer)


def register_llm_version(
    *,
    model_name: str,
    files: Mapping[str, LLMSource],
    version: int | None = None,
    description: str = "",
    actor,
    source: Source = SYSTEM,
) -> ModelVersion:
    """Validate a language model's file set (apps/registry/llm.py), encrypt every file chunk by
    chunk under the version's one data key (associated data: artifact id + file name), and record
    the version (format `llm`, signature with kind "llm"), its Artifact and one ArtifactFile per
    file. Ciphertext is written before the transaction and removed if it does not commit. A
    refusal raises ServiceError and records `registry.version.rejected`."""
    try:
        return _register_llm(model_name, files, version, description, actor, source)
    except ServiceError as err:
        record_rejection(
            model_name=model_name,
            version=version,
            size_bytes=_known_size(files),
            error=err,
            actor=actor,
            source=source,
            extra={"format": ModelFormat.LLM, "files": sorted(str(n)[:100] for n in files)[:10]},
        )
        raise


def _known_size(files) -> int:
    return sum(len(v) for v in files.values() if isinstance(v, bytes | bytearray))


def _register_llm(model_name, files, version, description, actor, source) -> ModelVersion:
    _validate_name(model_name)
    if version is not None and version < 1:
        raise ServiceError("invalid_version", _("version must be a positive integer"), field="version")
    llm.check_names(files.keys())
    small = {name: _read_limited(name, files[name], limit) for name, limit in llm.SMALL_FILE_LIMITS.items()}
    config = llm.check_config(llm.parse_json_file("config.json", small["config.json"]))
    generation = llm.parse_json_file("generation_config.json", small["generation_config.json"])
    llm.check_tokenizer(small["tokenizer.json"])
    chat_template = llm.check_chat_template(small["chat_template.jinja"])
    graph, graph_size = _graph_source(files["model.onnx"])
    start = graph.tell() if hasattr(graph, "tell") else 0
    info = llm.scan_model(graph, graph_size)
    graph.seek(start)
    llm.check_decoder(info, config["n_layers"])
    if llm.EXTERNAL_DATA_FILE not in files:
        llm.check_external(info, None)
    model = Model.objects.filter(name=model_name).first()
    if version is None:
        version = (model.versions.aggregate(m=Max("version"))["m"] or 0) + 1 if model else 1
    elif model and model.versions.filter(version=version).exists():
        raise _duplicate(model_name, version)

    set_id = uuid.uuid4().hex
    artifact_aad = f"sovereign:artifact:{set_id}:{model_name}:{version}"
    sources = {**small, "model.onnx": graph}
    if llm.EXTERNAL_DATA_FILE in files:
        sources[llm.EXTERNAL_DATA_FILE] = files[llm.EXTERNAL_DATA_FILE]
    written: list[PrivateSink] = []
    records: list[dict] = []
    try:
        with keys.StreamSealer(purpose=Purpose.ARTIFACT) as sealer:
            for index, name in enumerate(sorted(sources)):
                sink = PrivateSink(settings.ARTIFACT_DIR / f"{set_id}.{index:02d}.enc")
                written.append(sink)
                aad = f"{artifact_aad}:{name}"
                plain = hashlib.sha256()
                encryptor = sealer.encryptor(sink, aad.encode())
                data = sources[name]
                for chunk in _chunks(_ViewReader(data) if isinstance(data, bytes) else data):
                    plain.update(chunk)
                    encryptor.write(chunk)
                encryptor.close()
                sink.close()
                records.append(
                    {
                        "name": name,
                        "storage_name": sink.path.name,
                        "sha256": plain.hexdigest(),
                        "size_bytes": encryptor.plaintext_bytes,
                        "ciphertext_sha256": sink.sha256,
                        "ciphertext_bytes": sink.bytes,
                        "aad": aad,
                    }
                )
            data_key = sealer.data_key
        sizes = {r["name"]: r["size_bytes"] for r in records}
        if llm.EXTERNAL_DATA_FILE in sizes:
            llm.check_external(info, sizes[llm.EXTERNAL_DATA_FILE])
        listing = [{"name": r["name"], "sha256": r["sha256"], "size": r["size_bytes"]} for r in records]
        signature = llm.build_signature(config, generation, chat_template, listing)
        set_sha256 = sha256_hex(json.dumps(listing, sort_keys=True, separators=(",", ":")).encode())
        with transaction.atomic():
            if model is None:
                model, created = Model.objects.get_or_create(
                    name=model_name, defaults={"description": description, "created_by": acting_user(actor)}
                )
                if created:
                    record_event(
                        "registry.model.create",
                        actor=actor,
                        source=source,
                        target=model,
                        details={"after": {"name": model.name, "description": model.description}},
                    )
            mv = ModelVersion.objects.create(
                model=model,
                version=version,
                format=ModelFormat.LLM,
                sha256=set_sha256,
                size_bytes=sum(sizes.values()),
                signature=signature,
                breaking_changes=_breaking_changes(model, version, signature),
                created_by=acting_user(actor),
            )
            stored = keys.store_data_key(data_key, actor=actor, source=source)
            artifact = Artifact.objects.create(
                version=mv,
                data_key=stored,
                storage_name=set_id,
                aad=artifact_aad,
                ciphertext_sha256=sha256_hex(
                    "\n".join(f"{r['name']}:{r['ciphertext_sha256']}" for r in records).encode()
                ),
                ciphertext_bytes=sum(r["ciphertext_bytes"] for r in records),
            )
            ArtifactFile.objects.bulk_create(ArtifactFile(artifact=artifact, **r) for r in records)
            record_event(
                "registry.version.create",
                actor=actor,
                source=source,
                target=mv,
                details={
                    "after": {
                        "model": model_name,
                        "version": version,
                        "format": ModelFormat.LLM,
                        "sha256": mv.sha256,
                        "size_bytes": mv.size_bytes,
                        "suite": stored.suite,
                        "kek_id": stored.kek_id,
                        "architecture": signature["architecture"],
                        "quantization": signature["quantization"],
                        "context_length": signature["context_length"],
                        "breaking_changes": mv.breaking_changes,
                        "files": listing,
                    }
                },
            )
        return mv
    except IntegrityError as err:
        _discard(written)
        raise _duplicate(model_name, version) from err
    except BaseException:
        _discard(written)
        raise


def _discard(sinks: list[PrivateSink]) -> None:
    for sink in sinks:
        sink.discard()


def render_triton_layout(*, model_version: ModelVersion, backend: str, options: dict) -> dict[str, str]:
    """A language model version's Triton layout for a GPU backend (inference_backend/llm_configs.py),
    validated with Triton's model-config protobuf: {relative path: text}. 400 `not_a_language_model`
    for a classifier; the renderer's own codes (llm_config_*) for bad options."""
    from inference_backend.llm_configs import LLMConfigError, render_backend_layout

    if model_version.signature.get("kind") != "llm":
        raise ServiceError(
            "not_a_language_model",
            _("%(model_version)s is not a language model") % {"model_version": model_version},
            400,
        )
    try:
        files = render_backend_layout(backend, model_version.model.name, model_version.signature, options)
    except LLMConfigError as err:
        raise ServiceError(
            err.code, err.message, 400, field="options"
        ) from None  # i18n-ok: inference_backend's renderer
    return {path: data.decode("utf-8") for path, data in sorted(files.items())}
