"""KServe v2 answers (/v2/models/<m>/infer) through the answer screen and the surrogate re-identifier
(apps/gateway/phi.py answer_outputs, pipeline.py): BYTES outputs in JSON and in Triton's binary
tensor extension are screened (redact / alert) and re-identified for a `reidentify` holder, numeric
outputs are left as they are, the response is rebuilt with correct lengths (tritonclient decodes
it), error bodies and answers that are not KServe v2 pass as before, and the audit event holds counts,
never values. The upstream is a scripted HTTP server that answers from what it received."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import deserialize_bytes_tensor

from apps.audit.models import AuditEvent
from apps.compliance.services import set_model_policy
from apps.gateway import phi
from apps.gateway.deid import screen_text
from apps.registry.models import ModelVersion
from tests.conftest import grant, make_user
from tests.factories import ModelVersionFactory, token_for
from tests.gateway.dataplane_client import DataPlaneClient as Client
from tests.gateway.helpers import deploy, serving

pytestmark = pytest.mark.django_db

HEADER = "Inference-Header-Content-Length"
NOTE = "Patient John Smith, MRN 4839201, phone (617) 555-0143, seen 2024-03-05."
ORIGINALS = ("John Smith", "4839201", "(617) 555-0143", "2024-03-05")
LEAK = "Her SSN is 123-45-6789 and you can call (617) 555-0143."
LEAK_VALUES = ("123-45-6789", "555-0143")
NUMBERS = [0.1, 0.2, 6175550143.0]  # a number that looks like a phone number is not text


# ---- a Triton stand-in answering from the request ---------------------------------------------------


@dataclass
class Upstream:
    """`answer(texts) -> list[str|bytes]` makes the ANSWER output from the TEXT input; the answer is
    binary when the request was (or when `binary` is set). `raw`: a fixed (status, body, headers)."""

    url: str = ""
    answer: object = None
    binary: bool = False
    raw: tuple | None = None
    received: list[tuple[bytes, str | None]] = field(default_factory=list)  # (body, header length)
    sent: list[bytes] = field(default_factory=list)


def _texts(body: bytes, length: str | None) -> list:
    if length is None:
        return json.loads(body)["inputs"][0]["data"]
    header = json.loads(body[: int(length)])
    size = header["inputs"][0]["parameters"]["binary_data_size"]
    tail = body[int(length) :]
    return [t.decode() for t in deserialize_bytes_tensor(tail[:size])]


def _response(answers: list, binary: bool) -> tuple[bytes, dict]:
    shape = [len(answers), 1]
    if not binary:
        body = {
            "model_name": "notes",
            "model_version": "1",
            "outputs": [
                {"name": "ANSWER", "datatype": "BYTES", "shape": shape, "data": answers},
                {"name": "OUTPUT", "datatype": "FP32", "shape": [1, 3], "data": NUMBERS},
            ],
        }
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    items = [a if isinstance(a, bytes) else a.encode() for a in answers]
    text = b"".join(struct.pack("<I", len(i)) + i for i in items)
    numbers = np.array(NUMBERS, dtype=np.float32).tobytes()
    header = {
        "model_name": "notes",
        "model_version": "1",
        "outputs": [
            {"name": "ANSWER", "datatype": "BYTES", "shape": shape, "parameters": {"binary_data_size": len(text)}},
            {"name": "OUTPUT", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}},
        ],
    }
    head = json.dumps(header).encode()
    return head + text + numbers, {"Content-Type": "application/octet-stream", HEADER: str(len(head))}


@pytest.fixture
def upstream():
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.received.append((body, self.headers.get(HEADER)))
            if state.raw is not None:
                status, out, headers = state.raw
            else:
                length = self.headers.get(HEADER)
                out, headers = _response(state.answer(_texts(body, length)), state.binary or length is not None)
                status = 200
            state.sent.append(out)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    with serving(Handler) as state.url:
        yield state


@pytest.fixture
def notes(staff_user, upstream, plain_user):
    mv = ModelVersionFactory(model_name="notes", actor=staff_user)
    ModelVersion.objects.filter(pk=mv.pk).update(
        signature={
            "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
            "outputs": [
                {"name": "ANSWER", "datatype": "BYTES", "shape": [-1, 1]},
                {"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 3]},
            ],
        }
    )
    deploy(ModelVersion.objects.get(pk=mv.pk), url=upstream.url, max_batch_size=8)
    grant(plain_user, mv.model)
    return mv.model


def _infer(user, texts=(NOTE,), binary=False):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    if not binary:
        body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [len(texts), 1], "data": list(texts)}]}
        return client.post("/v2/models/notes/infer", data=json.dumps(body), content_type="application/json")
    text = httpclient.InferInput("TEXT", [len(texts), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object), binary_data=True)
    body, length = httpclient.InferenceServerClient.generate_request_body([text])
    return client.post(
        "/v2/models/notes/infer",
        data=body,
        content_type="application/octet-stream",
        **{"HTTP_INFERENCE_HEADER_CONTENT_LENGTH": str(length)},
    )


def _decoded(response) -> tuple[list[str], list[float]]:
    """What tritonclient makes of the gateway's answer: the lengths must be right for this to work."""
    assert int(response["content-length"]) == len(response.content)
    length = response.get(HEADER)
    result = httpclient.InferResult.from_response_body(
        response.content, header_length=int(length) if length is not None else None
    )
    answers = [a.decode() if isinstance(a, bytes) else a for a in result.as_numpy("ANSWER").ravel().tolist()]
    return answers, result.as_numpy("OUTPUT").ravel().tolist()


