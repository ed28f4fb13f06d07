"""The coverage check, independent of the classifier: the record's `entities` missing from a text,
plus entities of *other* records (a corpus-wide set) that appear in it, over the number of
entities (after Shimorina et al. 2018, as in the DataTuner paper's SER baseline).

Matching runs on normalised text (accents folded, lower case, apostrophes dropped, `D.C.` → dc,
thousands separators and ordinal suffixes dropped, other punctuation → space); numbers `2776.0`
also match `2776`, ISO dates also match `26 April 1945` / `April 26 1945`, `English language`
also matches `English`, `United States` also `US`/`America`, and `Abilene, Texas` also matches
when each part occurs. Hallucinations are leftmost-longest, whole-phrase matches (a dict lookup
per phrase length at each token). Not counted: short (< 4 characters) or purely numeric
entities, ones inside this record's entities, ones made of them (`Haputale, Sri Lanka`), and
one-word ones sharing a stem with them (`musician`/`music`). On the WebNLG test references
themselves the error rate is 6.1% (the heuristic's floor).

`accurate_precision`: of the texts labelled `accurate`, the share with no coverage error — how
far a data team can trust the label, checked against the heuristic.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

# Corpus entities shorter than this (normalised characters) are not searched for hallucinations.
MIN_HALLUCINATION_CHARS = 4
# Words sharing this many first letters count as one stem (`musician` / `music`).
STEM_CHARS = 5
# Common names a text writes differently from the knowledge graph (normalised forms).
ALIASES = {
    "united states": ("us", "usa", "america"),
    "united kingdom": ("uk", "britain", "british"),
}
MONTHS = (
    "january february march april may june july august september october november december"
).split()


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_INITIALS = re.compile(r"\b([a-z])\.(?=[a-z]\b)")  # d.c. → dc., a.f.c. → afc.
_APOSTROPHES = re.compile(r"['’`]")
# letters that NFKD does not decompose
_FOLD = str.maketrans(
    {"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "ł": "l", "đ": "d", "ı": "i", "þ": "th"}
)
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")
_NON_ALNUM = re.compile(r"[\W_]+")
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_PARENS = re.compile(r"\([^)]*\)")
_PART_SPLIT = re.compile(r",|\s+-\s+|\s+and\s+")


def normalize(text: str) -> str:
    """Lower case, accents folded, `&` → and, apostrophes dropped, `D.C.` → dc, `1,000` → 1000,
    `26th` → 26, other punctuation → space."""
    text = text.lower()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text.translate(_FOLD))
        text = "".join(c for c in text if not unicodedata.combining(c))
    text = _THOUSANDS.sub("", text.replace("&", " and "))
    text = _APOSTROPHES.sub("", _INITIALS.sub(r"\1", text))
    text = _ORDINAL.sub(r"\1", text)
    return " ".join(_NON_ALNUM.sub(" ", text).split())


def _is_numeric(phrase: str) -> bool:
    return all(token.isdigit() for token in phrase.split())


def _value_forms(value: str) -> tuple[str, ...]:
    """Normalised forms of one value: itself, an integral number without `.0`, a spelled date,
    `English` for `English language`, and the few aliases in ALIASES."""
    value = value.strip().strip('"').strip()
    forms = [normalize(value)]
    if _NUMBER.match(value) and float(value).is_integer():
        forms.append(str(abs(int(float(value)))))
    if date := _ISO_DATE.match(value):
        year, month, day = int(date[1]), int(date[2]), int(date[3])
        if 1 <= month <= 12:
            forms += [f"{day} {MONTHS[month - 1]} {year}", f"{MONTHS[month - 1]} {day} {year}"]
    if forms[0].endswith(" language"):
        forms.append(forms[0].removesuffix(" language"))
    forms += ALIASES.get(forms[0], ())
    return tuple(dict.fromkeys(f for f in forms if f))


@lru_cache(maxsize=200_000)
def entity_forms(entity: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(forms of the whole entity, forms of each part): the entity counts as present when one
    whole form, or one form of every part, occurs in the text. Parts are split at commas, ` - `
    and ` and `; parenthesised qualifiers (`Asterix (comicsCharacter)`, `1.2 (litres)`) are
    optional."""
    bare = _PARENS.sub(" ", entity).strip() or entity
    whole = tuple(dict.fromkeys(_value_forms(entity) + _value_forms(bare)))
    parts = [p for p in _PART_SPLIT.split(bare) if normalize(p)]
    part_forms = tuple(_value_forms(p) for p in parts) if len(parts) > 1 else ()
    return whole, part_forms


