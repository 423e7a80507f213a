"""Read Praat TextGrid files (our own parser, no third-party library).

The writer used to make test data lives in :mod:`scalenc.synthetic.writers`.

Used to read the word and phone timings of the LeBel fMRI dataset (OpenNeuro
ds003020, ``derivative/TextGrids/<story>.TextGrid``): a phone tier and a word tier,
the word tier usually second and named ``"word"`` or ``"words"``.

Formats
-------
Three of Praat's text formats are read; the format is detected from the header.

*Long text format* ("text file")::

    File type = "ooTextFile"
    Object class = "TextGrid"

    xmin = 0
    xmax = 2.5
    tiers? <exists>
    size = 2
    item []:
        item [1]:
            class = "IntervalTier"
            name = "phone"
            xmin = 0
            xmax = 2.5
            intervals: size = 1
            intervals [1]:
                xmin = 0
                xmax = 2.5
                text = "sp"
        item [2]:
            class = "TextTier"
            name = "events"
            xmin = 0
            xmax = 2.5
            points: size = 1
            points [1]:
                number = 1.2      (older files write "time =")
                mark = "bell"

  Every ``item [k]:`` block is parsed on its own, so one malformed tier (a
  non-numeric time, a wrong ``size``, garbage, an unterminated string) does not
  prevent reading the others (see *Robustness* below). Limitation: the blocks are
  found by lines that consist of ``item [k]:`` only; a multi-line label containing
  such a line would be cut there.

*Short text format* ("short text file"): the same values in the same order
without the keys: ``xmin``, ``xmax``, ``<exists>``, the tier count, then per tier
``"IntervalTier"`` (or ``"TextTier"``), ``"name"``, xmin, xmax, the interval count
and ``xmin xmax "text"`` triplets (``time "mark"`` pairs for a TextTier). The
header may also read ``File type = "ooTextFile short"``.

*Chronological text format*::

    "Praat chronological TextGrid text file"
    0 2.5   ! Time domain.
    2   ! Number of tiers.
    "IntervalTier" "phone" 0 2.5
    "IntervalTier" "word" 0 2.5
    1 0 0.4
    "HH"
    2 0 0.9
    "hello"

  then one entry per interval, in time order across tiers: ``tierNumber xmin xmax``
  (``tierNumber time`` for a TextTier) followed by the quoted text.

In all formats strings use Praat quoting: a ``"`` inside a string is written
``""``, and a string may span several lines; outside strings, ``!`` starts a
comment that runs to the end of the line. The binary format is not supported.

Encodings
---------
A UTF-8 byte-order mark, or a UTF-16 little- or big-endian one, selects the
encoding; UTF-16 without a mark is recognised from its pattern of NUL bytes;
anything else must be UTF-8. Undecodable bytes raise :class:`TextGridError`
(there is no silent fallback to Latin-1). Line ends may be ``\\n``, ``\\r\\n`` or
``\\r``.

Non-word labels
---------------
:func:`read_words` and :func:`read_phones` drop the intervals whose label is not
a word (or a phone). A label is compared after stripping whitespace, lower-casing
and stripping the brackets ``{} [] <>`` around it (``"{LG}"`` -> ``"lg"``), against
:data:`NON_WORD_LABELS`:

==================  ===========================================================
``""``              empty interval (silence between words, gap filler)
``sp``              short pause (forced-aligner silence)
``sil``             silence
``spn``             spoken noise (Montreal Forced Aligner)
``lg``              laughter (``{LG}``)
``br``              breath (``{BR}``)
``ns``              noise (``{NS}``)
``ls``              lip smack (``{LS}``)
``cg``              cough (``{CG}``)
``sl``              silence annotation (``{SL}``)
``ig``              ignored / unintelligible stretch (``{IG}``)
``sentence_start``  sentence-boundary marker
``sentence_end``    sentence-boundary marker
==================  ===========================================================

In addition, any label wholly enclosed in curly braces (``{GASP}``) is an
annotation, not a word. Word labels keep their original case.

Robustness
----------
A tier that cannot be parsed is kept as a :class:`Tier` with ``intervals=[]`` and
its problem in :attr:`Tier.error` (a warning is logged); the other tiers are read
normally. :func:`read_words` raises only if the *word* tier is broken, and
:func:`read_phones` raises if the phone tier is broken. Problems of the file as a
whole (empty file, missing header, non-numeric time domain, undecodable bytes)
raise :class:`TextGridError`, whose message names the file, the problem and, when
known, the line.
"""
from __future__ import annotations

import codecs
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "NON_WORD_LABELS",
    "Interval",
    "TextGrid",
    "TextGridError",
    "TextGridWarning",
    "Tier",
    "TierNotFoundError",
    "is_word",
    "parse_textgrid",
    "read_phones",
    "read_textgrid",
    "read_words",
]

logger = logging.getLogger(__name__)

