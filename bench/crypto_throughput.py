#!/usr/bin/env python3
"""Throughput and memory of the streaming artifact format (issue 4).

Creates a 2 GiB random file in a temporary directory (256 MiB with ``--quick``), then
encrypts and decrypts it file-to-file with each suite using
``inference_backend.stream.encrypt_stream`` / ``decrypt_stream`` (1 MiB segments). Each
operation runs in a fresh subprocess so that its peak RSS (VmHWM) is its own. The practical
ceiling, ``openssl speed -evp aes-256-gcm -bytes 16384 -seconds 3``, is measured in the same
run and the AES-256-GCM figures are reported as a ratio of it. A plain copy of the same file
(no crypto) is timed first as the disk's own ceiling for the file-to-file rows; the same
operations with the output sent to /dev/null show the crypto path without the disk.

    .venv/bin/python bench/crypto_throughput.py [--quick] [--size-mib N] [--tmpdir DIR]

HSM unwrap timing belongs to the PKCS#11 provider's benchmark, not this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine  # noqa: E402 - bench/ is not a package; puts the repository on sys.path

MiB = 1 << 20
DEK = bytes(range(32))
AAD = b"bench-artifact:1"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(op: str, suite: str, src: str, dst: str) -> None:
    from inference_backend.stream import decrypt_stream, encrypt_stream

    rss_before = _status_kib("VmRSS")
    hwm_before = _status_kib("VmHWM")
    size = os.path.getsize(src)
    t0, c0 = time.perf_counter(), time.process_time()
    with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
        if op == "copy":
            buf = memoryview(bytearray(MiB))
            while n := fi.readinto(buf):
                fo.write(buf[:n])
        elif op == "encrypt":
            encrypt_stream(fi, fo, DEK, AAD, suite=suite, kek_id="bench-kek", kek_version="1", segment_size=MiB)
        else:
            decrypt_stream(fi, fo, DEK, AAD)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    hwm_after = _status_kib("VmHWM")
    print(
        json.dumps(
            {
                "op": op,
                "suite": suite,
                "dst": dst,
                "bytes": size,
                "seconds": elapsed,
                "cpu_seconds": cpu,
                "rss_before_kib": rss_before,
                "hwm_before_kib": hwm_before,
                "hwm_after_kib": hwm_after,
                "peak_growth_kib": hwm_after - rss_before,
            }
        )
    )


def openssl_ceiling(seconds: int = 3) -> float:
    """AES-256-GCM bytes/s of ``openssl speed`` at 16 KiB blocks on one core."""
    out = subprocess.run(
        ["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "16384", "-seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        m = re.match(r"\s*AES-256-GCM\s+([\d.]+)k\s*$", line, re.IGNORECASE)
        if m:
            return float(m.group(1)) * 1000.0
    raise RuntimeError(f"could not parse openssl speed output:\n{out}")


def make_file(path: Path, size: int) -> None:
    chunk = 16 * MiB
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def run_op(op: str, suite: str, src: Path, dst: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", op, suite, str(src), str(dst)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 MiB instead of 2 GiB")
    ap.add_argument("--size-mib", type=int, default=None)
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--child", nargs=4, metavar=("OP", "SUITE", "SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return

    size = (args.size_mib or (256 if args.quick else 2048)) * MiB
    m = machine()
    print(f"python {m['python']}, {m['nproc']} x {m['cpu']}, file size {size / MiB:.0f} MiB, segments 1 MiB")
    ceiling = openssl_ceiling()
    print(f"openssl speed -evp aes-256-gcm -bytes 16384 -seconds 3: {ceiling / 1e6:.0f} MB/s (one core)")

    tmp = Path(tempfile.mkdtemp(prefix="sovcrypto-", dir=args.tmpdir))
    try:
        plain, enc, dec = tmp / "plain.bin", tmp / "enc.bin", tmp / "dec.bin"
        make_file(plain, size)
        # I/O baseline: a plain 1 MiB-buffered copy with no crypto, same files and disk.
        rows = [run_op("copy", "-", plain, dec)]
        dec.unlink()
        for suite in ("AES-256-GCM", "SM4-GCM"):
            r_enc = run_op("encrypt", suite, plain, enc)
            r_dec = run_op("decrypt", suite, enc, dec)
            if os.path.getsize(dec) != size or not _same(plain, dec):
                raise SystemExit(f"{suite}: round trip mismatch")
            dec.unlink()
            # Same operations with the output discarded: the crypto path without the
            # kernel's cost of writing new page-cache pages (the Triton load path
            # decrypts into memory and never writes plaintext to disk).
            r_enc_null = run_op("encrypt", suite, plain, Path(os.devnull))
            r_dec_null = run_op("decrypt", suite, enc, Path(os.devnull))
            rows += [r_enc, r_dec, r_enc_null, r_dec_null]
            enc.unlink()
        print()
        print(
            f"{'suite':12} {'op':8} {'output':10} {'MB/s':>8} {'CPU MB/s':>9} {'vs openssl':>10} "
            f"{'peak RSS growth':>16}"
        )
        for r in rows:
            mbs = r["bytes"] / r["seconds"] / 1e6
            cpu_mbs = r["bytes"] / max(r["cpu_seconds"], 1e-9) / 1e6
            ratio = f"{100 * r['bytes'] / r['seconds'] / ceiling:.0f} %" if r["suite"] != "SM4-GCM" else "-"
            growth = f"{r['peak_growth_kib'] / 1024:.1f} MiB"
            out = "/dev/null" if r["dst"] == os.devnull else "file"
            print(f"{r['suite']:12} {r['op']:8} {out:10} {mbs:8.0f} {cpu_mbs:9.0f} {ratio:>10} {growth:>16}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if x != y:
                return False
            if not x:
                return True


if __name__ == "__main__":
    main()
