"""GGUF → ONNX import: the real SmolLM2 model answers, tokenizes and caches right; bad files are refused."""

from __future__ import annotations

import io
import json
import unicodedata

import gguf
import numpy as np
import onnx
import pytest
from gguf import GGMLQuantizationType as T

from inference_backend.llm.gguf_import import (
    CONVERTER_VERSION,
    EXTERNAL_DATA_NAME,
    FILE_NAMES,
    GGUFImportError,
    convert,
    q4_to_matmulnbits,
)
from inference_backend.llm.reference import (
    AGREEMENT_PROMPTS,
    SMOLLM_SYSTEM,
    ReferenceDecoder,
    chatml,
    greedy_agreement,
)
from tests.llm import numpy_llama
from tests.llm.tiny_gguf import write_tiny_llama

SYSTEM = {"role": "system", "content": SMOLLM_SYSTEM}


def prompt(text: str) -> str:
    return chatml([SYSTEM, {"role": "user", "content": text}])


# --------------------------------------------------------------------------- the real model


def test_file_set_and_config(smollm2_files):
    files = smollm2_files("int4")
    assert set(files) == set(FILE_NAMES)
    config = json.loads(files["config.json"])
    assert config["architecture"] == "llama"
    assert (config["n_layers"], config["hidden_size"], config["n_heads"], config["n_kv_heads"]) == (30, 576, 9, 3)
    assert (config["head_dim"], config["vocab_size"], config["context_length"]) == (64, 49152, 8192)
    assert config["quantization"] == "int4"
    assert config["converter_version"] == CONVERTER_VERSION
    assert config["source"]["format"] == "gguf" and config["source"]["file_type"] == 3
    assert len(config["source"]["sha256"]) == 64
    assert (config["bos_token"], config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert "<|im_start|>" in config["special_tokens"]
    generation = json.loads(files["generation_config.json"])
    assert generation["eos_token_id"] == [2] and generation["bos_token_id"] == 1
    assert files["chat_template.jinja"].startswith(b"{% for message in messages %}")

    model = onnx.load_from_string(files["model.onnx"])
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    assert inputs[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert inputs[3:5] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert len(inputs) == 3 + 2 * 30 and outputs[0] == "logits" and len(outputs) == 1 + 2 * 30
    assert outputs[-1] == "present.29.value"
    kv_shape = [d.dim_param or d.dim_value for d in model.graph.input[3].type.tensor_type.shape.dim]
    assert kv_shape == ["batch_size", 3, "past_sequence_length", 64]
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 30 * 7
    attrs = {a.name: a.i for a in nbits[0].attribute}
    assert (attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (4, 32, 0)


@pytest.mark.parametrize("quant", ["int4", "fp32"])
def test_greedy_english_answer_is_paris(smollm2_decoder, quant):
    answer = smollm2_decoder(quant).generate(prompt("What is the capital of France?"), max_new_tokens=20)
    assert "Paris" in answer


def test_greedy_chinese_answer(smollm2_decoder):
    decoder = smollm2_decoder("int4")
    ids = decoder.generate_ids([decoder.encode(prompt("什么是人工智能？"))], max_new_tokens=24)[0]
    answer = decoder.tokenizer.decode(ids, skip_special_tokens=True)
    assert "\ufffd" not in answer
    assert answer.startswith("人工智能")  # it names the subject, then explains it (in English: a 135M model)
    assert "AI" in answer
    assert sum(unicodedata.name(c, "").startswith("CJK UNIFIED") for c in answer) >= 4


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world! The quick brown fox jumps over the lazy dog.",
        "中华人民共和国的首都是北京。我们今天去长城吧！",
        "Emoji 🎉🚀👩‍💻 and accents: naïve café",
        'def f(x):\n    return {"a": [1, 2, 3]}  # comment\n\tif x != 0: pass',
        "  leading spaces and\n\nnewlines   ",
    ],
)
def test_tokenizer_roundtrip(smollm2_decoder, text):
    tokenizer = smollm2_decoder("int4").tokenizer
    ids = tokenizer.encode(text, add_special_tokens=True).ids
    assert ids and 0 not in ids  # nothing unknown, no BOS added (add_bos_token is false)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_tokenizer_special_tokens_and_digits(smollm2_decoder):
    tokenizer = smollm2_decoder("int4").tokenizer
    for token, expected in (("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)):
        assert tokenizer.encode(token).ids == [expected]
        assert tokenizer.token_to_id(token) == expected
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n").ids
    assert ids[0] == 1 and 2 in ids and len(ids) <= 6
    # SmolLM's pre-tokenizer ("smollm": StarCoder's) splits digits one by one.
    assert len(tokenizer.encode("12345").ids) == 5
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nhi\n"


def test_int4_agrees_with_fp32(smollm2_decoder):
    same, total = greedy_agreement(smollm2_decoder("int4"), smollm2_decoder("fp32"), AGREEMENT_PROMPTS, 16)
    assert total >= len(AGREEMENT_PROMPTS) * 8
    assert same / total >= 0.9, f"int4 equals fp32 on {same}/{total} greedy tokens"


@pytest.mark.parametrize("quant", ["int4", "fp32"])
def test_kv_cache_matches_full_pass(smollm2_decoder, quant):
    decoder = smollm2_decoder(quant)
    ids = np.array([decoder.encode(prompt("Name a colour of the rainbow."))], np.int64)
    n = ids.shape[1]
    full, _ = decoder.forward(ids, np.ones_like(ids), np.arange(n)[None], decoder.empty_past(1))
    split = n - 4
    logits, past = decoder.forward(
        ids[:, :split], np.ones((1, split), np.int64), np.arange(split)[None], decoder.empty_past(1)
    )
    steps = [logits]
    for position in range(split, n):
        logits, past = decoder.forward(
            ids[:, position : position + 1],
            np.ones((1, position + 1), np.int64),
            np.array([[position]]),
            past,
        )
        steps.append(logits)
    assert past["past_key_values.29.key"].shape == (1, 3, n, 64)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=2e-3, rtol=0)
    assert (np.concatenate(steps, axis=1).argmax(-1) == full.argmax(-1)).all()


@pytest.mark.parametrize("quant", ["int4", "fp32"])
def test_left_padded_batch_equals_single_rows(smollm2_decoder, quant):
    decoder = smollm2_decoder(quant)
    prompts = [decoder.encode(prompt(t)) for t in ("What is 2+2?", "Write a haiku about the sea in winter, please.")]
    assert len(prompts[0]) != len(prompts[1])
    batched = decoder.generate_ids(prompts, 8)
    single = [decoder.generate_ids([p], 8)[0] for p in prompts]
    assert batched == single
    # Logits of the last prompt position, padded vs alone.
    width = max(len(p) for p in prompts)
    ids = np.zeros((2, width), np.int64)
    mask = np.zeros((2, width), np.int64)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :], mask[row, width - len(p) :] = p, 1
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    logits, _ = decoder.forward(ids, mask, positions, decoder.empty_past(2))
    for row, p in enumerate(prompts):
        alone, _ = decoder.forward(
            np.array([p]), np.ones((1, len(p)), np.int64), np.arange(len(p))[None], decoder.empty_past(1)
        )
        np.testing.assert_allclose(logits[row, -1], alone[0, -1], atol=1e-4, rtol=0)


def test_matmulnbits_weights_equal_dequantised_gguf(smollm2_gguf):
    """The MatMulNBits form of a real Q4_1 tensor computes x·Wᵀ of the dequantised GGUF weights."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    reader = gguf.GGUFReader(smollm2_gguf)
    tensor = next(t for t in reader.tensors if t.name == "blk.3.ffn_down.weight")
    assert tensor.tensor_type == T.Q4_1
    k, n = (int(d) for d in tensor.shape)
    weight = gguf.quants.dequantize(np.asarray(tensor.data), T.Q4_1).reshape(n, k)
    packed = q4_to_matmulnbits(tensor)
    # The 4-bit codes are the GGUF's own: unpacking ours gives back the dequantised weights exactly.
    codes = np.stack([packed["B"] & 0x0F, packed["B"] >> 4], axis=-1).reshape(n, k // 32, 32).astype(np.float32)
    rebuilt = codes * packed["scales"][..., None] + packed["minimums"][..., None]
    np.testing.assert_array_equal(rebuilt.reshape(n, k), weight)

    node = helper.make_node(
        "MatMulNBits", ["x", "B", "s", "z"], ["y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=32
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        initializer=[
            numpy_helper.from_array(packed["B"], "B"),
            numpy_helper.from_array(packed["scales"], "s"),
            numpy_helper.from_array(packed["zero_points"], "z"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((4, k)).astype(np.float32)
    blocksums = x.reshape(4, k // 32, 32).sum(-1)
    y = session.run(None, {"x": x})[0] + blocksums @ packed["minimums"].T
    np.testing.assert_allclose(y, x @ weight.T, atol=1e-4, rtol=1e-4)


def test_fp32_graph_matches_an_independent_llama_cpp_style_forward(smollm2_gguf, smollm2_decoder):
    """The real model's fp32 logits equal a numpy forward on the GGUF's own (permuted) layout."""
    decoder = smollm2_decoder("fp32")
    ids = decoder.encode(prompt("What is the capital of France?"))[-12:]
    expected = numpy_llama.logits(smollm2_gguf, ids)
    got = _logits(decoder, ids)[0]
    assert np.abs(expected).max() > 5
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=0)


# --------------------------------------------------------------------------- synthetic GGUFs


def _logits(files_or_decoder, ids):
    decoder = files_or_decoder
    if not isinstance(decoder, ReferenceDecoder):
        decoder = ReferenceDecoder(files_or_decoder, threads=1)
    ids = np.array([ids], np.int64)
    logits, _ = decoder.forward(ids, np.ones_like(ids), np.arange(ids.shape[1])[None], decoder.empty_past(1))
    return logits


@pytest.mark.parametrize(("weight_type", "tied"), [(T.Q4_1, True), (T.Q4_0, False), (T.Q8_0, True), (T.F32, False)])
def test_tiny_int4_equals_fp32(tmp_path, weight_type, tied):
    path = write_tiny_llama(tmp_path / "tiny.gguf", weight_type=weight_type, tied=tied)
    int4, fp32 = convert(path, quant="int4"), convert(path, quant="fp32")
    a, b = _logits(int4, [5, 6, 7, 8, 9, 10]), _logits(fp32, [5, 6, 7, 8, 9, 10])
    assert np.abs(b).max() > 0.1
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    for files in (int4, fp32):
        onnx.checker.check_model(onnx.load_from_string(files["model.onnx"]), full_check=True)
    nodes = {n.op_type for n in onnx.load_from_string(int4["model.onnx"]).graph.node}
    assert ("MatMulNBits" in nodes) == (weight_type in (T.Q4_0, T.Q4_1))


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 2), (4, 4), (8, 1)])
def test_tiny_graph_matches_llama_cpp_style_forward(tmp_path, heads, kv_heads):
    path = write_tiny_llama(tmp_path / "t.gguf", heads=heads, kv_heads=kv_heads, tied=False, weight_type=T.F32)
    ids = [5, 9, 200, 17, 3, 44, 45]
    np.testing.assert_allclose(_logits(convert(path, quant="fp32"), ids)[0], numpy_llama.logits(path, ids), atol=1e-4)


def test_tiny_mixed_types_stay_exact(tmp_path):
    """A GGUF mixing tensor types: the Q4 tensors become MatMulNBits, the others fp32 MatMuls."""
    path = write_tiny_llama(tmp_path / "mixed.gguf", type_overrides={"attn_v": T.Q8_0, "ffn_up": T.F32})
    int4, fp32 = convert(path, quant="int4"), convert(path, quant="fp32")
    np.testing.assert_allclose(_logits(int4, [7, 8, 9]), _logits(fp32, [7, 8, 9]), atol=1e-4, rtol=0)
    nbits = [n for n in onnx.load_from_string(int4["model.onnx"]).graph.node if n.op_type == "MatMulNBits"]
    # per layer: q, k, attn_output, gate, down (v and up are fp32 MatMuls)
    assert len(nbits) == 2 * 5


def test_external_data_above_threshold(tmp_path):
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    inline = convert(path, quant="int4")
    split = convert(path, quant="int4", external_data_threshold=1000)
    assert EXTERNAL_DATA_NAME not in inline and EXTERNAL_DATA_NAME in split
    assert len(split["model.onnx"]) < len(inline["model.onnx"]) / 2
    model = onnx.ModelProto.FromString(split["model.onnx"])
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external
    for tensor in external:
        entries = {e.key: e.value for e in tensor.external_data}
        assert entries["location"] == EXTERNAL_DATA_NAME
        assert int(entries["offset"]) % 64 == 0
    np.testing.assert_array_equal(_logits(split, [3, 4, 5]), _logits(inline, [3, 4, 5]))


def test_progress_and_sink(tmp_path):
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    fractions, received = [], {}
    sizes = convert(
        path,
        quant="fp32",
        progress=lambda fraction, message: fractions.append((fraction, message)),
        sink=lambda name, data: received.__setitem__(name, data),
    )
    assert set(received) == set(FILE_NAMES)
    assert sizes == {name: len(data) for name, data in received.items()}
    values = [f for f, _ in fractions]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in fractions)


def test_file_objects_and_bytes_convert_alike(tmp_path):
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    raw = path.read_bytes()
    from_path = convert(path, quant="int4")
    with path.open("rb") as handle:
        from_handle = convert(handle, quant="int4")
    from_bytes = convert(raw, quant="int4")
    from_stream = convert(io.BytesIO(raw), quant="int4")  # no fileno: copied into an in-memory memfd
    assert from_path == from_handle == from_bytes == from_stream  # deterministic, whatever the source


@pytest.mark.parametrize(
    ("pre", "add_bos", "expected_pieces"),
    [
        ("smollm", False, ["t", "he", "Ġthe", "Ġ", "4", "2"]),  # digits one by one
        ("gpt2", False, ["t", "he", "Ġthe", "Ġ42"]),  # ' 42' is one pre-token
        ("llama-bpe", True, ["<|im_start|>", "t", "he", "Ġthe", "Ġ", "42"]),  # BOS from the post-processor
    ],
)
def test_tiny_tokenizer_variants(tmp_path, pre, add_bos, expected_pieces):
    from tokenizers import Tokenizer

    files = convert(write_tiny_llama(tmp_path / "t.gguf", pre=pre, add_bos=add_bos), quant="fp32")
    tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode())
    encoding = tokenizer.encode("the the 42")
    assert encoding.tokens == expected_pieces
    assert tokenizer.decode(encoding.ids, skip_special_tokens=True) == "the the 42"


# --------------------------------------------------------------------------- refusals


def _code(source, **kwargs) -> str:
    with pytest.raises(GGUFImportError) as info:
        convert(source, **kwargs)
    assert str(info.value).startswith(f"[{info.value.code}] ")
    return info.value.code


def test_not_a_gguf(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04" + b"\0" * 4096)
    assert _code(bogus) == "gguf_malformed"
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    assert _code(empty) == "gguf_malformed"
    assert _code(b"GGUF") == "gguf_malformed"


@pytest.mark.parametrize("keep", [100, 4096, 1 << 20])
def test_truncated_gguf(smollm2_gguf, tmp_path, keep):
    truncated = tmp_path / "truncated.gguf"
    with smollm2_gguf.open("rb") as handle:
        truncated.write_bytes(handle.read(keep))
    assert _code(truncated) == "gguf_malformed"


def test_truncated_tiny_gguf_tensor_data(tmp_path):
    raw = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    assert _code(raw[: len(raw) - 100]) == "gguf_malformed"


def test_unsupported_architecture(tmp_path):
    path = write_tiny_llama(tmp_path / "gpt2.gguf", arch="gpt2")
    assert _code(path) == "gguf_unsupported_architecture"


def test_missing_metadata_key(tmp_path):
    path = write_tiny_llama(tmp_path / "tiny.gguf", skip_keys=("llama.attention.head_count",))
    assert _code(path) == "gguf_malformed"


def test_unsupported_tensor_type(tmp_path):
    path = tmp_path / "q5.gguf"
    write_tiny_llama(path, weight_type=T.Q5_0)
    assert _code(path) == "gguf_unsupported_tensor_type"


@pytest.mark.parametrize(("model", "pre"), [("llama", "default"), ("gpt2", "some-new-pretokenizer")])
def test_unsupported_tokenizer(tmp_path, model, pre):
    path = write_tiny_llama(tmp_path / "tok.gguf", tokenizer_model=model, pre=pre)
    assert _code(path) == "gguf_unsupported_tokenizer"


def test_bad_quant_option(tmp_path):
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    assert _code(path, quant="int8") == "gguf_invalid_option"