INTERVAL_TIER = "IntervalTier"
TEXT_TIER = "TextTier"
_TIER_CLASSES = (INTERVAL_TIER, TEXT_TIER)
CHRONOLOGICAL_HEADER = "Praat chronological TextGrid text file"
WORD_TIER_NAMES = frozenset({"word", "words"})
PHONE_TIER_NAMES = frozenset({"phone", "phones"})
#: Word intervals may overlap by at most this many seconds (rounding in the files).
OVERLAP_TOLERANCE = 1e-6

NON_WORD_LABELS: frozenset[str] = frozenset({
    "",                # empty interval
    "sp",              # short pause
    "sil",             # silence
    "spn",             # spoken noise (Montreal Forced Aligner)
    "lg",              # {LG} laughter
    "br",              # {BR} breath
    "ns",              # {NS} noise
    "ls",              # {LS} lip smack
    "cg",              # {CG} cough
    "sl",              # {SL} silence annotation
    "ig",              # {IG} ignored / unintelligible
    "sentence_start",  # sentence-boundary marker
    "sentence_end",    # sentence-boundary marker
})
"""Labels that are not words (nor phones), compared lower-cased, whitespace and
surrounding ``{} [] <>`` stripped; see the module docstring for their meaning."""


# --------------------------------------------------------------------------- errors


class TextGridError(ValueError):
    """A TextGrid file cannot be read (or a requested tier is not usable).

    The message always names the file (``<string>`` for text parsed without a path)
    and the problem, and the line number when it is known.

    Parameters
    ----------
    problem : str
        What is wrong.
    path : str or path-like, optional
        The file.
    line : int, optional
        1-based line number in the file.

    Attributes
    ----------
    problem : str
    path : str or None
    line : int or None
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        self.line = line
        where = self.path if self.path is not None else "<string>"
        message = f"{where}: {problem}"
        if line is not None:
            message += f" (line {line})"
        super().__init__(message)

    def __reduce__(self):  # keep the three fields through pickling (dask workers)
        return (type(self), (self.problem, self.path, self.line))


class TierNotFoundError(TextGridError, KeyError):
    """No tier matches the requested name or index (both a :class:`TextGridError`
    and a :class:`KeyError`); the message lists the available tiers."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


class TextGridWarning(UserWarning):
    """A TextGrid is inconsistent but still readable (e.g. the declared tier count
    differs from the tiers found)."""


class _ParseError(Exception):
    """Internal: a problem at a known line, turned into a TextGridError or Tier.error."""

    def __init__(self, problem: str, line: int | None = None):
        self.problem = problem
        self.line = line
        super().__init__(self.text())

    def text(self) -> str:
        return self.problem if self.line is None else f"{self.problem} (line {self.line})"


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class Interval:
    """One interval of an interval tier, or one point of a text tier.

    Attributes
    ----------
    start, end : float
        Times in seconds; ``start == end`` for a point of a ``TextTier``.
    label : str
        The text as stored in the file (not stripped).
    """

    start: float
    end: float
    label: str


@dataclass
class Tier:
    """One tier of a TextGrid.

    Attributes
    ----------
    name : str
        Tier name as stored (``""`` when a broken tier's name could not be read).
    kind : str
        ``"IntervalTier"`` or ``"TextTier"`` (points: ``start == end``). For a broken
        tier this is a best guess.
    intervals : list of Interval
        In file order; empty when the tier could not be parsed.
    error : str or None
        Why the tier could not be parsed (with the line number), else None.
    """

    name: str
    kind: str
    intervals: list[Interval] = field(default_factory=list)
    error: str | None = None


def _norm_name(name: str) -> str:
    return name.strip().lower()


@dataclass
class TextGrid:
    """A parsed TextGrid.

    Attributes
    ----------
    xmin, xmax : float
        The time domain, seconds.
    tiers : list of Tier
    path : str or None
        The file it was read from (used in error messages).
    """

    xmin: float
    xmax: float
    tiers: list[Tier]
    path: str | None = None

    @property
    def tier_names(self) -> list[str]:
        """Names of the tiers, in order."""
        return [t.name for t in self.tiers]

    def _available(self) -> str:
        return ", ".join(f"{i}: {t.name!r}" for i, t in enumerate(self.tiers)) or "none"

    def tier(self, key: str | int) -> Tier:
        """Return a tier by exact name (the first one with that name) or by index.

        Parameters
        ----------
        key : str or int
            Tier name, or 0-based index (negative indices count from the end).

        Returns
        -------
        Tier

        Raises
        ------
        TierNotFoundError
            (a ``KeyError`` and a ``TextGridError``) naming the file and the
            available tiers.
        """
        if isinstance(key, str):
            for t in self.tiers:
                if t.name == key:
                    return t
            raise TierNotFoundError(f"no tier named {key!r}; available tiers: {self._available()}", self.path)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            n = len(self.tiers)
            if -n <= int(key) < n:
                return self.tiers[int(key)]
            raise TierNotFoundError(f"no tier with index {int(key)} ({n} tiers); available tiers: "
                                    f"{self._available()}", self.path)
        raise TypeError(f"tier key must be a name (str) or an index (int), not {type(key).__name__}")

    def _word_tier_index(self) -> int:
        for i, t in enumerate(self.tiers):
            if _norm_name(t.name) in WORD_TIER_NAMES:
                return i
        if len(self.tiers) >= 2:
            if _norm_name(self.tiers[1].name) not in PHONE_TIER_NAMES:
                return 1
            if _norm_name(self.tiers[0].name) not in PHONE_TIER_NAMES:
                return 0
        raise TextGridError("no word tier: no tier is named 'word' or 'words' and there is no second "
                            f"tier to use instead; available tiers: {self._available()}", self.path)

    def word_tier(self) -> Tier:
        """Return the word tier.

        The first tier named ``"word"`` or ``"words"`` (any case, surrounding spaces
        ignored); else, when there are at least two tiers, the second one (or the
        first one if the second is named ``"phone"``/``"phones"`` and the first is not).

        Returns
        -------
        Tier

        Raises
        ------
        TextGridError
            No such tier; the message names the file and the available tiers.
        """
        return self.tiers[self._word_tier_index()]

    def phone_tier(self) -> Tier | None:
        """Return the phone tier, or None.

        The first tier named ``"phone"`` or ``"phones"`` (any case); else the first
        tier, provided a word tier exists (see :meth:`word_tier`) and is not the
        first tier; else None.

        Returns
        -------
        Tier or None
        """
        for t in self.tiers:
            if _norm_name(t.name) in PHONE_TIER_NAMES:
                return t
        try:
            w = self._word_tier_index()
        except TextGridError:
            return None
        return self.tiers[0] if w != 0 else None


