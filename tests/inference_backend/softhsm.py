"""A SoftHSM2 token in a temporary directory, for the PKCS#11 tests and the HSM benchmark."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
TOKEN_LABEL = "sovereign-test"
USER_PIN = "1234"
SO_PIN = "5678"


class SoftHsmMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class SoftHsmToken:
    module: str
    conf: Path
    token_label: str
    pin: str
    pin_file: Path


def find_module() -> str:
    util = shutil.which("softhsm2-util")
    module = next((m for m in MODULE_CANDIDATES if os.path.isfile(m)), None)
    if not util or not module:
        raise SoftHsmMissing(
            "SoftHSM2 is not installed (softhsm2-util or libsofthsm2.so missing): run `make test`, "
            "which installs the Debian package softhsm2, or `apt-get install softhsm2`"
        )
    return module


def init_token(workdir: Path, label: str = TOKEN_LABEL, pin: str = USER_PIN) -> SoftHsmToken:
    """Initialise a token under ``workdir`` and point this process at it with ``SOFTHSM2_CONF``.

    SoftHSM2 reads ``SOFTHSM2_CONF`` when the library is first initialised in a process, so call
    this before anything loads the module.
    """
    module = find_module()
    tokens = workdir / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    pin_file = workdir / "pin"
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    return SoftHsmToken(module=module, conf=conf, token_label=label, pin=pin, pin_file=pin_file)
