"""A Chinese page said a new version's breaking changes in English ("output 'PROBABILITIES' removed or
renamed"): every sentence inference_backend.signature.breaking_changes writes is said again in the
page's language, and each shape it can write is known (none passes through untranslated)."""

import pytest
from django.utils import translation

from apps.registry.changes import describe, describe_all
from inference_backend.signature import breaking_changes


def _t(name, datatype="FP32", shape=(-1, 4)):
    return {"name": name, "datatype": datatype, "shape": list(shape)}


OLD = {
    "inputs": [_t("INPUT"), _t("MASK")],
    "outputs": [_t("PROBABILITIES", shape=(-1, 3)), _t("LOGITS")],
    "batch_dynamic": True,
}
NEW = {
    "inputs": [_t("INPUT", "FP16"), _t("MASK", shape=(-1, 4, 1)), _t("EXTRA")],
    "outputs": [_t("LOGITS", shape=(-1, 5))],
    "batch_dynamic": False,
}
CHANGES = breaking_changes(OLD, NEW) + breaking_changes({"kind": "tensor"}, {"kind": "llm"})


def test_every_shape_the_signature_writes_is_known():
    assert len(CHANGES) == 7, CHANGES  # removed, added, datatype, rank, shape, batching, kind
    with translation.override("zh-hans"):
        said = [describe(change) for change in CHANGES]
    for change, words in zip(CHANGES, said, strict=True):
        assert words != change, change
        assert not any(w in words for w in ("removed", "added", "datatype", "rank", "shape", "batching", "kind")), words


@pytest.mark.parametrize(
    "lang, expected",
    [
        ("en", "output 'PROBABILITIES' removed or renamed"),
        ("zh-hans", "输出 'PROBABILITIES' 被删除或改名"),
    ],
)
def test_a_removed_output_in_each_language(lang, expected):
    with translation.override(lang):
        assert describe_all(breaking_changes({"outputs": [_t("PROBABILITIES")]}, {"outputs": []})) == expected


def test_a_sentence_of_no_known_shape_is_shown_unchanged():
    assert describe("something new") == "something new"
