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
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.context import current_request_id
from apps.core.errors import Conflict, NotFound, ServiceError, _, get_or_404
from apps.registry.models import ModelVersion
from apps.registry.services import read_artifact_ciphertext, read_artifact_file
from inference_backend.client import TritonClient, TritonError, TritonRefused, TritonUnavailable, clean_upstream_text
from inference_backend.config import BATCHING_FIELDS, BatchingSettings, render_config

from .credentials import credential_for, set_server_credential, validate_credential
from .models import (
    UNFINISHED_SWEEP_STATES,
    Backend,
    BatchingSweep,
    Deployment,
    Desired,
    Hardware,
    InferenceServer,
    Observed,
    ReplicaSet,
    ReplicaSetState,
    ServerState,
    default_backends,
    validate_backends,
)
from .scheduler import Ask, Candidate, PlacementImpossible, place
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
    accelerator_model: str = "",
    memory_mb: int = 0,
    labels: dict | None = None,
    metrics_url: str = "",
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
    labels = {} if labels is None else labels
    try:
        check_server_url(http_url)
        _check_capacity(
            accelerator_model=accelerator_model, memory_mb=memory_mb, labels=labels, metrics_url=metrics_url
        )
        if credential is not None:
            validate_credential(credential)
        if grpc_url:
            check_grpc_address(grpc_url)
        try:
            validate_backends(backends)
        except DjangoValidationError as err:
            raise ServiceError(
                "invalid_backends", err.messages[0], field="backends"
            ) from err  # i18n-ok: validate_backends
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
                details={"name": name[:200], "http_url": http_url[:300], "reason": err.detail_en},
            )
        raise
    with transaction.atomic():
        server, created = InferenceServer.objects.get_or_create(
            name=name,
            defaults={
                "http_url": http_url,
                "grpc_url": grpc_url,
                "hardware": hardware,
                "backends": backends,
                "accelerator_model": accelerator_model,
                "memory_mb": memory_mb,
                "labels": labels,
                "metrics_url": metrics_url,
            },
        )
        if created:
            record_event(
                "deployment.server.create",
                actor=actor,
                source=source,
                target=server,
                details={"after": _server_snapshot(server)},
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
        _("no model version with id %(model_version_id)s") % {"model_version_id": model_version_id},
        pk=model_version_id,
    )
    if mv.artifact.is_shredded:
        raise Conflict(
            "artifact_shredded", _("the data key of %(mv)s was destroyed; it can no longer be deployed") % {"mv": mv}
        )
    server = get_or_404(
        InferenceServer,
        "server_not_found",
        _("no inference server with id %(server_id)s") % {"server_id": server_id},
        pk=server_id,
    )
    _check_backend(mv, server, actor, source)
    settings_ = _batching(batching or {})
    # Versions load under their own Triton names (triton_model_name), so other versions of the model
    # may be live on this server; the same version twice is refused by the database constraint.
    conflict = Conflict(
        "already_deployed",
        _("version %(version)s of %(model)s already has an active deployment on %(server)s")
        % {"version": mv.version, "model": mv.model.name, "server": server.name},
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
            _join_replica_set(dep, actor, source)  # every deployment is a replica of a set (issue 16)
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
        _("%(mv)s needs the %(needed)s backend; server %(server)s declares %(backends)s")
        % {
            "mv": mv,
            "needed": repr(needed),
            "server": server.name,
            "backends": ", ".join(server.backends or []) or _("none"),
        },
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
            details={"model": mv.model.name, "version": mv.version, "server": server.name, "reason": err.detail_en},
        )
    raise err


def request_undeploy(*, deployment_id: int, actor, source: Source = SYSTEM) -> Deployment:
    """Mark a deployment to be unloaded (idempotent) and enqueue the reconcile."""
    with transaction.atomic():
        dep = get_or_404(
            Deployment.objects.select_for_update(),
            "deployment_not_found",
            _("no deployment with id %(deployment_id)s") % {"deployment_id": deployment_id},
            pk=deployment_id,
        )
        before = dep.desired_state
        if before == Desired.ACTIVE and dep.replica_set_id is not None:
            _refuse_during_config_rollout(dep.replica_set_id, "undeploy one of its replicas")
            last = not dep.replica_set.deployments.filter(desired_state=Desired.ACTIVE).exclude(pk=dep.pk).exists()
            if last:
                _refuse_during_rollout(dep.replica_set_id, "undeploy its last replica")
        dep.desired_state = Desired.INACTIVE
        dep.requested_by = acting_user(actor) or dep.requested_by
        dep.save(update_fields=["desired_state", "requested_by", "updated_at"])
        if before == Desired.ACTIVE:
            _leave_replica_set(dep, actor, source)
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
                _("no deployment with id %(deployment_id)s") % {"deployment_id": deployment_id},
                pk=deployment_id,
            )
            if dep.model_version.artifact.is_shredded:  # as request_deployment: nothing left to load
                raise Conflict(
                    "artifact_shredded",
                    _("the data key of %(model_version)s was destroyed; it can no longer be deployed")
                    % {"model_version": dep.model_version},
                )
            before = {"desired_state": dep.desired_state, "observed_state": dep.observed_state}
            dep.desired_state = Desired.ACTIVE
            dep.requested_by = acting_user(actor) or dep.requested_by
            dep.save(update_fields=["desired_state", "requested_by", "updated_at"])
            if before["desired_state"] != Desired.ACTIVE:
                _join_replica_set(dep, actor, source)
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
            "already_deployed", _("this version of the model already has an active deployment on that server"), "server"
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
        except TritonUnavailable as err:
            _record_server_state(dep.server, False, err.message)
            raise
        except TritonRefused as err:  # the server policy or TLS: permanent, no retry
            _record_server_state(dep.server, False, err.message)
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
    error = ""
    try:
        with client_for(server.http_url, min(5.0, settings.TRITON_TIMEOUT), credential_for(server)) as client:
            up = client.server_ready()
        if not up:
            error = "Triton answered but does not report itself ready"
    except TritonError as err:
        up, error = False, err.message
    _record_server_state(server, up, error)
    return server


