"""A language model on the real Triton: the SmolLM2 int4 set registered and encrypted → deployed by
the reconcile service (the whole set travels in the load request) → observed ACTIVE after a
one-token smoke generation → a generate_stream call straight to Triton answers → undeployed."""

from __future__ import annotations

import json

import pytest

from apps.deployments import services, tasks
from apps.deployments.models import Observed
from apps.registry.services import register_llm_version
from inference_backend.client import TritonClient

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="session")
def int4_set(smollm2_files) -> dict[str, bytes]:
    return smollm2_files("int4")


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.reconcile_deployment_task, "delay", lambda *args: calls.append(args))
    return calls


def test_register_deploy_generate_undeploy(triton, staff_user, int4_set, enqueued, settings):
    settings.TRITON_LOAD_TIMEOUT = 300
    mv = register_llm_version(model_name="smollm2", files=int4_set, actor=staff_user)
    server = services.register_server(name="triton-llm", http_url=triton.http_url, actor=staff_user)
    dep = services.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=staff_user)
    dep = services.reconcile_deployment(dep.pk)
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    states = list(dep.transitions.values_list("to_state", flat=True))
    assert states == ["pending", "loading", "active"]

    with TritonClient(triton.http_url, timeout=120) as client:
        events = client.generate_stream(
            "smollm2--v1",  # the version's Triton name
            {
                "text_input": PROMPT,
                "stream": True,
                "sampling_parameters": json.dumps({"max_tokens": 8, "temperature": 0}),
                "return_finish_reason": True,
                "return_num_output_tokens": True,
            },
        )
        text = "".join(e.get("text_output", "") for e in events)
        assert "Paris" in text, text
        assert events[-1]["finish_reason"] in ("stop", "length")

        services.request_undeploy(deployment_id=dep.pk, actor=staff_user)
        dep = services.reconcile_deployment(dep.pk)
        assert dep.observed_state == Observed.INACTIVE
        assert not client.model_ready("smollm2--v1")
