from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    label = "gateway"

    def ready(self) -> None:
        from .dataplane import invalidation

        # Every write a gateway decision depends on tells the data plane's policy snapshot to
        # rebuild, in the writer's own transaction (apps/gateway/dataplane/invalidation.py).
        invalidation.connect()

        from apps.keys.models import Purpose
        from apps.keys.selectors import register_label_provider

        from .services import exchange_key_labels

        register_label_provider(Purpose.LLM_EXCHANGE, exchange_key_labels)

        # The compliance check deid.phi_models proves de-identification by this probe (compliance
        # is below the gateway and cannot import it; an in-process hook needs no credential).
        from apps.compliance.services import register_deid_probe, register_numeric_inputs_probe

        from .deidprobe import probe_model, probe_numeric_inputs

        register_deid_probe(probe_model)
        register_numeric_inputs_probe(probe_numeric_inputs)
