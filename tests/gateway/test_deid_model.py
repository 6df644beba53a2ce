"""The trained tagger beside the rules (apps/gateway/deid/model.py, issue 14)."""

from __future__ import annotations

import pytest

from apps.gateway.deid import detect, model, train
from apps.gateway.deid.canonical import canonicalise
from apps.gateway.deid.spans import DATE, GEO, NAME


@pytest.fixture
def rules_only():
    was = model._enabled
    model.set_enabled(False)
    yield
    model.set_enabled(was)


@pytest.fixture
def with_model():
    was = model._enabled
    model.set_enabled(True)
    yield
    model.set_enabled(was)


def _rules(text):
    was = model._enabled
    model.set_enabled(False)
    try:
        return detect(text)
    finally:
        model.set_enabled(was)


NOTES = [
    "三床罗小蔓今晚禁食，明早做胃镜。",
    "随访电话：覃晓已在市疾控登记。",
    "患者在龙岗镇务农，平时独居。",
    "Seen today with her niece Ottoline Brackwater, who drove her from Tullahoma. BP 128/70.",
    "Favorable cervix. Pitocin started at 2 mU/min.",
]


def test_the_shipped_model_loads_and_is_small(with_model):
    assert model.MODEL_PATH.exists()
    assert model.MODEL_PATH.stat().st_size < 10 * 1024 * 1024
    assert model.enabled()
    model.warm()


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        # a bed number before a name, a name before what was done: no cue the rules know
        ("三床罗小蔓今晚禁食，明早做胃镜。", "罗小蔓", NAME),
        ("随访电话：覃晓已在市疾控登记。", "覃晓", NAME),
        # a town not in the gazetteer, known by its suffix and its place in the sentence
        ("患者在龙岗镇务农，平时独居。", "龙岗镇", GEO),
    ],
)
def test_the_model_adds_what_the_rules_miss(with_model, text, value, kind):
    assert (value, kind) not in [(text[s.start : s.end], s.type) for s in _rules(text)]
    assert (value, kind) in [(text[s.start : s.end], s.type) for s in detect(text)]


@pytest.mark.parametrize(
    ("text", "brand"),
    [
        ("Favorable cervix. Pitocin started at 2 mU/min.", "Pitocin"),
        ("Eye drops: Xalatan 1 gtt OU qhs.", "Xalatan"),
        ("Sore throat with exudates, Centor 4, strep pending.", "Centor"),
    ],
)
def test_the_model_vetoes_brands_the_inversion_pass_took(with_model, text, brand):
    """The recall-first inversion pass takes an unknown capitalised word for a name; the model,
    which sees that span as a feature, overrules it for a drug, a device or a score."""
    assert (brand, NAME) in [(text[s.start : s.end], s.type) for s in _rules(text)]
    assert brand not in [text[s.start : s.end] for s in detect(text)]


def test_deterministic(with_model):
    for text in NOTES:
        assert detect(text) == detect(text)
        canon = canonicalise(text).text
        assert model.tag(canon, _rules(text), {NAME, GEO}) == model.tag(canon, _rules(text), {NAME, GEO})


def test_rule_spans_are_kept_and_model_spans_overlap_none(with_model):
    """Every rule span stays but the inversion pass's names the model vetoes; a model span never
    overlaps a rule span."""
    for text in NOTES:
        rules = _rules(text)
        merged = detect(text)
        assert all(s.type == NAME and s.priority in model.VETOED for s in set(rules) - set(merged))
        extra = [s for s in merged if s not in set(rules)]
        for s in extra:
            assert s.priority == model.PRIORITY
            assert not any(r.start < s.end and s.start < r.end for r in rules)
        assert [s.start for s in merged] == sorted(s.start for s in merged)


def test_spans_are_offsets_into_the_original_text(with_model):
    """Characters canonicalisation removes (zero-width) or resizes do not shift the model's spans."""
    for text in NOTES:
        plain = detect(text)
        zw = "\u200b"
        noisy = zw + text.replace(" ", " " + zw)
        found = detect(noisy)
        assert [noisy[s.start : s.end].replace(zw, "") for s in found] == [text[s.start : s.end] for s in plain]
        assert [s.type for s in found] == [s.type for s in plain]


def test_types_not_asked_for_are_not_tagged(with_model):
    for text in NOTES:
        assert all(s.type == DATE for s in detect(text, [DATE]))


def test_off_switch_gives_the_rules_alone(rules_only):
    for text in NOTES:
        assert not model.enabled()
        assert all(s.priority != model.PRIORITY for s in detect(text))


def test_training_is_reproducible(tmp_path):
    """The same corpora and parameters write the same model, byte for byte (no random state)."""
    params = {"max_iterations": 15}
    recs = train.records([3])[:40]
    for name in ("a", "b"):
        import pycrfsuite

        trainer = pycrfsuite.Trainer(verbose=False)
        for xseq, yseq in train.sequences(recs):
            trainer.append(xseq, yseq)
        trainer.set_params({**train.PARAMS, **params})
        trainer.train(str(tmp_path / f"{name}.crfsuite"))
    assert (tmp_path / "a.crfsuite").read_bytes() == (tmp_path / "b.crfsuite").read_bytes()


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"SOVEREIGN_DEID_MODEL": "0"}, False),
        ({"SOVEREIGN_DEID_MODEL": "1"}, True),
        ({"SOVEREIGN_DEID_MODEL": "on"}, True),
    ],
)
def test_off_unless_the_environment_turns_it_on(environ, on):
    """Off by default: it costs about three times the rules' CPU per MiB (docs/deidentification.md)."""
    assert model.from_environment(environ) is on
