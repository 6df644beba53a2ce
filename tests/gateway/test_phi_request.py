"""apps/gateway/phi.py: BYTES inputs de-identified in both request encodings; numeric inputs and
the binary layout of other tensors untouched; malformed binary data refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import deserialize_bytes_tensor

from apps.core.errors import ServiceError
from apps.gateway.phi import deidentify_request
from apps.gateway.protocol import parse_infer_header

NOTE = "Patient John Smith, phone (617) 555-0143, SSN 123-45-6789."
KEY = b"k" * 32


def _binary_request(notes: list[str], numbers: np.ndarray) -> tuple[bytes, str]:
    text = httpclient.InferInput("TEXT", [len(notes)], "BYTES")
    text.set_data_from_numpy(np.array([n.encode() for n in notes], dtype=object), binary_data=True)
    num = httpclient.InferInput("X", list(numbers.shape), "FP32")
    num.set_data_from_numpy(numbers, binary_data=True)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([text, num])
    return body, str(header_length)


def test_json_request_bytes_deidentified_numbers_untouched():
    body = json.dumps(
        {
            "inputs": [
                {"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [NOTE]},
                {"name": "X", "datatype": "FP32", "shape": [1, 2], "data": [123456789.0, 6175550143.0]},
            ]
        }
    ).encode()

    new, length, found = deidentify_request(body, parse_infer_header(body, None), None, "redact", None)

    sent = json.loads(new)
    assert length is None
    assert "John" not in sent["inputs"][0]["data"][0] and "[PHONE]" in sent["inputs"][0]["data"][0]
    assert "123-45-6789" not in new.decode()
    assert sent["inputs"][1]["data"] == [123456789.0, 6175550143.0]
    assert found.get("PHONE") == 1 and found.get("SSN") == 1 and found.get("NAME", 0) >= 1
    assert all(isinstance(v, int) for v in found.values())


def test_binary_request_is_rebuilt_with_a_new_header_length():
    numbers = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, length = _binary_request([NOTE, "nothing to hide"], numbers)

    new, new_length, found = deidentify_request(body, parse_infer_header(body, length), length, "pseudonymise", KEY)

    header = json.loads(new[: int(new_length)])
    text_size = header["inputs"][0]["parameters"]["binary_data_size"]
    tail = new[int(new_length) :]
    texts = deserialize_bytes_tensor(tail[:text_size])
    assert b"John" not in texts[0] and b"[PHONE-" in texts[0] and texts[1] == b"nothing to hide"
    assert np.frombuffer(tail[text_size:], dtype=np.float32).tolist() == numbers.ravel().tolist()
    assert found.get("PHONE") == 1
    again, _, _ = deidentify_request(body, parse_infer_header(body, length), length, "pseudonymise", KEY)
    assert again == new  # the same value maps to the same pseudonym


def test_truncated_binary_bytes_tensor_is_refused():
    body, length = _binary_request([NOTE], np.zeros((1, 1), dtype=np.float32))
    header = parse_infer_header(body, length)
    header["inputs"][0]["parameters"]["binary_data_size"] += 3
    head = json.dumps(header).encode()
    with pytest.raises(ServiceError) as err:
        deidentify_request(head + body[int(length) :], header, str(len(head)), "redact", None)
    assert err.value.code == "invalid_request"


def test_invalid_utf8_is_refused_with_a_stable_code():
    raw = struct.pack("<I", 2) + b"\xff\xfe"
    header = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]}
    head = json.dumps(header).encode()
    with pytest.raises(ServiceError) as err:
        deidentify_request(head + raw, header, str(len(head)), "redact", None)
    assert err.value.code != "invalid_request" and "UTF-8" in err.value.detail
