"""SM3-based one-time passwords, GM/T 0021-2012 (动态口令密码应用技术规范), time-based.

    ID = T || C || Q       T: time factor, 8 bytes big-endian; C: event counter, 4 bytes; Q: challenge
                           (each factor optional, at least one present; here T only, C and Q empty)
    OD = SM3(K || ID)      K: the seed, at least 128 bits
    S  = (OD[0:4] + OD[4:8] + ... + OD[28:32]) mod 2^32   (the eight 32-bit big-endian words)
    P  = S mod 10^N        N >= 6 digits, left-padded with zeros

T = floor((unix time - t0) / step); the standard's step Tc is at most 60 s (60 here). SM3 is gmssl's
(pure Python, already a dependency). No official test vectors of GM/T 0021 were found: the tests
check properties and a vector computed by a separate straightforward implementation."""

from __future__ import annotations

from gmssl import func, sm3

ALGORITHM = "SM3-OTP (GM/T 0021-2012)"
DEFAULT_STEP = 60
MIN_KEY_BYTES = 16


def sm3_digest(data: bytes) -> bytes:
    return bytes.fromhex(sm3.sm3_hash(func.bytes_to_list(data)))


def identifier(t: int | None = None, c: int | None = None, q: bytes = b"") -> bytes:
    """ID = T (8 bytes) || C (4 bytes) || Q, each factor only when given."""
    if t is None and c is None and not q:
        raise ValueError("GM/T 0021 needs at least one factor (time, counter or challenge)")
    out = b""
    if t is not None:
        out += int(t).to_bytes(8, "big")
    if c is not None:
        out += int(c).to_bytes(4, "big")
    return out + q


def truncate(od: bytes, digits: int) -> str:
    words = [int.from_bytes(od[i : i + 4], "big") for i in range(0, 32, 4)]
    s = sum(words) % 2**32
    return str(s % 10**digits).zfill(digits)


def sm3_otp(key: bytes, *, t: int | None = None, c: int | None = None, q: bytes = b"", digits: int = 6) -> str:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError("the SM3 OTP seed must be at least 128 bits")
    if digits < 6:
        raise ValueError("GM/T 0021 one-time passwords have at least 6 digits")
    return truncate(sm3_digest(key + identifier(t, c, q)), digits)


def time_factor(now: float, step: int = DEFAULT_STEP, t0: int = 0) -> int:
    return int((now - t0) // step)
