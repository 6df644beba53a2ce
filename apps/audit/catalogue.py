"""The catalogue of audit event types, grouped. record_event refuses a type not listed here,
so a typo cannot create an event nobody will ever search for."""

EVENT_TYPES: dict[str, str] = {
    # auth
    "auth.token.create": "API token issued",
    "auth.token.revoke": "API token revoked",
    "auth.token.denied": "API token refused (unknown, expired, revoked or malformed)",
    # registry
    "registry.model.create": "Model created",
    "registry.version.create": "Model version uploaded and encrypted",
    "registry.version.rejected": "Model version upload refused",
    # deployment
    "deployment.server.create": "Inference server registered",
    "deployment.request": "Deployment requested",
    "deployment.undeploy": "Undeploy requested",
    "deployment.transition": "Deployment changed state",
    # inference
    "inference.infer": "Inference call through the gateway",
    "inference.metadata": "Model metadata read through the gateway",
    "inference.ready": "Model readiness read through the gateway",
}


def group_of(event_type: str) -> str:
    return event_type.split(".", 1)[0]
