"""Checks of the Triton servers themselves: does a call that bypasses the gateway get refused?

`triton.bypass_refused` (issue 15, docs/compliance.md "Closing the bypass") calls every registered
server directly, as someone who reached its port would, WITHOUT the server's credential: an
inference call and a repository call, over HTTP and, when the server's gRPC endpoint is registered,
over gRPC. A server started with the restricted-API options (inference_backend/server.py
`restriction_flags`, docs/triton-credential.md) answers 403 to both (gRPC: UNAVAILABLE "This
protocol is restricted"); a server that answers anything else served a caller that skipped the gateway's access control,
audit and de-identification. Both probes are harmless: the inference names a model with an empty
input list (no model runs), the repository call only reads the index.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from . import FAIL, NA, PASS, CheckResult, register

# What a refusal looks like: Triton's restricted API answers 403; an authenticating proxy in front
# of it (docs/triton-credential.md) may answer 401.
REFUSED = frozenset({401, 403})
PROBE_MODEL = "sovereign-bypass-probe"  # used when no model is deployed on the server
PROBE_TIMEOUT = 5.0


def _probe_model(server) -> str:
    from apps.deployments.models import Deployment, triton_model_name

    found = (
        Deployment.objects.filter(server=server)
        .order_by("-observed_state", "-pk")
        .values_list("model__name", "model_version__version")
        .first()
    )
    return triton_model_name(*found) if found else PROBE_MODEL  # the name Triton serves it under


def _probes(server) -> list[dict]:
    from urllib.parse import quote

    from apps.deployments.selectors import client_for
    from inference_backend.client import TritonError

    model = _probe_model(server)
    calls = [
        ("inference", "POST", f"/v2/models/{quote(model, safe='')}/infer", {"inputs": []}),
        ("model-repository", "POST", "/v2/repository/index", {}),
    ]
    seen = []
    # No credential: the caller a bypass would be. The address policy and TLS settings still apply.
    with client_for(server.http_url, min(PROBE_TIMEOUT, settings.TRITON_TIMEOUT), credential=None) as client:
        for api, method, path, body in calls:
            at = timezone.now()
            try:
                status, text = client.probe(method, path, body)
            except TritonError as err:  # unreachable, refused by the address policy or TLS
                status, text = None, err.message
            seen.append(
                {
                    "protocol": "http",
                    "api": api,
                    "call": f"{method} {path}",
                    "status": status,
                    "answer": text[:200],
                    "refused": status in REFUSED,
                    "at": at.isoformat(),
                }
            )
    return seen + _grpc_probes(server, model)


def _grpc_refused(code: str, message: str) -> bool | None:
    """True: refused by the restriction (or an authenticating proxy); False: served; None: no answer."""
    if code in ("StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED"):
        return True
    if code == "StatusCode.UNAVAILABLE":  # Triton's refusal, or nobody listening
        return True if "restricted" in message.lower() else None
    if code == "StatusCode.DEADLINE_EXCEEDED":
        return None
    return False


def _grpc_probes(server, model: str) -> list[dict]:
    """The same two calls on the server's gRPC endpoint, when one is registered (`grpc_url`); the
    address passes the portal's server policy first. A grpcs endpoint is verified with the pinned CA."""
    if not server.grpc_url:
        return []
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException
    from urllib3.util import parse_url

    from apps.deployments.selectors import server_policy

    address = server.grpc_url if "://" in server.grpc_url else f"grpc://{server.grpc_url}"
    calls = [("inference", f"ModelInfer {model}"), ("model-repository", "RepositoryIndex")]
    at = timezone.now()
    try:
        parsed = parse_url(address)
        tls = parsed.scheme == "grpcs"
        policy = server_policy()
        addresses = policy.resolve(parsed.host, parsed.port)
        policy.check_transport("https" if tls else "http", parsed.host, addresses)
    except Exception as err:  # noqa: BLE001 - refused by the policy, or does not resolve: not probed
        reason = str(getattr(err, "message", err))[:200]
        return [_grpc_row(api, call, None, reason, None, at) for api, call in calls]
    target = f"{parsed.host}:{parsed.port}" if tls else f"{addresses[0]}:{parsed.port}"
    root = None
    if tls and settings.TRITON_CA_FILE:
        with open(settings.TRITON_CA_FILE, "rb") as handle:
            root = handle.read()
    client = grpcclient.InferenceServerClient(target, ssl=tls, root_certificates=root)
    seen = []
    try:
        for api, call in calls:
            at = timezone.now()
            try:
                if api == "inference":
                    client.infer(model, [], client_timeout=PROBE_TIMEOUT)
                else:
                    client.get_model_repository_index(client_timeout=PROBE_TIMEOUT)
                code, message = "StatusCode.OK", ""
            except InferenceServerException as err:
                code, message = str(err.status()), str(err.message())
            refused = _grpc_refused(code, message)
            status = None if refused is None else code.removeprefix("StatusCode.")
            seen.append(_grpc_row(api, call, status, message, refused, at))
    finally:
        client.close()
    return seen