def ensure_deid_canary(server_id: int) -> InferenceServer:
    """Make sure the de-identification canary (inference_backend/canary_model.py: a python model
    without weights that answers with its input) is loaded on the server, for the compliance
    probe of `deid.phi_models`. Idempotent: loaded only when the server does not report it ready;
    a load is audited (`deployment.canary.load`). Raises ServiceError 503 `canary_unavailable`
    when the server cannot be reached or refuses the load."""
    from inference_backend.canary_model import CANARY_MODEL, canary_config

    server = get_or_404(
        InferenceServer,
        "server_not_found",
        _("no inference server with id %(server_id)s") % {"server_id": server_id},
        pk=server_id,
    )
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
            _("the de-identification canary could not be loaded on %(server)s: %(reason)s")
            % {"server": server.name, "reason": clean_upstream_text(err.message)},
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


def _record_server_state(server: InferenceServer, up: bool, error: str = "") -> None:
    """Store what the probe saw; a change of state (up ↔ down) is an audit event, a probe that
    sees what the last one saw only refreshes `last_seen_at`. DOWN keeps why (`last_error`,
    cleaned: much of it is Triton's or the network's text); UP clears it."""
    now = timezone.now()
    fields = {"state": ServerState.UP if up else ServerState.DOWN, "last_error": "", "checked_at": now}
    if up:
        fields["last_seen_at"] = now
        fields["failures"] = 0
    else:
        fields["last_error"] = clean_upstream_text(error or "unreachable")[:1000]
    with transaction.atomic():
        before = InferenceServer.objects.filter(pk=server.pk).values_list("state", flat=True).first()
        # consecutive failed checks (issue 17): shown beside the state, reset when the server answers
        failures = {} if up else {"failures": F("failures") + 1}
        InferenceServer.objects.filter(pk=server.pk).update(**fields, **failures)
        if not up:
            fields["failures"] = InferenceServer.objects.filter(pk=server.pk).values_list("failures", flat=True).first()
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


def note_reconcile_retry(deployment_id: int, retries: int, delay: float) -> None:
    """The reconcile could not reach the server and will try again in `delay` seconds (issue 17): the
    deployment's page says so — retry n of DEPLOY_MAX_RETRIES, when, and the server's last error —
    instead of only "loading". An observation like the server's `last_seen_at`, not audited (the
    server's change of state is); cleared at the deployment's next change of state."""
    Deployment.objects.filter(pk=deployment_id).update(
        retries=min(retries, 32767), retry_at=timezone.now() + timedelta(seconds=delay)
    )


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
        if dep.reload_pending:
            _reload_in_place(dep, client)
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
    _set_applied(dep)
    _transition(dep, Observed.ACTIVE, "loaded, ready and answered a smoke inference")  # llm: one token


def _set_applied(dep: Deployment, error: str = "") -> None:
    """Remember the batching Triton now serves this replica with (what a reload is judged against)."""
    dep.applied_batching = dep.batching().as_dict()
    dep.last_error = error
    Deployment.objects.filter(pk=dep.pk).update(applied_batching=dep.applied_batching, last_error=error)


def _reload_in_place(dep: Deployment, client: TritonClient) -> None:
    """Load the replica's new batching over the running model (a config rollout's step). Triton keeps
    serving the model already loaded until the new one is ready and swaps them; a load Triton refuses
    leaves the old one serving. The replica stays ACTIVE in routing throughout: a refused reload is
    recorded in `last_error` (the config rollout reads it and rolls back), not as FAILED, which would
    take a replica that still answers out of routing. Audited `deployment.reconfigure`."""
    before, after = dict(dep.applied_batching), dep.batching().as_dict()
    config, files = render_for_triton(dep)
    error = ""
    try:
        client.load_model(dep.triton_name, config, files, timeout=settings.TRITON_LOAD_TIMEOUT)
        if not client.model_ready(dep.triton_name):
            raise TritonError(None, "Triton reloaded the model but does not report it ready")
        if dep.model_version.is_llm:
            smoke_llm(client, dep.triton_name)
        else:
            client.infer_json(dep.triton_name, smoke_inputs(dep.model_version.signature))
    except TritonUnavailable:
        raise
    except TritonError as err:
        error = clean_upstream_text(f"reload refused: {err.message}")[:1000]
    with transaction.atomic():
        if error:
            Deployment.objects.filter(pk=dep.pk).update(last_error=error)
        else:
            _set_applied(dep)
        record_event(
            "deployment.reconfigure",
            actor=dep.requested_by,
            target=dep,
            outcome=Outcome.FAILURE if error else Outcome.SUCCESS,
            error_code="reload_failed" if error else "",
            details={"before": {"batching": before}, "after": {"batching": after}, "message": error or "reloaded"},
        )


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