# --------------------------------------------------------------------------- labels


def _normalize_label(label: str) -> str:
    return label.strip().lower().strip("{}[]<>").strip()


def is_word(label: str) -> bool:
    """Tell whether a word-tier label is a word.

    Parameters
    ----------
    label : str
        The label as stored in the file.

    Returns
    -------
    bool
        False for the labels of :data:`NON_WORD_LABELS` (compared lower-cased,
        whitespace and surrounding ``{} [] <>`` stripped, so ``"SP"``, ``" {lg} "``,
        ``"[sil]"`` and ``""`` are not words) and for any label wholly enclosed in
        curly braces (``"{GASP}"``); True otherwise.
    """
    s = label.strip()
    if len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        return False
    return _normalize_label(s) not in NON_WORD_LABELS


# --------------------------------------------------------------------------- decoding


def _decode(data: bytes, path: str | None) -> str:
    """Bytes -> text: BOMs first, then UTF-16 sniffed from NUL bytes, else UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        encoding, body = "utf-8", data[len(codecs.BOM_UTF8):]
    elif data.startswith(codecs.BOM_UTF16_LE):
        encoding, body = "utf-16-le", data[2:]
    elif data.startswith(codecs.BOM_UTF16_BE):
        encoding, body = "utf-16-be", data[2:]
    else:
        encoding, body = _sniff_utf16(data) or "utf-8", data
    try:
        return body.decode(encoding)
    except UnicodeDecodeError as e:
        raise TextGridError(f"cannot decode the file as UTF-8 or UTF-16 (tried {encoding}: {e.reason} "
                            f"at byte {e.start + len(data) - len(body)})", path) from None


def _sniff_utf16(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when the NUL bytes sit at odd/even offsets (ASCII
    text in UTF-16 without BOM), else None."""
    sample = data[:4096]
    if len(sample) < 4 or b"\x00" not in sample:
        return None
    sample = sample[: len(sample) // 2 * 2]
    even_nul = sample[0::2].count(0)
    odd_nul = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_nul >= half // 2 and even_nul == 0:
        return "utf-16-le"
    if even_nul >= half // 2 and odd_nul == 0:
        return "utf-16-be"
    return None


# --------------------------------------------------------------------------- tokens


class _Token(NamedTuple):
    kind: str  # "str" (quoted, unescaped), "bare", "flag" (<exists>), "eq"
    value: str
    line: int


_TOKEN_RE = re.compile(r"""
    (?P<ws>\s*)                        # whitespace before the token (newlines counted)
    (?:
        (?P<comment>![^\n]*)
      | (?P<str>"[^"]*(?:""[^"]*)*")    # Praat string: "" is a literal quote
      | (?P<quote>")                    # a quote that does not close: unterminated
      | (?P<flag><[^<>\s"=!]*>)
      | (?P<eq>=)
      | (?P<bare>[^\s"=!]+)
      | $
    )""", re.VERBOSE)


def _tokenize(text: str, first_line: int = 1) -> list[_Token]:
    """Split text into tokens; ``!`` comments and whitespace are dropped."""
    tokens: list[_Token] = []
    append = tokens.append
    line = first_line
    for m in _TOKEN_RE.finditer(text):  # the alternatives cover every character
        ws = m.group("ws")
        if "\n" in ws:
            line += ws.count("\n")
        kind = m.lastgroup
        if kind == "bare" or kind == "eq" or kind == "flag":
            append(_Token(kind, m.group(kind), line))
        elif kind == "str":
            s = m.group(kind)
            append(_Token("str", s[1:-1].replace('""', '"'), line))
            line += s.count("\n")
        elif kind == "quote":
            raise _ParseError("unterminated string (no closing '\"')", line)
    return tokens


def _describe(tok: _Token) -> str:
    return f'the string "{tok.value}"' if tok.kind == "str" else repr(tok.value)


def _to_float(tok: _Token, what: str) -> float:
    if tok.kind == "bare":
        try:
            x = float(tok.value)
        except ValueError:
            pass
        else:
            if math.isfinite(x):
                return x
    raise _ParseError(f"{what}: expected a number, found {_describe(tok)}", tok.line)


def _to_int(tok: _Token, what: str) -> int:
    if tok.kind == "bare":
        try:
            n = int(tok.value)
        except ValueError:
            pass
        else:
            if n >= 0:
                return n
    raise _ParseError(f"{what}: expected a non-negative integer, found {_describe(tok)}", tok.line)


def _to_str(tok: _Token, what: str) -> str:
    if tok.kind == "str":
        return tok.value
    raise _ParseError(f"{what}: expected a quoted string, found {_describe(tok)}", tok.line)


class _TokenCursor:
    """Sequential reader of values (short and chronological formats)."""

    def __init__(self, tokens: list[_Token], end_line: int):
        self.tokens = tokens
        self.pos = 0
        self.end_line = end_line

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, what: str, convert):
        if self.pos >= len(self.tokens):
            raise _ParseError(f"unexpected end of file while reading {what}", self.end_line)
        value = convert(self.tokens[self.pos], what)  # does not advance on failure
        self.pos += 1
        return value

    def number(self, what: str) -> float:
        return self._take(what, _to_float)

    def integer(self, what: str) -> int:
        return self._take(what, _to_int)

    def string(self, what: str) -> str:
        return self._take(what, _to_str)

    def flag(self, what: str) -> str:
        def conv(tok: _Token, w: str) -> str:
            if tok.kind == "flag":
                return tok.value
            raise _ParseError(f"{w}: expected <exists> or <absent>, found {_describe(tok)}", tok.line)
        return self._take(what, conv)


