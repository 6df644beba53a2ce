"""Checks of the Triton servers themselves: does a call that bypasses the gateway get refused?

`triton.bypass_refused` (issue 15, docs/compliance.md "Closing the bypass") calls every registered
server directly, as someone who reached its port would, WITHOUT the server's credential: an
inference call and a repository call. A server started with the restricted-API options
(inference_backend/server.py `restriction_flags`, docs/triton-credential.md) answers 403 to both;
a server that answers anything else served a caller that skipped the gateway's access control,
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
    from apps.deployments.models import Deployment

    name = (
        Deployment.objects.filter(server=server)
        .order_by("-observed_state", "-pk")
        .values_list("model__name", flat=True)
        .first()
    )
    return name or PROBE_MODEL


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
                    "api": api,
                    "call": f"{method} {path}",
                    "status": status,
                    "answer": text[:200],
                    "refused": status in REFUSED,
                    "at": at.isoformat(),
                }
            )
    return seen


@register("triton.bypass_refused")
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
            calls = ", ".join("{} → HTTP {}".format(p["call"], p["status"]) for p in open_calls)
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
        f"all {len(servers)} inference server(s) refused inference and repository calls without the credential",
        evidence,
    )