def render_for_triton(dep: Deployment, name: str | None = None) -> tuple[dict, dict[str, bytes]]:
    """The model config and the files for Triton's repository `load` call. Only ciphertext and
    the wrapped data key leave the portal; the Triton host unwraps with its own KEK access.
    `name`: load under another Triton name than the deployment's (the batching tuner's dedicated
    replica, apps/deployments/tuning.py, renders an unsaved Deployment this way)."""
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
    config = render_config(name or dep.triton_name, mv.signature, dep.batching(), parameters=parameters)
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
        dep.retries, dep.retry_at = 0, None  # a new state: the retries of the last one are over
        dep.save(update_fields=["observed_state", "last_error", "retries", "retry_at", "updated_at"])
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


def _enqueue(dep: Deployment, countdown: float = 0.0) -> None:
    from .tasks import reconcile_deployment_task

    rid = current_request_id()
    if countdown:  # a drain: the reconcile (the unload) waits until calls already sent have finished
        transaction.on_commit(lambda: reconcile_deployment_task.apply_async((dep.pk, rid), countdown=countdown))
    else:
        transaction.on_commit(lambda: reconcile_deployment_task.delay(dep.pk, rid))


# Upper bounds of the batching settings a deployment, replica set or config rollout may ask for (the
# tuner's grid has the same): Triton starts `instance_count` model instances per replica on a server
# other models share, and the columns are PostgreSQL integers.
BATCHING_MAXIMA = {"max_batch_size": 1024, "max_queue_delay_us": 1_000_000, "instance_count": 16}


def _batching(values: dict) -> BatchingSettings:
    unknown = set(values) - set(BATCHING_FIELDS)
    if unknown:
        raise ServiceError(
            "invalid_batching", _("unknown batching settings: %(unknown)s") % {"unknown": ", ".join(sorted(unknown))}
        )
    if "preferred_batch_sizes" in values:
        values = {**values, "preferred_batch_sizes": tuple(values["preferred_batch_sizes"] or ())}
    try:
        settings_ = BatchingSettings(**values)
    except (TypeError, ValueError) as err:
        raise ServiceError("invalid_batching", str(err)) from err  # i18n-ok: inference_backend's own words
    for name, high in BATCHING_MAXIMA.items():  # thousands of instances would take a shared server down
        if getattr(settings_, name) > high:
            raise ServiceError(
                "invalid_batching", _("%(name)s is at most %(high)s") % {"name": name, "high": high}, field=name
            )
    return settings_


def _snapshot(dep: Deployment) -> dict:
    return {
        "model": dep.model.name,
        "version": dep.model_version.version,
        "server": dep.server.name,
        "desired_state": dep.desired_state,
        "observed_state": dep.observed_state,
        "batching": {name: getattr(dep, name) for name in BATCHING_FIELDS},
    }


# --- Servers: capacity, labels, update, delete (issue 16) -------------------------------------------

LABEL_MAX = 63  # a label key or value, as Kubernetes labels
LABELS_MAX = 32  # labels per server or replica set


def validate_labels(labels, field: str = "labels") -> dict[str, str]:
    """A str → str dict of at most LABELS_MAX short labels, or ServiceError `invalid_labels`."""
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ServiceError("invalid_labels", _('labels are a map of text to text, e.g. {"zone": "phi"}'), field=field)
    if len(labels) > LABELS_MAX:
        raise ServiceError(
            "invalid_labels", _("at most %(labels_max)s labels") % {"labels_max": LABELS_MAX}, field=field
        )
    for key, value in labels.items():
        if not key.strip() or len(key) > LABEL_MAX or len(value) > LABEL_MAX or "=" in key:
            raise ServiceError(
                "invalid_labels",
                _("label %(value)s: a key is 1-%(label_max)s characters without '=', a value at most %(label_max)s")
                % {"value": repr(key[:LABEL_MAX]), "label_max": LABEL_MAX},
                field=field,
            )
    return dict(labels)


