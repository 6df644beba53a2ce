"""Bring a fresh installation to a usable state: named accounts per role (never the superuser),
the local Triton server, the demo model uploaded (encrypted) and deployed, and one token to call
it. Safe to run repeatedly; each run revokes the previous demo token and issues one."""

import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.models import ApiToken
from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, SECURITY_OFFICER
from apps.accounts.services import (
    assign_role,
    bootstrap_officer,
    create_service_account,
    create_user,
    grant_model_access,
    issue_token,
    reissue_enrolment_code,
    revoke_token,
)
from apps.core.demo import ADMIN_USER, ANALYST_USER, AUDITOR_USER, DEMO_ACCOUNT, DEMO_TOKEN, OFFICER
from apps.deployments import services as deployments
from apps.deployments.models import Deployment, Desired, Observed
from apps.registry.models import ModelVersion
from apps.registry.services import register_model_version
from inference_backend.demo_model import build_demo_onnx

DEMO_MODEL = "triage-demo"


@dataclass
class Login:
    """One demo account as printed: the password only when it was just created, the enrolment
    code while a privileged account has not enrolled its authenticator yet."""

    user: object
    role: str
    password: str | None = None
    enrolment_code: str | None = None


def ensure_demo_accounts() -> dict[str, Login]:
    """One named account per role, made the way the policy of powers allows: the officer by the
    host's bootstrap path, persons by the host or the admin, privileged roles by the officer."""
    User = get_user_model()
    logins: dict[str, Login] = {}
    officer = User.objects.filter(username=OFFICER).first()
    if officer is None:
        password = secrets.token_urlsafe(12)
        officer, code = bootstrap_officer(
            username=OFFICER, email=f"{OFFICER}@localhost", password=password, additional=True
        )
        logins[OFFICER] = Login(officer, SECURITY_OFFICER, password, code)
    else:
        logins[OFFICER] = Login(officer, SECURITY_OFFICER)
    logins[ADMIN_USER] = _person(ADMIN_USER, ADMIN, creator=None, officer=officer)
    admin = logins[ADMIN_USER].user
    logins[AUDITOR_USER] = _person(AUDITOR_USER, AUDITOR, creator=admin, officer=officer)
    logins[ANALYST_USER] = _person(ANALYST_USER, ANALYST, creator=admin, officer=officer)
    for login in logins.values():
        if login.role != ANALYST and login.enrolment_code is None and not _enrolled(login.user):
            login.enrolment_code = reissue_enrolment_code(user_id=login.user.pk)  # the host, as actor
    return logins


def _person(username: str, role: str, *, creator, officer) -> Login:
    user = get_user_model().objects.filter(username=username).first()
    if user is not None:
        return Login(user, role)
    password = secrets.token_urlsafe(12)
    if role == ANALYST:
        user = create_user(
            username=username, email=f"{username}@localhost", password=password, role=role, actor=creator
        )
        return Login(user, role, password)
    user = create_user(username=username, email=f"{username}@localhost", password=password, actor=creator)
    user = assign_role(user_id=user.pk, role=role, actor=officer)
    return Login(user, role, password, user.enrolment_code)