def _event() -> AuditEvent:
    return AuditEvent.objects.filter(event_type="inference.infer").latest("pk")


def _no_values_in_audit(values) -> None:
    everything = json.dumps(list(AuditEvent.objects.values()), default=str)
    for value in values:
        assert value not in everything, f"{value!r} reached the audit log"


# ---- the answer screen ---------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_redact_replaces_identifiers_in_bytes_outputs_and_leaves_numbers(notes, plain_user, upstream, binary):
    set_model_policy(model_id=notes.pk, phi=False, deid_mode="off", answer_screen="redact", actor=None)
    upstream.answer = lambda texts: [LEAK, "Take 5 mg twice daily."]

    response = _infer(plain_user, binary=binary)

    assert response.status_code == 200, response.content
    answers, numbers = _decoded(response)
    assert answers == [screen_text(LEAK, "redact").text, "Take 5 mg twice daily."]
    assert "[SSN]" in answers[0] and "[PHONE]" in answers[0]
    for value in LEAK_VALUES:
        assert value.encode() not in response.content
    assert numbers == pytest.approx(NUMBERS, rel=1e-7)
    if binary:  # the FP32 bytes are the model's, bit for bit
        assert response.content.endswith(np.array(NUMBERS, np.float32).tobytes())
    else:
        assert json.loads(response.content)["outputs"][1]["data"] == NUMBERS  # the same JSON numbers
    event = _event()
    assert event.details["answer_deid"] == {"mode": "redact", "found": {"SSN": 1, "PHONE": 1}}
    assert "alert" not in event.details
    _no_values_in_audit(LEAK_VALUES)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_alert_passes_the_answer_byte_for_byte_and_the_event_alerts(notes, plain_user, upstream, binary):
    set_model_policy(model_id=notes.pk, phi=False, deid_mode="off", answer_screen="alert", actor=None)
    upstream.answer = lambda texts: [LEAK]

    response = _infer(plain_user, binary=binary)

    assert response.status_code == 200
    assert response.content == upstream.sent[-1]  # not rebuilt
    event = _event()
    assert event.details["answer_deid"] == {"mode": "alert", "found": {"SSN": 1, "PHONE": 1}}
    assert event.details["alert"] is True
    _no_values_in_audit(LEAK_VALUES)


def test_alert_without_identifiers_does_not_alert(notes, plain_user, upstream):
    set_model_policy(model_id=notes.pk, phi=False, deid_mode="off", answer_screen="alert", actor=None)
    upstream.answer = lambda texts: ["Take 5 mg twice daily."]
    _infer(plain_user)
    event = _event()
    assert event.details["answer_deid"] == {"mode": "alert", "found": {}}
    assert "alert" not in event.details


