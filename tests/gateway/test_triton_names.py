"""Versions side by side: Triton serves version N of a model as "<model>--v<N>"; the gateway
addresses it by that name and answers under the model's public name (apps/gateway/dataplane/names.py).
The same paths on a real tritonserver: test_versions_integration.py."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

from apps.audit.models import AuditEvent
from apps.deployments.models import Deployment, ReplicaSet
from apps.gateway.dataplane.names import public_infer_answer, public_metadata_answer, public_text
from apps.gateway.dataplane.types import Outbound
from tests.factories import DeploymentFactory, InferenceServerFactory, ModelVersionFactory

from .helpers import infer, serving, valid_request

HEAD = "Inference-Header-Content-Length"


class TestRewrite:
    def test_json_answer_names_the_public_model(self):
        body = b'{"model_name":"triage--v2","model_version":"2","outputs":[]}'
        out = public_infer_answer(Outbound(200, body, [("Content-Type", "application/json")]), "triage--v2", "triage")
        assert json.loads(out.body) == {"model_name": "triage", "model_version": "2", "outputs": []}

    def test_binary_answer_head_is_rewritten_and_its_length_adjusted(self):
        head = b'{"model_name":"triage--v12","model_version":"12","outputs":[]}'
        tensor = bytes(range(16))
        out = public_infer_answer(
            Outbound(200, head + tensor, [("Content-Type", "application/octet-stream"), (HEAD, str(len(head)))]),
            "triage--v12",
            "triage",
        )
        length = int(dict(out.headers)[HEAD])
        assert json.loads(out.body[:length])["model_name"] == "triage"
        assert out.body[length:] == tensor
        assert length == len(head) - len("--v12")

    def test_a_caller_supplied_string_that_looks_like_the_key_is_left_alone(self):
        """Inside a JSON string a quote is escaped, so the needle only matches the key itself."""
        body = json.dumps(
            {"id": '"model_name":"triage--v1"', "model_name": "triage--v1", "outputs": []}, separators=(",", ":")
        ).encode()
        out = public_infer_answer(Outbound(200, body, []), "triage--v1", "triage")
        answer = json.loads(out.body)
        assert answer["id"] == '"model_name":"triage--v1"'
        assert answer["model_name"] == "triage"

    def test_nothing_to_rewrite_returns_the_same_answer(self):
        out = Outbound(200, b'{"model_name":"canary"}', [])
        assert public_infer_answer(out, "canary", "canary") is out
        assert public_infer_answer(out, "triage--v1", "triage") is out
        bad_length = Outbound(200, b'{"model_name":"triage--v1"}', [(HEAD, "999")])
        assert public_infer_answer(bad_length, "triage--v1", "triage") is bad_length

    def test_metadata_names_the_public_model(self):
        body = b'{"name":"triage--v1","versions":["1"],"inputs":[{"name":"INPUT"}]}'
        out = public_metadata_answer(Outbound(200, body, []), "triage--v1", "triage")
        assert json.loads(out.body) == {"name": "triage", "versions": ["1"], "inputs": [{"name": "INPUT"}]}

    def test_error_text_names_the_public_model_and_only_the_whole_name(self):
        text = "unexpected inference input 'X' for model 'triage--v1'"
        assert public_text(text, "triage--v1", "triage") == "unexpected inference input 'X' for model 'triage'"
        assert public_text("model 'triage--v12'", "triage--v1", "triage") == "model 'triage--v12'"


@pytest.fixture
def scripted():
    """A Triton stand-in answering per path: {path: (status, body)}; 404 elsewhere. Records paths."""
    answers: dict[str, tuple[int, bytes]] = {}
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            seen.append(self.path)
            status, body = answers.get(self.path, (404, b'{"error":"Request for unknown model"}'))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    with serving(Handler) as url:
        yield url, answers, seen


@pytest.mark.django_db
class TestSideBySide:
    @pytest.fixture
    def two_versions(self, model_version, staff_user, scripted):
        url, answers, seen = scripted
        server = InferenceServerFactory(http_url=url)
        v1 = DeploymentFactory(model_version=model_version, server=server)
        v2 = DeploymentFactory(model_version=ModelVersionFactory(model_name="triage", actor=staff_user), server=server)
        return v1, v2, answers, seen

    def test_a_route_whose_version_was_just_unloaded_goes_to_the_version_beside_it(self, caller, two_versions):
        """Undeployed after the policy was read: Triton says "unknown model" for triage--v1; the
        unversioned call is sent once to triage--v2 and answered, audited against v2."""
        v1, v2, answers, seen = two_versions
        answers["/v2/models/triage--v1/infer"] = (
            404,
            b'{"error":"Request for unknown model: \'triage--v1\' has no available versions"}',
        )
        answers["/v2/models/triage--v2/infer"] = (200, b'{"model_name":"triage--v2","model_version":"2","outputs":[]}')
        # v1 takes the model's traffic (v2 at weight 0): the call goes to v1 first
        rs = ReplicaSet.objects.create(model=v2.model, model_version=v2.model_version, traffic_weight=0)
        Deployment.objects.filter(pk=v2.pk).update(replica_set=rs)

        resp = infer(caller, valid_request())

        assert resp.status_code == 200, resp.content
        assert resp.json() == {"model_name": "triage", "model_version": "2", "outputs": []}
        assert seen == ["/v2/models/triage--v1/infer", "/v2/models/triage--v2/infer"]
        event = AuditEvent.objects.get(event_type="inference.infer")
        assert (event.details["deployment"], event.details["version"]) == (v2.pk, 2)

    def test_a_versioned_call_never_goes_to_another_version(self, caller, two_versions):
        _, _, answers, seen = two_versions
        answers["/v2/models/triage--v1/versions/1/infer"] = (404, b'{"error":"Request for unknown model"}')
        answers["/v2/models/triage--v2/infer"] = (200, b'{"model_name":"triage--v2","outputs":[]}')

        resp = caller.post("/v2/models/triage/versions/1/infer", valid_request(), content_type="application/json")

        assert resp.status_code == 404 and resp.json()["code"] == "model_version_not_deployed"
        assert seen == ["/v2/models/triage--v1/versions/1/infer"]

    def test_tritons_error_text_names_the_public_model(self, caller, two_versions):
        _, _, answers, _ = two_versions
        for v in (1, 2):
            answers[f"/v2/models/triage--v{v}/infer"] = (
                400,
                f"{{\"error\":\"unexpected shape for input 'INPUT' for model 'triage--v{v}'\"}}".encode(),
            )

        resp = infer(caller, valid_request())

        assert resp.status_code == 400 and resp.json()["code"] == "triton_rejected"
        assert resp.json()["detail"] == "unexpected shape for input 'INPUT' for model 'triage'"
