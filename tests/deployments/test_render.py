"""render_for_triton: only ciphertext and the wrapped data key leave the portal."""

from __future__ import annotations

import base64

import pytest

from apps.core.errors import ServiceError
from apps.deployments.api.serializers import DeploymentRequestSerializer, DeploymentSerializer
from apps.deployments.models import Deployment
from apps.deployments.services import TRITON_MODEL_SOURCE, render_for_triton, smoke_inputs
from apps.keys.providers import decrypt
from inference_backend.config import BATCHING_FIELDS, BatchingSettings
from tests.factories import DeploymentFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def deployment(staff_user, onnx_bytes):
    mv = ModelVersionFactory(model_name="triage", data=onnx_bytes, actor=staff_user)
    return DeploymentFactory(model_version=mv, max_batch_size=16, preferred_batch_sizes=[4, 8], max_queue_delay_us=250)


class TestRenderForTriton:
    def test_parameters_carry_the_wrapped_key_and_binding(self, deployment):
        art = deployment.model_version.artifact

        config, _ = render_for_triton(deployment)

        params = {key: value["string_value"] for key, value in config["parameters"].items()}
        assert params == {
            "artifact_file": "model.onnx.enc",
            "wrapped_dek": base64.b64encode(bytes(art.data_key.wrapped)).decode(),
            "kek_id": art.data_key.kek_id,
            "artifact_aad": art.aad,
            "artifact_sha256": deployment.model_version.sha256,
        }

    def test_config_follows_signature_and_batching(self, deployment):
        config, _ = render_for_triton(deployment)

        # loaded under the version's own Triton name; the version directory is the registry version
        assert (config["name"], config["backend"], config["max_batch_size"]) == ("triage--v1", "python", 16)
        assert config["input"] == [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [4]}]
        assert config["output"] == [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [3]}]
        assert config["dynamic_batching"] == {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 250}
        assert config["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]

    def test_files_are_the_backend_and_the_ciphertext_never_the_plaintext(self, deployment, onnx_bytes):
        art = deployment.model_version.artifact

        _, files = render_for_triton(deployment)

        assert set(files) == {"1/model.py", "1/model.onnx.enc"}
        assert files["1/model.py"] == TRITON_MODEL_SOURCE.read_bytes()
        assert files["1/model.onnx.enc"] == art.path.read_bytes()
        for content in files.values():
            assert not any(onnx_bytes[i : i + 64] in content for i in range(0, len(onnx_bytes) - 63, 16))

    def test_what_is_sent_is_enough_for_a_host_holding_the_kek(self, deployment, onnx_bytes):
        config, files = render_for_triton(deployment)
        params = {key: value["string_value"] for key, value in config["parameters"].items()}

        # What the Triton host does: unwrap with its KEK access, decrypt in memory.
        plaintext = decrypt(
            files["1/model.onnx.enc"],
            base64.b64decode(params["wrapped_dek"]),
            params["kek_id"],
            params["artifact_aad"].encode(),
        )

        assert plaintext == onnx_bytes

    def test_missing_ciphertext_is_reported(self, deployment):
        deployment.model_version.artifact.path.unlink()

        with pytest.raises(ServiceError) as exc:
            render_for_triton(deployment)

        assert exc.value.code == "artifact_missing"


def test_smoke_inputs_are_one_zero_batch():
    signature = {
        "inputs": [
            {"name": "INPUT", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "FLAG", "datatype": "BOOL", "shape": [2]},
            {"name": "TEXT", "datatype": "BYTES", "shape": [-1]},
        ]
    }

    assert smoke_inputs(signature) == [
        {"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]},
        {"name": "FLAG", "datatype": "BOOL", "shape": [2], "data": [False, False]},
        {"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [""]},
    ]


def test_every_batching_setting_is_a_column_an_api_field_and_in_the_snapshot():
    """The batching settings are listed once (BATCHING_FIELDS); a new one cannot be half-wired."""
    columns = {f.name for f in Deployment._meta.get_fields()}
    assert set(BATCHING_FIELDS) <= columns
    assert set(DeploymentRequestSerializer().fields) == {"model_version", "server", *BATCHING_FIELDS}
    assert set(BATCHING_FIELDS) <= set(DeploymentSerializer().fields)
    assert Deployment().batching() == BatchingSettings()  # the column defaults are the settings' defaults
