"""Which server for the data plane? One relay (no auth, no audit: the hop alone) under four servers, each
against Triton directly in the same run, measured with wrk. For docs/gateway.md's "why this server".

  a. direct      Triton's own HTTP endpoint (the embedded tritonserver, demo model, no dynamic batching)
  b. raw-asgi    a raw ASGI app under uvicorn (uvloop + httptools, 1 worker), relaying through a raw
                 asyncio.Protocol + httptools keep-alive pool to Triton
  c. django-min  the same relay (same pool) as a Django async view, Django's ASGI handler
                 (get_asgi_application) under the same uvicorn; no middleware, no installed apps
  (c) django-nosig  django-min without Django's two database signal receivers per request (request_started /
                 request_finished -> close_old_connections, sync: a thread hop each): a diagnosis, not an option
  c'. django-mw  the same, with the project's settings and its whole MIDDLEWARE stack (15 classes)
  d. gunicorn    today's gateway: gunicorn (gthread, 2 workers x 8 threads) + Django's /v2 views, with
                 token, route, checks and one audit INSERT per call (not a bare relay: the full price)

Figures: requests/s at concurrency 32 (wrk -t1 -c32, a Lua script for the POST body) and their ratio to
direct measured in the same round; sequential p50 (wrk -t1 -c1) and what each path adds to direct's in the
same round; CPU ms per call of each process group (utime + stime from /proc/<pid>/stat ÷ answered calls).
Rounds alternate the order of the paths to cancel drift. Sets up its own PostgreSQL database, Redis db,
temp data dir and servers (bench/harness.py); removes them on exit.

Run from the repository root: .venv/bin/python bench/dataplane_options.py [--quick] [--rounds N] [--seconds S]
  [--code-root /work/wt/before]  (the gunicorn path needs a checkout from before issue 12: its Django /v2 views)
(BENCH_DB_NAME, BENCH_REDIS_URL, BENCH_PORT_BASE choose the database, Redis db and port range.)

The relay apps themselves (make_raw_app, make_django_app) are in this file: uvicorn imports it with
`--app-dir bench --factory dataplane_options:make_raw_app`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODEL = "bench-unbatched"
BODY = b'{"inputs":[{"name":"INPUT","datatype":"FP32","shape":[1,4],"data":[0.5,1.0,-0.5,2.0]}]}'
RELAYED_REQUEST_HEADERS = (b"content-type", b"inference-header-content-length")
RELAYED_RESPONSE_HEADERS = (b"content-type", b"inference-header-content-length")


# --- the upstream client: raw asyncio.Protocol + httptools, keep-alive pool ----------------------


class _UpstreamConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to Triton; one request at a time."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.status, self.headers, self.body, self.closed = 0, [], [], False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._fail(exc or ConnectionError("upstream closed the connection"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # httptools.HttpParserError: a broken answer ends the connection
            self.closed = True
            self.transport.close()
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def send(self, data: bytes) -> asyncio.Future:
        self.status, self.headers, self.body = 0, [], []
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


class UpstreamPool:
    """Idle keep-alive connections to one host:port, reused last-in first-out; a new one when none is idle."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.idle = host, port, []
        self.host_header = f"{host}:{port}".encode()

    async def request(self, method: bytes, path: bytes, headers: list, body: bytes) -> tuple[int, list, bytes]:
        conn = None
        while self.idle and conn is None:
            candidate = self.idle.pop()
            conn = None if candidate.closed else candidate
        if conn is None:
            _, conn = await asyncio.get_running_loop().create_connection(_UpstreamConnection, self.host, self.port)
        head = [method, b" ", path, b" HTTP/1.1\r\nHost: ", self.host_header, b"\r\n"]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body]
        try:
            await conn.send(b"".join(head))
        except BaseException:
            conn.transport.close()
            raise
        if conn.closed:
            conn.transport.close()
        else:
            self.idle.append(conn)
        return conn.status, conn.headers, b"".join(conn.body)


def _upstream() -> UpstreamPool:
    host, port = os.environ["BENCH_UPSTREAM"].rsplit(":", 1)
    return UpstreamPool(host, int(port))


# --- b. the raw ASGI relay ------------------------------------------------------------------------


def make_raw_app():
    pool = _upstream()

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k in RELAYED_REQUEST_HEADERS]
        path = scope["raw_path"] or scope["path"].encode()
        status, up_headers, body = await pool.request(scope["method"].encode(), path, headers, b"".join(chunks))
        out = [(k, v) for k, v in up_headers if k in RELAYED_RESPONSE_HEADERS]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})

    return app


# --- c. the same relay as a Django async view -----------------------------------------------------

_pool: list[UpstreamPool] = []


