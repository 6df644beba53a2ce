"""Time data-key unwraps through the PKCS#11 provider (SoftHSM2) against the local keystore (issue 4).

Creates a throw-away SoftHSM2 token in a temporary directory, creates the KEK with
``create_kek``, wraps one 256-bit data key, then times N unwraps through the session pool
(sequentially, and from several threads), N unwraps with ``LocalKeystoreProvider``, and N/5
unwraps that open and log in a fresh session each time (what the pool avoids).
Prints median / p90 per unwrap in microseconds.

    .venv/bin/python bench/hsm_unwrap.py [-n 1000] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import percentiles, time_calls  # noqa: E402 - bench/ is not a package; puts the repository on sys.path

from inference_backend.envelope import generate_dek  # noqa: E402
from inference_backend.kek import LocalKeystoreProvider  # noqa: E402
from inference_backend.pkcs11_kek import Pkcs11KekProvider, create_kek  # noqa: E402
from tests.inference_backend.softhsm import init_token  # noqa: E402


def _time(fn, n: int) -> list[float]:
    return time_calls(fn, n)[0]


def _row(name: str, samples: list[float]) -> str:
    q = percentiles(samples, (50, 90))
    return f"{name:<34} n={len(samples):>5}  median {q['p50']:8.1f} µs  p90 {q['p90']:8.1f} µs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="unwraps per measurement (default 1000)")
    ap.add_argument("--threads", type=int, default=8, help="threads for the concurrent run (default 8)")
    ap.add_argument("--pool-size", type=int, default=4)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="hsm-bench-") as tmp:
        token = init_token(Path(tmp))
        kek_id = create_kek(token.module, token.token_label, token.pin, "sovereign-kek-v1")
        hsm = Pkcs11KekProvider(token.module, token.token_label, token.pin, "sovereign-kek-v1", args.pool_size)
        local = LocalKeystoreProvider(Path(tmp) / "keystore" / "kek.bin")
        dek = generate_dek()
        wrapped_hsm, wrapped_local = hsm.wrap(dek), local.wrap(dek)
        local_id = local.kek_id
        for _ in range(50):  # warm up
            assert hsm.unwrap(wrapped_hsm, kek_id) == dek
            assert local.unwrap(wrapped_local, local_id) == dek

        print(f"SoftHSM2 module {token.module}; pool of {args.pool_size} sessions; {os.cpu_count()} CPUs")
        print(_row("pkcs11 unwrap (sequential)", _time(lambda: hsm.unwrap(wrapped_hsm, kek_id), args.n)))
        print(_row("pkcs11 wrap (sequential)", _time(lambda: hsm.wrap(dek), args.n)))

        per_thread = max(1, args.n // args.threads)
        samples: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(args.threads)

        def worker():
            barrier.wait()
            mine = _time(lambda: hsm.unwrap(wrapped_hsm, kek_id), per_thread)
            with lock:
                samples.extend(mine)

        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        print(_row(f"pkcs11 unwrap ({args.threads} threads)", samples) + f"  {len(samples) / wall:,.0f} unwraps/s")
        print(_row("local keystore unwrap", _time(lambda: local.unwrap(wrapped_local, local_id), args.n)))
        hsm.close()

        def login_per_call():  # what the pool avoids: open + C_Login + find KEK + unwrap + close
            p = Pkcs11KekProvider(token.module, token.token_label, token.pin, "sovereign-kek-v1", pool_size=1)
            try:
                p.unwrap(wrapped_hsm, kek_id)
            finally:
                p.close()

        print(_row("pkcs11 unwrap, login per call", _time(login_per_call, max(10, args.n // 5))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
