"""LLM serving figures (issue 13), one run, ratios against baselines measured in the same run.

The real SmolLM2-135M-Instruct (int4, imported from its GGUF, encrypted, deployed through the portal onto
the embedded tritonserver as the decoupled python model) and the data plane in front of it:

  1. gateway overhead: sequential streamed calls alternating direct Triton `generate_stream` and the data
     plane's `/v1/chat/completions` (the same templated prompt, greedy, the same max_tokens); time to first
     token difference (p50 of the per-round differences) and per-token overhead (the difference of the
     decode phases divided by the tokens after the first); CPU ms of the data plane per call and per token;
  2. in-flight batching: aggregate tokens/s of 8 concurrent streams vs 1 stream (direct and through the
     gateway);
  3. one stream's decode speed (int4), and llama.cpp (llama-cpp-python built from source into its own venv
     under var/cache, the same GGUF, the same thread count, greedy) on the same prompt;
  4. quality gate: int4 greedy tokens equal to fp32 over fixed English and Chinese prompts.

Sets up its own PostgreSQL database, Redis db 14, temp data dir and servers (bench/harness.py); removes them
on exit. Run from the repository root:
  .venv/bin/python bench/llm_serving.py [--quick] [--rounds N] [--tokens N] [--no-llamacpp]
The first run builds llama-cpp-python (about 10 minutes on 2 cores); later runs reuse it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402 - bench/ is not a package
from harness import (  # noqa: E402
    CLEANUP,
    MARKS,
    cpu_snapshot,
    cpu_used,
    db_name,
    flushed_redis,
    fresh_db,
    gateway_env,
    log,
    machine,
    port,
    redis_url,
    run_main,
    setup_django,
    start_server,
    start_triton,
    table,
)

DB_NAME = db_name("sovereign_bench_llm")
REDIS_URL = redis_url("redis://127.0.0.1:6379/14")
MODEL = "smollm2"
LLAMACPP_VERSION = "0.3.36"
LLAMACPP_VENV = harness.ROOT / "var" / "cache" / f"llamacpp-{LLAMACPP_VERSION}"
QUESTIONS = [
    "Write a long story about a lighthouse keeper.",
    "Explain how a steam engine works, step by step.",
    "请详细介绍一下中国的长城。",
    "Describe the water cycle in detail.",
    "List ten facts about the moon and explain each.",
    "用中文写一篇关于春天的短文。",
    "Explain recursion to a beginner programmer with examples.",
    "Describe a day in the life of a medieval blacksmith.",
]


SIGNATURE: dict = {}  # the registered version's, once deployed: the chat template the gateway renders


def template(question: str) -> str:
    """The prompt the gateway sends for one user message: the model's own chat template."""
    from apps.gateway.dataplane.openai_wire import render_chat

    messages = [{"role": "user", "content": question}]
    return render_chat(SIGNATURE.get("chat_template"), messages, bos_token=SIGNATURE.get("bos_token", ""),
                       eos_token=SIGNATURE.get("eos_token", ""))  # fmt: skip


# --- one streamed call ------------------------------------------------------------------------------


def stream_call(port_: int, path: str, body: dict, headers: dict) -> dict:
    """POST and read the SSE answer as it arrives: time to the first text, the time of each text event,
    the text and the token count the last events carry."""
    conn = http.client.HTTPConnection("127.0.0.1", port_, timeout=600)
    started = time.perf_counter()
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}: {response.read()[:300]!r}")
    times, text, tokens = [], [], 0
    while True:
        line = response.readline()
        if not line:
            break
        if not line.startswith(b"data: "):
            continue
        payload = line[6:].strip()
        if payload == b"[DONE]":
            break
        event = json.loads(payload)
        if "error" in event:
            raise RuntimeError(f"{path}: {event['error']}")
        if "choices" in event:  # OpenAI chunk
            delta = event["choices"][0].get("delta", {}).get("content") if event["choices"] else None
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
        else:  # Triton generate_stream
            delta = event.get("text_output")
            tokens += int(event.get("num_output_tokens") or 0)
        if delta:
            times.append(time.perf_counter() - started)
            text.append(delta)
    total = time.perf_counter() - started
    conn.close()
    return {"ttft": times[0] if times else total, "total": total, "tokens": tokens, "text": "".join(text)}


def direct_body(question: str, tokens: int) -> dict:
    return {
        "text_input": template(question),
        "stream": True,
        "sampling_parameters": json.dumps({"temperature": 0, "max_tokens": tokens}),
        "exclude_input_in_output": True,
        "return_finish_reason": True,
        "return_num_input_tokens": True,
        "return_num_output_tokens": True,
    }