def _check_capacity(*, accelerator_model: str, memory_mb, labels, metrics_url: str) -> None:
    validate_labels(labels)
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or not 0 <= memory_mb <= 2**31 - 1:
        raise ServiceError(
            "invalid_memory", _("memory_mb is a whole number of MiB, 0 when not declared"), field="memory_mb"
        )
    if not isinstance(accelerator_model, str) or len(accelerator_model) > 100:
        raise ServiceError(
            "invalid_accelerator_model", _("accelerator_model is at most 100 characters"), field="accelerator_model"
        )
    if metrics_url:  # the same outbound policy as http_url: the gateway reads it
        check_server_url_with_path(metrics_url, field="metrics_url")


def check_server_url_with_path(url: str, field: str) -> None:
    """check_server_url for a URL that may carry a path (Triton's metrics endpoint is /metrics)."""
    from urllib3.util import parse_url

    try:
        parsed = parse_url(url)
    except ValueError:
        parsed = None
    if parsed is None or len(url) > 300 or parsed.query or parsed.fragment or parsed.auth:
        raise ServiceError("invalid_server_url", _("a metrics URL is http(s)://host[:port][/path]"), field=field)
    base = f"{parsed.scheme}://{parsed.netloc}" if parsed.scheme and parsed.netloc else url
    check_server_url(base, field=field)


def _server_snapshot(server: InferenceServer) -> dict:
    return {
        "name": server.name,
        "http_url": server.http_url,
        "grpc_url": server.grpc_url,
        "hardware": server.hardware,
        "backends": server.backends,
        "accelerator_model": server.accelerator_model,
        "memory_mb": server.memory_mb,
        "labels": server.labels,
        "metrics_url": server.metrics_url,
    }


SERVER_UPDATABLE = ("hardware", "backends", "accelerator_model", "memory_mb", "labels", "metrics_url", "grpc_url")


def update_server(*, server_id: int, actor, source: Source = SYSTEM, **changes) -> InferenceServer:
    """Change a server's declared hardware, backends, capacity, labels or metrics URL (audited
    `deployment.server.update` with before/after). Its name and http_url are its identity: a
    server that moved is registered anew. Replicas already placed stay where they are."""
    unknown = sorted(set(changes) - set(SERVER_UPDATABLE))
    if unknown:
        raise ServiceError(
            "invalid_server_field", _("cannot change %(unknown)s of a server") % {"unknown": ", ".join(unknown)}
        )
    with transaction.atomic():
        server = get_or_404(
            InferenceServer.objects.select_for_update(),
            "server_not_found",
            _("no inference server with id %(server_id)s") % {"server_id": server_id},
            pk=server_id,
        )
        before = _server_snapshot(server)
        merged = {**{k: getattr(server, k) for k in SERVER_UPDATABLE}, **changes}
        _check_capacity(
            accelerator_model=merged["accelerator_model"],
            memory_mb=merged["memory_mb"],
            labels=merged["labels"],
            metrics_url=merged["metrics_url"],
        )
        if merged["hardware"] not in Hardware.values:
            raise ServiceError(
                "invalid_hardware",
                _("hardware is one of %(values)s") % {"values": ", ".join(Hardware.values)},
                field="hardware",
            )
        try:
            validate_backends(merged["backends"])
        except DjangoValidationError as err:
            raise ServiceError(
                "invalid_backends", err.messages[0], field="backends"
            ) from err  # i18n-ok: validate_backends
        if merged["grpc_url"]:
            check_grpc_address(merged["grpc_url"])
        for key in changes:
            setattr(server, key, merged[key])
        server.save(update_fields=list(changes))
        after = _server_snapshot(server)
        if after != before:
            record_event(
                "deployment.server.update",
                actor=actor,
                source=source,
                target=server,
                details={
                    "before": {k: v for k, v in before.items() if after[k] != v},
                    "after": {k: v for k, v in after.items() if before[k] != v},
                },
            )
    return server


def delete_server(*, server_id: int, actor, source: Source = SYSTEM) -> None:
    """Remove a server the portal no longer deploys onto. Refused (409 `server_has_replicas`)
    while it holds replicas: desired active, or not yet known to be unloaded. Its settled
    (inactive or failed) deployment rows go with it — the audit log keeps their history — and its
    restricted-API credential is crypto-shredded."""
    from .selectors import LIVE

    refusal = None
    with transaction.atomic():
        server = get_or_404(
            InferenceServer.objects.select_for_update(),
            "server_not_found",
            _("no inference server with id %(server_id)s") % {"server_id": server_id},
            pk=server_id,
        )
        held = list(
            Deployment.objects.filter(LIVE, server=server).select_related("model_version__model").order_by("pk")
        )
        # a sweep's dedicated replica has no Deployment row, but is a replica all the same: deleting the
        # server under it would leave it loaded on a Triton nothing can reach to unload it
        sweeps = list(
            BatchingSweep.objects.filter(server=server, state__in=UNFINISHED_SWEEP_STATES).values_list("pk", flat=True)
        )
        if held:
            names = ", ".join(str(d.model_version) for d in held[:10])
            refusal = Conflict(
                "server_has_replicas",
                _("%(server)s still holds %(n_held)s replica(s) (%(names)s); scale, retire or undeploy them first")
                % {"server": server.name, "n_held": len(held), "names": names},
            )
        elif sweeps:
            refusal = Conflict(
                "server_has_replicas",
                _("%(server)s runs batching sweep #%(value)s on a dedicated replica; wait for it to finish")
                % {"server": server.name, "value": sweeps[0]},
            )
        else:
            # shredded only once the server is known to go (a refused delete keeps its credential)
            if server.has_credential:
                set_server_credential(server_id=server.pk, credential=None, actor=actor, source=source)
                server.refresh_from_db()
            _delete_server_rows(server, actor, source)
    if refusal is not None:
        with transaction.atomic():
            record_event(
                "deployment.server.delete.rejected",
                actor=actor,
                source=source,
                target=server,
                outcome=Outcome.FAILURE,
                error_code=refusal.code,
                details={"reason": refusal.detail},
            )
        raise refusal


