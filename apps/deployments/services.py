"""Deployments: requested in the database, reconciled onto Triton by apps.deployments.tasks.

request_* functions record the desired state and enqueue the reconcile task after commit.
reconcile_deployment moves one deployment's Triton server toward its desired state; it is
idempotent and safe to run again after a crash at any point.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.context import current_request_id
from apps.core.errors import Conflict, ServiceError, get_or_404
from apps.registry.models import ModelVersion
from apps.registry.services import read_artifact_ciphertext, read_artifact_file
from inference_backend.client import TritonClient, TritonError, TritonRefused, TritonUnavailable, clean_upstream_text
from inference_backend.config import BATCHING_FIELDS, BatchingSettings, render_config

from .credentials import credential_for, set_server_credential, validate_credential
from .models import (
    Backend,
    Deployment,
    Desired,
    InferenceServer,
    Observed,
    ServerState,
    default_backends,
    validate_backends,
)
from .transport import check_grpc_address, check_server_url, client_for

LEASE = timedelta(minutes=10)
TRITON_MODEL_SOURCE = Path(__file__).resolve().parents[2] / "inference_backend" / "triton_model.py"
TRITON_LLM_MODEL_SOURCE = Path(__file__).resolve().parents[2] / "inference_backend" / "llm_model.py"
CANARY_MODEL_SOURCE = Path(__file__).resolve().parents[2] / "inference_backend" / "canary_model.py"
ENCRYPTED_FILE = "model.onnx.enc"


def register_server(
    *,
    name: str,
    http_url: str,
    grpc_url: str = "",
    hardware: str = "cpu",
    backends: list[str] | None = None,
    credential: str | None = None,
    actor,
    source: Source = SYSTEM,
) -> InferenceServer:
    """Register a Triton endpoint (or return the existing one of that name unchanged).

    ``credential``: the server's restricted-API credential (docs/triton-credential.md), stored
    sealed with a new server; an existing server's is changed by `set_server_credential`.

    The URL must pass the server policy (apps/deployments/transport.py, docs/triton-tls.md): a
    refused one raises ServiceError with the policy's code, records `deployment.server.rejected`
    and saves nothing.
    """
    backends = list(default_backends() if backends is None else backends)
    try:
        check_server_url(http_url)
        if credential is not None:
            validate_credential(credential)
        if grpc_url:
            check_grpc_address(grpc_url)
        try:
            validate_backends(backends)
        except DjangoValidationError as err:
            raise ServiceError("invalid_backends", err.messages[0], field="backends") from err
    except ServiceError as err:
        with transaction.atomic():
            record_event(
                "deployment.server.rejected",
                actor=actor,
                source=source,
                target_type="deployments.inferenceserver",
                target_display=name[:200],
                outcome=Outcome.FAILURE,
                error_code=err.code,
                details={"name": name[:200], "http_url": http_url[:300], "reason": err.detail},
            )
        raise
    with transaction.atomic():
        server, created = InferenceServer.objects.get_or_create(
            name=name,
            defaults={"http_url": http_url, "grpc_url": grpc_url, "hardware": hardware, "backends": backends},
        )
        if created:
            record_event(
                "deployment.server.create",
                actor=actor,
                source=source,
                target=server,
                details={"after": {"name": name, "http_url": http_url, "hardware": hardware, "backends": backends}},
            )
            if credential is not None:
                server = set_server_credential(server_id=server.pk, credential=credential, actor=actor, source=source)
    return server


def request_deployment(
    *, model_version_id: int, server_id: int, batching: dict | None = None, actor, source: Source = SYSTEM
) -> Deployment:
    """Record that a model version should be served on a server, and enqueue the reconcile."""
    mv = get_or_404(
        ModelVersion.objects.select_related("model"),
        "model_version_not_found",
        f"no model version with id {model_version_id}",
        pk=model_version_id,
    )
    if mv.artifact.is_shredded:
        raise Conflict("artifact_shredded", f"the data key of {mv} was destroyed; it can no longer be deployed")
    server = get_or_404(InferenceServer, "server_not_found", f"no inference server with id {server_id}", pk=server_id)
    _check_backend(mv, server, actor, source)
    settings_ = _batching(batching or {})
    # Versions load under their own Triton names (triton_model_name), so other versions of the model
    # may be live on this server; the same version twice is refused by the database constraint.
    conflict = Conflict(
        "already_deployed",
        f"version {mv.version} of {mv.model.name} already has an active deployment on {server.name}",
        "server",
    )
    try:
        with transaction.atomic():
            dep = Deployment.objects.create(
                model=mv.model,
                model_version=mv,
                server=server,
                requested_by=acting_user(actor),
                **settings_.as_dict(),
            )
            dep.transitions.create(to_state=Observed.PENDING, message="requested")
            record_event(
                "deployment.request", actor=actor, source=source, target=dep, details={"after": _snapshot(dep)}
            )
            _enqueue(dep)
    except IntegrityError as err:
        raise conflict from err
    return dep


def required_backend(mv: ModelVersion) -> str:
    """The Triton backend a version needs: a language model runs in the decoupled python model
    (inference_backend/llm_model.py), a classifier in the python model too (triton_model.py)."""
    return Backend.PYTHON


def _check_backend(mv: ModelVersion, server: InferenceServer, actor, source: Source) -> None:
    needed = required_backend(mv)
    if needed in (server.backends or []):
        return
    err = Conflict(
        "backend_unavailable",
        f"{mv} needs the {needed!r} backend; server {server.name} declares "
        f"{', '.join(server.backends or []) or 'none'}",
        "server",
    )
    with transaction.atomic():
        record_event(
            "deployment.request.rejected",
            actor=actor,
            source=source,
            target=mv,
            outcome=Outcome.FAILURE,
            error_code=err.code,
            details={"model": mv.model.name, "version": mv.version, "server": server.name, "reason": err.detail},
        )
    raise err


def request_undeploy(*, deployment_id: int, actor, source: Source = SYSTEM) -> Deployment:
    """Mark a deployment to be unloaded (idempotent) and enqueue the reconcile."""
    with transaction.atomic():
        dep = get_or_404(
            Deployment.objects.select_for_update(),
            "deployment_not_found",
            f"no deployment with id {deployment_id}",
            pk=deployment_id,
        )
        before = dep.desired_state
        dep.desired_state = Desired.INACTIVE
        dep.requested_by = acting_user(actor) or dep.requested_by
        dep.save(update_fields=["desired_state", "requested_by", "updated_at"])
        record_event(
            "deployment.undeploy",
            actor=actor,
            source=source,
            target=dep,
            details={"before": {"desired_state": before}, "after": {"desired_state": dep.desired_state}},
        )
        _enqueue(dep)
    return dep


def request_redeploy(*, deployment_id: int, actor, source: Source = SYSTEM) -> Deployment:
    """Retry a FAILED deployment (or re-activate an undeployed one)."""
    try:
        with transaction.atomic():
            dep = get_or_404(
                Deployment.objects.select_for_update(),
                "deployment_not_found",
                f"no deployment with id {deployment_id}",
                pk=deployment_id,
            )
            if dep.model_version.artifact.is_shredded:  # as request_deployment: nothing left to load
                raise Conflict(
                    "artifact_shredded",
                    f"the data key of {dep.model_version} was destroyed; it can no longer be deployed",
                )
            before = {"desired_state": dep.desired_state, "observed_state": dep.observed_state}
            dep.desired_state = Desired.ACTIVE
            dep.requested_by = acting_user(actor) or dep.requested_by
            dep.save(update_fields=["desired_state", "requested_by", "updated_at"])
            if dep.observed_state == Observed.FAILED:
                _transition(dep, Observed.PENDING, "redeploy requested")
            record_event(
                "deployment.request",
                actor=actor,
                source=source,
                target=dep,
                details={"before": before, "after": _snapshot(dep)},
            )
            _enqueue(dep)
    except IntegrityError as err:
        raise Conflict(
            "already_deployed", "this version of the model already has an active deployment on that server", "server"
        ) from err
    return dep


def reconcile_deployment(deployment_id: int) -> Deployment | None:
    """Move Triton toward the deployment's desired state. Returns None when the deployment is
    gone or another worker holds it. Raises TritonUnavailable for the caller to retry."""
    if not _claim(deployment_id):
        return None
    try:
        dep = Deployment.objects.select_related("model", "model_version__artifact__data_key", "server").get(
            pk=deployment_id
        )
        try:
            # Closed afterwards: a stopping Triton waits for every open keep-alive connection.
            credential = credential_for(dep.server)
            with client_for(dep.server.http_url, settings.TRITON_TIMEOUT, credential) as client:
                if dep.desired_state == Desired.ACTIVE:
                    _converge_active(dep, client)
                else:
                    _converge_inactive(dep, client)
        except TritonUnavailable:
            _record_server_state(dep.server, False)
            raise
        except TritonRefused as err:  # the server policy or TLS: permanent, no retry
            _record_server_state(dep.server, False)
            fail_deployment(dep.pk, err.message)
            return Deployment.objects.get(pk=dep.pk)
        _record_server_state(dep.server, True)
        return dep
    finally:
        Deployment.objects.filter(pk=deployment_id).update(claimed_until=None)


def probe_server(server_id: int) -> InferenceServer | None:
    """Ask a server whether it is ready and record what was seen (state, last seen time)."""
    server = InferenceServer.objects.filter(pk=server_id).first()
    if server is None:
        return None
    try:
        with client_for(server.http_url, min(5.0, settings.TRITON_TIMEOUT), credential_for(server)) as client:
            up = client.server_ready()
    except TritonError:
        up = False
    _record_server_state(server, up)
    return server


def ensure_deid_canary(server_id: int) -> InferenceServer:
    """Make sure the de-identification canary (inference_backend/canary_model.py: a python model
    without weights that answers with its input) is loaded on the server, for the compliance
    probe of `deid.phi_models`. Idempotent: loaded only when the server does not report it ready;
    a load is audited (`deployment.canary.load`). Raises ServiceError 503 `canary_unavailable`
    when the server cannot be reached or refuses the load."""
    from inference_backend.canary_model import CANARY_MODEL, canary_config

    server = get_or_404(InferenceServer, "server_not_found", f"no inference server with id {server_id}", pk=server_id)
    try:
        with client_for(server.http_url, settings.TRITON_TIMEOUT) as client:
            if client.model_ready(CANARY_MODEL):
                return server
            client.load_model(
                CANARY_MODEL,
                canary_config(),
                {"1/model.py": CANARY_MODEL_SOURCE.read_bytes()},
                timeout=settings.TRITON_LOAD_TIMEOUT,
            )
            if not client.model_ready(CANARY_MODEL):
                raise TritonError(None, "Triton loaded the canary but does not report it ready")
    except TritonError as err:
        raise ServiceError(
            "canary_unavailable",
            f"the de-identification canary could not be loaded on {server.name}: {clean_upstream_text(err.message)}",
            503,
        ) from err
    with transaction.atomic():
        record_event(
            "deployment.canary.load",
            actor=None,
            target=server,
            details={"model": CANARY_MODEL, "purpose": "de-identification probe (compliance deid.phi_models)"},
        )
    return server


def _record_server_state(server: InferenceServer, up: bool) -> None:
    """Store what the probe saw; a change of state (up ↔ down) is an audit event, a probe that
    sees what the last one saw only refreshes `last_seen_at`."""
    fields = {"state": ServerState.UP if up else ServerState.DOWN}
    if up:
        fields["last_seen_at"] = timezone.now()
    with transaction.atomic():
        before = InferenceServer.objects.filter(pk=server.pk).values_list("state", flat=True).first()
        InferenceServer.objects.filter(pk=server.pk).update(**fields)
        if before != fields["state"]:
            record_event(
                "deployment.server.state",
                actor=None,
                target=server,
                outcome=Outcome.SUCCESS if up else Outcome.FAILURE,
                error_code="" if up else "triton_unavailable",
                details={"before": {"state": before}, "after": {"state": fields["state"]}},
            )
    for key, value in fields.items():
        setattr(server, key, value)


def fail_deployment(deployment_id: int, message: str) -> None:
    """Give up after the retries are exhausted: the deployment ends FAILED, never stuck in
    LOADING or UNLOADING. (The beat sweep still retries a failed undeploy later.)"""
    dep = Deployment.objects.filter(pk=deployment_id).first()
    if dep is not None and dep.observed_state in (Observed.PENDING, Observed.LOADING, Observed.UNLOADING):
        _transition(dep, Observed.FAILED, message)


def deployments_needing_reconcile():
    """Deployments not yet converged (or ACTIVE ones, to re-check that Triton still serves them)."""
    return Deployment.objects.filter(
        Q(desired_state=Desired.ACTIVE, observed_state__in=[Observed.PENDING, Observed.LOADING, Observed.ACTIVE])
        | Q(desired_state=Desired.INACTIVE) & ~Q(observed_state=Observed.INACTIVE)
    ).values_list("pk", flat=True)


def _converge_active(dep: Deployment, client: TritonClient) -> None:
    if dep.observed_state == Observed.ACTIVE and client.model_ready(dep.triton_name):
        return
    if dep.observed_state != Observed.LOADING:  # a retry after a transient failure is still the same load
        _transition(dep, Observed.LOADING, "loading on Triton")
    config, files = render_for_triton(dep)
    try:
        client.load_model(dep.triton_name, config, files, timeout=settings.TRITON_LOAD_TIMEOUT)
        if not client.model_ready(dep.triton_name):
            raise TritonError(None, "Triton loaded the model but does not report it ready")
        if dep.model_version.is_llm:
            smoke_llm(client, dep.triton_name)
        else:
            client.infer_json(dep.triton_name, smoke_inputs(dep.model_version.signature))
    except TritonUnavailable:
        raise
    except TritonError as err:
        _transition(dep, Observed.FAILED, err.message)
        return
    _transition(dep, Observed.ACTIVE, "loaded, ready and answered a smoke inference")  # llm: one token


def _converge_inactive(dep: Deployment, client: TritonClient) -> None:
    if dep.observed_state == Observed.INACTIVE:
        return
    _transition(dep, Observed.UNLOADING, "unloading from Triton")
    # Only this version's Triton name is unloaded, and only if no other deployment of the same version
    # on this server (a redeploy's new row) still wants it: other versions run under their own names.
    successor = Deployment.objects.filter(
        model_version=dep.model_version_id, server=dep.server_id, desired_state=Desired.ACTIVE
    ).exclude(pk=dep.pk)
    if not successor.exists():
        try:
            client.unload_model(dep.triton_name)
        except TritonUnavailable:
            raise
        except TritonError as err:
            if "not found" not in err.message.lower() and "unknown" not in err.message.lower():
                raise
    _transition(dep, Observed.INACTIVE, "unloaded")


def render_for_triton(dep: Deployment) -> tuple[dict, dict[str, bytes]]:
    """The model config and the files for Triton's repository `load` call. Only ciphertext and
    the wrapped data key leave the portal; the Triton host unwraps with its own KEK access."""
    mv = dep.model_version
    if mv.is_llm:
        return _render_llm(dep)
    art = mv.artifact
    data_key = art.data_key  # apps.keys: the wrapped key and the KEK version that wraps it now
    parameters = {
        "artifact_file": ENCRYPTED_FILE,
        "wrapped_dek": base64.b64encode(bytes(data_key.wrapped)).decode(),
        "kek_id": data_key.kek_id,
        "artifact_aad": art.aad,
        "artifact_sha256": mv.sha256,
    }
    config = render_config(dep.triton_name, mv.signature, dep.batching(), parameters=parameters)
    files = {
        f"{mv.version}/model.py": TRITON_MODEL_SOURCE.read_bytes(),
        f"{mv.version}/{ENCRYPTED_FILE}": read_artifact_ciphertext(art),
    }
    return config, files


def _render_llm(dep: Deployment) -> tuple[dict, dict[str, bytes]]:
    """A language model: the decoupled python model (inference_backend/llm_model.py, which imports
    inference_backend.llm on the Triton host as triton_model.py imports its helpers) with every
    encrypted file of the set as `1/<storage name>` and, in the config parameters, the wrapped data
    key and `artifact_files` (name, file, aad, plaintext sha256 per file). Deployment.max_batch_size
    is the engine's `max_active_sequences`; SOVEREIGN_LLM_INTRA_OP_THREADS its onnxruntime threads.
    The set travels inline in the load request: 184 MiB (int4) loads in about 7 s (docs/llm.md)."""
    from inference_backend.llm.loader import render_llm_python_config

    mv = dep.model_version
    art = mv.artifact
    data_key = art.data_key
    files = list(art.files.all())
    parameters = {
        "wrapped_dek": base64.b64encode(bytes(data_key.wrapped)).decode(),
        "kek_id": data_key.kek_id,
        "artifact_files": [{"name": f.name, "file": f.storage_name, "aad": f.aad, "sha256": f.sha256} for f in files],
        "intra_op_threads": settings.LLM_INTRA_OP_THREADS,
        "max_active_sequences": max(1, dep.max_batch_size),
    }
    config = render_llm_python_config(dep.triton_name, parameters, instance_count=dep.instance_count)
    out = {f"{mv.version}/model.py": TRITON_LLM_MODEL_SOURCE.read_bytes()}
    for f in files:
        out[f"{mv.version}/{f.storage_name}"] = read_artifact_file(f)
    return config, out


def smoke_llm(client: TritonClient, name: str) -> None:
    """One greedy token through `generate_stream`: a decoupled model answers /infer with 501."""
    events = client.generate_stream(
        name,
        {
            "text_input": "Hello",
            "stream": False,
            "sampling_parameters": json.dumps({"max_tokens": 1, "temperature": 0}),
            "return_finish_reason": True,
        },
        timeout=settings.TRITON_TIMEOUT,
    )
    if not any("text_output" in event for event in events):
        raise TritonError(None, "the smoke generate_stream request returned no text_output")


def smoke_inputs(signature: dict) -> list[dict]:
    """A batch of one, all zeros, shaped from the signature."""
    inputs = []
    for spec in signature["inputs"]:
        shape = [1 if d < 0 else d for d in spec["shape"]]
        count = int(np.prod(shape)) if shape else 1
        value = "" if spec["datatype"] == "BYTES" else (False if spec["datatype"] == "BOOL" else 0)
        inputs.append({"name": spec["name"], "datatype": spec["datatype"], "shape": shape, "data": [value] * count})
    return inputs


def _transition(dep: Deployment, to_state: str, message: str) -> None:
    # Much of this text comes from Triton: cleaned and cut before it is stored or shown.
    message = clean_upstream_text(message)
    with transaction.atomic():
        from_state = dep.observed_state
        dep.observed_state = to_state
        dep.last_error = message if to_state == Observed.FAILED else ""
        dep.save(update_fields=["observed_state", "last_error", "updated_at"])
        dep.transitions.create(from_state=from_state, to_state=to_state, message=message)
        record_event(
            "deployment.transition",
            actor=dep.requested_by,
            target=dep,
            outcome="failure" if to_state == Observed.FAILED else "success",
            error_code="deploy_failed" if to_state == Observed.FAILED else "",
            details={
                "before": {"observed_state": from_state},
                "after": {"observed_state": to_state},
                "message": message,
            },
        )


def _claim(deployment_id: int) -> bool:
    now = timezone.now()
    return bool(
        Deployment.objects.filter(pk=deployment_id)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + LEASE)
    )


def _enqueue(dep: Deployment) -> None:
    from .tasks import reconcile_deployment_task

    rid = current_request_id()
    transaction.on_commit(lambda: reconcile_deployment_task.delay(dep.pk, rid))


def _batching(values: dict) -> BatchingSettings:
    unknown = set(values) - set(BATCHING_FIELDS)
    if unknown:
        raise ServiceError("invalid_batching", f"unknown batching settings: {', '.join(sorted(unknown))}")
    if "preferred_batch_sizes" in values:
        values = {**values, "preferred_batch_sizes": tuple(values["preferred_batch_sizes"] or ())}
    try:
        return BatchingSettings(**values)
    except (TypeError, ValueError) as err:
        raise ServiceError("invalid_batching", str(err)) from err


def _snapshot(dep: Deployment) -> dict:
    return {
        "model": dep.model.name,
        "version": dep.model_version.version,
        "server": dep.server.name,
        "desired_state": dep.desired_state,
        "observed_state": dep.observed_state,
        "batching": {name: getattr(dep, name) for name in BATCHING_FIELDS},
    }