def _occurs(form: str, padded_text: str) -> bool:
    # numbers and short forms must be whole tokens (`1` is not in `1945`, `us` not in `house`);
    # longer words may be a substring (lenient: `Aarhus` in `Aarhus's`)
    if len(form) <= 3 or _is_numeric(form):
        return f" {form} " in padded_text
    return form in padded_text


def entity_present(entity: str, normalized_text: str) -> bool:
    """Whether `entity` occurs in a text already passed through `normalize`."""
    padded = f" {normalized_text} "
    whole, parts = entity_forms(entity)
    if any(_occurs(f, padded) for f in whole):
        return True
    return bool(parts) and all(any(_occurs(f, padded) for f in forms) for forms in parts)


class EntityIndex:
    """Corpus-wide entities, found in a text as whole phrases: at each token, a dict lookup per
    phrase length that starts with that token (cost independent of the number of entities)."""

    def __init__(self, entities: Iterable[str], min_chars: int = MIN_HALLUCINATION_CHARS):
        self.names: dict[tuple[str, ...], str] = {}
        for entity in sorted(set(entities)):
            phrase = normalize(_PARENS.sub(" ", entity)) or normalize(entity)
            if len(phrase) >= min_chars and not _is_numeric(phrase):
                self.names.setdefault(tuple(phrase.split()), entity)
        # first token → the lengths of the phrases that start with it, longest first
        lengths: dict[str, set[int]] = {}
        for tokens in self.names:
            lengths.setdefault(tokens[0], set()).add(len(tokens))
        self.by_first = {t: sorted(ls, reverse=True) for t, ls in lengths.items()}

    def __len__(self) -> int:
        return len(self.names)

    def find(self, tokens: Sequence[str]) -> list[tuple[str, ...]]:
        """Leftmost-longest, non-overlapping matches of indexed phrases in `tokens`."""
        found, i = [], 0
        while i < len(tokens):
            for length in self.by_first.get(tokens[i], ()):
                if (phrase := tuple(tokens[i : i + length])) in self.names:
                    found.append(phrase)
                    i += length
                    break
            else:
                i += 1
        return found


def coverage_errors(
    text: str | None, entities: Sequence[str], other_entities: EntityIndex | Iterable[str]
) -> dict:
    """The record's `entities` missing from `text`, and corpus entities in `text` that are not the
    record's (`hallucinated`). A null text misses every entity. Pass an `EntityIndex` built once
    when checking many texts; a plain iterable is indexed on every call."""
    index = (
        other_entities if isinstance(other_entities, EntityIndex) else EntityIndex(other_entities)
    )
    normalized = normalize(text or "")
    missing = [e for e in entities if not entity_present(e, normalized)]
    own = " | ".join(f for e in entities for f in entity_forms(e)[0])
    stems = {token[:STEM_CHARS] for token in own.split() if len(token) >= STEM_CHARS}
    hallucinated = [
        index.names[phrase]
        for phrase in index.find(normalized.split())
        if not _is_own(phrase, index.names[phrase], own, stems)
    ]
    return {"missing": missing, "hallucinated": list(dict.fromkeys(hallucinated))}