async def relay_view(request, rest: str = ""):
    from django.http import HttpResponse

    if not _pool:
        _pool.append(_upstream())
    headers = [
        (name.lower().encode(), request.headers[name].encode())
        for name in ("Content-Type", "Inference-Header-Content-Length")
        if name in request.headers
    ]
    status, up_headers, body = await _pool[0].request(
        request.method.encode(), request.get_full_path().encode(), headers, request.body
    )
    response = HttpResponse(body, status=status, content_type=dict(up_headers).get(b"content-type", b"").decode())
    if b"inference-header-content-length" in dict(up_headers):
        response["Inference-Header-Content-Length"] = dict(up_headers)[b"inference-header-content-length"].decode()
    return response


def _urlpatterns():
    from django.urls import re_path
    from django.views.decorators.csrf import csrf_exempt

    return [re_path(r"^v2/(?P<rest>.*)$", csrf_exempt(relay_view))]


def __getattr__(name: str):  # ROOT_URLCONF = this module: urlpatterns built when Django asks
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def make_django_app():
    """BENCH_DJANGO_STACK=minimal: no middleware, no apps. =project: portal.settings, its MIDDLEWARE, this URLconf."""
    import django
    from django.conf import settings
    from django.core.asgi import get_asgi_application

    if os.environ.get("BENCH_DJANGO_STACK", "minimal") == "minimal":
        settings.configure(
            DEBUG=False, SECRET_KEY="bench-only", ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[],
            INSTALLED_APPS=[], DATABASES={}, USE_TZ=True,
        )  # fmt: skip
        django.setup()
        if os.environ.get("BENCH_DJANGO_NO_DB_SIGNALS"):  # diagnosis: without the two sync receivers per request
            from django.core import signals
            from django.db import close_old_connections, reset_queries

            signals.request_started.disconnect(close_old_connections)
            signals.request_started.disconnect(reset_queries)
            signals.request_finished.disconnect(close_old_connections)
    else:
        sys.path.insert(0, os.environ.get("BENCH_CODE_ROOT") or str(Path(__file__).resolve().parent.parent))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
        django.setup()
        settings.ROOT_URLCONF = __name__
    return get_asgi_application()


# --- the measurement ------------------------------------------------------------------------------