def _delete_server_rows(server: InferenceServer, actor, source: Source) -> None:
    snapshot = _server_snapshot(server)
    settled = Deployment.objects.filter(server=server)
    count = settled.count()
    settled.delete()
    record_event(
        "deployment.server.delete",
        actor=actor,
        source=source,
        target=server,
        details={"before": snapshot, "settled_deployments_removed": count},
    )
    server.delete()


# --- Replica sets: N replicas of a version, placed by the scheduler (issue 16, docs/fleet.md) -------

MAX_REPLICAS = 64


def _candidates(model_version_id: int) -> list[Candidate]:
    """Every server, locked (two placements never count the same free memory), with what it holds."""
    servers = list(InferenceServer.objects.select_for_update().order_by("pk"))
    used: dict[int, int] = {}
    count: dict[int, int] = {}
    holds: set[int] = set()
    rows = Deployment.objects.filter(desired_state=Desired.ACTIVE).values_list(
        "server_id", "model_version_id", "replica_set__memory_mb"
    )
    for server_id, mv_id, memory in rows:
        used[server_id] = used.get(server_id, 0) + (memory or 0)
        count[server_id] = count.get(server_id, 0) + 1
        if mv_id == model_version_id:
            holds.add(server_id)
    return [
        Candidate(
            id=s.pk,
            name=s.name,
            state=s.state,
            hardware=s.hardware,
            backends=tuple(s.backends or ()),
            labels=s.labels or {},
            memory_mb=s.memory_mb,
            used_mb=used.get(s.pk, 0),
            replicas=count.get(s.pk, 0),
            holds_version=s.pk in holds,
        )
        for s in servers
    ]


def _check_replicas(replicas) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise ServiceError(
            "invalid_replicas",
            _("replicas is a whole number from 1 to %(max_replicas)s") % {"max_replicas": MAX_REPLICAS},
            field="replicas",
        )
    return replicas


def _set_snapshot(rs: ReplicaSet) -> dict:
    return {
        "model": rs.model.name,
        "version": rs.model_version.version,
        "replicas": rs.replicas,
        "labels": rs.labels,
        "accelerator": rs.accelerator,
        "memory_mb": rs.memory_mb,
        "traffic_weight": rs.traffic_weight,
        "state": rs.state,
    }


def _refused(event_type: str, err: ServiceError, *, actor, source: Source, target=None, details: dict) -> None:
    """Audit a refused replica-set operation (in its own transaction: the refused one rolled back)."""
    extra = {"reasons": err.reasons} if isinstance(err, PlacementImpossible) else {}
    with transaction.atomic():
        record_event(
            event_type,
            actor=actor,
            source=source,
            target=target,
            target_type="" if target is not None else "deployments.replicaset",
            target_display="" if target is not None else str(details.get("model_version_id", ""))[:200],
            outcome=Outcome.FAILURE,
            error_code=err.code,
            details={**details, "reason": err.detail_en, **extra},
        )


def _place_replicas(rs: ReplicaSet, count: int, batching: BatchingSettings, actor, source: Source) -> list[Deployment]:
    """Place `count` new replicas of the set (servers locked by _candidates) and create their
    deployments, each enqueued for the reconcile after commit. Raises PlacementImpossible."""
    mv = rs.model_version
    ask = Ask(
        count=count,
        labels=rs.labels or {},
        accelerator=rs.accelerator,
        backend=required_backend(mv),
        memory_mb=rs.memory_mb,
    )
    chosen = place(ask, _candidates(mv.pk))
    deployments = []
    for candidate in chosen:
        dep = Deployment.objects.create(
            model=rs.model,
            model_version=mv,
            replica_set=rs,
            server_id=candidate.id,
            requested_by=acting_user(actor),
            **batching.as_dict(),
        )
        dep.transitions.create(to_state=Observed.PENDING, message="requested")
        record_event(
            "deployment.request",
            actor=actor,
            source=source,
            target=dep,
            details={"after": _snapshot(dep), "replica_set": rs.pk},
        )
        _enqueue(dep)
        deployments.append(dep)
    return deployments


def _live_sets(model_id: int):
    return ReplicaSet.objects.filter(model_id=model_id, state=ReplicaSetState.ACTIVE)


