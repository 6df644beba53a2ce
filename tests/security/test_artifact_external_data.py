"""An ONNX upload must not read files of the host through external-data tensors (issue 10, item 5).

The attack: a tensor whose data "lives" in ``secret.txt`` (or ``keystore/kek.bin``) next to the
process; onnxruntime, building a session from bytes, reads it relative to its working directory
and the model hands it out as an output. Refused at upload (nothing saved), refused again by the
python-backend model on the Triton host before any session is built, and the model runs in an
empty private working directory besides.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from onnx import ModelProto

from apps.audit.models import AuditEvent
from apps.registry.models import Artifact, Model, ModelVersion
from inference_backend import triton_model
from inference_backend.client import TritonClient, TritonError
from inference_backend.config import BatchingSettings, render_config
from inference_backend.demo_model import build_test_onnx
from inference_backend.envelope import encrypt_artifact, generate_dek, sha256_hex
from inference_backend.kek import LocalKeystoreProvider
from inference_backend.onnx_external import external_data_references
from inference_backend.server import launch_local_triton
from inference_backend.signature import InvalidModelError, read_onnx_signature
from tests.security import onnx_attacks as attacks

SECRET = b"TOP-SECRET-0123456789abcdef!"
N = len(SECRET)
TRITON_MODEL_SOURCE = Path(triton_model.__file__).read_bytes()

# Every place a tensor can hide: (id, builder(location, n) -> ModelProto).
PLACES = [
    ("initializer", lambda loc, n: attacks.initializer(loc, n)),
    ("initializer-location-only", lambda loc, n: attacks.initializer(loc, n, marker="location")),
    ("initializer-entries-only", lambda loc, n: attacks.initializer(loc, n, marker="entries")),
    ("sparse-initializer-values", lambda loc, n: attacks.sparse_initializer(loc, n, "values")),
    ("sparse-initializer-indices", lambda loc, n: attacks.sparse_initializer(loc, n, "indices")),
    ("constant-tensor-attribute", attacks.constant_attribute),
    ("tensors-attribute", attacks.tensors_attribute),
    ("sparse-tensor-attribute", attacks.sparse_attribute),
    ("mistyped-attribute", attacks.mistyped_attribute),
    ("if-subgraph", attacks.if_subgraph),
    ("loop-scan-if-nesting", attacks.nested_loop_scan),
    ("graphs-attribute", attacks.graphs_attribute),
    ("function-body", attacks.function_body),
    ("function-default-attribute", attacks.function_default_attribute),
    ("training-info", attacks.training_info),
    ("deeply-nested", attacks.deeply_nested),
]
# The ones onnx.checker and onnxruntime accepted before the refusal existed: the real attacks.
RUNNABLE = [("initializer", attacks.initializer), ("constant", attacks.constant_attribute), ("if", attacks.if_subgraph)]


@pytest.fixture
def secret_in_cwd(tmp_path, monkeypatch):
    """The process works in a directory holding a secret file (as a Triton container's WORKDIR might)."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    (workdir / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(workdir)
    return workdir


# -- the walker and the signature reader ----------------------------------------------------


@pytest.mark.parametrize(("place", "build"), PLACES, ids=[p for p, _ in PLACES])
def test_every_place_is_found_and_refused(place, build):
    model = build("secret.txt", N)
    assert external_data_references(model), place
    with pytest.raises(InvalidModelError) as refused:
        read_onnx_signature(model.SerializeToString())
    assert refused.value.code == "onnx_external_data"
    assert "secret.txt" not in refused.value.message  # names where the tensor is, not what it points to
    assert "save_as_external_data=False" in refused.value.message


def test_refusal_says_where_the_tensor_is():
    with pytest.raises(InvalidModelError) as refused:
        read_onnx_signature(attacks.if_subgraph("s", N).SerializeToString())
    assert "then_branch" in refused.value.message and "'SECRET'" in refused.value.message, refused.value.message


def test_self_contained_models_have_no_references(onnx_bytes):
    assert external_data_references(ModelProto.FromString(onnx_bytes)) == []
    assert read_onnx_signature(onnx_bytes)["inputs"][0]["name"] == "INPUT"


@pytest.mark.parametrize(("place", "build"), RUNNABLE, ids=[p for p, _ in RUNNABLE])
def test_the_attack_is_real(secret_in_cwd, place, build):
    """Not a test of Sovereign: shows that onnxruntime itself hands out the file, so refusing matters."""
    session = ort.InferenceSession(build("secret.txt", N).SerializeToString(), providers=["CPUExecutionProvider"])
    leaked = session.run(["LEAK"], {"INPUT": np.zeros((1, 4), np.float32)})[0]
    assert bytes(leaked) == SECRET


# -- upload -----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("place", "build"), RUNNABLE, ids=[p for p, _ in RUNNABLE])
def test_upload_is_refused_and_nothing_saved(secret_in_cwd, staff_client, staff_user, place, build):
    before = set(os.listdir(settings.ARTIFACT_DIR))
    data = build("secret.txt", N).SerializeToString()

    resp = staff_client.post(
        "/api/v1/registry/models/leaky/versions/", {"file": SimpleUploadedFile("m.onnx", data)}, format="multipart"
    )

    assert resp.status_code == 400, resp.json()
    body = resp.json()
    assert body["code"] == "onnx_external_data"
    assert body.get("field") == "file"
    assert "external" in body["detail"]
    assert SECRET.decode() not in json.dumps(body)
    assert not Model.objects.exists() and not ModelVersion.objects.exists() and not Artifact.objects.exists()
    assert set(os.listdir(settings.ARTIFACT_DIR)) == before
    rejected = AuditEvent.objects.get(event_type="registry.version.rejected")
    assert (rejected.actor, rejected.error_code) == (staff_user, "onnx_external_data")
    assert not AuditEvent.objects.filter(event_type__in=["registry.model.create", "registry.version.create"]).exists()


# -- the python-backend model on the Triton host (unit: a stand-in for pb_utils) --------------


class _ModelException(Exception):
    pass


def _tensor(name, array):
    return SimpleNamespace(name=name, array=np.asarray(array), as_numpy=lambda: np.asarray(array))


_PB_UTILS = SimpleNamespace(
    Tensor=_tensor,
    InferenceResponse=lambda output_tensors, error=None: SimpleNamespace(
        outputs={t.name: t.array for t in output_tensors}, error=error
    ),
    TritonError=lambda message: SimpleNamespace(message=message),
    TritonModelException=_ModelException,
    get_input_tensor_by_name=lambda request, name: request.get(name),
)


def _encrypted_version(repo: Path, plaintext: bytes, provider: LocalKeystoreProvider) -> dict[str, str]:
    """Write ``repo/1/model.onnx.enc`` as the portal would send it; return the model config parameters."""
    dek, aad = generate_dek(), "sovereign:artifact:test:leaky:1"
    (repo / "1").mkdir(parents=True)
    (repo / "1" / "model.onnx.enc").write_bytes(encrypt_artifact(plaintext, dek, aad.encode()))
    return {
        "artifact_file": "model.onnx.enc",
        "wrapped_dek": base64.b64encode(provider.wrap(dek)).decode(),
        "kek_id": provider.kek_id,
        "artifact_aad": aad,
        "artifact_sha256": sha256_hex(plaintext),
    }


def _attack_config(name: str, parameters: dict[str, str], signature: dict | None = None) -> dict:
    """The config the portal would render; the attack's signature is written by hand (the reader refuses it)."""
    signature = signature or {
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "LEAK", "datatype": "UINT8", "shape": [N]},
        ],
        "batch_dynamic": False,
    }
    return render_config(name, signature, BatchingSettings(max_batch_size=0, dynamic_batching=False), parameters)