def _is_own(phrase: tuple[str, ...], entity: str, own: str, stems: set[str]) -> bool:
    """A corpus entity found in the text that still speaks of the record's own entities: a part
    of one (`Texas` of `Abilene, Texas`), made of them (`Haputale, Sri Lanka` when both are
    entities), or one word sharing a stem with one of their words (`musician` for `Rock music`)."""
    if " ".join(phrase) in own:
        return True
    parts = entity_forms(entity)[1]
    if parts and all(any(f in own for f in forms) for forms in parts):
        return True
    return len(phrase) == 1 and phrase[0][:STEM_CHARS] in stems


def coverage_error_rate(
    rows: Sequence[dict],
    text_getter: Callable[[dict], str | None],
    index: EntityIndex | None = None,
) -> dict:
    """(missing + hallucinated) / entities over `rows` (each with `entities`), and the share of
    records with any error. The corpus entity set is built from `rows` unless `index` is given."""
    if index is None:
        index = EntityIndex(e for row in rows for e in row.get("entities") or [])
    missing = hallucinated = total = with_error = with_missing = 0
    for row in rows:
        entities = row.get("entities") or []
        errors = coverage_errors(text_getter(row), entities, index)
        missing += len(errors["missing"])
        hallucinated += len(errors["hallucinated"])
        total += len(entities)
        with_error += bool(errors["missing"] or errors["hallucinated"])
        with_missing += bool(errors["missing"])
    return {
        # the rates a person reads (none can pass 100 %): records that miss an entity, and the
        # missing / hallucinated entities per record
        "records_missing_share": _ratio(with_missing, len(rows)),
        "missing_per_record": _ratio(missing, len(rows)),
        "hallucinated_per_record": _ratio(hallucinated, len(rows)),
        "error_rate": _ratio(missing + hallucinated, total),
        "missing_rate": _ratio(missing, total),
        "hallucination_rate": _ratio(hallucinated, total),
        "missing": missing,
        "hallucinated": hallucinated,
        "entities": total,
        "records": len(rows),
        "records_with_error": with_error,
        "record_error_share": _ratio(with_error, len(rows)),
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def accurate_precision(
    rows: Sequence[dict], text_and_label: Callable[[dict], tuple], index: EntityIndex
) -> dict:
    """Of the texts labelled `accurate`, how many have no coverage error (nothing missing,
    nothing hallucinated): the label's precision against the coverage check."""
    labelled = clean = 0
    for row in rows:
        text, label = text_and_label(row)
        if label == "accurate":
            errors = coverage_errors(text, row.get("entities") or [], index)
            labelled += 1
            clean += not (errors["missing"] or errors["hallucinated"])
    return {"precision": _ratio(clean, labelled), "accurate": labelled, "without_error": clean}


def classifier_agreement(rows: Sequence[dict], index: EntityIndex) -> dict:
    """The classifier's own label of every candidate (the LM's real beams, not synthetic pairs)
    against the coverage check: `agreement`, the share where "labelled accurate" equals "no
    coverage error"; `precision`, of the candidates labelled accurate, the share without an
    error; `error_recall`, of the candidates with an error, the share labelled something else."""
    both = accurate = accurate_clean = with_error = error_caught = n = 0
    for row in rows:
        entities = row.get("entities") or []
        texts, labels = row.get("candidate_texts") or [], row.get("candidate_labels") or []
        for text, label in zip(texts, labels, strict=False):
            if label is None:
                continue
            n += 1
            errors = coverage_errors(text, entities, index)
            clean = not (errors["missing"] or errors["hallucinated"])
            both += (label == "accurate") == clean
            accurate += label == "accurate"
            accurate_clean += label == "accurate" and clean
            with_error += not clean
            error_caught += not clean and label != "accurate"
    return {
        "candidates": n,
        "agreement": _ratio(both, n),
        "precision": _ratio(accurate_clean, accurate),
        "error_recall": _ratio(error_caught, with_error),
    }


def error_count(text: str | None, entities: Sequence[str], index: EntityIndex) -> int:
    """Missing plus hallucinated entities of one text."""
    errors = coverage_errors(text, entities, index)
    return len(errors["missing"]) + len(errors["hallucinated"])