def request_replica_set(
    *,
    model_version_id: int,
    replicas: int = 1,
    labels: dict | None = None,
    accelerator: str = "",
    memory_mb: int = 0,
    batching: dict | None = None,
    actor,
    source: Source = SYSTEM,
) -> ReplicaSet:
    """Ask for `replicas` replicas of a model version, placed by the scheduler
    (apps/deployments/scheduler.py): a ReplicaSet and one Deployment per replica, each enqueued
    for the reconcile. All or nothing: a placement that cannot be made raises 409
    `placement_impossible` naming every server and why, and saves nothing but the audited refusal.
    The set takes all the model's unversioned traffic (weight 100) when the model has no other
    live set, else none (a rollout moves traffic)."""
    details = {
        "model_version_id": model_version_id,
        "replicas": replicas,
        "labels": labels,
        "accelerator": accelerator,
        "memory_mb": memory_mb,
    }
    mv = None
    try:
        _check_replicas(replicas)
        labels = validate_labels({} if labels is None else labels)
        if accelerator not in ("", *Hardware.values):
            raise ServiceError(
                "unknown_accelerator",
                _("unknown accelerator %(value)s; one of %(values)s or blank for any")
                % {"value": repr(str(accelerator)[:20]), "values": ", ".join(Hardware.values)},
                field="accelerator",
            )
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or not 0 <= memory_mb <= 2**31 - 1:
            raise ServiceError(
                "invalid_memory", _("memory_mb is a whole number of MiB (0: not estimated)"), field="memory_mb"
            )
        settings_ = _batching(batching or {})
        mv = get_or_404(
            ModelVersion.objects.select_related("model", "artifact"),
            "model_version_not_found",
            _("no model version with id %(model_version_id)s") % {"model_version_id": model_version_id},
            pk=model_version_id,
        )
        if mv.artifact.is_shredded:
            raise Conflict(
                "artifact_shredded",
                _("the data key of %(mv)s was destroyed; it can no longer be deployed") % {"mv": mv},
            )
        with transaction.atomic():
            ModelVersion.objects.select_for_update().filter(pk=mv.pk).first()  # one placement per version at a time
            if ReplicaSet.objects.filter(model_version=mv, state=ReplicaSetState.ACTIVE).exists():
                raise Conflict(
                    "replica_set_exists",
                    _("%(mv)s already has an active replica set; scale it instead") % {"mv": mv},
                    "model_version",
                )
            rs = ReplicaSet.objects.create(
                model=mv.model,
                model_version=mv,
                replicas=replicas,
                min_replicas=replicas,
                max_replicas=replicas,
                labels=labels,
                accelerator=accelerator,
                memory_mb=memory_mb,
                traffic_weight=0 if _live_sets(mv.model_id).exists() else 100,
                requested_by=acting_user(actor),
            )
            deployments = _place_replicas(rs, replicas, settings_, actor, source)
            record_event(
                "deployment.replica_set.create",
                actor=actor,
                source=source,
                target=rs,
                details={"after": _set_snapshot(rs), "servers": [d.server.name for d in deployments]},
            )
    except ServiceError as err:
        if not isinstance(err, NotFound):
            _refused("deployment.replica_set.rejected", err, actor=actor, source=source, target=mv, details=details)
        raise
    return rs


def scale_replica_set(*, replica_set_id: int, replicas: int, actor, source: Source = SYSTEM) -> ReplicaSet:
    """Change the number of replicas: new ones are placed by the scheduler (all or nothing, as
    request_replica_set), surplus ones are undeployed newest first. Audited
    `deployment.replica_set.scale`; the set's min/max widen to hold a number set by hand."""
    rs = get_or_404(
        ReplicaSet,
        "replica_set_not_found",
        _("no replica set with id %(replica_set_id)s") % {"replica_set_id": replica_set_id},
        pk=replica_set_id,
    )
    try:
        _check_replicas(replicas)
        rs = apply_scale(replica_set_id=rs.pk, replicas=replicas, actor=actor, source=source)
    except ServiceError as err:
        _refused(
            "deployment.replica_set.scale.rejected",
            err,
            actor=actor,
            source=source,
            target=rs,
            details={"replica_set": rs.pk, "replicas": replicas},
        )
        raise
    return rs


