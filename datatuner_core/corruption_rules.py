"""The corruption rules: pure functions that return every corrupted variant they can make of a
reference text (or, for `yes_no_flip`, of the data), in a fixed order; `corrupt` draws among them.

- value_error: `entity_swap`, `entity_cut`, `negation_removal` (text) and `yes_no_flip` (the
  DATA is corrupted: a yes/no slot value is flipped and the original text is kept);
- omission: `sentence_drop`, `clause_drop`;
- repetition: `sentence_repeat`;
- hallucination: `sentence_insert`, `sentence_substitute` (sentences of OTHER records; `novel`
  tells whether such a sentence names something the record does not).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .sentences import join_sentences, split_sentences

# ----------------------------------------------------------------------------------------------
# value_error rules

_STOPWORDS = frozenset("the a an of and or in on at to for de la le el du von van da di".split())


def _mention_pattern(entity: str) -> re.Pattern:
    """A case-insensitive pattern for `entity` as a whole-word mention."""
    return re.compile(r"(?<!\w)" + re.escape(entity) + r"(?!\w)", re.IGNORECASE)


def _mentions(text: str, entities: Iterable[str]) -> list[str]:
    """The distinct entities (case-insensitively) that occur in `text`, in entity order."""
    seen, found = set(), []
    for entity in entities:
        entity = " ".join(str(entity).split())
        key = entity.casefold()
        if entity and key not in seen and _mention_pattern(entity).search(text):
            seen.add(key)
            found.append(entity)
    return found


def _related(a: str, b: str) -> bool:
    """Whether one value contains the other (case-insensitively): a weak swap."""
    a, b = a.casefold(), b.casefold()
    return a in b or b in a


def _swappable(entities: Iterable[str]) -> list[str]:
    """Entities worth swapping or cutting: whitespace-normalised, not yes/no, 2+ characters."""
    values = (" ".join(str(e).split()) for e in entities)
    return [v for v in values if len(v) >= 2 and v.casefold() not in ("yes", "no")]


def entity_swap(text: str, entities: list[str], others: Iterable[str] = ()) -> list[str]:
    """Replace every mention of one entity by another of the record (else one of `others`)."""
    record = _swappable(entities)
    outputs = []
    for mention in _mentions(text, record):
        pattern = _mention_pattern(mention)
        replacements = [e for e in record if not _related(e, mention)]
        if not replacements:
            replacements = [e for e in _swappable(others) if not _related(e, mention)]
        for replacement in dict.fromkeys(replacements):
            outputs.append(pattern.sub(lambda _m, r=replacement: r, text))
    return outputs


def _prefix(surface: str, keep: int) -> str:
    """The first `keep` words of `surface`, without dangling punctuation."""
    return " ".join(surface.split()[:keep]).strip(",;:-–")


def _natural_cut(words: list[str], keep: int) -> bool:
    """Whether keeping the first `keep` of `words` is how people shorten the name anyway: up to
    a comma ("Appleton, Wisconsin" → "Appleton") or before a parenthesis ("Aarhus (city)")."""
    return words[keep - 1].endswith(",") or words[keep].startswith("(")


def entity_cut(text: str, entities: list[str]) -> list[str]:
    """Cut every mention of one multi-word entity to a proper prefix of its words (the method's
    rule). Not to a suffix, and not where the prefix is itself a usual short form: "the Alamo" →
    "Alamo", "Baku Turkish Martyrs' Memorial" → "Memorial", "Appleton, Wisconsin" → "Appleton"
    read as texts a person could write, and taught the classifier to call such texts errors."""
    outputs = []
    for mention in _mentions(text, _swappable(entities)):
        words = mention.split()
        pattern = _mention_pattern(mention)
        for keep in range(len(words) - 1, 0, -1):
            part = _prefix(mention, keep)
            if not part or all(w.lower() in _STOPWORDS for w in part.split()):
                continue
            if _natural_cut(words, keep):
                continue
            outputs.append(pattern.sub(lambda m, k=keep: _prefix(m[0], k), text))
    return list(dict.fromkeys(outputs))


_IRREGULAR_NT = {"can": "can", "won": "will", "shan": "shall", "ca": "can", "wo": "will"}
_NEGATION = re.compile(
    r"(?P<nt>\b(?P<stem>\w+)n['’]t\b)"
    r"|(?P<cannot>\b(?P<can>[Cc]an)not\b)"
    r"|(?P<word>\b(?:not|never|no)\b)(?!\.\s*\d)",
    re.IGNORECASE,
)


def _sentence_start(text: str, pos: int) -> bool:
    """Whether `pos` is at the start of `text` or right after sentence-ending punctuation."""
    return not text[:pos].strip() or bool(re.search(r"[.!?][\"'”’)\]]*\s*$", text[:pos]))


def _remove_negation(text: str, m: re.Match) -> str:
    """`text` with the negation matched by `m` removed (contractions keep their verb)."""
    if m["nt"]:
        stem = m["stem"]
        lowered = stem.lower()
        if lowered in ("ai",):
            return text
        verb = _IRREGULAR_NT.get(lowered, stem)
        if stem[:1].isupper():
            verb = verb[:1].upper() + verb[1:]
        return text[: m.start()] + verb + text[m.end() :]
    if m["cannot"]:
        return text[: m.start()] + m["can"] + text[m.end() :]
    start, end = m.start(), m.end()
    if _sentence_start(text, start):
        rest = text[end:].lstrip()
        if m["word"][:1].isupper():
            rest = rest[:1].upper() + rest[1:]
        return text[:start] + rest
    return text[:start].rstrip() + text[end:]


def negation_removal(text: str) -> list[str]:
    """Drop one negation ("not", "n't", "cannot", "never", "no"), one output per occurrence."""
    outputs = [_remove_negation(text, m) for m in _NEGATION.finditer(text)]
    return [o for o in dict.fromkeys(outputs) if o != text]


_YES_NO = re.compile(r"(?<![\w-])(yes|no)(?![\w-])", re.IGNORECASE)
_BRACKET_YES_NO = re.compile(r"\[\s*(yes|no)\s*\]", re.IGNORECASE)


def _flip_word(word: str) -> str:
    """ "yes" <-> "no", keeping the capitalisation style."""
    flipped = "no" if word.lower() == "yes" else "yes"
    if word.isupper() and len(word) > 1:
        return flipped.upper()
    return flipped.capitalize() if word[:1].isupper() else flipped


def _name_variants(slot: str) -> list[str]:
    """How a slot name may be written in a linearization: as-is, spaced, camelCase split."""
    spaced = slot.replace("_", " ")
    camel = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", spaced).lower()
    return list(dict.fromkeys([slot, spaced, camel]))


def _value_span(linearized: str, slot: str) -> tuple[int, int] | None:
    """Where the yes/no value of `slot` sits in `linearized`, or None when it cannot be found."""
    for name in _name_variants(slot):
        anchor = re.search(r"(?<![\w])" + re.escape(name) + r"(?![\w])", linearized, re.I)
        if not anchor:
            continue
        stop = linearized.find("<", anchor.end())
        value = _YES_NO.search(linearized, anchor.end(), stop if stop >= 0 else len(linearized))
        if value:
            return value.span(1)
    return None


def yes_no_flip(linearized: str, slots: Iterable[dict] = ()) -> list[str]:
    """Flip one yes/no slot value IN THE DATA (one output per such slot); the text stays as is."""
    spans = []
    for slot in slots or ():
        if str(slot.get("value", "")).strip().lower() in ("yes", "no"):
            span = _value_span(linearized, str(slot.get("slot", "")))
            if span and span not in spans:
                spans.append(span)
    if not spans and not slots:
        spans = [m.span(1) for m in _BRACKET_YES_NO.finditer(linearized)]
    return [linearized[:a] + _flip_word(linearized[a:b]) + linearized[b:] for a, b in spans]


# ----------------------------------------------------------------------------------------------
# omission, repetition and hallucination rules


def _by_length(sentences: list[str]) -> list[int]:
    """Sentence indices, shortest sentence first (ties in text order)."""
    return sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))


def sentence_drop(text: str) -> list[str]:
    """Drop one sentence of a text with at least two (shortest sentence first)."""
    sentences = split_sentences(text)
    if len(sentences) < 2:
        return []
    return [join_sentences(sentences[:i] + sentences[i + 1 :]) for i in _by_length(sentences)]


_COMMA = re.compile(r",(?!\d)")


def _clause_drops(sentence: str) -> list[str]:
    """`sentence` with a span from one comma to the next comma, or to the sentence end, deleted."""
    body = re.sub(r"[.!?…][\"'”’)\]]*$", "", sentence)
    tail = sentence[len(body) :]
    commas = [m.start() for m in _COMMA.finditer(body)]
    outputs = []
    for k, start in enumerate(commas):
        if k + 1 < len(commas):
            outputs.append(body[:start] + body[commas[k + 1] :] + tail)
        outputs.append(body[:start].rstrip() + (tail or "."))
    return [o for o in outputs if o.strip(" .!?") and o != sentence]


def clause_drop(text: str) -> list[str]:
    """Delete from a comma up to the next comma, or up to the end of its sentence."""
    sentences = split_sentences(text)
    outputs = []
    for i, sentence in enumerate(sentences):
        for shorter in _clause_drops(sentence):
            outputs.append(join_sentences(sentences[:i] + [shorter] + sentences[i + 1 :]))
    return [o for o in dict.fromkeys(outputs) if o != text]


def sentence_repeat(text: str) -> list[str]:
    """Insert a copy of one sentence at another position (shortest sentence first)."""
    sentences = split_sentences(text)
    outputs = []
    for i in _by_length(sentences):
        for pos in range(len(sentences) + 1):
            outputs.append(join_sentences(sentences[:pos] + [sentences[i]] + sentences[pos:]))
    return list(dict.fromkeys(outputs))


_TOKEN = re.compile(r"\w(?:[\w.,/'’-]*\w)?")


def _words(text: str) -> set[str]:
    """The case-folded word tokens of `text`."""
    return {t.casefold() for t in _TOKEN.findall(text)}


def novel(sentence: str, known: str) -> bool:
    """Whether `sentence` names something (a capitalised word or a number) absent from `known`."""
    tokens = _TOKEN.findall(sentence)
    salient = [
        t for i, t in enumerate(tokens) if any(c.isdigit() for c in t) or (i and t[0].isupper())
    ]
    known_words = _words(known)
    return any(t.casefold() not in known_words for t in salient)


def _foreign(sentences: list[str], foreign: Iterable[str]) -> list[str]:
    """The foreign sentences that are not already sentences of this text."""
    own = {s.casefold() for s in sentences}
    cleaned = dict.fromkeys(" ".join(f.split()) for f in foreign)
    return [f for f in cleaned if f and f.casefold() not in own]


def sentence_insert(text: str, foreign: Iterable[str]) -> list[str]:
    """Insert a sentence of another record at each position of the text."""
    sentences = split_sentences(text)
    outputs = []
    for f in _foreign(sentences, foreign):
        for pos in range(len(sentences) + 1):
            outputs.append(join_sentences(sentences[:pos] + [f] + sentences[pos:]))
    return list(dict.fromkeys(outputs))


def sentence_substitute(text: str, foreign: Iterable[str]) -> list[str]:
    """Replace one sentence of a text with at least two by a sentence of another record."""
    sentences = split_sentences(text)
    if len(sentences) < 2:
        return []
    outputs = []
    for f in _foreign(sentences, foreign):
        for i in range(len(sentences)):
            outputs.append(join_sentences(sentences[:i] + [f] + sentences[i + 1 :]))
    return list(dict.fromkeys(outputs))
