"""N-Triples syntax: one line → (subject, predicate, object) terms, and the readable names of IRIs,
blank nodes and predicates (W3C N-Triples, https://www.w3.org/TR/n-triples/). The reader that
groups a dump's lines into records is `ntriples.py`; its docstring states the rules."""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote

from ..schema import MAX_VALUE_CHARS

XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
# Kinds of object, stored in the `k` column (also the sort order of object kinds); LABEL marks
# an rdfs:label row (its object is a literal).
IRI, BNODE, LITERAL, LABEL = 0, 1, 2, 3

# ----------------------------------------------------------------------------- grammar

_IRI_CHARS = r'[^\x00-\x20<>"{}|^`\\]'
_IRI_BODY = rf"{_IRI_CHARS}*(?:\\[uU]{_IRI_CHARS}*)*"  # escapes are checked when decoded
_LIT_BODY = r'[^"\\\n\r]*(?:\\.[^"\\\n\r]*)*'
_PN_TAIL = r"\w\-\u00B7\u0300-\u036F\u203F\u2040"
_BN_BODY = rf"\w(?:[{_PN_TAIL}.]*[{_PN_TAIL}])?"
_LANG = r"[a-zA-Z]+(?:-[a-zA-Z0-9]+)*"
_WS = r"[ \t]*"

LINE_RE = re.compile(
    rf"{_WS}(?:<({_IRI_BODY})>|_:({_BN_BODY}))"  # 1 subject IRI, 2 subject blank node
    rf"{_WS}<({_IRI_BODY})>"  # 3 predicate
    rf"{_WS}(?:<({_IRI_BODY})>|_:({_BN_BODY})"  # 4 object IRI, 5 object blank node
    rf'|"({_LIT_BODY})"(?:@({_LANG})|{_WS}\^\^{_WS}<({_IRI_BODY})>)?)'  # 6 literal 7 lang 8 type
    rf"{_WS}\.{_WS}(?:#.*)?",
    re.S,
).fullmatch