def test_placeholders_the_model_repeats_pass_the_screen(notes, plain_user, upstream):
    """A PHI model screens by default; the placeholders it was given are not identifiers of its answer."""
    set_model_policy(model_id=notes.pk, phi=True, deid_mode="pseudonymise", actor=None)
    upstream.answer = lambda texts: texts  # the model repeats its input
    response = _infer(plain_user)
    (answer,), _ = _decoded(response)
    assert "[NAME-" in answer and "[MRN-" in answer
    assert answer == json.loads(upstream.received[-1][0])["inputs"][0]["data"][0]
    assert _event().details["answer_deid"] == {"mode": "redact", "found": {}}


# ---- surrogates and re-identification ------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_surrogates_go_to_triton_and_a_reidentify_holder_gets_the_originals_back(notes, plain_user, upstream, binary):
    set_model_policy(model_id=notes.pk, phi=True, deid_mode="surrogate", actor=None)  # screen: redact by default
    grant(plain_user, notes, "reidentify")
    upstream.answer = lambda texts: [f"Summary: {texts[0]}"]  # the model repeats the surrogates

    response = _infer(plain_user, binary=binary)

    assert response.status_code == 200, response.content
    forwarded = upstream.received[-1][0].decode("utf-8", errors="replace")
    for value in ORIGINALS:
        assert value not in forwarded  # Triton received no identifier
    answers, numbers = _decoded(response)
    assert answers == [f"Summary: {NOTE}"]  # screened (surrogates pass), then re-identified
    assert numbers == pytest.approx(NUMBERS, rel=1e-7)
    event = _event()
    assert event.details["deid"]["reidentified"] == {"NAME": 1, "MRN": 1, "PHONE": 1, "DATE": 1}
    assert event.details["answer_deid"] == {"mode": "redact", "found": {}}
    _no_values_in_audit(ORIGINALS)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_without_reidentify_the_answer_keeps_its_surrogates(notes, plain_user, upstream, binary):
    set_model_policy(model_id=notes.pk, phi=True, deid_mode="surrogate", actor=None)
    upstream.answer = lambda texts: [f"Summary: {texts[0]}"]
    bob = make_user("bob", "analyst")
    grant(bob, notes)  # invoke only

    response = _infer(bob, binary=binary)

    (answer,), _ = _decoded(response)
    surrogate_text = _texts(*upstream.received[-1])[0]
    assert answer == f"Summary: {surrogate_text}"  # the call's own surrogates pass the screen as they are
    for value in ORIGINALS:
        assert value not in answer
    assert "reidentified" not in _event().details["deid"]


def test_screen_then_reidentify_an_identifier_the_model_invented_is_redacted_for_the_holder(
    notes, plain_user, upstream
):
    set_model_policy(model_id=notes.pk, phi=True, deid_mode="surrogate", actor=None)
    grant(plain_user, notes, "reidentify")
    upstream.answer = lambda texts: [f"{texts[0]} Her SSN is 123-45-6789."]
    (answer,), _ = _decoded(_infer(plain_user))
    assert answer == f"{NOTE} Her SSN is [SSN]."
    event = _event()
    assert event.details["answer_deid"]["found"] == {"SSN": 1}
    assert event.details["deid"]["reidentified"] == {"NAME": 1, "MRN": 1, "PHONE": 1, "DATE": 1}


def test_surrogate_shift_answers_are_reidentified_too(notes, plain_user, upstream):
    set_model_policy(model_id=notes.pk, phi=True, deid_mode="surrogate_shift", actor=None)
    grant(plain_user, notes, "reidentify")
    upstream.answer = lambda texts: texts
    (answer,), _ = _decoded(_infer(plain_user))
    assert answer == NOTE
    assert "2024-03-05" not in upstream.received[-1][0].decode()


# ---- what passes as before ------------------------------------------------------------------------------


def test_error_bodies_are_answered_as_before(notes, plain_user, upstream):
    set_model_policy(model_id=notes.pk, phi=False, deid_mode="off", answer_screen="redact", actor=None)
    upstream.raw = (400, json.dumps({"error": "unexpected shape for input 'TEXT'"}).encode(), {})
    response = _infer(plain_user)
    assert response.status_code == 400
    assert response.json()["code"] == "triton_rejected"
    assert "unexpected shape" in response.json()["error"]
    assert "answer_deid" not in _event().details


