"""Run the gateway's data plane: KServe v2 over HTTP (and gRPC with --grpc-port) on one port,
in one process with one event loop (docs/gateway.md explains why one worker)."""

from __future__ import annotations

import uvloop
from django.conf import settings
from django.core.management.base import BaseCommand

from apps.gateway.dataplane.server import serve


class Command(BaseCommand):
    help = "Serve the inference data plane (KServe v2 over HTTP and gRPC) with uvicorn."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--grpc-port", type=int, default=settings.GATEWAY_GRPC_PORT, help="0: no gRPC")
        parser.add_argument(
            "--reuse-port",
            action="store_true",
            help="bind with SO_REUSEPORT, so several run_dataplane processes serve one port (one per core)",
        )
        parser.add_argument(
            "--portal-upstream",
            default=settings.PORTAL_UPSTREAM,
            help="relay every non-/v2 path to this portal URL (make run); empty: answer 404",
        )

    def handle(self, *args, host, port, grpc_port, portal_upstream, reuse_port, **options):
        def ready(plane):
            grpc = f", gRPC on {host}:{grpc_port}" if grpc_port else ""
            self.stdout.write(f"data plane listening on http://{host}:{port}{grpc}", ending="\n")
            self.stdout.flush()

        uvloop.run(
            serve(host, port, grpc_port, portal_upstream=portal_upstream or None, ready=ready, reuse_port=reuse_port)
        )