def _enrolled(user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def demo_caller(model, *, admin, officer):
    """Inference is done as a service account with an invoke grant on the demo model only, the way
    an integrator's application would call Sovereign: the admin creates (and so owns) it, the
    officer grants it the model."""
    account = get_user_model().objects.filter(username=DEMO_ACCOUNT).first()
    if account is None:
        account = create_service_account(name=DEMO_ACCOUNT, owner_id=admin.pk, actor=admin)
    grant_model_access(model_id=model.pk, permission="invoke_model", user_id=account.pk, actor=officer)
    return account


def issue_demo_token(account, model) -> str:
    """One live demo token per run: the previous ones are revoked and the new one issued by the
    host (actor None: the launcher runs on the host, apps/accounts/services/tokens.py), since the
    owner has no interactive session with a fresh second factor here."""
    for token_id in ApiToken.objects.filter(user=account, name=DEMO_TOKEN, revoked_at__isnull=True).values_list(
        "pk", flat=True
    ):
        revoke_token(token_id=token_id, actor=None)
    _, token = issue_token(
        user=account, name=DEMO_TOKEN, days=30, scopes=["invoke", "read"], model_ids=[model.pk], actor=None
    )
    return token


class Command(BaseCommand):
    help = (
        "Create the demo accounts (one per role, never a superuser), register the local Triton server, "
        "deploy the demo model and print how to call it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--triton-url", required=True, help="HTTP URL of the local Triton server")
        parser.add_argument("--portal-url", required=True, help="URL the portal is reachable at")
        parser.add_argument(
            "--grpc-address", default="", help="host:port of the data plane's KServe v2 gRPC endpoint, if any"
        )
        parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the deployment")

    def handle(self, *args, triton_url, portal_url, timeout, grpc_address="", **options):
        logins = ensure_demo_accounts()
        admin, officer = logins[ADMIN_USER].user, logins[OFFICER].user
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
        caller = demo_caller(mv.model, admin=admin, officer=officer)
        token = issue_demo_token(caller, mv.model)
        self._print(portal_url, logins, token, dep, caller, grpc_address)

    @staticmethod
    def _python_call(address, ssl, protocol, header, token, model):
        """A shell heredoc running tritonclient.<protocol> against `address` (flush left: it is pasted)."""
        return f"""python - <<'EOF'
import numpy as np, tritonclient.{protocol} as t
c = t.InferenceServerClient('{address}'{ssl})
x = t.InferInput('INPUT', [1, 4], 'FP32'); x.set_data_from_numpy(np.array([[0.5, 1.0, -0.5, 2.0]], np.float32))
print(c.infer('{model}', [x], headers={{'{header}': 'Bearer {token}'}}).as_numpy('PROBABILITIES'))
EOF
"""

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

    def _print(self, portal_url, logins, token, dep, caller, grpc_address=""):
        body = '{"inputs":[{"name":"INPUT","datatype":"FP32","shape":[1,4],"data":[0.5,1.0,-0.5,2.0]}]}'
        rows = []
        for name, login in logins.items():
            password = login.password or "(unchanged; on the host: manage.py changepassword NAME)"
            code = f"   enrolment code: {login.enrolment_code}" if login.enrolment_code else ""
            rows.append(f"    {name:<13} {login.role:<17} password: {password}{code}")
        accounts = "\n".join(rows)
        url = urlsplit(portal_url)
        http_address, ssl = url.netloc, ", ssl=True" if url.scheme == "https" else ""
        python = self._python_call(http_address, ssl, "http", "Authorization", token, dep.model.name)
        grpc = ""
        if grpc_address:
            grpc_call = self._python_call(grpc_address, "", "grpc", "authorization", token, dep.model.name)
            grpc = f"""
  and over gRPC (KServe v2 on {grpc_address}; the token travels in the call's metadata):

{grpc_call}"""
        self.stdout.write(f"""
Sovereign is running.

  Portal:   {portal_url}/admin/
  Logins:   one named account per role (passwords are shown only when the account is created).
            A privileged account's first login asks for its one-time enrolment code (24 h, single
            use), then for a TOTP authenticator app; the password alone cannot enrol.
{accounts}
  API docs: {portal_url}/api/docs/
  Demo:     {dep.model.name} v{dep.model_version.version} is {dep.observed_state} on {dep.server.name}

Infer on the demo model through the gateway (Triton's own protocol plus a token of the service
account {caller.username}, which holds an invoke grant on {dep.model.name} only; this run's token
replaces the previous run's, which is revoked):

  curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{body}' {portal_url}/v2/models/{dep.model.name}/infer

  The same with Triton's Python client (pip install 'tritonclient[http,grpc]'), pasted into a shell:

{python}{grpc}
Press Ctrl-C to stop everything.
""")
