from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    label = "gateway"

    def ready(self) -> None:
        from .dataplane import invalidation

        # Every write a gateway decision depends on tells the data plane's policy snapshot to
        # rebuild, in the writer's own transaction (apps/gateway/dataplane/invalidation.py).
        invalidation.connect()
