"""The de-identification probe behind the compliance check `deid.phi_models` (issue 15).

For one PHI model, the probe takes that model's de-identification mode (the gateway's routes'
own statement: snapshot.model_policy_facts), puts fixed synthetic identifiers — a
name, a date, an SSN, a 身份证号, a phone number, an address and city, an MRN — in a KServe v2 BYTES
input, and pushes it through the data plane's own pipeline stages (check → de-identify → forward:
Pipeline.forward_as_routed) to the canary model on a real Triton server: an echo model without
weights (inference_backend/canary_model.py) that answers with exactly what it received. Whatever of
the synthetic values comes back reached Triton. The answer screen is off for the probe, so what is
compared is Triton's input, not a screened answer.

The server is one of the model's ACTIVE deployments' (else the first registered server); the canary
is loaded there when missing (apps.deployments.services.ensure_deid_canary, audited). The values
are synthetic and never leave this module: the evidence names identifier TYPES only.

`probe_numeric_inputs` sends zeros shaped like a PHI model's numeric inputs through the same
stages with the model's own signature and route facts, addressed to the canary, and reports whether
the gateway refused them (403 phi_numeric_inputs_undeclared) — the check `deid.numeric_inputs`.

Both are registered with apps.compliance in GatewayConfig.ready() (compliance is below the gateway: it cannot
import it, the gateway hands it the probe).
"""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django.utils import timezone

from apps.core.errors import ServiceError, _
from apps.deployments.models import Deployment, Desired, InferenceServer, Observed
from apps.deployments.selectors import server_policy, tls_config
from apps.deployments.services import ensure_deid_canary, smoke_inputs
from apps.registry.models import ModelVersion
from inference_backend.canary_model import CANARY_MODEL, CANARY_SIGNATURE

from . import deid
from .protocol import PHI_NUMERIC_INPUTS_UNDECLARED

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


def _facts(model_id: int):
    """The mode, screen and numeric refusal the gateway's routes carry for the model (the snapshot's
    own statement, apps/gateway/dataplane/snapshot.py model_policy_facts)."""
    from .dataplane.snapshot import model_policy_facts

    return model_policy_facts(model_id=model_id)[model_id]


def _forward(inbound, route):
    """Pipeline.forward_as_routed on a pool of its own, from synchronous code (the check)."""
    from .dataplane.pipeline import Pipeline
    from .dataplane.upstream import UpstreamPool

    async def run():
        pool = UpstreamPool(server_policy(), tls_config(), max_connections=1, max_waiting=1)
        pipeline = Pipeline(policy=_NoReidentification(), audit=None, limiter=None, pool=pool)
        try:
            return await pipeline.forward_as_routed(inbound, route)
        finally:
            pool.close()

    return async_to_sync(run)()


def probe_numeric_inputs(model_id: int) -> dict:
    """Send zeros shaped like the model's numeric inputs through the pipeline with the model's own
    route facts and signature, addressed to the canary (never the model itself): the gateway must
    refuse them (403 phi_numeric_inputs_undeclared) before anything is forwarded. Evidence: whether
    it refused, the code it answered, when."""
    from .dataplane.snapshot import Route
    from .dataplane.types import INFER, Inbound

    facts = _facts(model_id)
    version = ModelVersion.objects.filter(model_id=model_id, signature__has_key="inputs").order_by("-version").first()
    server = _server_for(model_id)
    if version is None or server is None:
        raise ServiceError("no_inference_server", _("no inference server (or no tensor version) to probe on"), 503)
    route = Route(
        deployment_id=0,
        model_id=model_id,
        model=CANARY_MODEL,
        triton_name=CANARY_MODEL,  # loaded under its own name (ensure_deid_canary), not a version's
        version_id=version.pk,
        version=version.version,
        server_id=server.pk,
        server=server.name,
        http_url=server.http_url,
        max_batch_size=1,
        signature=version.signature,
        deid_mode=facts.deid_mode,
        answer_screen="off",
        numeric_refused=facts.numeric_refused,
    )
    body = json.dumps({"inputs": smoke_inputs(version.signature)}).encode()
    inbound = Inbound(kind=INFER, model=CANARY_MODEL, version=None, authorization=None, peer=None, body=body)
    probed_at = timezone.now()
    try:
        out, _elapsed = _forward(inbound, route)
        code = "" if out.status == 200 else str(out.status)
    except ServiceError as err:
        code = err.code
    return {
        "version": version.version,
        "probed_at": probed_at.isoformat(),
        "answered": code or "forwarded",
        "refused": code == PHI_NUMERIC_INPUTS_UNDECLARED,
    }


def probe_model(model_id: int) -> dict:
    """Probe one model; the evidence: mode, server, types sent, types that reached Triton, when.
    Raises ServiceError when no server can be probed (`no_inference_server`, `canary_unavailable`,
    or the pipeline's own refusal code)."""
    from .dataplane.snapshot import Route
    from .dataplane.types import INFER, Inbound

    mode = _facts(model_id).deid_mode
    server = _server_for(model_id)
    if server is None:
        raise ServiceError("no_inference_server", _("no inference server is registered to probe on"), 503)
    ensure_deid_canary(server.pk)
    route = Route(
        deployment_id=0,
        model_id=model_id,
        model=CANARY_MODEL,
        triton_name=CANARY_MODEL,  # loaded under its own name (ensure_deid_canary), not a version's
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

    deid.warm()  # the gazetteers, once a process, as the data plane does at start: outside the CPU budget
    probed_at = timezone.now()
    out, counts = _forward(inbound, route)
    if out.status != 200:
        raise ServiceError(
            "canary_failed",
            _("the canary on %(server)s answered HTTP %(status)s") % {"server": server.name, "status": out.status},
            502,
        )
    try:
        [output] = [o for o in json.loads(out.body)["outputs"] if o.get("name") == "ECHO"]
        echoed = "\n".join(str(v) for v in output["data"])
    except (ValueError, KeyError, TypeError) as err:
        raise ServiceError(
            "canary_failed", _("the canary on %(server)s did not echo its input") % {"server": server.name}, 502
        ) from err
    return {
        "mode": mode,
        "server": server.name,
        "canary": CANARY_MODEL,
        "probed_at": probed_at.isoformat(),
        "sent": sorted(SYNTHETIC),
        "found_by_gateway": sorted((counts or {}).get("found", {})),
        "reached_triton": leaked_types(echoed),
    }
