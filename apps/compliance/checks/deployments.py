"""Checks of deployments: TLS to remote Triton servers, de-identification on PHI models."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from . import FAIL, NA, PASS, CheckResult, register

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@register("deployments.remote_tls", proof="query")
def remote_tls(ctx) -> CheckResult:
    from apps.deployments.models import InferenceServer

    servers = list(InferenceServer.objects.values_list("name", "http_url"))
    plain = sorted(
        f"{name} ({url})" for name, url in servers if not is_loopback(url) and urlsplit(url).scheme != "https"
    )
    evidence = {"servers": len(servers), "remote_without_tls": plain}
    if plain:
        return CheckResult(
            FAIL,
            f"{len(plain)} remote inference server(s) are reached over plain HTTP",
            evidence,
            "Put TLS in front of each listed Triton server and change its URL to https://.",
        )
    if not servers:
        return CheckResult(NA, "no inference server is registered", evidence)
    return CheckResult(PASS, "every remote inference server is reached over HTTPS", evidence)


# Modes whose output is not Safe Harbor under HIPAA (164.514(b)(2) and (c)), with why.
NOT_SAFE_HARBOR = {
    "surrogate_shift": "shifts dates, which can leave their year",
    "pseudonymise": "its tokens are HMACs derived from the identifier, which 164.514(c) does not allow as a "
    "re-identification code",
}


def _probe_all(ctx, ids_names: dict[int, str]) -> dict[str, dict]:
    """model name -> the gateway probe's evidence (or {"error": …}); one probe per model per run,
    shared by the profiles that evaluate this check."""
    from ..services import deid_probe

    probe = deid_probe()
    done = ctx.cache.setdefault("deid_probes", {})
    out = {}
    for model_id, name in sorted(ids_names.items(), key=lambda item: item[1]):
        if model_id not in done:
            if probe is None:
                done[model_id] = {"error": "no de-identification probe is registered (the gateway app is not loaded)"}
            else:
                try:
                    done[model_id] = probe(model_id)
                except Exception as exc:  # noqa: BLE001 - a probe that cannot run is evidence, not a pass
                    code = getattr(exc, "code", type(exc).__name__)
                    done[model_id] = {"error": f"{code}: {getattr(exc, 'detail', None) or exc}"}
        out[name] = done[model_id]
    return out


@register("deid.phi_models", proof="probe")
def phi_models(ctx) -> CheckResult:
    """Probes every PHI model: synthetic identifiers go through that model's de-identification and
    the gateway's pipeline to an echo canary on a real Triton (apps/gateway/deidprobe.py); the
    check fails when any of them reached Triton, when a model cannot be probed, or (HIPAA) when the
    mode is not Safe Harbor (surrogate_shift, pseudonymise)."""
    from apps.registry.models import Model

    from ..effective import HIPAA, phi_model_ids
    from ..models import DeidMode, ModelPolicy

    ids = phi_model_ids()
    configured = dict(ModelPolicy.objects.filter(model_id__in=ids).values_list("model__name", "deid_mode"))
    names = dict(Model.objects.filter(pk__in=ids).values_list("pk", "name"))
    if not names:
        return CheckResult(NA, "no model is marked as receiving PHI or personal information", {"phi_models": {}})
    probes = _probe_all(ctx, names)
    leaked = {name: p["reached_triton"] for name, p in probes.items() if p.get("reached_triton")}
    unprobed = {name: p["error"] for name, p in probes.items() if "error" in p}
    modes = {name: p.get("mode") for name, p in probes.items()}
    hipaa = ctx.profile == HIPAA
    shifted = sorted(n for n, m in modes.items() if m == DeidMode.SURROGATE_SHIFT)
    pseudonymised = sorted(n for n, m in modes.items() if m == DeidMode.PSEUDONYMISE) if hipaa else []
    evidence = {
        "phi_models": {name: configured.get(name, DeidMode.OFF) for name in sorted(names.values())},
        "probes": probes,
        "reached_triton": leaked,
        "not_probed": unprobed,
        "date_shift_not_safe_harbor": shifted,
        "pseudonymise_not_safe_harbor": pseudonymised,
    }
    problems, remedies = [], []
    if leaked:
        kinds = sorted({k for types in leaked.values() for k in types})
        per_model = "; ".join(f"{n}: {', '.join(t)}" for n, t in sorted(leaked.items()))
        problems.append(
            f"synthetic identifiers reached Triton for {len(leaked)} PHI model(s) ({per_model}); "
            f"leaked types: {', '.join(kinds)}"
        )
        remedies.append(
            "De-identification lets identifiers through for each listed model: set deid_mode (redact, mask or "
            "surrogate) in its compliance policy and check the gateway's de-identifier (docs/deidentification.md)."
        )
    if unprobed:
        problems.append(
            f"{len(unprobed)} PHI model(s) could not be probed ("
            + "; ".join(f"{n}: {e}" for n, e in sorted(unprobed.items()))
            + ")"
        )
        remedies.append(
            "Register a reachable inference server (the probe loads the echo canary "
            "sovereign-deid-canary there) and run the evaluation again."
        )
    if shifted:
        problems.append(
            f"{len(shifted)} PHI model(s) shift dates (surrogate_shift): not Safe Harbor de-identification, "
            "since shifted dates can leave their year"
        )
        remedies.append(
            "Set deid_mode to surrogate (dates stay in their year), redact or mask on each date-shifting model, "
            "or document an expert determination (45 CFR 164.514(b)(1)) for the date shift."
        )
    if pseudonymised:
        problems.append(
            f"{len(pseudonymised)} PHI model(s) pseudonymise: not Safe Harbor, since " + NOT_SAFE_HARBOR["pseudonymise"]
        )
        remedies.append(
            "Set deid_mode to surrogate (random surrogates, the mapping encrypted and re-identified only for "
            "holders of `reidentify`), redact or mask on each pseudonymising model."
        )
    if problems:
        return CheckResult(FAIL, "; ".join(problems), evidence, " ".join(remedies))
    return CheckResult(
        PASS,
        f"probed {len(probes)} PHI model(s): none of the {len(next(iter(probes.values()))['sent'])} synthetic "
        "identifier types reached Triton",
        evidence,
    )


def _refusals(ctx, ids_names: dict[int, str]) -> dict[str, dict]:
    """model name -> what the gateway answered numeric inputs (the gateway's probe), or {"error": …}."""
    from ..services import numeric_inputs_probe

    probe = numeric_inputs_probe()
    out = {}
    for model_id, name in sorted(ids_names.items(), key=lambda item: item[1]):
        if probe is None:
            out[name] = {"error": "no numeric-input probe is registered (the gateway app is not loaded)"}
            continue
        try:
            out[name] = probe(model_id)
        except Exception as exc:  # noqa: BLE001 - a probe that cannot run is evidence
            out[name] = {"error": f"{getattr(exc, 'code', type(exc).__name__)}: {getattr(exc, 'detail', None) or exc}"}
    return out


@register("deid.numeric_inputs", proof="probe")
def numeric_inputs(ctx) -> CheckResult:
    """PHI models take text: every PHI model whose signature (any version) has a non-BYTES input must
    have its numeric inputs declared, with a reason, in its compliance policy; the gateway refuses
    numeric inputs to an undeclared one (403 phi_numeric_inputs_undeclared), which the check probes
    (apps/gateway/deidprobe.py probe_numeric_inputs) for each undeclared model."""
    from apps.registry.models import Model, ModelVersion

    from ..effective import phi_model_ids
    from ..models import ModelPolicy

    ids = phi_model_ids()
    if not ids:
        return CheckResult(NA, "no model is marked as receiving PHI or personal information", {"phi_models": 0})
    names = dict(Model.objects.filter(pk__in=ids).values_list("pk", "name"))
    reasons = dict(ModelPolicy.objects.filter(model_id__in=ids).values_list("model__name", "numeric_inputs_reason"))
    numeric: dict[str, set[str]] = {}
    versions = ModelVersion.objects.filter(model_id__in=ids).values_list("model__name", "signature")
    for name, signature in versions:
        for spec in (signature or {}).get("inputs") or []:  # a language model has no tensor inputs
            if spec.get("datatype") != "BYTES":
                numeric.setdefault(name, set()).add(f"{spec.get('name')} ({spec.get('datatype')})")
    undeclared = {name: sorted(inputs) for name, inputs in sorted(numeric.items()) if not reasons.get(name)}
    declared = {
        name: {"inputs": sorted(inputs), "reason": reasons[name]}
        for name, inputs in sorted(numeric.items())
        if reasons.get(name)
    }
    evidence = {
        "phi_models": len(ids),
        "versions_read": len(versions),
        "numeric_undeclared": undeclared,
        "numeric_declared": declared,
        "gateway_refusal": _refusals(ctx, {pk: n for pk, n in names.items() if n in undeclared}),
    }
    if undeclared:
        listed = "; ".join(f"{name}: {', '.join(inputs)}" for name, inputs in undeclared.items())
        forwarded = sorted(n for n, p in evidence["gateway_refusal"].items() if not p.get("refused"))
        gateway = (
            "the gateway refuses those inputs (phi_numeric_inputs_undeclared)"
            if not forwarded
            else f"the gateway did NOT refuse them for {', '.join(forwarded)}"
        )
        return CheckResult(
            FAIL,
            f"{len(undeclared)} PHI model(s) take numeric inputs that text de-identification cannot see, without a "
            f"declaration ({listed}); {gateway}",
            evidence,
            "For each listed model, either give it text (BYTES) inputs so the gateway de-identifies them, or "
            "record in its compliance policy (numeric_inputs_reason) why its numeric inputs carry no identifiers.",
        )
    if declared:
        return CheckResult(
            PASS, f"{len(declared)} PHI model(s) take numeric inputs, each declared with a reason", evidence
        )
    return CheckResult(PASS, f"all {len(ids)} PHI model(s) take text inputs only", evidence)
