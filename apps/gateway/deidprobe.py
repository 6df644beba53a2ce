"""The de-identification probe behind the compliance check `deid.phi_models` (issue 15).

For one PHI model, the probe takes that model's de-identification mode (the same decision the
gateway's routes carry: apps.compliance.selectors.deid_mode), puts fixed synthetic identifiers — a
name, a date, an SSN, a 身份证号, a phone number, an address and city, an MRN — in a KServe v2 BYTES
input, and pushes it through the data plane's own pipeline stages (check → de-identify → forward:
Pipeline.forward_as_routed) to the canary model on a real Triton server: an echo model without
weights (inference_backend/canary_model.py) that answers with exactly what it received. Whatever of
the synthetic values comes back reached Triton. The answer screen is off for the probe, so what is
compared is Triton's input, not a screened answer.

The server is one of the model's ACTIVE deployments' (else the first registered server); the canary
is loaded there when missing (apps.deployments.services.ensure_deid_canary, audited). The values
are synthetic and never leave this module: the evidence names identifier TYPES only.

Registered with apps.compliance in GatewayConfig.ready() (compliance is below the gateway: it cannot
import it, the gateway hands it the probe).
"""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django.utils import timezone

from apps.compliance.selectors import deid_mode
from apps.core.errors import ServiceError
from apps.deployments.models import Deployment, Desired, InferenceServer, Observed
from apps.deployments.selectors import server_policy, tls_config
from apps.deployments.services import ensure_deid_canary
from inference_backend.canary_model import CANARY_MODEL, CANARY_SIGNATURE

from . import deid

# Fixed synthetic values, one per identifier type the probe sends (no real person's).
SYNTHETIC: dict[str, tuple[str, ...]] = {
    "NAME": ("Johnathan", "Quarterman"),
    "MRN": ("4839201",),
    "DATE": ("03/14/2019",),
    "SSN": ("123-45-6789", "123456789"),
    "CN_ID": ("11010519491231002X",),
    "PHONE": ("(617) 555-0143", "6175550143"),
    "ADDRESS": ("221 Baker Street",),
    "GEO": ("Springfield",),
}
PROBE_TEXT = (
    "Patient Johnathan Quarterman, MRN: 4839201, admitted on 03/14/2019. SSN 123-45-6789. "
    "身份证号 11010519491231002X. Phone (617) 555-0143. Address: 221 Baker Street, Springfield."
)


class _NoReidentification:
    """The probe is nobody: its answers are never re-identified."""

    async def may_reidentify(self, caller, model_id) -> bool:
        return False


def leaked_types(echoed: str) -> list[str]:
    """The identifier types any of whose synthetic values occur in `echoed` (digits compared without
    separators too, so a reformatted number still counts)."""
    digits = "".join(c for c in echoed if c.isdigit())
    out = []
    for kind, values in SYNTHETIC.items():
        if any(v in echoed or (v.isdigit() and len(v) >= 9 and v in digits) for v in values):
            out.append(kind)
    return out


def _server_for(model_id: int) -> InferenceServer | None:
    dep = (
        Deployment.objects.filter(model_id=model_id, desired_state=Desired.ACTIVE, observed_state=Observed.ACTIVE)
        .select_related("server")
        .order_by("pk")
        .first()
    )
    return dep.server if dep is not None else InferenceServer.objects.order_by("pk").first()


def probe_model(model_id: int) -> dict:
    """Probe one model; the evidence: mode, server, types sent, types that reached Triton, when.
    Raises ServiceError when no server can be probed (`no_inference_server`, `canary_unavailable`,
    or the pipeline's own refusal code)."""
    from .dataplane.pipeline import Pipeline
    from .dataplane.snapshot import Route
    from .dataplane.types import INFER, Inbound
    from .dataplane.upstream import UpstreamPool

    mode = deid_mode(model_id)
    server = _server_for(model_id)
    if server is None:
        raise ServiceError("no_inference_server", "no inference server is registered to probe on", 503)
    ensure_deid_canary(server.pk)
    route = Route(
        deployment_id=0,
        model_id=model_id,
        model=CANARY_MODEL,
        version_id=0,
        version=1,
        server_id=server.pk,
        server=server.name,
        http_url=server.http_url,
        max_batch_size=0,
        signature=CANARY_SIGNATURE,
        deid_mode=mode,
        answer_screen="off",  # compare what Triton received, not what a screen let back
    )
    body = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [PROBE_TEXT]}]})
    inbound = Inbound(kind=INFER, model=CANARY_MODEL, version=None, authorization=None, peer=None, body=body.encode())

    async def run():
        pool = UpstreamPool(server_policy(), tls_config(), max_connections=1, max_waiting=1)
        pipeline = Pipeline(policy=_NoReidentification(), audit=None, limiter=None, pool=pool)
        try:
            return await pipeline.forward_as_routed(inbound, route)
        finally:
            pool.close()

    deid.warm()  # the gazetteers, once a process, as the data plane does at start: outside the CPU budget
    probed_at = timezone.now()
    out, counts = async_to_sync(run)()
    if out.status != 200:
        raise ServiceError("canary_failed", f"the canary on {server.name} answered HTTP {out.status}", 502)
    try:
        [output] = [o for o in json.loads(out.body)["outputs"] if o.get("name") == "ECHO"]
        echoed = "\n".join(str(v) for v in output["data"])
    except (ValueError, KeyError, TypeError) as err:
        raise ServiceError("canary_failed", f"the canary on {server.name} did not echo its input", 502) from err
    return {
        "mode": mode,
        "server": server.name,
        "canary": CANARY_MODEL,
        "probed_at": probed_at.isoformat(),
        "sent": sorted(SYNTHETIC),
        "found_by_gateway": sorted((counts or {}).get("found", {})),
        "reached_triton": leaked_types(echoed),
    }