def _grpc_row(api: str, call: str, status: str | None, answer: str, refused: bool | None, at) -> dict:
    from inference_backend.client import clean_upstream_text

    return {
        "protocol": "grpc",
        "api": api,
        "call": call,
        "status": status,
        "answer": clean_upstream_text(answer or "")[:200],
        "refused": bool(refused),
        "at": at.isoformat(),
    }


def _seen(probe: dict) -> str:
    status = probe["status"]
    return f"{probe['call']} → " + (f"HTTP {status}" if probe["protocol"] == "http" else f"gRPC {status}")


@register("triton.bypass_refused", proof="probe")
def bypass_refused(ctx) -> CheckResult:
    from apps.deployments.models import InferenceServer

    servers = list(InferenceServer.objects.order_by("name"))
    evidence: dict = {"probed_without_credential": True, "servers": {}}
    if not servers:
        return CheckResult(NA, "no inference server is registered", evidence)
    accepted, unverified = [], []
    for server in servers:
        probes = _probes(server)
        evidence["servers"][server.name] = {
            "url": server.http_url,
            "portal_holds_credential": server.has_credential,
            "probes": probes,
        }
        open_calls = [p for p in probes if p["status"] is not None and not p["refused"]]
        if open_calls:
            calls = ", ".join(_seen(p) for p in open_calls)
            accepted.append(f"{server.name} ({calls})")
        elif any(p["status"] is None for p in probes):
            reason = next(p["answer"] for p in probes if p["status"] is None)
            unverified.append(f"{server.name} ({reason})")
    evidence["accepted"], evidence["not_verified"] = accepted, unverified
    if accepted:
        return CheckResult(
            FAIL,
            f"{len(accepted)} inference server(s) served a call that bypassed the gateway: " + "; ".join(accepted),
            evidence,
            "Start each listed Triton with --http-restricted-api and --grpc-restricted-protocol for inference, "
            "metadata, model-repository, model-config, shared-memory, statistics, trace and logging with the "
            "header sovereign-triton-key and a per-server credential, and give the portal that credential "
            "(POST /api/v1/deployments/servers/{id}/credential/); see docs/triton-credential.md.",
        )
    if unverified:
        return CheckResult(
            FAIL,
            f"{len(unverified)} inference server(s) could not be probed, so their refusal is not verified: "
            + "; ".join(unverified),
            evidence,
            "Bring the listed servers up (or remove them from the registry) and run the check again.",
        )
    return CheckResult(
        PASS,
        f"all {len(servers)} inference server(s) refused inference and repository calls without the credential"
        + (" (HTTP and gRPC)" if any(s.grpc_url for s in servers) else " (HTTP)"),
        evidence,
    )