# --------------------------------------------------------------------------- long format


class _Field(NamedTuple):
    key: str        # lower-cased key ("xmin", "size", "tiers?")
    value: _Token
    prefix: str     # bare words before the key since the previous field ("intervals [1]:")
    line: int


def _fields(tokens: list[_Token]) -> tuple[list[_Field], list[_Token]]:
    """Group long-format tokens into ``key = value`` fields (and ``key <flag>``);
    returns the fields and the bare tokens left after the last one."""
    fields: list[_Field] = []
    pending: list[_Token] = []
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok.kind == "bare":
            pending.append(tok)
            i += 1
        elif tok.kind in ("eq", "flag"):
            if not pending:
                raise _ParseError(f"{_describe(tok)} without a key before it", tok.line)
            key = pending.pop()
            if tok.kind == "eq":
                if i + 1 >= n or tokens[i + 1].kind == "eq":
                    raise _ParseError(f"missing value after '{key.value} ='", tok.line)
                value = tokens[i + 1]
                i += 2
            else:
                value = tok
                i += 1
            prefix = " ".join([p.value for p in pending]) if pending else ""
            fields.append(_Field(key.value.lower(), value, prefix, key.line))
            pending = []
        else:
            raise _ParseError(f"unexpected {_describe(tok)}", tok.line)
    return fields, pending


_ENTRY_RE = re.compile(r"(intervals|points)\s*\[\s*(\d+)\s*\]\s*:")
_SIZE_PREFIX_RE = re.compile(r"(intervals|points)\s*:?")


class _FieldCursor:
    def __init__(self, fields: list[_Field], end_line: int, where: str):
        self.fields = fields
        self.i = 0
        self.end_line = end_line
        self.where = where

    def next(self, keys: tuple[str, ...], what: str, prefix_ok: Callable[[str], bool] | None = None) -> _Field:
        if self.i >= len(self.fields):
            raise _ParseError(f"unexpected end of {self.where}: expected {what}", self.end_line)
        f = self.fields[self.i]
        if f.key not in keys:
            raise _ParseError(f"expected {what}, found '{f.key}'", f.line)
        if prefix_ok is None:
            if f.prefix:
                raise _ParseError(f"unexpected text {f.prefix!r} before '{f.key}'", f.line)
        elif not prefix_ok(f.prefix):
            raise _ParseError(f"unexpected text {f.prefix!r} before '{f.key}' (expected {what})", f.line)
        self.i += 1
        return f

    def done(self) -> bool:
        return self.i >= len(self.fields)


_ITEM_RE = re.compile(r"\s*item\s*\[\s*(\d+)\s*\]\s*:\s*")
_NAME_RE = re.compile(r'^\s*name\s*=\s*"((?:[^"\n]|"")*)"', re.MULTILINE)
_CLASS_RE = re.compile(r'^\s*class\s*=\s*"((?:[^"\n]|"")*)"', re.MULTILINE)