_TOK_IRI = re.compile(rf"<({_IRI_BODY})>")
_TOK_BN = re.compile(rf"_:({_BN_BODY})")
_TOK_LIT = re.compile(rf'"({_LIT_BODY})"', re.S)
_TOK_LANG = re.compile(rf"@({_LANG})")
_TOK_WS = re.compile(_WS)
_IRI_SCAN = re.compile(rf"{_IRI_CHARS}*")
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|([tbnrf\"'\\])|(.?))", re.S)
_ECHAR = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


EMPTY_LITERAL = "empty value: literal object is empty or only whitespace"


class BadTerm(Exception):
    """A line that is not an N-Triples statement; the message is the quarantine reason."""


def _unescape(body: str, iri: bool) -> str:
    """Decode `\\uXXXX`, `\\UXXXXXXXX` (and, in literals, `\\t \\b \\n \\r \\f \\" \\' \\\\`)."""
    surrogates = False

    def one(m: re.Match) -> str:
        nonlocal surrogates
        hexa = m.group(1) or m.group(2)
        if hexa:
            cp = int(hexa, 16)
            if cp > 0x10FFFF:
                raise BadTerm(f"malformed N-Triples: bad escape {m.group(0)}")
            if 0xD800 <= cp <= 0xDFFF:
                surrogates = True
            return chr(cp)
        if m.group(3) and not iri:
            return _ECHAR[m.group(3)]
        what = "in IRI " if iri and m.group(3) else ""
        raise BadTerm(f"malformed N-Triples: bad escape {what}{m.group(0)}")

    out = _ESCAPE.sub(one, body)
    if surrogates:  # Java-style pairs (\uD83D\uDE00) → one character; a lone half is an error
        try:
            out = out.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise BadTerm("malformed N-Triples: bad escape (lone surrogate)") from None
    return out


def _show(text: str, pos: int) -> str:
    """What is at `pos`, for a reason: a short quoted snippet or 'end of line'."""
    if pos >= len(text):
        return "end of line"
    return repr(text[pos : pos + 12])


def _iri_token(text: str, pos: int, what: str) -> tuple[str, int]:
    m = _TOK_IRI.match(text, pos)
    if m:
        return m.group(1), m.end()
    if ">" not in text[pos:]:
        raise BadTerm(f"malformed N-Triples: unterminated IRI ({what})")
    stop = _IRI_SCAN.match(text, pos + 1).end()
    c = text[stop]
    if "<" in text[stop : text.index(">", stop)]:  # the '>' found belongs to a later IRI
        raise BadTerm(f"malformed N-Triples: unterminated IRI ({what})")
    if c == "\\":
        bad = _ESCAPE.match(text, stop).group(0)
        raise BadTerm(f"malformed N-Triples: bad escape in IRI {bad}")
    raise BadTerm(f"malformed N-Triples: invalid character {c!r} in IRI ({what})")


def _bnode_token(text: str, pos: int, what: str) -> tuple[str, int]:
    m = _TOK_BN.match(text, pos)
    if not m:
        raise BadTerm(f"malformed N-Triples: bad blank node label ({what})")
    return m.group(1), m.end()


def parse_slow(text: str) -> tuple:
    """Parse a line token by token (the regex refused it): the groups `LINE_RE` gives, or
    BadTerm naming the fault."""
    pos = _TOK_WS.match(text, 0).end()
    s_iri = s_bn = o_iri = o_bn = lit = lang = dt = None
    c = text[pos : pos + 1]
    if c == "<":
        s_iri, pos = _iri_token(text, pos, "subject")
    elif text.startswith("_:", pos):
        s_bn, pos = _bnode_token(text, pos, "subject")
    elif c == '"':
        raise BadTerm("malformed N-Triples: literal as subject")
    else:
        raise BadTerm(
            f"malformed N-Triples: expected IRI or blank node as subject, found {_show(text, pos)}"
        )

    pos = _TOK_WS.match(text, pos).end()
    c = text[pos : pos + 1]
    if c == "<":
        p, pos = _iri_token(text, pos, "predicate")
    elif c == '"':
        raise BadTerm("malformed N-Triples: literal as predicate")
    elif text.startswith("_:", pos):
        raise BadTerm("malformed N-Triples: blank node as predicate")
    else:
        raise BadTerm(f"malformed N-Triples: expected IRI as predicate, found {_show(text, pos)}")

    pos = _TOK_WS.match(text, pos).end()
    c = text[pos : pos + 1]
    if c == "<":
        o_iri, pos = _iri_token(text, pos, "object")
    elif text.startswith("_:", pos):
        o_bn, pos = _bnode_token(text, pos, "object")
    elif c == '"':
        m = _TOK_LIT.match(text, pos)
        if not m:
            raise BadTerm("malformed N-Triples: unterminated literal")
        lit, pos = m.group(1), m.end()
        if text.startswith("@", pos):
            m = _TOK_LANG.match(text, pos)
            if not m:
                raise BadTerm(f"malformed N-Triples: bad language tag {_show(text, pos)}")
            lang, pos = m.group(1), m.end()
        else:
            after = _TOK_WS.match(text, pos).end()
            if text.startswith("^^", after):
                pos = _TOK_WS.match(text, after + 2).end()
                if not text.startswith("<", pos):
                    raise BadTerm("malformed N-Triples: datatype is not an IRI")
                dt, pos = _iri_token(text, pos, "datatype")
    else:
        raise BadTerm(
            "malformed N-Triples: expected IRI, blank node or literal as object, "
            f"found {_show(text, pos)}"
        )

    pos = _TOK_WS.match(text, pos).end()
    if pos >= len(text) or text[pos] == "#":
        raise BadTerm("malformed N-Triples: missing final '.'")
    if text[pos] != ".":
        raise BadTerm(f"malformed N-Triples: expected final '.', found {_show(text, pos)}")
    pos = _TOK_WS.match(text, pos + 1).end()
    if pos < len(text) and text[pos] != "#":
        raise BadTerm(f"malformed N-Triples: unexpected text after final '.': {_show(text, pos)}")
    return s_iri, s_bn, p, o_iri, o_bn, lit, lang, dt


def parse_line(text: str) -> tuple | None:
    """One line → (subject key, predicate IRI, object, object kind, lang, datatype), or None for
    a blank or comment line. Raises BadTerm with the reason for a bad line. Subject and blank node
    object keys are the IRI or `_:label`."""
    m = LINE_RE(text)
    if m is not None:
        groups = m.groups()
    else:
        stripped = text.strip(" \t")
        if not stripped or stripped[0] == "#":
            return None
        groups = parse_slow(text)
    s_iri, s_bn, p, o_iri, o_bn, lit, lang, dt = groups
    if "\\" in text:
        if s_iri and "\\" in s_iri:
            s_iri = _unescape(s_iri, True)
        if "\\" in p:
            p = _unescape(p, True)
        if o_iri and "\\" in o_iri:
            o_iri = _unescape(o_iri, True)
        if lit and "\\" in lit:
            lit = _unescape(lit, False)
        if dt and "\\" in dt:
            dt = _unescape(dt, True)
    s = s_iri if s_bn is None else "_:" + s_bn
    if o_iri is not None:
        o, k = o_iri, IRI
    elif o_bn is not None:
        o, k = "_:" + o_bn, BNODE
    else:
        o, k = lit, LITERAL
        if not o or o.isspace():
            raise BadTerm(EMPTY_LITERAL)
    if len(text) > MAX_VALUE_CHARS:  # decoded terms are never longer than the line
        longest = max(len(s), len(p), len(o))
        if longest > MAX_VALUE_CHARS:
            raise BadTerm(f"value longer than {MAX_VALUE_CHARS} characters ({longest})")
    return s, p, o, k, lang, dt


# ----------------------------------------------------------------------------- names


@functools.lru_cache(maxsize=1 << 16)
def _local(iri: str) -> str:
    """The local part of an IRI: after the last '#' or '/', else after the last ':'."""
    trimmed = iri.rstrip("/#")
    cut = max(trimmed.rfind("#"), trimmed.rfind("/"))
    if cut < 0:
        cut = trimmed.rfind(":")
    local = trimmed[cut + 1 :]
    if "%" in local:
        local = unquote(local, errors="replace")
    return local


@functools.lru_cache(maxsize=1 << 17)
def iri_name(iri: str) -> str:
    """The readable name of an IRI without a label: its local name, '_' as space."""
    name = " ".join(_local(iri).replace("_", " ").split())
    return name or iri


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


@functools.lru_cache(maxsize=1 << 14)
def predicate_name(iri: str) -> str:
    """`…/birthPlace` → "birth place"."""
    name = " ".join(_CAMEL.sub(" ", _local(iri)).replace("_", " ").lower().split())
    return name or iri


def node_name(key: str) -> str:
    """Name of a subject or object node without a label: blank node label or IRI local name."""
    return key[2:] if key.startswith("_:") else iri_name(key)


def label_rank(lang: str | None, dt: str | None) -> int:
    if lang is not None:
        lang = lang.lower()
        return 0 if lang == "en" or lang.startswith("en-") else 2
    return 1 if dt is None or dt == XSD_STRING else 2