@pytest.fixture
def triton_host(tmp_path, monkeypatch):
    monkeypatch.setattr(triton_model, "pb_utils", _PB_UTILS)  # (tests using it chdir first: initialize() moves)
    kek_file = tmp_path / "keystore" / "kek.bin"
    monkeypatch.setenv("SOVEREIGN_KEK_PROVIDER", "local")
    monkeypatch.setenv("SOVEREIGN_LOCAL_KEK_FILE", str(kek_file))
    return SimpleNamespace(repo=tmp_path / "repo", provider=LocalKeystoreProvider(kek_file))


def _initialize(host, plaintext: bytes, name: str = "leaky", signature: dict | None = None):
    config = _attack_config(name, _encrypted_version(host.repo, plaintext, host.provider), signature)
    model = triton_model.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(host.repo), "model_version": "1"})
    return model


@pytest.mark.parametrize(("place", "build"), RUNNABLE, ids=[p for p, _ in RUNNABLE])
def test_triton_model_refuses_before_building_the_session(secret_in_cwd, triton_host, monkeypatch, place, build):
    built = []
    monkeypatch.setattr(triton_model.ort, "InferenceSession", lambda *a, **k: built.append(a) or pytest.fail("built"))

    with pytest.raises(_ModelException) as refused:
        _initialize(triton_host, build("secret.txt", N).SerializeToString())

    assert "external" in str(refused.value) and "refused before building the onnxruntime session" in str(refused.value)
    assert SECRET.decode() not in str(refused.value)
    assert built == []