def _parse_long(lines: list[str], body: int, path: str | None) -> TextGrid:
    items = [(i, int(m.group(1))) for i in range(body, len(lines)) if (m := _ITEM_RE.fullmatch(lines[i]))]
    head_end = items[0][0] if items else len(lines)
    try:
        tokens = _tokenize("\n".join(lines[body:head_end]), body + 1)
        fields, trailing = _fields(tokens)
        cur = _FieldCursor(fields, head_end, "header")
        xmin = _to_float(cur.next(("xmin",), "'xmin = <number>'").value, "xmin")
        xmax = _to_float(cur.next(("xmax",), "'xmax = <number>'").value, "xmax")
        flag = cur.next(("tiers?",), "'tiers? <exists>'")
        if flag.value.value not in ("<exists>", "<absent>"):
            raise _ParseError(f"tiers?: expected <exists> or <absent>, found {_describe(flag.value)}", flag.line)
        exists = flag.value.value == "<exists>"
        declared = _to_int(cur.next(("size",), "'size = <number of tiers>'").value, "size") if exists else 0
        if not cur.done():
            f = cur.fields[cur.i]
            raise _ParseError(f"unexpected '{f.key}' in the header", f.line)
        rest = "".join(t.value for t in trailing)
        if rest not in ("", "item[]:"):
            raise _ParseError(f"unexpected text {' '.join(t.value for t in trailing)!r} in the header",
                              trailing[0].line)
    except _ParseError as e:
        raise TextGridError(e.problem, path, e.line) from None
    _check_domain(xmin, xmax, path)

    tiers: list[Tier] = []
    for j, (start, number) in enumerate(items):
        stop = items[j + 1][0] if j + 1 < len(items) else len(lines)
        block = "\n".join(lines[start + 1:stop])
        if number != j + 1:
            warnings.warn(f"{path or '<string>'}: item [{number}] found where item [{j + 1}] was expected "
                          f"(line {start + 1})", TextGridWarning, stacklevel=3)
        info: dict[str, str] = {}
        try:
            tiers.append(_parse_long_item(block, start + 2, stop, info))
        except _ParseError as e:
            tiers.append(_broken_tier(info, block, e, f"item [{number}]", path))
    if declared != len(items):
        if not items:
            raise TextGridError(f"the header declares {declared} tiers but no 'item [k]:' block was found", path)
        warnings.warn(f"{path or '<string>'}: the header declares {declared} tiers but {len(items)} "
                      f"'item [k]:' blocks were found; reading all of them", TextGridWarning, stacklevel=3)
    return TextGrid(xmin, xmax, tiers, path)


_NUM = r'([^\s"=!]+)'
_STRING = r'"([^"]*(?:""[^"]*)*)"'
_FAST_HEAD_RE = re.compile(rf'\s*class\s*=\s*"IntervalTier"\s*name\s*=\s*{_STRING}\s*xmin\s*=\s*{_NUM}\s*'
                           rf'xmax\s*=\s*{_NUM}\s*intervals\s*:\s*size\s*=\s*(\d+)\s*')
_FAST_ENTRY_RE = re.compile(rf'intervals\s*\[\s*(\d+)\s*\]\s*:\s*xmin\s*=\s*{_NUM}\s*xmax\s*=\s*{_NUM}\s*'
                            rf'text\s*=\s*{_STRING}\s*')


def _fast_interval_tier(block: str) -> Tier | None:
    """Fast path for a well-formed long-format IntervalTier block; None (and the
    careful parser takes over) at the first irregularity."""
    m = _FAST_HEAD_RE.match(block)
    if m is None:
        return None
    name, n, pos = m.group(1).replace('""', '"'), int(m.group(4)), m.end()
    match = _FAST_ENTRY_RE.match
    intervals: list[Interval] = []
    try:
        for k in range(1, n + 1):
            e = match(block, pos)
            if e is None or int(e.group(1)) != k:
                return None
            a, b = float(e.group(2)), float(e.group(3))
            if not (math.isfinite(a) and math.isfinite(b)):
                return None
            intervals.append(Interval(a, b, e.group(4).replace('""', '"')))
            pos = e.end()
        for x in (m.group(2), m.group(3)):
            if not math.isfinite(float(x)):
                return None
    except ValueError:
        return None
    return Tier(name, INTERVAL_TIER, intervals) if pos == len(block) else None


