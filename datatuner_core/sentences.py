"""Sentence splitting by regex (no downloads), aware of abbreviations, initials and decimals."""

from __future__ import annotations

import re

# Never a sentence end when followed by a capitalised word ("Dr. Smith", "St. Louis").
_TITLES = frozenset(
    "mr mrs ms dr prof st mt ft gen col lt sgt capt cmdr adm rev hon sen rep gov pres supt "
    "messrs mme mlle sr jr".split()
)
# A sentence end only when the next word usually starts a sentence ("in the U.S. It is ...").
_ABBREVIATIONS = frozenset(
    "etc inc ltd co corp bros vs approx est dept univ assn ave blvd rd jan feb mar apr jun jul "
    "aug sep sept oct nov dec fig vol ed eds al".split()
)
_STARTERS = frozenset(
    "the a an it its he she they his her their this that these those there in on at after "
    "before during since today however also".split()
)
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
_LAST_TOKEN = re.compile(r"(\S+)$")
_INITIALISM = re.compile(r"^\(?(?:[A-Za-z]\.){2,}$")  # U.S. / e.g. / J.R.R.
_INITIAL = re.compile(r"^\(?[A-Z]\.$")  # J.


def _is_boundary(before: str, after: str) -> bool:
    """Whether the punctuation ending `before` ends a sentence, given the text `after` it."""
    if not after or not (after[0].isupper() or after[0].isdigit() or after[0] in "\"'“‘(["):
        return False
    if not before.endswith("."):
        return True
    token = _LAST_TOKEN.search(before)
    word = token.group(1) if token else ""
    stem = word.rstrip(".").lstrip("(\"'“‘").lower()
    next_word = re.match(r"[\"'“‘(\[]*(\w+)", after)
    starts_sentence = bool(next_word) and next_word.group(1).lower() in _STARTERS
    if stem == "no" and after[0].isdigit():
        return False  # "No. 5"
    if stem in _TITLES:
        return False
    if _INITIAL.match(word):  # "J. R. R. Tolkien", "George W. Bush"; not "the letter B. It"
        words = before.split()
        prev = words[-2] if len(words) > 1 else ""
        return not (prev[:1].isupper() or not prev or re.match(r"[A-Z]\.", after))
    if stem in _ABBREVIATIONS or _INITIALISM.match(word):
        return starts_sentence
    return True


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences with a regex aware of abbreviations, initials and decimals."""
    text = " ".join(text.split())
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        if _is_boundary(text[: m.end()].rstrip(), text[m.end() :]):
            sentences.append(text[start : m.end()].strip())
            start = m.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


def join_sentences(sentences: list[str]) -> str:
    """Join sentences with spaces, giving every non-final sentence closing punctuation."""
    fixed = [s if re.search(r"[.!?…][\"'”’)\]]*$", s) else s + "." for s in sentences[:-1]]
    return " ".join(fixed + sentences[-1:])