def test_an_answer_that_is_not_kserve_json_passes_as_it_came_and_alerts(notes, plain_user, upstream):
    set_model_policy(model_id=notes.pk, phi=False, deid_mode="off", answer_screen="redact", actor=None)
    upstream.raw = (200, b"not json at all", {"Content-Type": "text/plain"})
    response = _infer(plain_user)
    assert (response.status_code, response.content) == (200, b"not json at all")
    event = _event()
    assert event.details["answer_deid"] == {"mode": "redact", "found": {}, "unparsed": True}
    assert event.details["alert"] is True


@pytest.mark.parametrize("mode", ["redact", "alert"])
def test_a_bytes_output_that_is_not_utf8(notes, plain_user, upstream, mode):
    """Redact cannot let through what it cannot read (502, nothing returned); alert passes and alerts."""
    set_model_policy(model_id=notes.pk, phi=False, deid_mode="off", answer_screen=mode, actor=None)
    upstream.answer = lambda texts: [b"\xff\xfe John Smith 123-45-6789"]
    response = _infer(plain_user, binary=True)
    event = _event()
    if mode == "redact":
        assert (response.status_code, response.json()["code"]) == (502, "answer_unscreenable")
        assert b"123-45" not in response.content
        assert event.error_code == "answer_unscreenable"
    else:
        assert response.status_code == 200 and response.content == upstream.sent[-1]
        assert event.details["answer_deid"] == {"mode": "alert", "found": {}, "unscreened": 1}
        assert event.details["alert"] is True


def test_off_relays_the_upstream_bytes_without_parsing_them(notes, plain_user, upstream, monkeypatch):
    """The fast path: no screen, no surrogates -> the answer is never parsed nor copied."""

    def never(*args, **kwargs):
        raise AssertionError("the answer was parsed on the fast path")

    monkeypatch.setattr("apps.gateway.dataplane.pipeline.answer_outputs", never)
    upstream.answer = lambda texts: [LEAK]
    response = _infer(plain_user, binary=True)
    assert response.status_code == 200
    assert response.content == upstream.sent[-1]
    assert "answer_deid" not in _event().details


def test_surrogate_without_screen_and_without_reidentify_is_the_fast_path(notes, plain_user, upstream, monkeypatch):
    set_model_policy(model_id=notes.pk, phi=True, deid_mode="surrogate", answer_screen="off", actor=None)
    calls = []
    monkeypatch.setattr(
        "apps.gateway.dataplane.pipeline.answer_outputs", lambda *a, **k: calls.append(a) or phi.answer_outputs(*a)
    )
    upstream.answer = lambda texts: texts
    response = _infer(plain_user)
    assert response.status_code == 200 and response.content == upstream.sent[-1]
    assert calls == []
    grant(plain_user, notes, "reidentify")  # now there is something to do
    (answer,), _ = _decoded(_infer(plain_user))
    assert answer == NOTE and len(calls) == 1


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_rebuilt_answer_translates_to_grpc(binary):
    """gRPC callers share the pipeline: the rebuilt HTTP answer becomes their ModelInferResponse."""
    from apps.gateway.dataplane.grpc_codec import infer_response
    from apps.gateway.dataplane.types import Outbound

    body, headers = _response([LEAK, "fine"], binary)
    outcome = phi.answer_outputs(body, headers.get(HEADER), "redact")
    assert outcome.body != body and outcome.found == {"SSN": 1, "PHONE": 1}
    out_headers = [(HEADER, outcome.header_length)] if outcome.header_length is not None else []
    response = infer_response(Outbound(200, outcome.body, out_headers))
    texts = [t.decode() for t in deserialize_bytes_tensor(response.raw_output_contents[0])]
    assert texts == [screen_text(LEAK, "redact").text, "fine"]
    assert np.frombuffer(response.raw_output_contents[1], np.float32).tolist() == pytest.approx(NUMBERS, rel=1e-7)