def _parse_long_item(block: str, first_line: int, end_line: int, info: dict[str, str]) -> Tier:
    fast = _fast_interval_tier(block)
    if fast is not None:
        return fast
    fields, trailing = _fields(_tokenize(block, first_line))
    cur = _FieldCursor(fields, end_line, "tier")
    f = cur.next(("class",), "'class = \"IntervalTier\"'")
    kind = _to_str(f.value, "class")
    if kind not in _TIER_CLASSES:
        raise _ParseError(f"unknown tier class {kind!r} (expected 'IntervalTier' or 'TextTier')", f.line)
    info["kind"] = kind
    info["name"] = _to_str(cur.next(("name",), "'name = \"...\"'").value, "name")
    _to_float(cur.next(("xmin",), "'xmin = <number>'").value, "tier xmin")
    _to_float(cur.next(("xmax",), "'xmax = <number>'").value, "tier xmax")
    section = "intervals" if kind == INTERVAL_TIER else "points"
    f = cur.next(("size",), f"'{section}: size = <count>'",
                 lambda p: (m := _SIZE_PREFIX_RE.fullmatch(p)) is not None and m.group(1) == section)
    n = _to_int(f.value, f"{section}: size")
    intervals: list[Interval] = []
    for k in range(1, n + 1):
        def entry_ok(p: str, k: int = k) -> bool:
            m = _ENTRY_RE.fullmatch(p)
            return m is not None and m.group(1) == section and int(m.group(2)) == k
        if kind == INTERVAL_TIER:
            what = f"intervals [{k}]"
            a = _to_float(cur.next(("xmin",), f"'{what}:' then 'xmin = <number>'", entry_ok).value,
                          f"{what} xmin")
            b = _to_float(cur.next(("xmax",), f"'xmax' of {what}").value, f"{what} xmax")
            text = _to_str(cur.next(("text",), f"'text' of {what}").value, f"{what} text")
            intervals.append(Interval(a, b, text))
        else:
            what = f"points [{k}]"
            t = _to_float(cur.next(("number", "time"), f"'{what}:' then 'number = <time>'", entry_ok).value,
                          f"{what} time")
            mark = _to_str(cur.next(("mark",), f"'mark' of {what}").value, f"{what} mark")
            intervals.append(Interval(t, t, mark))
    if not cur.done():
        f = cur.fields[cur.i]
        raise _ParseError(f"more entries than the declared '{section}: size = {n}'", f.line)
    if trailing:
        raise _ParseError(f"unexpected text {' '.join(t.value for t in trailing)!r}", trailing[0].line)
    return Tier(info["name"], kind, intervals)


def _broken_tier(info: dict[str, str], block: str | None, e: _ParseError, where: str, path: str | None) -> Tier:
    """A Tier with intervals=[] and error set; name/class recovered as far as possible."""
    name, kind = info.get("name"), info.get("kind")
    if block is not None:
        if name is None and (m := _NAME_RE.search(block)):
            name = m.group(1).replace('""', '"')
        if kind is None and (m := _CLASS_RE.search(block)):
            kind = m.group(1) if m.group(1) in _TIER_CLASSES else None
    name = name if name is not None else ""
    logger.warning("%s: %s (%r) could not be parsed and is left empty: %s", path or "<string>", where, name, e.text())
    return Tier(name, kind or INTERVAL_TIER, [], e.text())


def _check_domain(xmin: float, xmax: float, path: str | None) -> None:
    if xmax < xmin:
        raise TextGridError(f"the time domain ends before it starts (xmin = {xmin}, xmax = {xmax})", path)


# --------------------------------------------------------------------------- short format


def _is_tier_start(tokens: list[_Token], i: int) -> bool:
    return (i + 1 < len(tokens) and tokens[i].kind == "str" and tokens[i].value in _TIER_CLASSES
            and tokens[i + 1].kind == "str")


def _parse_short(lines: list[str], body: int, path: str | None) -> TextGrid:
    try:
        tokens = _tokenize("\n".join(lines[body:]), body + 1)
        cur = _TokenCursor(tokens, len(lines))
        xmin = cur.number("xmin of the time domain")
        xmax = cur.number("xmax of the time domain")
        exists = cur.flag("tiers? flag")
        if exists not in ("<exists>", "<absent>"):
            raise _ParseError(f"tiers? flag: expected <exists> or <absent>, found {exists!r}",
                              tokens[cur.pos - 1].line)
        declared = cur.integer("number of tiers") if exists == "<exists>" else 0
    except _ParseError as e:
        raise TextGridError(e.problem, path, e.line) from None
    _check_domain(xmin, xmax, path)

    tiers: list[Tier] = []
    while cur.peek() is not None:
        start = cur.pos
        info: dict[str, str] = {}
        where = f"tier {len(tiers) + 1}"
        try:
            tier = _parse_short_tier(cur, info)
            nxt = cur.peek()
            if nxt is not None and not _is_tier_start(tokens, cur.pos):
                raise _ParseError(f"more data than the declared {len(tier.intervals)} "
                                  f"{'intervals' if tier.kind == INTERVAL_TIER else 'points'}", nxt.line)
            tiers.append(tier)
        except _ParseError as e:
            tiers.append(_broken_tier(info, None, e, where, path))
            cur.pos = next((i for i in range(start + 1, len(tokens)) if _is_tier_start(tokens, i)), len(tokens))
    if declared != len(tiers):
        if not tiers:
            raise TextGridError(f"the header declares {declared} tiers but none was found", path)
        warnings.warn(f"{path or '<string>'}: the header declares {declared} tiers but {len(tiers)} were found",
                      TextGridWarning, stacklevel=3)
    return TextGrid(xmin, xmax, tiers, path)


