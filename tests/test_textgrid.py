"""Tests of scalenc.assembly.textgrid (our Praat TextGrid reader/writer)."""
from __future__ import annotations

import codecs
import pickle

import numpy as np
import pytest

from scalenc.assembly.textgrid import (
    NON_WORD_LABELS,
    Interval,
    TextGrid,
    TextGridError,
    TextGridWarning,
    Tier,
    TierNotFoundError,
    is_word,
    parse_textgrid,
    read_phones,
    read_textgrid,
    read_words,
)
from scalenc.synthetic.writers import write_textgrid

# --------------------------------------------------------------------------- helpers


def long_textgrid(tiers: list[tuple[str, str, list[tuple[str, str, str]]]], xmin: str = "0",
                  xmax: str = "3") -> str:
    """A long-format TextGrid written by hand, values inserted verbatim.

    ``tiers`` is a list of (class, name, [(xmin, xmax, quoted_text_or_raw), ...]);
    texts are inserted verbatim, so the caller writes the quotes."""
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
           f"xmin = {xmin} ", f"xmax = {xmax} ", "tiers? <exists> ", f"size = {len(tiers)} ", "item []: "]
    for k, (cls, name, ivs) in enumerate(tiers, start=1):
        out += [f"    item [{k}]:", f'        class = "{cls}" ', f'        name = "{name}" ',
                f"        xmin = {xmin} ", f"        xmax = {xmax} ", f"        intervals: size = {len(ivs)} "]
        for i, (a, b, text) in enumerate(ivs, start=1):
            out += [f"        intervals [{i}]:", f"            xmin = {a} ", f"            xmax = {b} ",
                    f"            text = {text} "]
    return "\n".join(out) + "\n"


PHONES_OK = [("0", "0.5", '"sp"'), ("0.5", "0.9", '"HH"'), ("0.9", "1.4", '"AH0"'), ("1.4", "3", '""')]
WORDS_OK = [("0", "0.5", '"sp"'), ("0.5", "1.4", '"Hello"'), ("1.4", "2.25", '"world"'), ("2.25", "3", '""')]