def run(args) -> dict:
    import harness
    import urllib3
    from harness import (
        CLEANUP,
        MARKS,
        db_name,
        deploy,
        flushed_redis,
        fresh_db,
        gateway_env,
        log,
        machine,
        port,
        redis_url,
        setup_django,
        start_gunicorn,
        start_server,
        start_triton,
        wrk,
        wrk_script,
    )  # fmt: skip

    data = Path(tempfile.mkdtemp(prefix="sovereign-bench-"))
    CLEANUP.append(lambda: shutil.rmtree(data, ignore_errors=True))
    db, rds = db_name("sovereign_bench"), redis_url("redis://127.0.0.1:6379/14")
    env = gateway_env(data, db, rds)
    os.environ.update(env)
    log(f"database {db}, redis {rds}, data dir {data}")
    fresh_db(db)
    flushed_redis(rds)
    setup_django()
    triton = start_triton(data, env)
    log("deploying the demo model (no dynamic batching)")
    token = deploy(triton.http_url, {MODEL: {"max_batch_size": 32, "dynamic_batching": False}})

    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    upstream = {"BENCH_UPSTREAM": f"127.0.0.1:{triton.http_port}"}
    ports = {"direct": triton.http_port}
    for name, factory, stack, extra in (
        ("raw-asgi", "make_raw_app", "", {}),
        ("django-min", "make_django_app", "minimal", {}),
        ("django-nosig", "make_django_app", "minimal", {"BENCH_DJANGO_NO_DB_SIGNALS": "1"}),
        ("django-mw", "make_django_app", "project", {}),
    ):
        if name not in args.paths:
            continue
        p = ports[name] = port()
        argv = [uvicorn, "--app-dir", str(Path(__file__).resolve().parent), "--factory", f"dataplane_options:{factory}",
                "--host", "127.0.0.1", "--port", str(p), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
                "--lifespan", "off", "--no-access-log", "--log-level", "warning"]  # fmt: skip
        server_env = {**upstream, "BENCH_DJANGO_STACK": stack, "BENCH_CODE_ROOT": str(harness.ROOT), **extra}
        start_server(name, argv, data, server_env, f"http://127.0.0.1:{p}/v2/health/ready")
    if "gunicorn" in args.paths:
        ports["gunicorn"] = start_gunicorn(data, env)
    MARKS.update(postgres="postgres", redis="redis-server")  # every PostgreSQL process, the whole Redis server

    base_headers = {"Content-Type": "application/json", "X-Forwarded-Proto": "https"}
    scripts, urls, answers = {}, {}, {}
    for name, p in ports.items():
        headers = {**base_headers, "Authorization": f"Bearer {token}"} if name == "gunicorn" else base_headers
        scripts[name] = wrk_script(data / f"wrk-{name}.lua", BODY, headers)
        model = MODEL if name == "gunicorn" else harness.triton_name(MODEL)  # the others forward the path as is
        urls[name] = f"http://127.0.0.1:{p}/v2/models/{model}/infer"
        resp = urllib3.request("POST", urls[name], body=BODY, headers=headers, timeout=30, retries=False)
        if resp.status != 200:
            raise RuntimeError(f"{name} answered {resp.status}: {resp.data[:300]!r}")
        answers[name] = json.loads(resp.data)["outputs"][0]["data"]
    if len({str(a) for a in answers.values()}) != 1:
        raise RuntimeError(f"the paths answer differently: {answers}")

    names = list(ports)
    res: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    res["machine"]["loadavg_at_start"] = os.getloadavg()
    res["config"] = {"rounds": args.rounds, "seconds": args.seconds, "seq_seconds": args.seq_seconds,
                     "wrk": "wrk -t1 -c32 (throughput), wrk -t1 -c1 (sequential)", "model": MODEL}  # fmt: skip
    thr: dict = {n: [] for n in names}
    seq: dict = {n: [] for n in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else [names[0], *reversed(names[1:])]  # direct first each round: warm Triton
        for n in order:
            log(f"round {r + 1}/{args.rounds}: {n} at concurrency 32 for {args.seconds}s")
            wrk(urls[n], scripts[n], 32, 1)  # warm-up (connections, caches)
            thr[n].append(wrk(urls[n], scripts[n], 32, args.seconds))
        for n in order:
            seq[n].append(wrk(urls[n], scripts[n], 1, args.seq_seconds))
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    groups = list(thr[names[0]][0]["cpu_ms_per_request"])
    res["paths"] = {}
    for n in names:
        calls = sum(x["requests"] for x in thr[n])
        cpu = {g: sum(x["cpu_ms_per_request"][g] * x["requests"] for x in thr[n]) / max(calls, 1) for g in groups}
        res["paths"][n] = {
            "rps": [x["rps"] for x in thr[n]],
            "ratio": [x["rps"] / d["rps"] for x, d in zip(thr[n], thr["direct"], strict=True)],
            "errors": sum(x["errors"] for x in thr[n]),
            "p50_c32_ms": [x["p50_ms"] for x in thr[n]],
            "seq_p50_ms": [x["p50_ms"] for x in seq[n]],
            "seq_added_ms": [x["p50_ms"] - d["p50_ms"] for x, d in zip(seq[n], seq["direct"], strict=True)],
            "cpu_ms_per_call": cpu,
        }
    return res


def report(res: dict) -> None:
    from harness import table

    m = res["machine"]
    print(f"== Data plane options, {res['date']}, {m['nproc']} x {m['cpu']}, Python {m['python']}")
    print(f"load average at start {m['loadavg_at_start']}, at end {m['loadavg_at_end']}; {res['config']}")
    med = statistics.median
    groups = list(next(iter(res["paths"].values()))["cpu_ms_per_call"])
    shown = [g for g in groups if g not in ("machine busy", "other processes", "steal", "load generator")]
    shown += ["load generator", "other processes", "machine busy", "steal"]
    header = ["path", "req/s c=32", "÷ direct", "errors", "seq p50 ms", "p50 added ms", *shown]
    rows = []
    for n, p in res["paths"].items():
        cpu = p["cpu_ms_per_call"]
        rows.append([n, f"{med(p['rps']):.0f}", f"{med(p['ratio']):.3f}", p["errors"], f"{med(p['seq_p50_ms']):.3f}",
                     "—" if n == "direct" else f"{med(p['seq_added_ms']):+.3f}",
                     *(f"{cpu[g]:.3f}" if abs(cpu[g]) >= 0.0005 else "·" for g in shown)])  # fmt: skip
    table(
        "medians over rounds; CPU: ms per answered call at c=32, by process group (· = none; load generator = "
        "this script, idle; steal = given by the hypervisor to other guests)",
        header,
        rows,
    )
    rows = [[n, " ".join(f"{x:.3f}" for x in p["ratio"]), " ".join(f"{x:+.3f}" for x in p["seq_added_ms"])]
            for n, p in res["paths"].items() if n != "direct"]  # fmt: skip
    table("per round", ["path", "÷ direct", "p50 added ms"], rows)
    print("\n== JSON")
    print(json.dumps(res, indent=1))


def main() -> int:
    from harness import run_main

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round: a smoke run, not for figures")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8, help="each throughput window")
    parser.add_argument("--seq-seconds", type=float, default=4, help="each sequential window")
    parser.add_argument("--paths", default="direct,raw-asgi,django-min,django-mw,gunicorn")
    parser.add_argument(
        "--code-root",
        default=None,
        help="run the portal (deploy, django-mw's settings, gunicorn) from this checkout: the gunicorn path needs "
        "the Django /v2 views, gone since issue 12 (git worktree add --detach /work/wt/before 34aaea2)",
    )
    args = parser.parse_args()
    args.paths = ["direct", *(p for p in args.paths.split(",") if p != "direct")]
    if args.quick:
        args.rounds, args.seconds, args.seq_seconds = 1, 2, 1
    if args.code_root:
        import harness

        harness.use_code_root(args.code_root)
    return run_main(lambda: report(run(args)))


if __name__ == "__main__":
    sys.exit(main())