def _parse_short_tier(cur: _TokenCursor, info: dict[str, str]) -> Tier:
    tok = cur.peek()
    kind = cur.string("tier class")
    if kind not in _TIER_CLASSES:
        raise _ParseError(f"unknown tier class {kind!r} (expected 'IntervalTier' or 'TextTier')", tok.line)
    info["kind"] = kind
    info["name"] = cur.string("tier name")
    cur.number("tier xmin")
    cur.number("tier xmax")
    n = cur.integer("number of intervals" if kind == INTERVAL_TIER else "number of points")
    intervals: list[Interval] = []
    if kind == INTERVAL_TIER:
        for k in range(1, n + 1):
            a = cur.number(f"xmin of interval {k}")
            b = cur.number(f"xmax of interval {k}")
            intervals.append(Interval(a, b, cur.string(f"text of interval {k}")))
    else:
        for k in range(1, n + 1):
            t = cur.number(f"time of point {k}")
            intervals.append(Interval(t, t, cur.string(f"mark of point {k}")))
    return Tier(info["name"], kind, intervals)


# --------------------------------------------------------------------------- chronological format


def _parse_chronological(lines: list[str], first: int, path: str | None) -> TextGrid:
    try:
        tokens = _tokenize("\n".join(lines[first:]), first + 1)
        cur = _TokenCursor(tokens, len(lines))
        cur.string("header")
        xmin = cur.number("xmin of the time domain")
        xmax = cur.number("xmax of the time domain")
        n = cur.integer("number of tiers")
        heads: list[tuple[str, str]] = []
        for k in range(1, n + 1):
            tok = cur.peek()
            kind = cur.string(f"class of tier {k}")
            if kind not in _TIER_CLASSES:
                raise _ParseError(f"tier {k}: unknown tier class {kind!r}", tok.line)
            name = cur.string(f"name of tier {k}")
            cur.number(f"xmin of tier {k}")
            cur.number(f"xmax of tier {k}")
            heads.append((kind, name))
    except _ParseError as e:
        raise TextGridError(e.problem, path, e.line) from None
    _check_domain(xmin, xmax, path)

    entries: list[list[Interval]] = [[] for _ in heads]
    errors: list[str | None] = [None] * n
    while cur.peek() is not None:
        try:
            tok = cur.peek()
            k = cur.integer("tier number of an entry")
            if not 1 <= k <= n:
                raise _ParseError(f"entry for tier {k}, but there are {n} tiers", tok.line)
        except _ParseError as e:
            raise TextGridError(e.problem, path, e.line) from None
        kind = heads[k - 1][0]
        reading_times = True
        try:
            if kind == INTERVAL_TIER:
                a = cur.number(f"xmin of an interval of tier {k}")
                b = cur.number(f"xmax of an interval of tier {k}")
            else:
                a = b = cur.number(f"time of a point of tier {k}")
            reading_times = False
            label = cur.string(f"text of an entry of tier {k}")
            entries[k - 1].append(Interval(a, b, label))
        except _ParseError as e:
            if errors[k - 1] is None:
                errors[k - 1] = e.text()
            if reading_times:
                # a bad time: skip the rest of this entry, up to and including its text;
                # a missing text: the next token starts the next entry
                while (t := cur.peek()) is not None:
                    cur.pos += 1
                    if t.kind == "str":
                        break
    tiers = []
    for k, ((kind, name), ivs, err) in enumerate(zip(heads, entries, errors), start=1):
        if err is None:
            tiers.append(Tier(name, kind, ivs))
        else:
            tiers.append(_broken_tier({"name": name, "kind": kind}, None, _ParseError(err), f"tier {k}", path))
    return TextGrid(xmin, xmax, tiers, path)


# --------------------------------------------------------------------------- entry points


_FILE_TYPE_RE = re.compile(r'File\s+type\s*=\s*"([^"]*)"')
_OBJECT_CLASS_RE = re.compile(r'Object\s+class\s*=\s*"([^"]*)"')


def _next_nonblank(lines: list[str], i: int) -> int | None:
    while i < len(lines):
        if lines[i].strip():
            return i
        i += 1
    return None


def parse_textgrid(text: str | bytes, path: str | os.PathLike | None = None) -> TextGrid:
    """Parse the text of a TextGrid (long, short or chronological text format).

    Parameters
    ----------
    text : str or bytes
        The file's content; bytes are decoded as by :func:`read_textgrid`.
    path : str or path-like, optional
        The file it came from, for error messages and :attr:`TextGrid.path`.

    Returns
    -------
    TextGrid
        Tiers that could not be parsed are kept with ``intervals=[]`` and
        :attr:`Tier.error` set.

    Raises
    ------
    TextGridError
        Empty text, missing or unknown header, non-numeric time domain, or a
        malformed header; the message names the file and, when known, the line.
    """
    path = None if path is None else os.fspath(path)
    if isinstance(text, (bytes, bytearray)):
        text = _decode(bytes(text), path)
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise TextGridError("the file is empty", path)
    lines = text.split("\n")
    i = _next_nonblank(lines, 0)
    first = lines[i].strip()
    if first.startswith(f'"{CHRONOLOGICAL_HEADER}"'):
        return _parse_chronological(lines, i, path)
    m = _FILE_TYPE_RE.fullmatch(first)
    if m is None:
        raise TextGridError(f"missing TextGrid header: expected 'File type = \"ooTextFile\"' or "
                            f"'\"{CHRONOLOGICAL_HEADER}\"', found {first[:60]!r}", path, i + 1)
    file_type = m.group(1).strip()
    if file_type == "ooBinaryFile":
        raise TextGridError("binary TextGrid files are not supported (save it as a text file in Praat)", path, i + 1)
    if file_type not in ("ooTextFile", "ooTextFile short"):
        raise TextGridError(f"unknown file type {file_type!r} (expected 'ooTextFile')", path, i + 1)
    j = _next_nonblank(lines, i + 1)
    if j is None or (m := _OBJECT_CLASS_RE.fullmatch(lines[j].strip())) is None:
        raise TextGridError("missing 'Object class = \"TextGrid\"' after the file type", path,
                            (j if j is not None else i) + 1)
    if m.group(1).strip() != "TextGrid":
        raise TextGridError(f"the object class is {m.group(1)!r}, not 'TextGrid'", path, j + 1)
    k = _next_nonblank(lines, j + 1)
    if k is None:
        raise TextGridError("the file ends after its header (no time domain, no tiers)", path, j + 1)
    if re.match(r"\s*xmin\s*=", lines[k]):
        return _parse_long(lines, j + 1, path)
    return _parse_short(lines, j + 1, path)


