"""Registering model versions: validate, read the signature, encrypt at rest, record; and
crypto-shredding them.

Nothing is half-saved: the ciphertext file is written before the database transaction and
removed again if that transaction does not commit; the data key (apps.keys), the version and its
artifact commit together.

Registry knows nothing of deployments: before shredding it asks the checks registered in
`VERSION_IN_USE_CHECKS` (the deployments app adds its own in its AppConfig.ready()).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.errors import Conflict, ServiceError, get_or_404
from apps.keys import services as keys
from apps.keys.models import Purpose
from inference_backend.envelope import sha256_hex
from inference_backend.private_file import write_private
from inference_backend.signature import InvalidModelError, read_onnx_signature

from .models import Artifact, Model, ModelVersion, model_name_validator

# Callables (model_version) -> None that raise a ServiceError (e.g. Conflict "version_deployed")
# while something still uses the version; `shred_model_version` calls each under its lock.
VersionInUseCheck = Callable[[ModelVersion], None]
VERSION_IN_USE_CHECKS: list[VersionInUseCheck] = []


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
    *, model_name: str, version, size_bytes: int, error: ServiceError, actor, source: Source = SYSTEM
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
            details={"model": model_name[:200], "version": version, "size_bytes": size_bytes, "reason": error.detail},
        )


def _register(model_name, data, version, description, actor, source) -> ModelVersion:
    _validate_name(model_name)
    if len(data) > settings.MAX_UPLOAD_BYTES:
        raise ServiceError(
            "file_too_large",
            f"the upload is {len(data)} bytes; the limit is {settings.MAX_UPLOAD_BYTES} (SOVEREIGN_MAX_UPLOAD_BYTES)",
            413,
            "file",
        )
    if version is not None and version < 1:
        raise ServiceError("invalid_version", "version must be a positive integer", field="version")
    model = Model.objects.filter(name=model_name).first()
    if version is None:
        version = (model.versions.aggregate(m=Max("version"))["m"] or 0) + 1 if model else 1
    elif model and model.versions.filter(version=version).exists():
        raise _duplicate(model_name, version)
    try:
        signature = read_onnx_signature(data)
    except InvalidModelError as err:
        raise ServiceError(err.code, f"not a valid ONNX model: {err}", field="file") from err
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
            f"no model version with id {model_version_id}",
            pk=model_version_id,
        )
        artifact = Artifact.objects.select_for_update().get(version=mv)
        if artifact.is_shredded:
            raise Conflict("already_shredded", f"the data key of {mv} was already destroyed")
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
        path = artifact.path
        # The file goes only once the key is gone for good: a rollback must leave both intact.
        transaction.on_commit(lambda: path.unlink(missing_ok=True))
    return mv


def read_artifact_ciphertext(artifact: Artifact) -> bytes:
    try:
        return artifact.path.read_bytes()
    except FileNotFoundError as err:
        raise ServiceError("artifact_missing", f"the encrypted file of {artifact.version} is missing", 500) from err


def _validate_name(name: str) -> None:
    try:
        model_name_validator(name)
    except ValidationError as err:
        raise ServiceError("invalid_model_name", err.messages[0], field="name") from err


def _duplicate(model_name: str, version: int) -> Conflict:
    return Conflict("duplicate_version", f"model {model_name!r} already has version {version}", "version")