def gateway_body(question: str, tokens: int) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": tokens,
    }


# --- setup ------------------------------------------------------------------------------------------


def deploy_llm(triton_url: str, files: dict[str, bytes]) -> str:
    """Register the int4 set, deploy it on the embedded Triton (reconciled here), grant an analyst; the token."""
    import secrets

    from django.contrib.auth import get_user_model

    from apps.accounts.services import create_user, grant_model_access, issue_token
    from apps.deployments import services as deployments
    from apps.deployments.models import Deployment, Observed
    from apps.gateway.services import set_chat_policy
    from apps.registry.services import register_llm_version

    admin = get_user_model().objects.create_superuser("bench", "bench@localhost", secrets.token_urlsafe(16))
    server = deployments.register_server(name="bench-local", http_url=triton_url, hardware="cpu", actor=admin)
    mv = register_llm_version(model_name=MODEL, files=files, actor=admin)
    dep = deployments.request_deployment(
        model_version_id=mv.pk, server_id=server.pk, batching={"max_batch_size": 8}, actor=admin
    )
    deployments.reconcile_deployment(dep.pk)
    dep = Deployment.objects.get(pk=dep.pk)
    if dep.observed_state != Observed.ACTIVE:
        raise RuntimeError(f"deployment of {MODEL} is {dep.observed_state}: {dep.last_error}")
    set_chat_policy(model_id=mv.model_id, max_tokens_per_call=4096, actor=admin)
    SIGNATURE.update(mv.signature)
    analyst = create_user(
        username="bench-analyst", email="", password=secrets.token_urlsafe(16), role="analyst", actor=admin
    )
    grant_model_access(model_id=mv.model_id, permission="invoke_model", user_id=analyst.pk, actor=admin)
    return issue_token(user=analyst, name="bench", days=1, actor=None)[1]


def llamacpp_python() -> Path:
    """The python of a venv holding llama-cpp-python built from source (built once, under var/cache)."""
    python = LLAMACPP_VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import llama_cpp"], capture_output=True).returncode == 0:
        return python
    log(f"building llama-cpp-python {LLAMACPP_VERSION} from source into {LLAMACPP_VENV} (about 10 minutes)")
    shutil.rmtree(LLAMACPP_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(LLAMACPP_VENV)], check=True)
    subprocess.run(
        # PyPI serves llama-cpp-python as source only: pip compiles it here (or reuses its own earlier build)
        [python, "-m", "pip", "install", "-q", f"llama-cpp-python=={LLAMACPP_VERSION}"],
        check=True,
        env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)},
    )
    return python


LLAMACPP_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
gguf, threads, tokens, prompts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
llm = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
out = []
for prompt in prompts:
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    llm.reset()
    started = time.perf_counter(); first = None; n = 0
    for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0):
        n += 1
        if first is None:
            first = time.perf_counter()
        if token == llm.token_eos() or n >= tokens:
            break
    end = time.perf_counter()
    out.append({"ttft": first - started, "decode_tps": (n - 1) / (end - first) if n > 1 else 0.0, "tokens": n})
