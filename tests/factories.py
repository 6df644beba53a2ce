"""factory_boy factories for unit tests.

Governed objects that have a service (model versions, tokens) are built through that service,
so a factory never produces a row the product itself could not have produced. Deployments are
the exception: the gateway tests need one that is already ACTIVE without a Triton to load it.
"""

from __future__ import annotations

import socket
from contextlib import closing

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from factory.django import DjangoModelFactory

from apps.accounts.services import issue_token
from apps.deployments.models import Deployment, Desired, InferenceServer, Observed
from apps.registry.models import ModelVersion
from apps.registry.services import register_model_version
from inference_backend.demo_model import build_test_onnx

PASSWORD = "correct-horse-battery-9"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.django.Password(PASSWORD)


class StaffFactory(UserFactory):
    is_staff = True


class ModelVersionFactory(factory.Factory):
    """Uploads a small ONNX model through register_model_version (so it is really encrypted)."""

    class Meta:
        model = ModelVersion

    model_name = factory.Sequence(lambda n: f"model-{n}")
    data = factory.Sequence(lambda n: build_test_onnx(4, 3, seed=1000 + n))
    version = None
    description = ""
    actor = factory.SubFactory(StaffFactory)

    @classmethod
    def _create(cls, model_class, **kwargs):
        return register_model_version(**kwargs)

    @classmethod
    def _build(cls, model_class, **kwargs):
        raise NotImplementedError("model versions exist only once registered; use create()")


class InferenceServerFactory(DjangoModelFactory):
    class Meta:
        model = InferenceServer

    name = factory.Sequence(lambda n: f"triton-{n}")
    http_url = factory.LazyFunction(lambda: f"http://127.0.0.1:{closed_port()}")


class DeploymentFactory(DjangoModelFactory):
    """A deployment row as the reconciler leaves it once Triton serves the model."""

    class Meta:
        model = Deployment

    model_version = factory.SubFactory(ModelVersionFactory)
    model = factory.SelfAttribute("model_version.model")
    server = factory.SubFactory(InferenceServerFactory)
    max_batch_size = 8
    desired_state = Desired.ACTIVE
    observed_state = Observed.ACTIVE


def token_for(user, **kwargs) -> str:
    """Issue a token for `user` through the service and return its plaintext."""
    kwargs.setdefault("otp_verified_at", timezone.now())  # as if just past the second factor (privileged)
    return issue_token(user=user, name=kwargs.pop("name", "test"), actor=user, **kwargs)[1]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound by the kernel's choice, then released)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def llm_governance_rows(model, user) -> dict:
    """One row of each chat-governance model (issue 13), through the services: a chat policy and a
    quota on `model`, a usage row and a fully retained exchange of `user`. Returns their ids."""
    from apps.gateway.models import ChatPolicy, LLMUsage
    from apps.gateway.services import record_usage, retain_exchange, set_chat_policy, set_quota

    policy = set_chat_policy(model_id=model.pk, retention="full", actor=None)
    quota = set_quota(scope="user", subject_id=user.pk, model_id=model.pk, tokens_per_day=10_000, actor=None)
    rid = f"walk-{model.pk}-{user.pk}"
    record_usage(
        request_id=rid,
        user_id=user.pk,
        username=user.username,
        token_id=None,
        model_id=model.pk,
        model_name=model.name,
        model_version=1,
        prompt_tokens=3,
        completion_tokens=4,
        ttft_ms=1.0,
        duration_ms=2.0,
        finish_reason="stop",
    )
    exchange = retain_exchange(
        policy={"retention": "full", "retention_days": 30},
        request_id=rid,
        model_id=model.pk,
        model_name=model.name,
        user_id=user.pk,
        username=user.username,
        messages=[{"role": "user", "content": "walk"}],
        answer="ok",
    )
    assert ChatPolicy.objects.filter(pk=policy.pk).exists()
    return {
        "chat_policy": policy.pk,
        "quota": quota.pk,
        "usage": LLMUsage.objects.get(request_id=rid).pk,
        "exchange": exchange.pk,
    }


def rollout_of(model_version, actor, *, finished: bool = False):
    """A canary rollout of `model_version`'s model (deployed: the live version) to a new version of
    the same signature, ACTIVE on a server of its own; waiting for the controller, or aborted."""
    from apps.deployments.services import abort_rollout, start_rollout

    data = build_test_onnx(4, 3, seed=4242)
    new = register_model_version(model_name=model_version.model.name, data=data, actor=actor)
    DeploymentFactory(model_version=new, server=InferenceServerFactory())
    rollout = start_rollout(model_id=new.model_id, to_version_id=new.pk, actor=actor)
    if finished:
        abort_rollout(rollout_id=rollout.pk, actor=actor)
    return rollout
