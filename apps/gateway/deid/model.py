"""A trained tagger beside the rules: names, places and addresses the rules did not take (issue 14).

The rules of names.py and geo.py were each written from a corpus's misses, and each new corpus
scored the same (recall about 0.90). This module adds a second opinion learnt from the labelled
corpora 1-7: a linear-chain CRF (CRFsuite, through python-crfsuite) over tokens — English words,
single Han characters, digits and punctuation — with BIO labels for NAME, GEO and ADDRESS.

Features of a token: its lower-case form, shape, affixes, hits in the rules' word lists (given and
family names, Chinese surnames and given-name characters, words that are not names), the same of
its neighbours (two either side), and the type the rules gave the characters there (their spans,
after overlap resolution). The model file, data/tagger.crfsuite, is built reproducibly by
`python -m apps.gateway.deid.train` (see that module) and is a few hundred kB.

Merging (the one hook, engine._detect): a model span is added where no rule span overlaps it, when
the mean marginal probability of its tokens' labels reaches its type's THRESHOLDS; the rules keep
every span they found except the names of the recall-first inversion pass (safelist.py) that the
model, seeing them as features, still calls "O" with probability >= VETO (drug and device brands,
eponyms, unit names). Cost: only segments (lines and sentences) that hold a candidate — a
capitalised word, a Han character — are tagged; see docs/deidentification.md for the measured
CPU per MiB: about three times the rules', so it is OFF unless SOVEREIGN_DEID_MODEL=1 is in the
environment (or `set_enabled(True)`), and off when python-crfsuite or the model file is missing:
the rules alone then, as before.
"""

from __future__ import annotations

import os
import re
import threading
from functools import lru_cache
from pathlib import Path

from .spans import ADDRESS, GEO, NAME, Span

MODEL_PATH = Path(__file__).with_name("data") / "tagger.crfsuite"
TYPES = (NAME, GEO, ADDRESS)
# A model span is kept when the mean marginal probability of its tokens' labels reaches its type's
# threshold; chosen on the leave-one-corpus-out folds over corpora 1-7 (bench/deid_model_eval.py):
# GEO at 0.5 cost precision on four of six folds for no recall, NAME and ADDRESS gained at 0.5.
# A lone Han surname ("每周", "其余") came out at 0.50-0.53: NAME at 0.6.
THRESHOLDS = {NAME: 0.6, GEO: 0.7, ADDRESS: 0.5}
PRIORITY = 5  # below every rule detector: a rule span claiming the same characters wins
VETO = 0.9  # see _run: chosen on the same folds (0.8 lost more true names for the same precision)
VETOED = frozenset({10})  # safelist.PRIORITY: names by inversion (recall first)

