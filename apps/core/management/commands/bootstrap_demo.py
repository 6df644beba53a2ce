"""Bring a fresh installation to a usable state: an admin user, the local Triton server, the
demo model uploaded (encrypted) and deployed, and a token to call it. Safe to run repeatedly."""

import os
import secrets
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.services import create_service_account, grant_model_access, issue_token
from apps.deployments import services as deployments
from apps.deployments.models import Deployment, Desired, Observed
from apps.registry.models import ModelVersion
from apps.registry.services import register_model_version
from inference_backend.demo_model import build_demo_onnx

DEMO_MODEL = "triage-demo"
DEMO_ACCOUNT = "svc-demo"


class Command(BaseCommand):
    help = "Create the admin user, register the local Triton server, deploy the demo model and print how to call it."

    def add_arguments(self, parser):
        parser.add_argument("--triton-url", required=True, help="HTTP URL of the local Triton server")
        parser.add_argument("--portal-url", required=True, help="URL the portal is reachable at")
        parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the deployment")

    def handle(self, *args, triton_url, portal_url, timeout, **options):
        admin, password = self._admin()
        server = deployments.register_server(name="local", http_url=triton_url, hardware="cpu", actor=admin)
        mv = ModelVersion.objects.filter(model__name=DEMO_MODEL).order_by("-version").first()
        if mv is None:
            mv = register_model_version(
                model_name=DEMO_MODEL,
                data=build_demo_onnx(),
                actor=admin,
                description="Demo triage classifier: 4 vitals in, 3 class probabilities out.",
            )
        dep = Deployment.objects.filter(model=mv.model, server=server, desired_state=Desired.ACTIVE).first()
        if dep is None:
            dep = deployments.request_deployment(
                model_version_id=mv.pk,
                server_id=server.pk,
                batching={"max_batch_size": 16, "max_queue_delay_us": 200},
                actor=admin,
            )
        else:
            deployments.reconcile_deployment(dep.pk)  # the server was restarted: load again now
        dep = self._wait_active(dep.pk, timeout)
        caller = self._demo_caller(admin, mv.model)
        _, token = issue_token(
            user=caller, name="make-run demo", days=30, scopes=["invoke", "read"], model_ids=[mv.model.pk], actor=None
        )  # the launcher runs on the host: a host-issued token (apps/accounts/services/tokens.py)
        self._print(portal_url, admin.username, password, token, dep, caller)

    def _demo_caller(self, admin, model):
        """Inference is done as a service account with an invoke grant on the demo model only,
        the way an integrator's application would call Sovereign."""
        account = get_user_model().objects.filter(username=DEMO_ACCOUNT).first()
        if account is None:
            account = create_service_account(name=DEMO_ACCOUNT, owner_id=admin.pk, actor=admin)
        grant_model_access(model_id=model.pk, permission="invoke_model", user_id=account.pk, actor=admin)
        return account

    def _admin(self):
        User = get_user_model()
        password = os.environ.get("SOVEREIGN_ADMIN_PASSWORD", "")
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            password = password or secrets.token_urlsafe(12)
            admin = User.objects.create_superuser("admin", "admin@localhost", password)
        elif password:
            admin.set_password(password)
            admin.save(update_fields=["password"])
        return admin, password or "(unchanged; set SOVEREIGN_ADMIN_PASSWORD to reset it)"

    def _wait_active(self, pk, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dep = Deployment.objects.get(pk=pk)
            if dep.observed_state == Observed.ACTIVE:
                return dep
            if dep.observed_state == Observed.FAILED:
                raise CommandError(f"the demo deployment failed: {dep.last_error}")
            time.sleep(0.5)
        raise CommandError(
            f"the demo deployment did not become active within {timeout:.0f}s "
            f"(state {dep.observed_state}); is the Celery worker running?"
        )

    def _print(self, portal_url, username, password, token, dep, caller):
        body = '{"inputs":[{"name":"INPUT","datatype":"FP32","shape":[1,4],"data":[0.5,1.0,-0.5,2.0]}]}'
        self.stdout.write(f"""
Sovereign is running.

  Portal:   {portal_url}/admin/
  Login:    {username} / {password}
            (a privileged account: the first login asks you to enrol a TOTP authenticator app)
  API docs: {portal_url}/api/docs/
  Demo:     {dep.model.name} v{dep.model_version.version} is {dep.observed_state} on {dep.server.name}

Infer on the demo model through the gateway (Triton's own protocol plus a token of the service
account {caller.username}, which holds an invoke grant on {dep.model.name} only):

  curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{body}' {portal_url}/v2/models/{dep.model.name}/infer

Press Ctrl-C to stop everything.
""")