def apply_scale(
    *,
    replica_set_id: int,
    replicas: int,
    actor,
    source: Source = SYSTEM,
    why: dict | None = None,
    drain_seconds: float = 0.0,
) -> ReplicaSet:
    """The scale itself, in one transaction, audited `deployment.replica_set.scale` (with `why`, the
    figures behind an automatic change, when given). A refusal is raised, saving nothing, for the caller
    to audit: scale_replica_set audits each one, the autoscaler once per cooldown. Surplus replicas are
    unloaded `drain_seconds` after they leave routing (0: at once)."""
    with transaction.atomic():
        rs = (
            ReplicaSet.objects.select_for_update(of=("self",))
            .select_related("model", "model_version__artifact")
            .get(pk=replica_set_id)
        )
        if rs.state != ReplicaSetState.ACTIVE:
            raise Conflict("replica_set_retired", _("replica set %(rs)s is retired; request a new one") % {"rs": rs.pk})
        _refuse_during_config_rollout(rs.pk, "scale it")
        current = list(rs.deployments.filter(desired_state=Desired.ACTIVE).order_by("-created_at", "-pk"))
        before = _set_snapshot(rs)
        added, removed = [], []
        if replicas > len(current):
            if rs.model_version.artifact.is_shredded:
                raise Conflict(
                    "artifact_shredded",
                    _("the data key of %(model_version)s was destroyed; it can no longer be deployed")
                    % {"model_version": rs.model_version},
                )
            template = current[0].batching() if current else BatchingSettings()
            added = _place_replicas(rs, replicas - len(current), template, actor, source)
        for dep in current[: max(0, len(current) - replicas)]:
            mark_undeployed(dep, actor, source, **({"drain_seconds": drain_seconds} if drain_seconds else {}))
            _enqueue(dep, countdown=drain_seconds)
            removed.append(dep)
        rs.replicas = replicas
        rs.min_replicas = min(rs.min_replicas, replicas)
        rs.max_replicas = max(rs.max_replicas, replicas)
        fields = ["replicas", "min_replicas", "max_replicas", "updated_at"]
        if added or removed or before["replicas"] != replicas:
            rs.scaled_at = timezone.now()
            fields.append("scaled_at")
        rs.save(update_fields=fields)
        record_event(
            "deployment.replica_set.scale",
            actor=actor,
            source=source,
            target=rs,
            details={
                "before": {"replicas": before["replicas"]},
                "after": {"replicas": replicas},
                "added": [d.server.name for d in added],
                "removed": [d.server.name for d in removed],
                **({"autoscale": why} if why is not None else {}),
            },
        )
    return rs


def retire_replica_set(*, replica_set_id: int, actor, source: Source = SYSTEM) -> ReplicaSet:
    """Undeploy every replica of the set and mark it retired (idempotent). Refused (409
    `replica_set_has_traffic`) while it carries traffic and another set of the model is live:
    move its weight first (a rollout). The model's only set may be retired with its traffic."""
    rs = get_or_404(
        ReplicaSet,
        "replica_set_not_found",
        _("no replica set with id %(replica_set_id)s") % {"replica_set_id": replica_set_id},
        pk=replica_set_id,
    )
    try:
        with transaction.atomic():
            rs = (
                ReplicaSet.objects.select_for_update(of=("self",))
                .select_related("model", "model_version")
                .get(pk=rs.pk)
            )
            if rs.state == ReplicaSetState.RETIRED:
                return rs
            _refuse_during_rollout(rs.pk, "retire it")
            others = _live_sets(rs.model_id).exclude(pk=rs.pk)
            if rs.traffic_weight > 0 and others.exists():
                raise Conflict(
                    "replica_set_has_traffic",
                    _(
                        "replica set %(rs)s (%(model_version)s) carries %(traffic_weight)s%% of %(model)s's "
                        "traffic; move it to another set (a rollout) before retiring"
                    )
                    % {
                        "rs": rs.pk,
                        "model_version": rs.model_version,
                        "traffic_weight": rs.traffic_weight,
                        "model": rs.model.name,
                    },
                )
            before = _set_snapshot(rs)
            _retire(rs, actor, source)
            record_event(
                "deployment.replica_set.retire",
                actor=actor,
                source=source,
                target=rs,
                details={"before": before, "after": _set_snapshot(rs)},
            )
    except ServiceError as err:
        _refused(
            "deployment.replica_set.retire.rejected",
            err,
            actor=actor,
            source=source,
            target=rs,
            details={"replica_set": rs.pk},
        )
        raise
    return rs


def _refuse_during_rollout(replica_set_id: int, what: str) -> None:
    """A set that an unfinished rollout moves traffic from or to keeps its replicas until the rollout
    ends: undeploying its last one or retiring it by hand would leave the rollout promoting or rolling
    back onto nothing (the model dark)."""
    from .models import UNFINISHED_ROLLOUT_STATES, Rollout

    rollout = (
        Rollout.objects.filter(state__in=UNFINISHED_ROLLOUT_STATES)
        .filter(Q(from_set_id=replica_set_id) | Q(to_set_id=replica_set_id))
        .first()
    )
    if rollout is not None:
        raise Conflict(
            "rollout_in_progress",
            _(
                "rollout %(rollout)s moves traffic with this replica set; promote, roll back or abort it "
                "before you %(what)s"
            )
            % {"rollout": rollout.pk, "what": what},
        )


def _refuse_during_config_rollout(replica_set_id: int, what: str) -> None:
    """A set whose replicas a config rollout reconfigures one by one keeps them until it ends: a replica
    scaled away or undeployed by hand would leave the rollout judging or restoring a replica that is gone."""
    from .config_rollouts import in_config_rollout

    rollout = in_config_rollout(replica_set_id)
    if rollout is not None:
        raise Conflict(
            "rollout_in_progress",
            _(
                "rollout %(rollout)s is changing this replica set's batching; promote, roll back or "
                "abort it before you %(what)s"
            )
            % {"rollout": rollout.pk, "what": what},
        )