def read_textgrid(path: str | os.PathLike) -> TextGrid:
    """Read a TextGrid file.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    TextGrid

    Raises
    ------
    TextGridError
        The bytes are neither UTF-8 nor UTF-16 (a UTF-8 or UTF-16 BOM selects the
        encoding; UTF-16 without BOM is recognised by its NUL bytes), or the text is
        not a TextGrid (see :func:`parse_textgrid`).
    OSError
        The file cannot be read.
    """
    p = os.fspath(path)
    data = Path(p).read_bytes()
    return parse_textgrid(_decode(data, p), p)


def _intervals_as_arrays(tg: TextGrid, tier: Tier, keep: Callable[[str], bool], what: str,
                         allow_overlap: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    index = next(i for i, t in enumerate(tg.tiers) if t is tier)
    desc = f"{what} tier {tier.name!r} (tier {index + 1} of {len(tg.tiers)})"
    if tier.error is not None:
        raise TextGridError(f"{desc} could not be parsed: {tier.error}", tg.path)
    labels: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    for iv in tier.intervals:
        if iv.end < iv.start:
            raise TextGridError(f"{desc} has an interval that ends before it starts: {iv.label!r} "
                                f"from {iv.start} to {iv.end} s", tg.path)
        label = iv.label.strip()
        if keep(label):
            labels.append(label)
            starts.append(iv.start)
            ends.append(iv.end)
    start = np.asarray(starts, dtype=np.float64)
    end = np.asarray(ends, dtype=np.float64)
    order = np.lexsort((end, start))  # by start, then end; stable
    labels = [labels[i] for i in order]
    start, end = start[order], end[order]
    if not allow_overlap and len(labels) > 1:
        running_end = np.maximum.accumulate(end)[:-1]
        bad = np.flatnonzero(start[1:] < running_end - OVERLAP_TOLERANCE)
        if bad.size:
            j = int(bad[0]) + 1
            i = int(np.flatnonzero(end[:j] == running_end[j - 1])[0])
            raise TextGridError(f"{desc}: {what}s overlap by more than {OVERLAP_TOLERANCE:g} s: {labels[i]!r} "
                                f"({start[i]}-{end[i]} s) and {labels[j]!r} ({start[j]}-{end[j]} s)", tg.path)
    return labels, start, end


def read_words(path: str | os.PathLike,
               tier: str | int | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read the words of a TextGrid and their times.

    Parameters
    ----------
    path : str or path-like
    tier : str or int, optional
        Word tier name or 0-based index; default :meth:`TextGrid.word_tier`.

    Returns
    -------
    words : list of str
        Labels, whitespace stripped, original case; non-word labels (see
        :func:`is_word`) dropped.
    start, end : (n,) float64 arrays
        Seconds; sorted by start time (then end time).

    Raises
    ------
    TextGridError
        The file cannot be read, has no word tier, the word tier could not be
        parsed, one of its intervals ends before it starts, or two words overlap by
        more than 1e-6 s. The message names the file (and the tier).
    """
    tg = read_textgrid(path)
    t = tg.word_tier() if tier is None else tg.tier(tier)
    return _intervals_as_arrays(tg, t, is_word, "word", allow_overlap=False)


def read_phones(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """Read the phones of a TextGrid and their times.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    (phones, start, end) or None
        As :func:`read_words`, for the phone tier (:meth:`TextGrid.phone_tier`):
        labels stripped, non-phone labels (``sp``, ``sil``, empty, braced
        annotations, every label of :data:`NON_WORD_LABELS`) dropped, sorted by
        start time; overlapping phones are allowed. None when there is no phone tier.

    Raises
    ------
    TextGridError
        The file cannot be read, the phone tier could not be parsed, or one of its
        intervals ends before it starts.
    """
    tg = read_textgrid(path)
    t = tg.phone_tier()
    if t is None:
        return None
    return _intervals_as_arrays(tg, t, is_word, "phone", allow_overlap=True)
