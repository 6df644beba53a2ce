"""Shortcuts that change how a detector runs, never what it finds: each is compared with the plain
way on both corpora's notes, the adversarial spellings and a fuzz (the texts of test_deid_cues)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from apps.gateway.deid import cues, geo, names, safelist
from tests.gateway.test_deid_cues import _texts, scratch_gates  # noqa: F401 - a fixture


def test_quiet_runs_skipped_by_english_names_would_have_yielded_nothing(monkeypatch):
    texts = list(_texts())
    fast = [list(names._english_names(t)) for t in texts]
    shape = names._run_shape
    monkeypatch.setattr(names, "_run_shape", lambda run: (shape(run)[0], False))  # every run walked
    assert [list(names._english_names(t)) for t in texts] == fast
    assert sum(map(len, fast)) > 1000


def test_quiet_runs():
    assert names._run_shape("The")[1]  # an ordinary word
    assert names._run_shape("Tylenol")[1]  # neither ordinary nor a name
    assert not names._run_shape("Maria")[1]  # a given name
    assert not names._run_shape("Gonzalez")[1]  # a family name: a credential after it makes it a name
    assert not names._run_shape("Husband Will")[1]  # a relation: a cue for the next word
    assert not names._run_shape("Positive Murphy")[1]  # not all ordinary
    assert names._run_shape("The Patient")[1]  # ordinary words, none a given name or a relation
    assert not names._run_shape("Blood Pressure")[1]  # "Pressure" is not an ordinary word: it may start a name
    assert names._run_shape("O'Brien's")[0] == ((0, 7, "O'Brien"),)


def _zh_hits_plain(text):
    """Every length from the longest name down, as _zh_hits did before it kept lengths per character."""
    full, _, short, _, end_re, start_re = geo._zh_tables()
    full_max, short_max = max(map(len, full)), max(map(len, short))
    last = 0
    for m in end_re.finditer(text):
        e = m.end()
        for length in range(min(full_max, e - last), 1, -1):
            if text[e - length : e] in full:
                yield e - length, e, "zh" if length > 2 else "zh2"
                last = e
                break
    for m in start_re.finditer(text):
        b = m.start()
        for length in range(min(short_max, len(text) - b), 1, -1):
            kind = short.get(text[b : b + length])
            if kind:
                yield b, b + length, kind
                break


def test_chinese_division_lookup_by_length_finds_what_every_length_finds():
    extra = ["上海市徐汇区漕溪北路88号", "浙江省杭州市西湖区", "内蒙古自治区呼和浩特市", "新疆维吾尔自治区乌鲁木齐市"]
    n = 0
    for text in [*_texts(), *extra]:
        hits = list(geo._zh_hits(text))
        assert hits == list(_zh_hits_plain(text))
        n += len(hits)
    assert n > 500


def _propagate_plain(text, found):
    """Other mentions of each Chinese name, one str.find scan per name."""
    phrases = {text[s:e] for s, e in found if names._is_han(text[s]) and e - s >= 2}
    for phrase in phrases:
        pos = text.find(phrase)
        while pos != -1:
            yield pos, pos + len(phrase)
            pos = text.find(phrase, pos + len(phrase))


def test_chinese_mentions_in_one_pass_are_those_str_find_finds():
    cases = [(t, list(names._chinese_names(t))) for t in _texts()]
    cases.append(("王王王王王，王王", [(0, 2)]))  # a name that overlaps itself: taken left to right
    cases.append(("李明李明明，张伟与李明", [(0, 2), (6, 8)]))
    n = 0
    for text, found in cases:
        zh = Counter(p for p in names._propagate(text, found) if names._is_han(text[p[0]]))
        assert zh == Counter(_propagate_plain(text, found))
        n += sum(zh.values())
    assert n > 100
    assert sorted(names._propagate("王王王王王，王王", [(0, 2)])) == [(0, 2), (2, 4), (6, 8)]


def test_chinese_mentions_from_first_characters_are_those_str_find_finds_in_the_same_order(monkeypatch):
    """The long-text way of names._mentions (a class of first characters, the phrases checked there) against
    the short-text way (one str.find scan per phrase), on every test text and on the notes joined."""
    texts = list(_texts())
    cases = [(t, {t[s:e] for s, e in names._chinese_names(t) if e - s >= 2}) for t in texts]
    joined = "\n".join(texts)
    cases.append((joined, {p for _, phrases in cases for p in phrases}))
    cases.append(("王王王王王，王王", {"王王"}))  # a phrase that overlaps itself: taken left to right
    cases.append(("李明李明明，张伟与李明明", {"李明", "李明明", "明明", "张伟"}))  # overlapping phrases, one end
    plain = [names._mentions(text, phrases) for text, phrases in cases]
    monkeypatch.setattr(names, "_MENTIONS_SCAN_FROM", 0)
    assert [names._mentions(text, phrases) for text, phrases in cases] == plain
    assert sum(map(len, plain)) > 1000
    assert plain[-1] == [(2, -2), (4, -2), (5, -3), (5, -2), (8, -2), (11, -2), (12, -3), (12, -2)]


def _alone_by_aho_corasick(text, taken):
    """Where safelist.english found the words taken before: every occurrence (one Aho-Corasick pass), less
    those inside a longer word."""
    import ahocorasick

    auto = ahocorasick.Automaton()
    for w in taken:
        auto.add_word(w, len(w))
    auto.make_automaton()
    for last, length in auto.iter(text):
        start, end = last + 1 - length, last + 1
        after = text[end : end + 1]
        if (
            (start and text[start - 1] in safelist._WORD_CHARS)
            or after in safelist._TOKEN_CHARS
            or (after == "-" and text[end + 1 : end + 2] in safelist._TOKEN_CHARS)
        ):
            continue
        yield start, end


def test_words_taken_by_the_inversion_pass_are_found_where_aho_corasick_found_them():
    texts = list(_texts())
    texts.append("\n".join(texts))
    texts.append(
        "Ann Annabel O'Brien- Smith-Jones Jones ÉJones Renée ×Kamau -Kamau Kamau's Kamau’ D'Arcy-O Mc-Kee-"
        " Zoë Zoëlle Ann-Marie Marie Ann-"
    )
    n = 0
    for text in texts:
        words = set(safelist._WORD_RE.findall(text))
        for taken in (words, {w for w in words if len(w) % 2}, {w for w in words if "-" in w or "'" in w}):
            if not taken:
                continue
            fast = [m.span() for m in safelist._WORD_RE.finditer(text) if m.group() in taken]
            assert fast == list(_alone_by_aho_corasick(text, taken))
            n += len(fast)
    assert n > 10000


@pytest.mark.usefixtures("scratch_gates")
def test_a_gate_with_one_lead_per_anchor():
    rx = re.compile(r"\b(?:ab|abc)\s?:|\bzz\w{0,3}")
    g = cues.gate(rx, {":": 4, "zz": 0})
    assert g.leads == {":": 4, "zz": 0} and g.lead == 4
    for text in ("abc : xx zzyy ab: abc:zz" + " " * 1000, "ab: zz " * 1000):  # sparse anchors, then dense
        assert [m.span() for m in g.finditer(text)] == [m.span() for m in rx.finditer(text)]
    short = cues.gate(rx, {":": 1, "zz": 0})  # a lead too short for "abc :" misses it: the lead matters
    sparse = "abc : zz" + " " * 500  # (anchors denser than one in cues.DENSE: the whole text is searched)
    assert [m.group() for m in short.finditer(sparse)] == ["zz"]
    assert [m.group() for m in short.finditer("abc : zz")] == ["abc :", "zz"]


def test_strong_cues_gated_by_word_starts_find_every_label():
    """Each label, verb and relation, in each case and spacing, inside and at the start of words."""
    labels = [*names._NAME_LABELS.split("|"), *names._LABELS.split("|")]
    labels = [w.replace("h?", "h") for w in labels] + [w.replace("h?", "") for w in labels if "h?" in w]
    words = [*labels, *[f"{w} name" for w in names._NAME_LABELS.split("|")], "name", " name"]
    words += [f"{v} by" for v in names._STRONG_VERBS] + [f"{v} to" for v in names._STRONG_VERBS]
    words += [*names._RELATION_WORDS, *[f"{r}'s name is" for r in names._RELATION_WORDS]]
    texts = []
    for w in words:
        for spelled in (w, w.upper(), w.title()):
            for before, after in (("", ": Ann"), ("Seen. ", " : Ann"), ("x", ":Ann"), ("per", "：Ann"), ("_", ", Ann")):
                texts.append(before + spelled + after)
    text = "\n".join(texts)
    g = names._STRONG_RE
    assert [m.span() for m in g.finditer(text)] == [m.span() for m in g.regex.finditer(text)]
    for t in texts:
        cues.hits.cache_clear()
        assert [m.span() for m in g.finditer(t)] == [m.span() for m in g.regex.finditer(t)], t
    assert len(list(g.regex.finditer(text))) > 500
    # "son" inside "person" is no start; at a word start it is
    cues.hits.cache_clear()
    assert list(g.starts("the person")) == [] and list(g.starts("the son")) == [4]


def test_strong_label_anchors_hold_every_whitespace_re_matches():
    assert {c for c in names._SPACES if c} == {chr(c) for c in range(0x110000) if re.fullmatch(r"\s", chr(c))}
    cues.hits.cache_clear()
    g = names._STRONG_RE
    text = "pt pt pt Pt\u3000: Ann. Firstname : Bo. first\tname： Cy. patientname: Di. name: Ed. pt"
    assert [m.span() for m in g.finditer(text)] == [m.span() for m in g.regex.finditer(text)]
    assert len(list(g.regex.finditer(text))) == 5
    assert list(g.starts("pt pt pt pt")) == []  # a label without its colon is no start


def _url_texts():
    """The shared texts, URLs in every shape the pattern takes, hosts at and past the 319-character
    limit, and candidates dense enough for the whole-text fallback."""
    yield from _texts()
    host = "a" * 63
    for n in (0, 1, 4, 5):
        for name in (".".join([host] * (n + 1)), ".".join(["b"] * (n + 1)), "x" * 64):
            for tld in (".com", ".US", ".health/p?q=1", ".cn)", ".ſom", ".io@"):
                yield f"see {name}{tld}, or -{name}{tld} or @{name}{tld} and {name}{tld}.{name}{tld}"
                yield f"{name}{tld}"
    yield "HTTPS://Example.ORG/x www.a.com ftp://h http://(a) hxxp://x wWw.b.io://c.us.uk"
    yield "x" * 400 + ".com " + "y" * 318 + ".com " + "y" * 319 + ".com"
    yield ".com" * 5000
    yield "a.cn " * 3000
    yield "www." * 2000 + " http://" * 2000


def test_url_starts_found_with_find_are_every_start_the_whole_text_search_finds(monkeypatch):
    from apps.gateway.deid import structured

    n = 0
    monkeypatch.setattr(structured, "_URL_FIND_FROM", 0)  # short texts too: every text takes the find path
    for text in _url_texts():
        fast = [m.span() for m in structured._url_matches(text)]
        assert fast == [m.span() for m in structured.URL_RE.finditer(text)], text[:80]
        n += len(fast)
    assert n > 500


def test_gates_with_a_lead_find_intersections_street_numbers_and_spanish_dates():
    """The gates whose anchor stands inside the match (与 after a road, the street word before the
    number, the month after "31 de "), on texts where matches start as far before their anchor as
    the pattern lets them."""
    from apps.gateway.deid import dates

    texts = [
        "住在天童南路与宁南北路交叉口附近，家住一二三四五六七八大街与解放大道路口；甲乙大道与丙路口",
        "地址：漕溪北路88号，一二三四五六七八路12号，长安大街3号，某某大道二十号，幸福巷5弄，南锣鼓巷胡同7号",
        "现住一二三四五六七八九路9号与一二三四五六七八九街与八路口 路与路与路 大道与大道",
        "el 31 de diciembre de 2023, 5 marzo, 05 de MARÇO, 1\tde agosto 2019, 12 Janeiro, 3 de\u3000maio",
        "x31 de enero, 31de mayo, 7 setiembre 1999, 31 de  julio",
    ]
    texts += [" ".join(texts), *_texts()]
    gates = (geo._ZH_INTERSECTION, geo._ZH_STREET_NUMBER, dates._SPANISH_RE)
    found = Counter()
    for text in texts:
        for g in gates:
            spans = [m.span() for m in g.finditer(text)]
            assert spans == [m.span() for m in g.regex.finditer(text)], (g.pattern[:30], text[:60])
            found[g.pattern] += len(spans)
    assert all(found[g.pattern] >= 3 for g in gates), found


def _needs_han(items) -> bool:
    """Every match of the parsed sequence consumes (or sees in a positive look-around) a character of
    U+4E00-U+9FFF: what lets find_dates skip the Chinese patterns on a text without one."""
    from re import _constants as C  # noqa: N812 - sre opcodes

    def han_set(op, av):
        if op is C.LITERAL:
            return 0x4E00 <= av <= 0x9FFF
        if op is C.IN:
            return bool(av) and all(
                (o is C.LITERAL and 0x4E00 <= a <= 0x9FFF) or (o is C.RANGE and a[0] >= 0x4E00 and a[1] <= 0x9FFF)
                for o, a in av
            )
        return False

    for op, av in items:
        if han_set(op, av):
            return True
        if op is C.ASSERT and _needs_han(av[1].data):
            return True
        if op is C.SUBPATTERN and _needs_han(av[3].data):
            return True
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT) and av[0] >= 1 and _needs_han(av[2].data):
            return True
        if op is C.BRANCH and all(_needs_han(alt.data) for alt in av[1]):
            return True
    return False


def test_chinese_date_patterns_skipped_without_han_each_need_a_han_character():
    from re import _parser

    from apps.gateway.deid import dates

    assert len(dates._HAN_RES) == 14
    for rx in dates._HAN_RES:
        assert _needs_han(_parser.parse(rx.pattern, rx.flags).data), rx.pattern[:40]
    assert not _needs_han(_parser.parse(r"(?:年)?\d", 0).data)  # the analysis is not vacuous
    assert not _needs_han(_parser.parse(r"年|\d", 0).data)
    # and on the texts: without Han, what the skipping find_dates finds is what every pattern finds
    han = re.compile("[\u4e00-\u9fff]")
    for text in _texts():
        plain = han.sub("", text)
        assert all(not list(rx.finditer(plain)) for rx in dates._HAN_RES)


def test_chinese_names_skipped_without_han_would_have_found_nothing():
    from re import _parser

    source = Path(names.__file__).read_text(encoding="utf-8")
    whole_text = set(re.findall(r"for m in (_ZH_\w+)\.finditer\(text\)", source))
    whole_text |= set(
        re.findall(r"for regex in \(([^)]*)\):\n\s+for m in regex\.finditer\(text\)", source)[0].split(", ")
    )
    assert whole_text == set(names._ZH_WHOLE_TEXT)  # a new whole-text pattern joins the list
    for name in names._ZH_WHOLE_TEXT:
        rx = getattr(names, name)
        rx = getattr(rx, "regex", rx)
        assert _needs_han(_parser.parse(rx.pattern, rx.flags).data), name
    han = re.compile("[\u4e00-\u9fff]")
    for text in _texts():
        assert list(names._chinese_names(han.sub("", text))) == []