def sample_tiers() -> list[Tier]:
    return [
        Tier("phone", "IntervalTier", [Interval(0.0, 0.5, "sp"), Interval(0.5, 0.9, "HH"),
                                       Interval(0.9, 1.4, "AH0"), Interval(1.4, 3.0, "")]),
        Tier("word", "IntervalTier", [Interval(0.0, 0.5, ""), Interval(0.5, 1.4, 'say "hi"'),
                                      Interval(1.4, 2.125, "café"), Interval(2.125, 2.9999999999999996, "{LG}"),
                                      Interval(2.9999999999999996, 3.0, "end\nline")]),
        Tier("events", "TextTier", [Interval(1.0, 1.0, "bell"), Interval(2.5e-05, 2.5e-05, "")]),
    ]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["long", "short"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_round_trip(tmp_path, fmt, encoding):
    path = tmp_path / f"story_{fmt}_{encoding}.TextGrid"
    tiers = sample_tiers()
    write_textgrid(path, tiers, 0.0, 3.0, format=fmt, encoding=encoding)
    raw = path.read_bytes()
    bom = {"utf-8": b"", "utf-8-sig": codecs.BOM_UTF8, "utf-16": codecs.BOM_UTF16_LE,
           "utf-16-le": b"", "utf-16-be": b""}[encoding]
    assert raw.startswith(bom + ('File type' if encoding.startswith("utf-8") else "").encode())
    if encoding == "utf-16-be":
        assert raw[:2] == b"\x00F"
    tg = read_textgrid(path)
    assert tg.path == str(path)
    assert (tg.xmin, tg.xmax) == (0.0, 3.0)
    assert tg.tiers == tiers  # exact times (repr round-trip), labels with quotes, é, newlines
    assert [t.error for t in tg.tiers] == [None, None, None]
    words, start, end = read_words(path)
    assert words == ['say "hi"', "café", "end\nline"]
    assert start.dtype == np.float64 and end.dtype == np.float64
    np.testing.assert_array_equal(start, [0.5, 1.4, 2.9999999999999996])
    np.testing.assert_array_equal(end, [1.4, 2.125, 3.0])
    phones, ps, pe = read_phones(path)
    assert phones == ["HH", "AH0"]
    np.testing.assert_array_equal(ps, [0.5, 0.9])
    np.testing.assert_array_equal(pe, [0.9, 1.4])


def test_write_formats_look_like_praat(tmp_path):
    p = tmp_path / "a.TextGrid"
    write_textgrid(p, [Tier("word", "IntervalTier", [Interval(0, 1.5, 'a"b')])], 0, 1.5)
    text = p.read_text(encoding="utf-8")
    assert 'intervals: size = 1 \n        intervals [1]:\n            xmin = 0 \n            xmax = 1.5 \n' in text
    assert 'text = "a""b" ' in text
    write_textgrid(p, [Tier("word", "IntervalTier", [Interval(0, 1.5, 'a"b')])], 0, 1.5, format="short")
    assert p.read_text(encoding="utf-8").split("\n")[3:] == [
        "0", "1.5", "<exists>", "1", '"IntervalTier"', '"word"', "0", "1.5", "1", "0", "1.5", '"a""b"', ""]


def test_write_rejects_bad_arguments(tmp_path):
    p = tmp_path / "a.TextGrid"
    with pytest.raises(ValueError, match="format"):
        write_textgrid(p, [], 0, 1, format="chronological")
    with pytest.raises(ValueError, match="encoding"):
        write_textgrid(p, [], 0, 1, encoding="latin-1")
    with pytest.raises(ValueError, match="kind"):
        write_textgrid(p, [Tier("w", "PointTier", [])], 0, 1)
    with pytest.raises(ValueError, match="finite"):
        write_textgrid(p, [Tier("w", "IntervalTier", [Interval(0, float("nan"), "x")])], 0, 1)
    assert not p.exists()


def test_write_and_read_no_tiers(tmp_path):
    p = tmp_path / "empty_tiers.TextGrid"
    for fmt in ("long", "short"):
        write_textgrid(p, [], 0, 2.5, format=fmt)
        tg = read_textgrid(p)
        assert (tg.xmin, tg.xmax, tg.tiers) == (0.0, 2.5, [])
        with pytest.raises(TextGridError, match="no word tier"):
            tg.word_tier()
        assert tg.phone_tier() is None


# --------------------------------------------------------------------------- hand-written files


def test_hand_written_long_format_with_utf8_bom(tmp_path):
    text = long_textgrid([("IntervalTier", "phone", PHONES_OK), ("IntervalTier", "word", WORDS_OK)])
    p = tmp_path / "bom.TextGrid"
    p.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    words, start, end = read_words(p)
    assert words == ["Hello", "world"]
    np.testing.assert_array_equal(start, [0.5, 1.4])
    np.testing.assert_array_equal(end, [1.4, 2.25])
    tg = read_textgrid(p)
    assert tg.tier_names == ["phone", "word"]
    assert tg.word_tier().intervals[1] == Interval(0.5, 1.4, "Hello")


def test_hand_written_utf16_be_with_bom(tmp_path):
    text = long_textgrid([("IntervalTier", "phone", PHONES_OK), ("IntervalTier", "words", WORDS_OK)])
    p = tmp_path / "be.TextGrid"
    p.write_bytes(codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    assert read_words(p)[0] == ["Hello", "world"]


def test_hand_written_short_format(tmp_path):
    text = "\n".join([
        'File type = "ooTextFile short"', '"TextGrid"'.join(["Object class = ", ""]), "",
        "0", "2.5", "<exists>", "2",
        '"IntervalTier"', '"phone"', "0", "2.5", "3",
        "0", "0.3", '"sp"',
        "0.3", "0.8", '"D"',
        "0.8", "2.5", '"IH1"',
        '"IntervalTier"', '"word"', "0", "2.5", "3",
        "0", "0.3", '"{NS}"',
        "0.3", "1.75", '"did"',
        "1.75", "2.5", '"it"',
    ]) + "\n"
    p = tmp_path / "short.TextGrid"
    p.write_text(text, encoding="utf-8")
    tg = read_textgrid(p)
    assert [(t.name, t.kind, len(t.intervals)) for t in tg.tiers] == [("phone", "IntervalTier", 3),
                                                                      ("word", "IntervalTier", 3)]
    words, start, end = read_words(p)
    assert words == ["did", "it"]
    np.testing.assert_array_equal(start, [0.3, 1.75])
    np.testing.assert_array_equal(end, [1.75, 2.5])
    assert read_phones(p)[0] == ["D", "IH1"]


def test_hand_written_chronological_format(tmp_path):
    text = "\n".join([
        '"Praat chronological TextGrid text file"',
        "0 2.5   ! Time domain.",
        "3   ! Number of tiers.",
        '"IntervalTier" "phone" 0 2.5',
        '"IntervalTier" "word" 0 2.5',
        '"TextTier" "bell" 0 2.5',
        "",
        "! phone:",
        "1 0 0.4",
        '"HH"',
        "",
        "2 0 1.2",
        '"Hi"',
        "",
        "1 0.4 1.2",
        '"AY1"',
        "",
        "3 1.0",
        '"ding"',
        "",
        "2 1.2 2.5",
        '"there"',
        "",
        "1 1.2 2.5",
        '"DH EH1 R"',
    ]) + "\n"
    p = tmp_path / "chrono.TextGrid"
    p.write_text(text, encoding="utf-8")
    tg = read_textgrid(p)
    assert (tg.xmin, tg.xmax) == (0.0, 2.5)
    assert tg.tier("bell") == Tier("bell", "TextTier", [Interval(1.0, 1.0, "ding")])
    words, start, end = read_words(p)
    assert words == ["Hi", "there"]
    np.testing.assert_array_equal(start, [0.0, 1.2])
    np.testing.assert_array_equal(end, [1.2, 2.5])
    phones, ps, pe = read_phones(p)
    assert phones == ["HH", "AY1", "DH EH1 R"]
    np.testing.assert_array_equal(ps, [0.0, 0.4, 1.2])


def test_chronological_bad_time_breaks_only_its_tier(tmp_path):
    text = "\n".join([
        '"Praat chronological TextGrid text file"', "0 2   ! Time domain.", "2   ! Number of tiers.",
        '"IntervalTier" "phone" 0 2', '"IntervalTier" "word" 0 2',
        "1 0 oops", '"AA"', "2 0 1", '"one"', "1 1 2", '"B"', "2 1 2", '"two"',
    ]) + "\n"
    p = tmp_path / "chrono_bad.TextGrid"
    p.write_text(text, encoding="utf-8")
    assert read_words(p)[0] == ["one", "two"]
    with pytest.raises(TextGridError, match=r"chrono_bad\.TextGrid.*phone.*'oops'.*line 6"):
        read_phones(p)


def test_multiline_and_quoted_labels():
    text = long_textgrid([("IntervalTier", "word", [
        ("0", "1", '"He said ""yes"""'), ("1", "2", '""""'), ("2", "3", '"two\nlines"')])])
    tg = parse_textgrid(text)
    assert [iv.label for iv in tg.tiers[0].intervals] == ['He said "yes"', '"', "two\nlines"]
    assert tg.tiers[0].intervals[2] == Interval(2.0, 3.0, "two\nlines")


def test_quotes_inside_labels_read_words(tmp_path):
    text = long_textgrid([("IntervalTier", "phone", PHONES_OK),
                          ("IntervalTier", "word", [("0", "1", '"don""t"'), ("1", "3", '"""quoted"""')])])
    p = tmp_path / "quotes.TextGrid"
    p.write_text(text, encoding="utf-8")
    assert read_words(p)[0] == ['don"t', '"quoted"']


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("label", ["sp", "SP", " sp ", "sil", "{LG}", "{lg}", "{BR}", "{NS}", "{LS}", "{CG}",
                                   "{SL}", "{IG}", "sentence_start", "SENTENCE_END", "", "   ", "[sil]",
                                   "{GASP}"])
def test_non_word_labels(label):
    assert not is_word(label)


@pytest.mark.parametrize("label", ["Hello", "i", "spa", "lgbt", "sentence", "{LG}x", "brr"])
def test_word_labels(label):
    assert is_word(label)


def test_non_word_label_set_is_normalized():
    assert {"sp", "sil", "lg", "br", "ns", "ls", "cg", "sl", "ig", "sentence_start", "sentence_end", ""} \
        <= NON_WORD_LABELS
    assert all(s == s.strip().lower() and not s.startswith("{") for s in NON_WORD_LABELS)


def test_read_words_drops_non_words_keeps_case(tmp_path):
    labels = ["sp", "{LG}", "The", "{BR}", "{NS}", "{LS}", "sentence_start", "", "SP", "{lg}", "DOG",
              "sentence_end", "  barked  "]
    ivs = [(str(i), str(i + 1), f'"{lab}"') for i, lab in enumerate(labels)]
    p = tmp_path / "labels.TextGrid"
    p.write_text(long_textgrid([("IntervalTier", "phone", PHONES_OK), ("IntervalTier", "word", ivs)],
                               xmax=str(len(labels))), encoding="utf-8")
    words, start, end = read_words(p)
    assert words == ["The", "DOG", "barked"]
    np.testing.assert_array_equal(start, [2.0, 10.0, 12.0])
    np.testing.assert_array_equal(end, [3.0, 11.0, 13.0])


def test_read_words_sorts_by_start(tmp_path):
    p = tmp_path / "unsorted.TextGrid"
    write_textgrid(p, [Tier("word", "IntervalTier", [Interval(2, 3, "c"), Interval(0, 1, "a"),
                                                     Interval(1, 2, "b")])], 0, 3)
    words, start, end = read_words(p)
    assert words == ["a", "b", "c"]
    np.testing.assert_array_equal(start, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(end, [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- finding tiers


def test_word_tier_by_name_any_case(tmp_path):
    tiers = [Tier("phone", "IntervalTier", [Interval(0, 1, "AA")]),
             Tier("other", "IntervalTier", [Interval(0, 1, "nope")]),
             Tier("WORDS", "IntervalTier", [Interval(0, 1, "yes")])]
    p = tmp_path / "named.TextGrid"
    write_textgrid(p, tiers, 0, 1)
    tg = read_textgrid(p)
    assert tg.word_tier().name == "WORDS"
    assert tg.phone_tier().name == "phone"
    assert read_words(p)[0] == ["yes"]
    assert read_words(p, tier="other")[0] == ["nope"]
    assert read_words(p, tier=1)[0] == ["nope"]


def test_word_tier_by_position_when_unnamed(tmp_path):
    tiers = [Tier("", "IntervalTier", [Interval(0, 1, "AA")]),
             Tier("", "IntervalTier", [Interval(0, 1, "second")])]
    p = tmp_path / "unnamed.TextGrid"
    write_textgrid(p, tiers, 0, 1, format="short")
    tg = read_textgrid(p)
    assert tg.word_tier() is tg.tiers[1]
    assert tg.phone_tier() is tg.tiers[0]
    assert read_words(p)[0] == ["second"]
    assert read_phones(p)[0] == ["AA"]


def test_word_tier_by_position_skips_a_second_tier_named_phones():
    tg = TextGrid(0, 1, [Tier("spoken", "IntervalTier", []), Tier("Phones", "IntervalTier", [])])
    assert tg.word_tier().name == "spoken"
    assert tg.phone_tier().name == "Phones"


def test_single_unnamed_tier_has_no_word_tier(tmp_path):
    p = tmp_path / "single.TextGrid"
    write_textgrid(p, [Tier("transcript", "IntervalTier", [Interval(0, 1, "x")])], 0, 1)
    with pytest.raises(TextGridError, match=r"single\.TextGrid.*no word tier.*'transcript'"):
        read_words(p)
    assert read_phones(p) is None
    assert read_textgrid(p).phone_tier() is None


def test_tier_lookup_errors_name_available_tiers():
    tg = TextGrid(0, 1, [Tier("phone", "IntervalTier", []), Tier("word", "IntervalTier", [])], path="x.TextGrid")
    assert tg.tier("word") is tg.tiers[1]
    assert tg.tier(0) is tg.tiers[0]
    assert tg.tier(-1) is tg.tiers[1]
    with pytest.raises(KeyError) as e:
        tg.tier("Word")
    assert str(e.value) == "x.TextGrid: no tier named 'Word'; available tiers: 0: 'phone', 1: 'word'"
    with pytest.raises(TextGridError, match=r"x\.TextGrid: no tier with index 2 \(2 tiers\).*'phone'"):
        tg.tier(2)
    assert issubclass(TierNotFoundError, KeyError) and issubclass(TierNotFoundError, TextGridError)
    with pytest.raises(TypeError):
        tg.tier(1.0)


# --------------------------------------------------------------------------- robustness


def test_overlapping_phones_do_not_block_words(tmp_path):
    phones = [("0", "0.6", '"HH"'), ("0.5", "1.0", '"AH0"'), ("0.2", "0.4", '"L"'), ("1.0", "3", '"sil"')]
    p = tmp_path / "overlap.TextGrid"
    p.write_text(long_textgrid([("IntervalTier", "phone", phones), ("IntervalTier", "word", WORDS_OK)]),
                 encoding="utf-8")
    assert read_words(p)[0] == ["Hello", "world"]
    labels, start, end = read_phones(p)
    assert labels == ["HH", "L", "AH0"]
    np.testing.assert_array_equal(start, [0.0, 0.2, 0.5])
    np.testing.assert_array_equal(end, [0.6, 0.4, 1.0])


def test_garbage_time_in_phone_tier(tmp_path):
    phones = [("0", "0.5", '"sp"'), ("0.5", "zero.nine", '"HH"'), ("0.9", "3", '"AH0"')]
    p = tmp_path / "garbage.TextGrid"
    p.write_text(long_textgrid([("IntervalTier", "phone", phones), ("IntervalTier", "word", WORDS_OK)]),
                 encoding="utf-8")
    words, start, end = read_words(p)
    assert words == ["Hello", "world"]
    np.testing.assert_array_equal(start, [0.5, 1.4])
    tg = read_textgrid(p)
    assert tg.tiers[0].name == "phone" and tg.tiers[0].intervals == []
    assert tg.tiers[0].error == "intervals [2] xmax: expected a number, found 'zero.nine' (line 21)"
    with pytest.raises(TextGridError) as e:
        read_phones(p)
    msg = str(e.value)
    assert "garbage.TextGrid" in msg and "'phone'" in msg and "zero.nine" in msg and "line 21" in msg


@pytest.mark.parametrize("broken", ["wrong_count_high", "wrong_count_low", "unterminated", "junk_line"])
def test_malformed_phone_tier_long_format(tmp_path, broken):
    text = long_textgrid([("IntervalTier", "phone", PHONES_OK), ("IntervalTier", "word", WORDS_OK)])
    if broken == "wrong_count_high":
        text = text.replace("intervals: size = 4 ", "intervals: size = 5 ", 1)
    elif broken == "wrong_count_low":
        text = text.replace("intervals: size = 4 ", "intervals: size = 3 ", 1)
    elif broken == "unterminated":
        text = text.replace('text = "HH" ', 'text = "HH ', 1)
    else:
        text = text.replace('text = "HH" ', 'text = "HH" \n %%% garbage %%%', 1)
    p = tmp_path / f"{broken}.TextGrid"
    p.write_text(text, encoding="utf-8")
    assert read_words(p)[0] == ["Hello", "world"]
    tg = read_textgrid(p)
    assert tg.tiers[0].name == "phone" and tg.tiers[0].intervals == [] and tg.tiers[0].error
    with pytest.raises(TextGridError, match=rf"{broken}\.TextGrid.*phone tier 'phone'"):
        read_phones(p)


@pytest.mark.parametrize("broken", ["bad_time", "wrong_count_high", "wrong_count_low"])
def test_malformed_phone_tier_short_format(tmp_path, broken):
    p = tmp_path / f"short_{broken}.TextGrid"
    tiers = [Tier("phone", "IntervalTier", [Interval(0, 1, "AA"), Interval(1, 2, "B")]),
             Tier("word", "IntervalTier", [Interval(0, 2, "ab")])]
    write_textgrid(p, tiers, 0, 2, format="short")
    lines = p.read_text(encoding="utf-8").split("\n")
    assert lines[12:15] == ["0", "1", '"AA"'] and lines[11] == "2"
    if broken == "bad_time":
        lines[13] = "1.0.0"
    elif broken == "wrong_count_high":
        lines[11] = "3"
    else:
        lines[11] = "1"
    p.write_text("\n".join(lines), encoding="utf-8")
    assert read_words(p)[0] == ["ab"]
    with pytest.raises(TextGridError, match=rf"short_{broken}\.TextGrid.*'phone'"):
        read_phones(p)


def test_broken_word_tier_names_file_tier_and_problem(tmp_path):
    words = [("0", "1.4", '"Hello"'), ("1.4", "--undefined--", '"world"')]
    p = tmp_path / "badwords.TextGrid"
    p.write_text(long_textgrid([("IntervalTier", "phone", PHONES_OK), ("IntervalTier", "word", words)]),
                 encoding="utf-8")
    with pytest.raises(TextGridError) as e:
        read_words(p)
    msg = str(e.value)
    assert msg.startswith(str(p))
    assert "word tier 'word'" in msg and "'--undefined--'" in msg and "line 43" in msg
    assert read_phones(p)[0] == ["HH", "AH0"]


def test_word_interval_end_before_start_raises(tmp_path):
    words = [("0", "1", '"fine"'), ("2", "1.5", '"backwards"')]
    p = tmp_path / "backwards.TextGrid"
    p.write_text(long_textgrid([("IntervalTier", "phone", PHONES_OK), ("IntervalTier", "word", words)]),
                 encoding="utf-8")
    with pytest.raises(TextGridError, match=r"backwards\.TextGrid.*'backwards' from 2\.0 to 1\.5"):
        read_words(p)


def test_overlapping_words_raise_but_tiny_overlap_is_tolerated(tmp_path):
    p = tmp_path / "wordoverlap.TextGrid"
    write_textgrid(p, [Tier("word", "IntervalTier", [Interval(0, 1, "a"), Interval(0.999, 2, "b")])], 0, 2)
    with pytest.raises(TextGridError, match=r"wordoverlap\.TextGrid.*overlap.*'a'.*'b'"):
        read_words(p)
    write_textgrid(p, [Tier("word", "IntervalTier", [Interval(0, 1.0000005, "a"), Interval(1, 2, "b")])], 0, 2)
    assert read_words(p)[0] == ["a", "b"]
    # a word inside a long earlier word (not adjacent after sorting) is caught too
    write_textgrid(p, [Tier("word", "IntervalTier", [Interval(0, 5, "long"), Interval(1, 2, "x"),
                                                     Interval(3, 4, "y")])], 0, 5)
    with pytest.raises(TextGridError, match="'long'.*'x'"):
        read_words(p)


# --------------------------------------------------------------------------- file-level errors


def test_undecodable_bytes_raise_naming_the_file(tmp_path):
    data = b"\xff\xfe\xfd garbage"
    for codec in ("utf-8", "utf-16", "utf-16-le", "utf-16-be"):
        with pytest.raises(UnicodeDecodeError):
            data.decode(codec)
    p = tmp_path / "undecodable.TextGrid"
    p.write_bytes(data)
    with pytest.raises(TextGridError, match=r"undecodable\.TextGrid.*cannot decode.*UTF-8 or UTF-16"):
        read_textgrid(p)
    p2 = tmp_path / "latin1.TextGrid"
    p2.write_bytes(long_textgrid([("IntervalTier", "word", [("0", "1", '"caf\xe9"')])]).encode("latin-1"))
    with pytest.raises(TextGridError, match=r"latin1\.TextGrid.*cannot decode"):
        read_words(p2)


@pytest.mark.parametrize("content", [b"", b"   \n\n  \t\n", codecs.BOM_UTF8, codecs.BOM_UTF16_LE])
def test_empty_file_raises(tmp_path, content):
    p = tmp_path / "empty.TextGrid"
    p.write_bytes(content)
    with pytest.raises(TextGridError, match=r"empty\.TextGrid: the file is empty"):
        read_textgrid(p)


def test_missing_header_raises(tmp_path):
    p = tmp_path / "noheader.TextGrid"
    p.write_text("xmin = 0\nxmax = 1\n", encoding="utf-8")
    with pytest.raises(TextGridError, match=r"noheader\.TextGrid: missing TextGrid header.*line 1"):
        read_textgrid(p)
    p.write_text('File type = "ooTextFile"\nObject class = "Sound"\n\nxmin = 0\n', encoding="utf-8")
    with pytest.raises(TextGridError, match=r"noheader\.TextGrid: the object class is 'Sound'"):
        read_textgrid(p)


@pytest.mark.parametrize("fmt", ["long", "short", "chronological"])
def test_non_numeric_time_domain_raises(fmt):
    if fmt == "long":
        text = long_textgrid([("IntervalTier", "word", [("0", "1", '"a"')])], xmax="1s")
        line = 5
    elif fmt == "short":
        text = 'File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\nabc\n<exists>\n0\n'
        line = 5
    else:
        text = '"Praat chronological TextGrid text file"\n0 end   ! Time domain.\n1\n'
        line = 2
    with pytest.raises(TextGridError) as e:
        parse_textgrid(text, path="dom.TextGrid")
    assert str(e.value).startswith("dom.TextGrid: ")
    assert "expected a number" in str(e.value)
    assert e.value.line == line and e.value.path == "dom.TextGrid"


def test_error_without_path_and_pickling():
    with pytest.raises(TextGridError, match=r"^<string>: the file is empty$"):
        parse_textgrid("\n")
    err = TextGridError("boom", "a/b.TextGrid", 7)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) == "a/b.TextGrid: boom (line 7)"
    assert (again.problem, again.path, again.line) == ("boom", "a/b.TextGrid", 7)


def test_declared_tier_count_mismatch_warns():
    text = long_textgrid([("IntervalTier", "phone", PHONES_OK), ("IntervalTier", "word", WORDS_OK)])
    text = text.replace("size = 2 ", "size = 3 ", 1)
    with pytest.warns(TextGridWarning, match="declares 3 tiers but 2"):
        tg = parse_textgrid(text)
    assert tg.tier_names == ["phone", "word"]


def test_text_tier_long_format_parsed():
    text = "\n".join([
        'File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", "xmax = 2",
        "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "TextTier"',
        '        name = "bell"', "        xmin = 0", "        xmax = 2", "        points: size = 2",
        "        points [1]:", "            time = 0.5", '            mark = "ding"',
        "        points [2]:", "            number = 1.5", '            mark = "dong"',
    ])
    tg = parse_textgrid(text)
    assert tg.tiers == [Tier("bell", "TextTier", [Interval(0.5, 0.5, "ding"), Interval(1.5, 1.5, "dong")])]


def test_fast_and_careful_long_parsers_agree(monkeypatch):
    import scalenc.assembly.textgrid as tgmod

    text = long_textgrid([("IntervalTier", "phone", PHONES_OK),
                          ("IntervalTier", "word", WORDS_OK + [("3", "3", '"a ""b""\nc"')])])
    fast = parse_textgrid(text)
    monkeypatch.setattr(tgmod, "_fast_interval_tier", lambda block: None)
    careful = parse_textgrid(text)
    assert fast == careful
    assert careful.tiers[1].intervals[-1] == Interval(3.0, 3.0, 'a "b"\nc')
