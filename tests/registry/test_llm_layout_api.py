"""POST /api/v1/registry/models/<m>/versions/<v>/triton-layout/: a language model version's vLLM or
TensorRT-LLM layout, rendered from the registry entry and parsed with Triton's protobuf."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from apps.registry.models import ModelVersion
from tests.factories import ModelVersionFactory
from tests.inference_backend.test_llm_configs import SIGNATURE, TRT_OPTIONS, VLLM_OPTIONS

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat_version(staff_user):
    mv = ModelVersionFactory(model_name="smollm2", actor=staff_user)
    ModelVersion.objects.filter(pk=mv.pk).update(signature=SIGNATURE)
    return mv


def _post(client, body, name="smollm2"):
    return client.post(f"/api/v1/registry/models/{name}/versions/1/triton-layout/", body, format="json")


@pytest.mark.parametrize(("backend", "options"), [("vllm", VLLM_OPTIONS), ("tensorrtllm", TRT_OPTIONS)])
def test_both_gpu_layouts_render_and_parse(staff_client, chat_version, backend, options):
    response = _post(staff_client, {"backend": backend, "options": options})
    assert response.status_code == 200, response.content
    files = response.json()["files"]
    configs = [path for path in files if path.endswith("config.pbtxt")]
    assert configs
    for path in configs:
        config = text_format.Parse(files[path], model_config_pb2.ModelConfig())
        assert config.name == path.split("/")[0]
    if backend == "vllm":
        assert json.loads(files["smollm2/1/model.json"])["model"] == VLLM_OPTIONS["model_path"]
    else:
        assert any("tensorrt_llm" in path for path in configs)


def test_bad_requests_have_stable_codes(staff_client, chat_version, staff_user):
    assert _post(staff_client, {"backend": "vllm"}).json()["code"] == "llm_config_missing_option"
    response = _post(staff_client, {"backend": "vllm", "options": {**VLLM_OPTIONS, "tensor_parallel_size": 0}})
    assert (response.status_code, response.json()["code"]) == (400, "llm_config_invalid_option")
    assert _post(staff_client, {"backend": "sglang"}).status_code == 400
    ModelVersionFactory(model_name="triage", actor=staff_user)
    response = _post(staff_client, {"backend": "vllm", "options": VLLM_OPTIONS}, name="triage")
    assert (response.status_code, response.json()["code"]) == (400, "not_a_language_model")