_TOKEN_RE = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ]+(?:['’][A-Za-z]+)*|\d+|[\u3400-\u9fff]|\S")
# Segments tagged on their own: a line, or a sentence within it (the CRF sees no further anyway).
_SEGMENT_RE = re.compile(r"[^\n。！？；]+[\n。！？；]?")
_HAN = re.compile(r"[\u3400-\u9fff]")
_CANDIDATE = re.compile(r"[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]|[\u3400-\u9fff]")

_BLANKS = "   "
# The longest segment tagged at once, in characters. A segment's features are built whole (about
# 2.5 KB a character) and the budget is checked between segments (engine.Budget): one line of
# 1 Mi characters with no sentence end was otherwise a single segment of 2.6 GB and several CPU
# seconds past the budget (review 18). Cut at a space or punctuation in the second half where there
# is one; the CRF reads two tokens either side, so a cut changes at most the tags beside it.
MAX_SEGMENT = 2000
_CUT = re.compile(r"[\s,，、:：]")


def from_environment(environ=os.environ) -> bool:
    """SOVEREIGN_DEID_MODEL=1 (or on/true/yes) turns the tagger on; it is off by default: it costs
    about three times the rules' CPU per MiB (docs/deidentification.md, "A trained tagger")."""
    return environ.get("SOVEREIGN_DEID_MODEL", "0").strip().lower() in ("1", "on", "true", "yes")


_enabled = from_environment()
_local = threading.local()


def set_enabled(on: bool) -> None:
    global _enabled
    _enabled = bool(on)


def enabled() -> bool:
    return _enabled and _tagger_model() is not None


@lru_cache(maxsize=1)
def _tagger_model():
    try:
        import pycrfsuite  # noqa: F401 - optional: without it, the rules alone
    except ImportError:
        return None
    path = Path(os.environ.get("DEID_MODEL_PATH") or MODEL_PATH)
    return str(path) if path.exists() else None


def use_model(path) -> None:
    """Tag with the model file at `path` from now on (bench/deid_model_eval.py's folds)."""
    os.environ["DEID_MODEL_PATH"] = str(path)
    _tagger_model.cache_clear()


def _tagger(path: str | None = None):
    """One pycrfsuite.Tagger per thread (a Tagger is not thread-safe), opened once."""
    import pycrfsuite

    path = path or _tagger_model()
    cache = getattr(_local, "taggers", None)
    if cache is None:
        cache = _local.taggers = {}
    tagger = cache.get(path)
    if tagger is None:
        tagger = pycrfsuite.Tagger()
        tagger.open(path)
        cache[path] = tagger
    return tagger


def warm() -> None:
    """The word lists and this thread's tagger, now (engine.warm(), at a server's start)."""
    _lexicon()
    _tagger()


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, str]:
    """Lower-case word (or Han character) -> the word lists it is in, as one feature string."""
    from . import names, safelist

    given, family, surnames, given_chars, not_names = names.dictionaries()
    safe = safelist.safe_words()
    flags: dict[str, set[str]] = {}
    for tag, words in (("gn", given), ("fn", family), ("nn", not_names)):
        for w in words:
            flags.setdefault(w.lower(), set()).add(tag)
    for w in safe:
        flags.setdefault(w, set()).add("cw")
    for s in surnames:
        flags.setdefault(s[0], set()).add("zs" if len(s) == 1 else "zs2")
    for ch in given_chars:
        flags.setdefault(ch, set()).add("zg")
    return {w: "|".join(sorted(f)) for w, f in flags.items()}


def _shape(tok: str) -> str:
    if _HAN.match(tok):
        return "H"
    if tok.isdigit():
        return "d" if len(tok) < 3 else "dd"
    if tok.isalpha() or "'" in tok or "’" in tok:
        if tok.isupper():
            return "X" if len(tok) == 1 else "XX"
        if tok[0].isupper():
            return "Xx"
        return "x"
    return tok if len(tok) == 1 else "p"


def tokens(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    return [m.span() for m in _TOKEN_RE.finditer(text, start, len(text) if end is None else end)]


def rule_tags(toks: list[tuple[int, int]], spans) -> list[str]:
    """Per token, the type of the rule span over it ("O" where none), B-/I- as in the labels."""
    out = ["O"] * len(toks)
    if not spans:
        return out
    starts = [t[0] for t in toks]
    from bisect import bisect_left, bisect_right

    for s in spans:
        i = bisect_right(starts, s.start) - 1
        if i < 0 or toks[i][1] <= s.start:
            i += 1
        j = bisect_left(starts, s.end)
        first = True
        kind = s.type + "~" if s.priority in VETOED else s.type  # the inversion pass's names apart
        for k in range(max(i, 0), j):
            out[k] = ("B-" if first else "I-") + kind
            first = False
    return out


_CACHE_LIMIT = 50_000  # distinct words cached (then the caches start again): a few MB at most
_local_cache: dict[str, list[str]] = {}
_near_cache: dict[tuple[str, int], list[str]] = {}
_EDGE = {d: [f"w{d}=<s>", f"s{d}=<s>", f"g{d}=<s>"] for d in (-2, -1)} | {
    d: [f"w{d}=</s>", f"s{d}=</s>", f"g{d}="] for d in (1, 2)
}


def _local(word: str) -> list[str]:
    """The attributes of a token on its own (cached per spelling: most words recur)."""
    f = _local_cache.get(word)
    if f is None:
        if len(_local_cache) > _CACHE_LIMIT:
            _local_cache.clear()
        low, shape = word.lower(), _shape(word)
        f = ["b", "w=" + low, "s=" + shape, "g=" + _lexicon().get(low, "")]
        if shape in ("Xx", "x", "XX"):
            f += ["p3=" + low[:3], "x3=" + low[-3:], "x2=" + low[-2:], "l=" + str(min(len(low), 8))]
        _local_cache[word] = f
    return f


def _near(word: str, d: int) -> list[str]:
    """The attributes of a token seen from `d` tokens away."""
    f = _near_cache.get((word, d))
    if f is None:
        if len(_near_cache) > _CACHE_LIMIT:
            _near_cache.clear()
        low = word.lower()
        f = [f"w{d}=" + low, f"s{d}=" + _shape(word), f"g{d}=" + _lexicon().get(low, "")]
        _near_cache[(word, d)] = f
    return f


def features(text: str, toks: list[tuple[int, int]], rules: list[str] | None) -> list[list[str]]:
    """CRFsuite attribute lists, one per token: the token's own (_local), its neighbours' two
    either side (_near), shape pairs, Han bigrams, and the rules' tags (rule_tags) unless None."""
    words = [text[a:b] for a, b in toks]
    shapes = [_shape(w) for w in words]
    n = len(toks)
    out = []
    for i in range(n):
        word, shape = words[i], shapes[i]
        f = list(_local(word))
        prev_shape = shapes[i - 1] if i else "<s>"
        next_shape = shapes[i + 1] if i + 1 < n else "</s>"
        if shape == "H":
            low = word
            f += [
                "c-=" + (words[i - 1].lower() if i else "<s>") + low,
                "c+=" + low + (words[i + 1].lower() if i + 1 < n else "</s>"),
            ]
        # a token glued to the previous one ("O'Neil", "李娜") or after a space
        f.append("sp=1" if i and toks[i][0] > toks[i - 1][1] else "sp=0")
        for d in (-2, -1, 1, 2):
            j = i + d
            f += _near(words[j], d) if 0 <= j < n else _EDGE[d]
        f += ["ws-=" + prev_shape + shape, "ws+=" + shape + next_shape]
        if rules is not None:
            f += [
                "r=" + rules[i],
                "r-1=" + (rules[i - 1] if i else "<s>"),
                "r+1=" + (rules[i + 1] if i + 1 < n else "</s>"),
                "r-2=" + (rules[i - 2] if i > 1 else "<s>"),
                "r+2=" + (rules[i + 2] if i + 2 < n else "</s>"),
            ]
        out.append(f)
    return out


def labels(toks: list[tuple[int, int]], gold: list[dict]) -> list[str]:
    """BIO labels of TYPES from labelled spans (other types: O)."""
    return rule_tags(toks, [Span(g["start"], g["end"], g["type"]) for g in gold if g["type"] in TYPES])


def segments(text: str) -> list[tuple[int, int]]:
    """The lines and sentences of `text` that hold a candidate (a capitalised word, a Han character),
    each at most MAX_SEGMENT characters."""
    out = []
    for m in _SEGMENT_RE.finditer(text):
        a, end = m.span()
        while a < end:
            b = end if end - a <= MAX_SEGMENT else _cut(text, a, a + MAX_SEGMENT)
            if _CANDIDATE.search(text, a, b):
                out.append((a, b))
            a = b
    return out


def _cut(text: str, a: int, b: int) -> int:
    """Where to end a piece of an over-long segment that starts at `a`: after the last space or
    punctuation of its second half, else at `b` (a run with neither: Han text, or one long word)."""
    ends = [m.end() for m in _CUT.finditer(text, a + MAX_SEGMENT // 2, b)]
    return ends[-1] if ends else b


def _decode(tagger, toks, tags) -> list[tuple[int, int, str, float]]:
    out = []
    i, n = 0, len(tags)
    while i < n:
        tag = tags[i]
        if tag == "O":
            i += 1
            continue
        kind = tag[2:]
        j = i + 1
        while j < n and tags[j] == "I-" + kind:
            j += 1
        prob = sum(tagger.marginal(tags[k], k) for k in range(i, j)) / (j - i)
        out.append((toks[i][0], toks[j - 1][1], kind, prob))
        i = j
    return out


def _run(text, rule_spans, kinds, threshold, veto, path, check=None):
    """(the model's spans of `kinds` above `threshold`, the rule spans it vetoes). A rule span is
    vetoed when it is one of VETOED's (the recall-first inversion pass) and the model, which sees
    it as a feature, still gives its tokens a mean probability of "O" of at least `veto`.
    `check`: called before each segment (the request's budget; it raises when spent)."""
    tagger = _tagger(path)
    out: list[Span] = []
    dropped: set[Span] = set()
    rule_spans = sorted(rule_spans, key=lambda s: s.start)
    r = 0
    for start, end in segments(text):
        if check is not None:
            check()
        toks = tokens(text, start, end)
        if not toks:
            continue
        while r < len(rule_spans) and rule_spans[r].end <= start:
            r += 1
        q = r
        while q < len(rule_spans) and rule_spans[q].start < end:
            q += 1
        inside = rule_spans[r:q]
        tags = tagger.tag(features(text, toks, rule_tags(toks, inside)))
        for a, b, kind, prob in _decode(tagger, toks, tags):
            if kind in kinds and prob >= (THRESHOLDS[kind] if threshold is None else threshold):
                # beside a run of blanks: the answer screen blanks the de-identifier's placeholders
                # (answers.py), and what stood next to "[NAME]" ("其子", "'s") is no name itself;
                # 0.6 % of the labelled names and places of corpora 1-8 stand so, nearly all found
                # by the rules
                if text.endswith(_BLANKS, 0, a) or text.startswith(_BLANKS, b):
                    continue
                out.append(Span(a, b, kind, PRIORITY))
        if veto is not None:
            for s in inside:
                if s.type == NAME and s.priority in VETOED:
                    ks = [k for k, (a, b) in enumerate(toks) if a < s.end and s.start < b]
                    if ks and sum(tagger.marginal("O", k) for k in ks) / len(ks) >= veto:
                        dropped.add(s)
    return out, dropped


def tag(text: str, rule_spans, kinds, threshold: float | None = None, path: str | None = None) -> list[Span]:
    """The model's spans of `kinds` in `text` (offsets into `text`), above `threshold`, before any
    merging. `rule_spans`: the rules' resolved spans (the features)."""
    return _run(text, rule_spans, kinds, threshold, None, path)[0]


def merge(
    text: str,
    chosen: list[Span],
    kinds,
    threshold: float | None = None,
    veto: float | None = VETO,
    path=None,
    check=None,
) -> list[Span]:
    """The rules' resolved spans (less those vetoed) plus the model's that overlap none of them, in
    order. `check`: the request's budget, called between segments."""
    if not any(k in kinds for k in TYPES):
        return chosen
    added, dropped = _run(text, chosen, kinds, threshold, veto, path, check)
    if dropped:
        chosen = [s for s in chosen if s not in dropped]
    if not added:
        return chosen
    taken = bytearray(len(text))
    for s in chosen:
        taken[s.start : s.end] = b"\x01" * (s.end - s.start)
    extra = [s for s in added if taken.find(1, s.start, s.end) == -1]
    if not extra:
        return chosen
    return sorted(chosen + extra, key=lambda s: s.start)
