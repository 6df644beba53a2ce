"""Failover and interrupted streams against scripted upstreams (real tritonservers being killed:
test_fleet_integration.py). A KServe call that fails before any answer byte, or gets a 5xx, is sent
once more to another replica; a language-model stream that breaks after it began ends with an
`upstream_interrupted` error event, never a silent truncation.

The stream cut is a local fake upstream that drops its connection mid-answer: the language models
this project runs on a real Triton (tests/llm) are too slow to kill reliably between two tokens."""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler

import pytest

from apps.audit.models import AuditEvent
from apps.registry.models import ModelVersion
from tests.conftest import grant
from tests.factories import ModelVersionFactory, closed_port, token_for
from tests.gateway.dataplane_client import DataPlaneClient as Client

from .helpers import deploy, infer, serving, valid_request

pytestmark = pytest.mark.django_db


def _infer_event() -> AuditEvent:
    return AuditEvent.objects.filter(event_type="inference.infer").latest("sequence")


def test_a_refused_connection_is_retried_on_the_other_replica(caller, model_version, fake_triton):
    dead = deploy(model_version, url=f"http://127.0.0.1:{closed_port()}")
    live = deploy(model_version, url=fake_triton.url)
    answered = set()
    for _ in range(4):  # whichever replica each call picks first
        resp = infer(caller, valid_request())
        assert resp.status_code == 200, resp.content
        answered.add(_infer_event().details["deployment"])
    assert answered == {live.pk}
    assert dead.pk not in answered


def test_a_5xx_answer_is_retried_once_on_another_replica(caller, model_version, fake_triton):
    class Failing(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        hits = 0

        def do_POST(self):  # noqa: N802 - http.server's name
            Failing.hits += 1
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"error": "CUDA error: an illegal memory access"}'
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with serving(Failing) as url:
        deploy(model_version, url=url)
        live = deploy(model_version, url=fake_triton.url)
        for _ in range(4):
            resp = infer(caller, valid_request())
            assert resp.status_code == 200, resp.content
            assert _infer_event().details["deployment"] == live.pk
    assert Failing.hits >= 1  # it was tried, and its 500 never reached the caller


def test_with_every_replica_failing_the_caller_gets_the_error_after_one_retry(caller, model_version):
    deploy(model_version, url=f"http://127.0.0.1:{closed_port()}")
    deploy(model_version, url=f"http://127.0.0.1:{closed_port()}")
    resp = infer(caller, valid_request())
    assert resp.status_code == 503
    assert resp.json()["code"] == "triton_unavailable"


# --- streams ------------------------------------------------------------------------------------

LLM_SIGNATURE = {
    "kind": "llm",
    "architecture": "llama",
    "context_length": 512,
    "chat_template": None,
    "bos_token": "",
    "eos_token": "<|im_end|>",
    "generation_defaults": {"max_new_tokens": 16},
    "files": [],
}


def _event(text: str, finish: str = "") -> bytes:
    data = {"text_output": text, "num_input_tokens": 20, "num_output_tokens": 1, "finish_reason": finish}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class CutMidStream(BaseHTTPRequestHandler):
    """Answers generate_stream with two tokens, then the connection drops (the server died)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", "100000")  # promised, never delivered
        self.end_headers()
        self.wfile.write(_event("Par") + _event("is"))
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def chat(staff_user, plain_user):
    mv = ModelVersionFactory(model_name="chat", actor=staff_user)
    ModelVersion.objects.filter(pk=mv.pk).update(signature=LLM_SIGNATURE)
    grant(plain_user, mv.model)
    return ModelVersion.objects.get(pk=mv.pk), Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")


def _sse(content: bytes) -> list:
    out = []
    for block in content.split(b"\n\n"):
        if block.startswith(b"data: "):
            payload = block[6:]
            out.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
    return out


def _stream(client):
    body = {"model": "chat", "messages": [{"role": "user", "content": "Capital of France?"}], "stream": True}
    return client.post("/v1/chat/completions", data=json.dumps(body))


def test_a_stream_cut_after_tokens_ends_with_an_upstream_interrupted_event(chat):
    mv, client = chat
    with serving(CutMidStream) as url:
        deploy(mv, url=url)
        response = _stream(client)
    assert response.status_code == 200  # the stream had begun: the error travels in it
    events = _sse(response.content)
    deltas = "".join(
        e["choices"][0]["delta"].get("content", "") for e in events if isinstance(e, dict) and e.get("choices")
    )
    assert deltas == "Paris"  # what was sent stays sent …
    assert events[-1] != "[DONE]"  # … and is not passed off as complete
    assert events[-1]["error"]["code"] == "upstream_interrupted"
    audited = AuditEvent.objects.filter(event_type="inference.chat").get()
    assert audited.error_code == "upstream_interrupted" and audited.outcome == "failure"


def test_a_stream_that_ends_without_a_final_answer_is_interrupted_too(chat, fake_triton):
    mv, client = chat
    deploy(mv, url=fake_triton.url)
    fake_triton.headers = {"Content-Type": "text/event-stream"}
    fake_triton.body = _event("Par") + _event("is")  # complete HTTP answer, but no finish_reason
    events = _sse(_stream(client).content)
    assert events[-1]["error"]["code"] == "upstream_interrupted"


def test_a_stream_is_opened_on_another_replica_when_its_server_refuses(chat, fake_triton):
    mv, client = chat
    deploy(mv, url=f"http://127.0.0.1:{closed_port()}")
    deploy(mv, url=fake_triton.url)
    fake_triton.headers = {"Content-Type": "text/event-stream"}
    fake_triton.body = _event("Par") + _event("is", "stop")
    for _ in range(3):
        events = _sse(_stream(client).content)
        assert events[-1] == "[DONE]", events
