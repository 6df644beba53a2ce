"""Requests the gateway refuses against the deployed version's signature, before anything is sent.

The deployment points at a closed port: a request that slipped through the checks would come
back 503, not 400.
"""

from __future__ import annotations

import json

import pytest

from apps.audit.models import AuditEvent, Outcome

from .helpers import deploy, infer, valid_request

pytestmark = pytest.mark.django_db


def tensor(**overrides) -> dict:
    return {"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4, **overrides}


CASES = [
    ("unknown-input", {"inputs": [tensor(name="INPUTS")]}, "unknown_input"),
    ("extra-input", {"inputs": [tensor(), tensor(name="EXTRA")]}, "unknown_input"),
    ("wrong-datatype", {"inputs": [tensor(datatype="FP64")]}, "wrong_datatype"),
    ("int-datatype", {"inputs": [tensor(datatype="INT32")]}, "wrong_datatype"),
    ("wrong-inner-dim", {"inputs": [tensor(shape=[1, 5])]}, "wrong_shape"),
    ("wrong-rank", {"inputs": [tensor(shape=[4])]}, "wrong_shape"),
    ("negative-dim", {"inputs": [tensor(shape=[-1, 4])]}, "wrong_shape"),
    ("bool-dim", {"inputs": [tensor(shape=[True, 4])]}, "wrong_shape"),
    ("no-shape", {"inputs": [tensor(shape=None)]}, "wrong_shape"),
    ("batch-too-large", {"inputs": [tensor(shape=[9, 4], data=[0.0] * 36)]}, "batch_too_large"),
    ("missing-input", {"inputs": []}, "missing_input"),
    ("unknown-output", {"inputs": [tensor()], "outputs": [{"name": "LOGITS"}]}, "unknown_output"),
    ("inputs-not-list", {"inputs": {"name": "INPUT"}}, "invalid_request"),
    ("input-not-object", {"inputs": ["INPUT"]}, "invalid_request"),
    ("body-not-object", [tensor()], "invalid_request"),
    # A region registered on the Triton host by someone else must not be named through the gateway.
    (
        "shared-memory-input",
        {"inputs": [tensor(data=None, parameters={"shared_memory_region": "other", "shared_memory_byte_size": 16})]},
        "shared_memory_not_supported",
    ),
    (
        "shared-memory-output",
        {"inputs": [tensor()], "outputs": [{"name": "OUTPUT", "parameters": {"shared_memory_region": "other"}}]},
        "shared_memory_not_supported",
    ),
    (
        "shared-memory-request",
        {"inputs": [tensor()], "parameters": {"shared_memory_offset": 0}},
        "shared_memory_not_supported",
    ),
]


class TestSignatureChecks:
    @pytest.fixture(autouse=True)
    def deployment(self, model_version):
        return deploy(model_version, max_batch_size=8)

    @pytest.mark.parametrize(("body", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
    def test_refused_with_code(self, caller, body, code):
        resp = infer(caller, body)

        assert resp.status_code == 400, resp.content
        assert resp.json()["code"] == code
        assert resp.json()["error"]
        event = AuditEvent.objects.get(event_type="inference.infer")
        assert (event.outcome, event.error_code, event.details["status"]) == (Outcome.FAILURE, code, 400)

    def test_batch_at_the_limit_passes_the_checks(self, caller):
        resp = infer(caller, valid_request(batch=8))

        assert resp.json()["code"] == "triton_unavailable"

    @pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe\x00"], ids=["broken", "empty", "not-utf8"])
    def test_invalid_json(self, caller, body):
        resp = infer(caller, body)

        assert resp.status_code == 400
        assert resp.json()["code"] == "invalid_request"
        assert AuditEvent.objects.get(event_type="inference.infer").error_code == "invalid_request"


class TestBodySize:
    def test_body_over_the_limit_is_413(self, caller, model_version, settings):
        deploy(model_version)
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64

        resp = infer(caller, valid_request(batch=4))

        assert resp.status_code == 413
        assert resp.json()["code"] == "request_too_large"
        event = AuditEvent.objects.get(event_type="inference.infer")
        assert (event.outcome, event.error_code, event.details["status"]) == (Outcome.FAILURE, "request_too_large", 413)


class TestBinaryExtension:
    """Triton's binary tensor extension: JSON header of Inference-Header-Content-Length bytes, then raw tensors."""

    @pytest.fixture(autouse=True)
    def deployment(self, model_version):
        return deploy(model_version)

    @staticmethod
    def binary_body() -> tuple[bytes, int]:
        header = json.dumps(
            {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}
        ).encode()
        return header + b"\x00" * 16, len(header)

    @pytest.mark.parametrize(
        "length",
        ["abc", "0", "-5", "", "1.5", "TOO_LONG"],
        ids=["text", "zero", "negative", "empty", "float", "past-end"],
    )
    def test_bad_header_length(self, caller, length):
        body, _ = self.binary_body()
        value = str(len(body) + 1) if length == "TOO_LONG" else length

        resp = caller.post(
            "/v2/models/triage/infer",
            data=body,
            content_type="application/octet-stream",
            HTTP_INFERENCE_HEADER_CONTENT_LENGTH=value,
        )

        assert resp.status_code == 400, resp.content
        assert resp.json()["code"] == "invalid_request"
        assert AuditEvent.objects.get(event_type="inference.infer").error_code == "invalid_request"

    def test_header_length_cutting_the_json_short(self, caller):
        body, n = self.binary_body()

        resp = caller.post(
            "/v2/models/triage/infer",
            data=body,
            content_type="application/octet-stream",
            HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(n - 1),
        )

        assert resp.status_code == 400
        assert resp.json()["code"] == "invalid_request"

    def test_valid_binary_request_is_checked_and_forwarded(self, caller):
        body, n = self.binary_body()

        resp = caller.post(
            "/v2/models/triage/infer",
            data=body,
            content_type="application/octet-stream",
            HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(n),
        )

        assert resp.status_code == 503
        assert resp.json()["code"] == "triton_unavailable"
