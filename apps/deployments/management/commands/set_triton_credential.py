"""Give the portal a Triton server's restricted-API credential (docs/triton-credential.md).

The value is read from the environment (SOVEREIGN_TRITON_CREDENTIAL) or, with --generate, made
here and handed to nobody but the database (sealed): never from the command line, which other users
of the host can read in the process list, and never printed. `make run` uses it to give the
embedded Triton a fresh credential at every start; a server of that name that does not exist yet
is registered with --url (and --backends).
"""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ServiceError
from apps.deployments import services
from apps.deployments.models import InferenceServer
from inference_backend.server import CREDENTIAL_ENV


class Command(BaseCommand):
    help = f"Store a Triton server's restricted-API credential (sealed) from ${CREDENTIAL_ENV}; --remove drops it."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the inference server's name in the portal")
        parser.add_argument("--url", default="", help="register the server with this URL when it does not exist")
        parser.add_argument("--backends", default="python,onnxruntime", help="backends of a server registered here")
        parser.add_argument("--remove", action="store_true", help="remove the credential instead")

    def handle(self, *args, name, url, backends, remove, **options):
        credential = None if remove else os.environ.get(CREDENTIAL_ENV, "")
        if credential == "":
            raise CommandError(f"set {CREDENTIAL_ENV} to the credential the server was started with (or --remove)")
        try:
            server = InferenceServer.objects.filter(name=name).first()
            if server is None:
                if not url:
                    raise CommandError(f"no inference server named {name!r}; pass --url to register it")
                server = services.register_server(
                    name=name,
                    http_url=url.rstrip("/"),
                    backends=[b for b in backends.split(",") if b],
                    credential=credential,
                    actor=None,
                )
            else:
                server = services.set_server_credential(server_id=server.pk, credential=credential, actor=None)
        except ServiceError as err:
            raise CommandError(f"{err.code}: {err.detail}") from err
        state = "holds a credential" if server.has_credential else "has no credential"
        self.stdout.write(f"inference server {server.name} {state} (value not shown)")
