"""Fixtures of the inference_backend tests.

``triton_host`` is a real tritonserver (from the nvidia-pytriton wheel) started once per
session with :func:`inference_backend.server.launch_local_triton`; Django test suites can
build the same fixture from that function (or from ``LocalTritonServer`` directly).
"""

from types import SimpleNamespace

import pytest

from inference_backend.client import TritonClient
from inference_backend.kek import LocalKeystoreProvider
from inference_backend.server import launch_local_triton


@pytest.fixture(scope="session")
def triton_host(tmp_path_factory):
    """A running local Triton whose host KEK is a keystore this test process can also use."""
    workdir = tmp_path_factory.mktemp("ib-triton")
    kek_file = workdir / "keystore" / "kek.bin"
    provider = LocalKeystoreProvider(kek_file)
    provider.kek_id  # create the keystore before the server starts  # noqa: B018
    server = launch_local_triton(
        workdir,
        extra_env={"SOVEREIGN_KEK_PROVIDER": "local", "SOVEREIGN_LOCAL_KEK_FILE": str(kek_file)},
        timeout=120,
    )
    client = TritonClient(server.http_url, timeout=60)
    try:
        yield SimpleNamespace(server=server, client=client, provider=provider, workdir=workdir)
    finally:
        client.close()
        server.stop()
