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


@register("deployments.remote_tls")
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


@register("deid.phi_models")
def phi_models(ctx) -> CheckResult:
    from apps.registry.models import Model

    from ..effective import phi_model_ids
    from ..models import DeidMode, ModelPolicy

    ids = phi_model_ids()
    modes = dict(ModelPolicy.objects.filter(model_id__in=ids).values_list("model__name", "deid_mode"))
    names = dict(Model.objects.filter(pk__in=ids).values_list("pk", "name"))
    inventory = {name: modes.get(name, DeidMode.OFF) for name in sorted(names.values())}
    off = [name for name, mode in inventory.items() if mode == DeidMode.OFF]
    shifted = [name for name, mode in inventory.items() if mode == DeidMode.SURROGATE_SHIFT]
    evidence = {"phi_models": inventory, "without_deidentification": off, "date_shift_not_safe_harbor": shifted}
    if not inventory:
        return CheckResult(NA, "no model is marked as receiving PHI or personal information", evidence)
    if shifted and not off:
        return CheckResult(
            FAIL,
            f"{len(shifted)} PHI model(s) shift dates (surrogate_shift): not Safe Harbor de-identification, "
            "since shifted dates can leave their year",
            evidence,
            "Set deid_mode to surrogate (dates stay in their year), redact, mask or pseudonymise on each listed "
            "model, or document an expert determination (45 CFR 164.514(b)(1)) for the date shift.",
        )
    if off:
        return CheckResult(
            FAIL,
            f"{len(off)} PHI model(s) without de-identification",
            evidence,
            "Set deid_mode (redact, mask, pseudonymise or surrogate) in each listed model's compliance policy."
            + (f" Also: {len(shifted)} model(s) shift dates, which is not Safe Harbor." if shifted else ""),
        )
    return CheckResult(PASS, f"all {len(inventory)} PHI model(s) de-identify requests", evidence)