def test_triton_model_runs_in_an_empty_private_directory_even_if_the_check_missed(
    secret_in_cwd, triton_host, monkeypatch
):
    """Second wall: with the walker blinded, onnxruntime still finds no secret.txt to read."""
    monkeypatch.setattr(triton_model, "external_data_references", lambda model: [])

    with pytest.raises(_ModelException) as refused:
        _initialize(triton_host, attacks.initializer("secret.txt", N).SerializeToString())

    assert "onnxruntime cannot load" in str(refused.value)
    assert SECRET.decode() not in str(refused.value)
    cwd = Path(os.getcwd())
    assert cwd != secret_in_cwd and list(cwd.iterdir()) == []
    assert stat.S_IMODE(cwd.stat().st_mode) == 0o700


def test_a_clean_model_still_loads_and_its_directory_is_removed(tmp_path, triton_host, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plaintext = build_test_onnx(4, 4, seed=3)
    model = _initialize(triton_host, plaintext, "clean", read_onnx_signature(plaintext))
    assert Path(os.getcwd()) == Path(model.workdir) and model.workdir != str(tmp_path)
    x = np.ones((2, 4), np.float32)
    response = model.execute([{"INPUT": _tensor("INPUT", x)}])[0]
    assert response.error is None and response.outputs["OUTPUT"].shape == (2, 4)
    model.finalize()
    assert not Path(model.workdir).exists()
    assert os.getcwd() == "/"  # not left in a deleted directory


# -- a real tritonserver, the model loaded through the repository API ------------------------


@pytest.fixture(scope="module")
def real_triton(tmp_path_factory):
    """A local Triton whose workdir holds its KEK keystore: the file an attacker would want."""
    workdir = tmp_path_factory.mktemp("leak-triton")
    kek_file = workdir / "keystore" / "kek.bin"
    provider = LocalKeystoreProvider(kek_file)
    provider.kek_id  # creates the keystore  # noqa: B018
    server = launch_local_triton(
        workdir, extra_env={"SOVEREIGN_KEK_PROVIDER": "local", "SOVEREIGN_LOCAL_KEK_FILE": str(kek_file)}
    )
    client = TritonClient(server.http_url, timeout=120)
    try:
        yield SimpleNamespace(server=server, client=client, provider=provider, workdir=workdir, kek_file=kek_file)
    finally:
        client.close()
        server.stop()


def _forms(secret: bytes) -> list[bytes]:
    """The secret as it could appear in a log or an answer: raw, hex, base64, a JSON list of numbers."""
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret),
        json.dumps(list(secret)).encode(),
        ", ".join(map(str, secret)).encode(),
    ]


CHECK_LINE = b"        _refuse_external_data(plaintext)\n"


@pytest.mark.integration
@pytest.mark.parametrize("wall", ["refusal", "empty-cwd-only"])
def test_real_triton_refuses_to_load_a_model_reading_the_host_kek(real_triton, tmp_path, wall):
    """The portal's own load request (config + model.py + ciphertext), with an artifact that names
    the Triton host's KEK keystore relative to the directory Triton was started in. With the
    refusal removed from model.py ("empty-cwd-only"), the empty working directory still holds."""
    kek = real_triton.kek_file.read_bytes()
    plaintext = attacks.initializer("keystore/kek.bin", len(kek)).SerializeToString()
    parameters = _encrypted_version(tmp_path / "repo", plaintext, real_triton.provider)
    config = _attack_config("leaky", parameters)
    config["output"][1]["dims"] = [len(kek)]
    source = TRITON_MODEL_SOURCE if wall == "refusal" else TRITON_MODEL_SOURCE.replace(CHECK_LINE, b"")
    assert wall == "refusal" or b"_refuse_external_data(plaintext)" not in source
    files = {"1/model.py": source, "1/model.onnx.enc": (tmp_path / "repo" / "1" / "model.onnx.enc").read_bytes()}
    client = real_triton.client

    with pytest.raises(TritonError) as refused:
        client.load_model("leaky", config, files)

    expected = "external" if wall == "refusal" else "onnxruntime cannot load"
    assert expected in refused.value.message
    assert not client.model_ready("leaky")
    seen = [refused.value.message.encode(), json.dumps(client.repository_index()).encode()]
    seen.append(real_triton.server.log_path.read_bytes())
    for form in _forms(kek):
        assert not any(form in text for text in seen)