def mark_undeployed(dep: Deployment, actor, source: Source, **details) -> None:
    """One replica of a set desired inactive, audited `deployment.undeploy` (the caller enqueues the
    reconcile: at once, or after a drain). Inside the caller's transaction."""
    dep.desired_state = Desired.INACTIVE
    dep.requested_by = acting_user(actor) or dep.requested_by
    dep.save(update_fields=["desired_state", "requested_by", "updated_at"])
    record_event(
        "deployment.undeploy",
        actor=actor,
        source=source,
        target=dep,
        details={"before": {"desired_state": Desired.ACTIVE}, "after": {"desired_state": Desired.INACTIVE}, **details},
    )


def _retire(rs: ReplicaSet, actor, source: Source) -> None:
    for dep in rs.deployments.filter(desired_state=Desired.ACTIVE).order_by("pk"):
        mark_undeployed(dep, actor, source)
        _enqueue(dep)
    rs.state, rs.replicas, rs.traffic_weight = ReplicaSetState.RETIRED, 0, 0
    rs.save(update_fields=["state", "replicas", "traffic_weight", "updated_at"])


def _join_replica_set(dep: Deployment, actor, source: Source) -> None:
    """A deployment made desired-active by hand (request_deployment / request_redeploy) joins its
    version's active set, or a new set of one pinned where the operator put it (the scheduler
    did not choose the server). Inside the caller's transaction."""
    rs = ReplicaSet.objects.select_for_update().filter(model_version_id=dep.model_version_id, state="active").first()
    if rs is None:
        rs = ReplicaSet.objects.create(
            model_id=dep.model_id,
            model_version_id=dep.model_version_id,
            traffic_weight=0 if _live_sets(dep.model_id).exists() else 100,
            requested_by=acting_user(actor),
        )
        created = True
    else:
        created = False
    before = rs.replicas
    dep.replica_set = rs
    dep.save(update_fields=["replica_set", "updated_at"])
    rs.replicas = rs.deployments.filter(desired_state=Desired.ACTIVE).count()
    rs.max_replicas = max(rs.max_replicas, rs.replicas)
    rs.save(update_fields=["replicas", "max_replicas", "updated_at"])
    record_event(
        "deployment.replica_set.create" if created else "deployment.replica_set.scale",
        actor=actor,
        source=source,
        target=rs,
        details={
            **(
                {"after": _set_snapshot(rs)}
                if created
                else {"before": {"replicas": before}, "after": {"replicas": rs.replicas}}
            ),
            "pinned": dep.server.name,
        },
    )


def _leave_replica_set(dep: Deployment, actor, source: Source) -> None:
    """A replica undeployed by hand leaves its set's count; the last one retires the set, its
    traffic going to the model's newest other live set (the live sets keep summing to 100)."""
    if dep.replica_set_id is None:
        return
    rs = ReplicaSet.objects.select_for_update().get(pk=dep.replica_set_id)
    if rs.state != ReplicaSetState.ACTIVE:
        return
    before = _set_snapshot(rs)
    remaining = rs.deployments.filter(desired_state=Desired.ACTIVE).count()
    if remaining:
        rs.replicas = remaining
        rs.min_replicas = min(rs.min_replicas, remaining)
        rs.save(update_fields=["replicas", "min_replicas", "updated_at"])
        record_event(
            "deployment.replica_set.scale",
            actor=actor,
            source=source,
            target=rs,
            details={
                "before": {"replicas": before["replicas"]},
                "after": {"replicas": remaining},
                "removed": [dep.server.name],
            },
        )
        return
    weight = rs.traffic_weight
    _retire(rs, actor, source)
    heir = _live_sets(rs.model_id).select_for_update().order_by("-created_at", "-pk").first()
    if heir is not None and weight:
        ReplicaSet.objects.filter(pk=heir.pk).update(traffic_weight=heir.traffic_weight + weight)
    record_event(
        "deployment.replica_set.retire",
        actor=actor,
        source=source,
        target=rs,
        details={
            "before": before,
            "after": _set_snapshot(rs),
            "reason": "its last replica was undeployed",
            **({"traffic_to": heir.pk} if heir is not None and weight else {}),
        },
    )


# Rollouts live in their own module (apps/deployments/rollouts.py, docs/rollouts.md); these are
# part of this app's public surface like every other service.
# Autoscaling (apps/deployments/autoscale.py, docs/fleet.md "Autoscaling").
from .autoscale import autoscale_set, autoscale_tick, configure_autoscale  # noqa: E402, F401
from .config_rollouts import (  # noqa: E402, F401
    apply_batching_sweep,
    config_diff,
    replica_figures,
    start_config_rollout,
)
from .rollouts import (  # noqa: E402, F401
    abort_rollout,
    advance_rollouts,
    promote_now,
    rollback_now,
    rollout_weights,
    rollout_window,
    set_traffic,
    start_rollout,
)