print(json.dumps(out))
"""


def run_llamacpp(gguf: Path, threads: int, tokens: int, prompts: list[str]) -> list[dict]:
    python = llamacpp_python()
    result = subprocess.run(
        [python, "-c", LLAMACPP_SCRIPT, str(gguf), str(threads), str(tokens), json.dumps(prompts)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"llama.cpp run failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the run ----------------------------------------------------------------------------------------


def concurrent(port_: int, path: str, bodies: list[dict], headers: dict) -> dict:
    results: list[dict | Exception] = [None] * len(bodies)  # type: ignore[list-item]

    def one(i: int) -> None:
        try:
            results[i] = stream_call(port_, path, bodies[i], headers)
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise RuntimeError(f"{len(errors)} streams failed: {errors[0]}")
    tokens = sum(r["tokens"] for r in results)
    return {"streams": len(bodies), "wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall}


def run(args) -> dict:
    q = args.quick
    rounds, tokens = (3, 24) if q else (args.rounds, args.tokens)
    data = Path(tempfile.mkdtemp(prefix="sovereign-bench-llm-"))
    CLEANUP.append(lambda: shutil.rmtree(data, ignore_errors=True))
    env = gateway_env(data, DB_NAME, REDIS_URL, SOVEREIGN_LLM_INTRA_OP_THREADS=str(args.threads))
    os.environ.update(env)
    log(f"database {DB_NAME}, redis {REDIS_URL}, data dir {data}")
    fresh_db(DB_NAME)
    flushed_redis(REDIS_URL)
    setup_django()
    sys.path.insert(0, str(harness.ROOT))
    from tests.llm_models import converted_files, gguf_path

    gguf = gguf_path()
    files = converted_files(gguf)
    triton = start_triton(data, env)
    log("registering and deploying SmolLM2 int4 on the embedded Triton")
    token = deploy_llm(triton.http_url, files("int4"))
    gw_port = port()
    argv = [sys.executable, "manage.py", "run_dataplane", "--port", str(gw_port)]
    if args.profile:  # cProfile of the data plane, written when it stops
        argv[1:1] = ["-m", "cProfile", "-o", args.profile]
    start_server("gateway", argv, data, env, f"http://127.0.0.1:{gw_port}/dataplane/healthz", timeout=120)
    MARKS.update(postgres="postgres", redis="redis-server")
    res: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": q, "machine": machine()}
    res["machine"]["loadavg_at_start"] = os.getloadavg()
    res["config"] = {"rounds": rounds, "max_tokens": tokens, "threads": args.threads, "model": "SmolLM2-135M int4"}
    direct = (triton.http_port, f"/v2/models/{harness.triton_name(MODEL)}/generate_stream", {})  # Triton's name
    gateway = (gw_port, "/v1/chat/completions", {"Authorization": f"Bearer {token}"})

    log("warm-up and a check that both sides answer the same text")
    a = stream_call(*direct[:2], direct_body(QUESTIONS[0], tokens), direct[2])
    b = stream_call(*gateway[:2], gateway_body(QUESTIONS[0], tokens), gateway[2])
    if a["text"] != b["text"]:
        raise RuntimeError(f"direct and gateway answers differ:\n{a['text']!r}\n{b['text']!r}")

    log(f"1. overhead: {rounds} rounds of one direct and one gateway call, {tokens} tokens each")
    rows = {"direct": [], "gateway": []}
    cpu = {"calls": 0, "tokens": 0, "gateway_cpu_s": 0.0, "triton_cpu_s": 0.0}
    for r in range(rounds):
        question = QUESTIONS[r % len(QUESTIONS)]
        order = ["direct", "gateway"] if r % 2 == 0 else ["gateway", "direct"]
        for side in order:
            if side == "direct":
                rows[side].append(stream_call(*direct[:2], direct_body(question, tokens), direct[2]))
            else:
                c0 = cpu_snapshot()
                row = stream_call(*gateway[:2], gateway_body(question, tokens), gateway[2])
                used = cpu_used(c0, cpu_snapshot(), row["total"], 1)
                cpu["gateway_cpu_s"] += used["cpu_ms_per_request"].get("gateway", 0.0) / 1000
                cpu["triton_cpu_s"] += used["cpu_ms_per_request"].get("triton", 0.0) / 1000
                cpu["calls"] += 1
                cpu["tokens"] += row["tokens"]
                rows[side].append(row)
    ttft_diff = [g["ttft"] - d["ttft"] for d, g in zip(rows["direct"], rows["gateway"], strict=True)]

    def decode(row: dict) -> float:
        return (row["total"] - row["ttft"]) / max(row["tokens"] - 1, 1)

    per_token = [decode(g) - decode(d) for d, g in zip(rows["direct"], rows["gateway"], strict=True)]
    res["overhead"] = {
        "ttft_direct_ms_p50": statistics.median(r["ttft"] for r in rows["direct"]) * 1e3,
        "ttft_gateway_ms_p50": statistics.median(r["ttft"] for r in rows["gateway"]) * 1e3,
        "ttft_added_ms_p50": statistics.median(ttft_diff) * 1e3,
        "per_token_added_ms_p50": statistics.median(per_token) * 1e3,
        "direct_decode_tokens_per_s": statistics.median(1 / decode(r) for r in rows["direct"]),
        "gateway_cpu_ms_per_call": cpu["gateway_cpu_s"] * 1e3 / max(cpu["calls"], 1),
        "gateway_cpu_ms_per_token": cpu["gateway_cpu_s"] * 1e3 / max(cpu["tokens"], 1),
        "triton_cpu_ms_per_call": cpu["triton_cpu_s"] * 1e3 / max(cpu["calls"], 1),
        "gateway_cpu_share_of_triton": cpu["gateway_cpu_s"] / max(cpu["triton_cpu_s"], 1e-9),
        "tokens_per_call": statistics.median(r["tokens"] for r in rows["gateway"]),
    }

    log("2. in-flight batching: 1 stream, then 8 concurrent streams (direct, then through the gateway)")
    batching = {}
    for side, (p, path, headers), make in (("direct", direct, direct_body), ("gateway", gateway, gateway_body)):
        one = concurrent(p, path, [make(QUESTIONS[0], tokens * 2)], headers)
        eight = concurrent(p, path, [make(q_, tokens * 2) for q_ in QUESTIONS[:8]], headers)
        batching[side] = {"one": one, "eight": eight, "ratio": eight["tokens_per_s"] / one["tokens_per_s"]}
    res["batching"] = batching

    if not args.no_llamacpp:
        log("3. llama.cpp on the same GGUF (llama-cpp-python built from source)")
        prompts = [template(q_) for q_ in QUESTIONS[:4]]
        llama = run_llamacpp(gguf, args.threads, tokens * 2, prompts)
        ours = [stream_call(*direct[:2], direct_body(q_, tokens * 2), direct[2]) for q_ in QUESTIONS[:4]]
        res["llamacpp"] = {
            "llamacpp_decode_tokens_per_s": statistics.median(r["decode_tps"] for r in llama),
            "llamacpp_ttft_ms": statistics.median(r["ttft"] for r in llama) * 1e3,
            "ours_decode_tokens_per_s": statistics.median(1 / decode(r) for r in ours),
            "ours_ttft_ms": statistics.median(r["ttft"] for r in ours) * 1e3,
        }
        res["llamacpp"]["ratio"] = (
            res["llamacpp"]["ours_decode_tokens_per_s"] / res["llamacpp"]["llamacpp_decode_tokens_per_s"]
        )

    log("4. quality gate: int4 vs fp32 greedy tokens")
    from inference_backend.llm.reference import AGREEMENT_PROMPTS, ReferenceDecoder, greedy_agreement

    equal, total = greedy_agreement(
        ReferenceDecoder(files("int4")), ReferenceDecoder(files("fp32")), max_new_tokens=args.quality_tokens
    )
    res["quality"] = {"prompts": len(AGREEMENT_PROMPTS), "equal": equal, "total": total, "fraction": equal / total}
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    return res


def report(res: dict) -> None:
    o, b = res["overhead"], res["batching"]
    table(
        "LLM serving (SmolLM2-135M int4, CPU)",
        ["figure", "value", "target"],
        [
            ["TTFT direct p50 (ms)", f"{o['ttft_direct_ms_p50']:.1f}", ""],
            ["TTFT through the gateway p50 (ms)", f"{o['ttft_gateway_ms_p50']:.1f}", ""],
            ["TTFT added by the gateway, p50 (ms)", f"{o['ttft_added_ms_p50']:.2f}", "≤ 5"],
            ["per-token overhead, p50 (ms)", f"{o['per_token_added_ms_p50']:.3f}", "≤ 0.3"],
            ["gateway CPU per call / per token (ms)", f"{o['gateway_cpu_ms_per_call']:.2f} / "
             f"{o['gateway_cpu_ms_per_token']:.3f}", ""],
            ["Triton CPU per call (ms); gateway ÷ Triton", f"{o['triton_cpu_ms_per_call']:.0f}; "
             f"{o['gateway_cpu_share_of_triton']:.3f}", ""],
            ["one stream decode, direct (tokens/s)", f"{o['direct_decode_tokens_per_s']:.1f}", "≥ 25"],
            ["8 streams ÷ 1 stream, direct", f"{b['direct']['ratio']:.2f}×", "≥ 3×"],
            ["8 streams ÷ 1 stream, gateway", f"{b['gateway']['ratio']:.2f}×", ""],
            *([["llama.cpp decode (tokens/s)", f"{res['llamacpp']['llamacpp_decode_tokens_per_s']:.1f}", ""],
               ["ours ÷ llama.cpp decode", f"{res['llamacpp']['ratio']:.2f}", "reported"]]
              if "llamacpp" in res else []),
            ["int4 = fp32 greedy tokens", f"{res['quality'].get('equal', '?')}/{res['quality'].get('total', '?')}",
             "≥ 95 %"],
        ],
    )  # fmt: skip
    print(json.dumps(res, indent=1, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 24 tokens: a smoke run")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime and llama.cpp threads")
    parser.add_argument("--no-llamacpp", action="store_true")
    parser.add_argument("--profile", metavar="FILE", help="run the data plane under cProfile, written to FILE")
    parser.add_argument("--quality-tokens", type=int, default=32, help="greedy tokens per prompt for the gate")
    args = parser.parse_args()

    def body() -> int:
        report(run(args))
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
