"""Slot error rate (SER) for meaning representations (E2E, ViGGO): a rule-based slot aligner that
finds each slot value of a record in a text, with the paraphrases a data team expects, and counts
the errors the E2E challenge counts.

Units: each value of a slot is one unit (`platforms[PlayStation, Xbox, PC]` is three); a slot
with an empty value (ViGGO's `request_attribute(has_linux_release[])`) is one unit that counts as
mentioned when the slot's topic is named. Per unit:
- **missing**: the value is not found;
- **wrong**: not found, but another value of the same slot is (`area[riverside]` written as
  "in the city centre"; a yes/no slot stated with the opposite polarity);
- **repeated**: an enumerated value (not a name) is stated twice or more;
- **hallucinated** (per text, beside the units): a slot the record does not have is stated, for
  the slots whose wording is distinctive (E2E's area, familyFriendly, priceRange, customer rating,
  food; ViGGO's esrb, platforms, player_perspective, and the yes/no release slots).
SER = (missing + wrong + repeated + hallucinated) / units.

What counts as mentioned:
- names (name, near, developer, specifier and any slot without a lexicon): the value's words,
  case and punctuation folded; a title may drop its owner or subtitle ("Tom Clancy's The
  Division" as "The Division"), or two thirds of its content words may be present in any order;
- years and dates: the digits;
- yes/no slots: the topic ("Steam", "Linux", "Mac", "multiplayer", "family friendly", "kids") with
  a negation cue in the six words before it (not, no, never, without, non, n't, lacks, only …) for
  "no", without one for "yes"; "single-player" states has_multiplayer[no], "adults only" states
  familyFriendly[no];
- enumerated values: the lexicons of `ser_lexicon` (ratings as "rated 5 out of 5", "five-star",
  "low customer rating"; prices as "cheap", "under £20", "£20-25"; ViGGO ratings by sentiment words:
  excellent = "amazing", "love", …; poor = "bad", "boring", "did not enjoy", …).
The report gives the references' SER as the aligner's floor.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from .ser_lexicon import (
    ANTI_CUED,
    CLAUSE_BREAKS,
    CUE_WINDOW,
    CUED,
    E2E_SLOTS,
    EQUIVALENT,
    HALLUCINATION_SLOTS,
    LEXICON,
    LIST_SLOTS,
    NAME_SLOTS,
    NEGATION_WINDOW,
    NEGATIONS,
    NO_FORMS,
    REPEAT_SLOTS,
    SHARED_WORDS,
    STOPWORDS,
    YES_NO_TOPICS,
)

_TOKEN = re.compile(r"[a-z0-9+]+|\.")
_SENT = re.compile(r"[.?!;:]")


def normalize(text: str | None) -> list[str]:
    """Lowercase word tokens, accents folded, "n't" → "not", apostrophes dropped ("bird's" →
    "birds"), hyphens and slashes split, sentence ends kept as "." tokens."""
    text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode().lower()
    text = re.sub(r"n['’]t\b", " not", text)
    text = re.sub(r"['’]s\b", "", text).replace("'", "").replace("’", "")
    text = re.sub(r"(?<=\d)[.,](?=\d)", "", text)  # 4.5, 1,000: one number token
    return _TOKEN.findall(_SENT.sub(" . ", text))


def _phrase_tokens(phrase: str) -> tuple[str, ...]:
    return tuple(t for t in normalize(phrase) if t != ".")


def find(tokens: Sequence[str], phrase: str) -> list[int]:
    """Start positions of `phrase` (normalized) in `tokens`."""
    words = _phrase_tokens(phrase)
    n = len(words)
    if not n:
        return []
    return [i for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n]) == words]


def _negated(tokens: Sequence[str], at: int) -> bool:
    for k in range(at - 1, max(-1, at - 1 - NEGATION_WINDOW), -1):
        if tokens[k] in CLAUSE_BREAKS:
            return False
        if tokens[k] in NEGATIONS or (tokens[k] == "only" and k == at - 1):
            return True
    return False


def _near(tokens: Sequence[str], at: int, length: int, cues: Iterable[str]) -> bool:
    lo, hi = max(0, at - CUE_WINDOW), min(len(tokens), at + length + CUE_WINDOW)
    window = set(tokens[lo:at]) | set(tokens[at + length : hi])
    return bool(window & set(cues))


def _mentions(tokens: Sequence[str], slot: str, phrases: Iterable[str]) -> list[int]:
    """Distinct positions where any phrase of a value occurs (cued slots: near a cue word)."""
    return [at for at, _ in _spans(tokens, slot, phrases)]


def _spans(tokens: Sequence[str], slot: str, phrases: Iterable[str]) -> list[tuple[int, str]]:
    """(position, phrase) of each distinct, non-overlapping mention, longest phrases first."""
    spans: list[tuple[int, int, str]] = []
    for phrase in sorted(set(phrases), key=lambda p: -len(_phrase_tokens(p))):
        words = _phrase_tokens(phrase)
        n = len(words)
        numeric = any(t[0].isdigit() for t in words)
        for at in find(tokens, phrase):
            if slot in CUED and not numeric and not _near(tokens, at, n, CUED[slot]):
                continue
            if slot in ANTI_CUED:  # "a moderate / mid range customer rating" is a rating
                against, cues = ANTI_CUED[slot]
                if set(tokens[at + n : at + n + 2]) & set(against) and not (
                    phrase in SHARED_WORDS and _near(tokens, at, n, cues)
                ):
                    continue
            if all(at + n <= a or b <= at for a, b, _ in spans):  # not inside a longer one
                spans.append((at, at + n, phrase))
    return sorted((a, p) for a, _, p in spans)


def _polarity(tokens: Sequence[str], slot: str) -> set[str]:
    """The polarities ("yes", "no") a text states for a yes/no slot."""
    found: set[str] = set()
    for at in _mentions(tokens, slot, YES_NO_TOPICS[slot]):
        found.add("no" if _negated(tokens, at) else "yes")
    for at in _mentions(tokens, slot, NO_FORMS.get(slot, ())):
        found.add("yes" if _negated(tokens, at) else "no")
    return found


def _name_found(tokens: Sequence[str], value: str) -> bool:
    words = _phrase_tokens(value)
    if not words:
        return True
    if find(tokens, value):
        return True
    # a title without its owner or subtitle: "Tom Clancy's The Division" as "The Division",
    # "Age of Empires II: The Age of Kings" as "Age of Empires II"
    for part in re.split(r"['’]s\s+|:\s*", value)[1:] + re.split(r":\s*", value)[:1]:
        words = [w for w in _phrase_tokens(part) if w not in STOPWORDS]
        if words and part.strip() != value.strip() and find(tokens, " ".join(_phrase_tokens(part))):
            return True
    content = [w for w in words if w not in STOPWORDS]
    if not content:
        return False
    present = set(tokens)
    # a title's subtitle or leading words dropped: its last content words, or 2/3 of them
    tail = content[-2:] if len(content) > 2 else content
    return (len(content) > 2 and find(tokens, " ".join(tail))) or (
        sum(w in present for w in content) * 3 >= 2 * len(content)
    )


def _values(slot: str, value: str) -> list[str]:
    if slot in LIST_SLOTS:
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value.strip()]


def slot_errors(slots: Sequence[dict], text: str | None) -> dict:
    """The aligner's verdict on one text: units, missing, wrong, repeated, hallucinated, and
    the (slot, value, error) details."""
    tokens = normalize(text)
    out = {"units": 0, "missing": 0, "wrong": 0, "repeated": 0, "hallucinated": 0, "errors": []}

    def error(kind: str, slot: str, value: str) -> None:
        out[kind] += 1
        out["errors"].append([slot, value, kind])

    present = {s["slot"] for s in slots}
    for s in slots:
        slot, value = s["slot"], (s.get("value") or "").strip()
        for v in _values(slot, value) or [""]:
            out["units"] += 1
            if not v:  # an asked-for attribute: its topic must be named
                topics = YES_NO_TOPICS.get(slot) or tuple(
                    p for ps in LEXICON.get(slot, {}).values() for p in ps
                ) or (slot.replace("_", " "),)  # fmt: skip
                if not _mentions(tokens, slot, topics) and not find(tokens, slot.replace("_", " ")):
                    error("missing", slot, v)
                continue
            if slot in YES_NO_TOPICS and v.lower() in ("yes", "no"):
                said = _polarity(tokens, slot)
                if v.lower() not in said:
                    error("wrong" if said else "missing", slot, v)
                continue
            lexicon = LEXICON.get(slot)
            if lexicon is not None and v in lexicon:
                same = {v, EQUIVALENT.get((slot, v), v)}
                spans = _spans(tokens, slot, [p for o in same for p in lexicon[o]])
                if not spans:
                    others = [o for o in lexicon if o not in same and o not in _values(slot, value)]
                    if any(_mentions(tokens, slot, lexicon[o]) for o in others):
                        error("wrong", slot, v)
                    else:
                        error("missing", slot, v)
                elif slot in REPEAT_SLOTS and len(spans) > len({p for _, p in spans}):
                    error("repeated", slot, v)  # the same wording twice
                continue
            if re.fullmatch(r"\d{4}", v) or slot in ("release_year", "exp_release_date"):
                digits = re.findall(r"\d+", v)
                if not all(d in tokens for d in digits) and not find(tokens, v):
                    error("missing", slot, v)
                continue
            if not _name_found(tokens, v):
                error("missing", slot, v)
    e2e = bool(present & E2E_SLOTS)
    for slot in HALLUCINATION_SLOTS:
        if slot in present or (slot in E2E_SLOTS) != e2e:
            continue
        if slot in YES_NO_TOPICS:
            stated = bool(_polarity(tokens, slot))
        else:
            stated = any(_mentions(tokens, slot, ps) for ps in LEXICON[slot].values())
        if stated and not _owned_by_another(tokens, slot, slots):
            error("hallucinated", slot, "")
    return out


def _owned_by_another(tokens: Sequence[str], slot: str, slots: Sequence[dict]) -> bool:
    """A mention of `slot` that is another present slot's own wording (Steam as a PC platform,
    "adults" of an M rating, a platform word inside the game's name)."""
    names = " ".join((s.get("value") or "") for s in slots if s["slot"] in NAME_SLOTS)
    name_tokens = set(normalize(names))
    phrases = YES_NO_TOPICS.get(slot) or tuple(p for ps in LEXICON[slot].values() for p in ps)
    hits = [p for p in phrases if find(tokens, p)]
    if hits and all(set(_phrase_tokens(p)) <= name_tokens for p in hits):
        return True
    present = {s["slot"] for s in slots}
    shared = {("available_on_steam", "platforms"), ("platforms", "available_on_steam"),
              ("familyFriendly", "esrb"), ("esrb", "familyFriendly"),
              ("has_mac_release", "platforms"), ("platforms", "has_linux_release"),
              ("platforms", "has_mac_release"), ("has_linux_release", "platforms")}  # fmt: skip
    return any((slot, other) in shared for other in present)


def ser(rows: Iterable[tuple[Sequence[dict], str | None]]) -> dict:
    """Corpus SER of (slots, text) pairs: the error counts, units, SER, and the share of texts
    with at least one error."""
    totals = {"texts": 0, "units": 0, "missing": 0, "wrong": 0, "repeated": 0,
              "hallucinated": 0, "texts_with_errors": 0}  # fmt: skip
    for slots, text in rows:
        if not slots:
            continue
        found = slot_errors(slots, text)
        totals["texts"] += 1
        for key in ("units", "missing", "wrong", "repeated", "hallucinated"):
            totals[key] += found[key]
        totals["texts_with_errors"] += bool(found["errors"])
    errors = sum(totals[k] for k in ("missing", "wrong", "repeated", "hallucinated"))
    totals["ser"] = errors / totals["units"] if totals["units"] else None
    totals["text_error_rate"] = (
        totals["texts_with_errors"] / totals["texts"] if totals["texts"] else None
    )
    return totals


def _slots(row: dict) -> list[dict]:
    data = row.get("data") or {}
    return list(data.get("slots") or []) if isinstance(data, dict) else []


def ser_metrics(rows: Sequence[dict], top_text=None) -> dict | None:
    """SER of generations rows with slots (None when no row has any): the chosen texts, the top
    beams (`top_text(row)`), the human references (the aligner's own error floor), and the
    fidelity classifier's agreement with it (accurate ⟺ no slot error)."""
    rows = [r for r in rows if _slots(r)]
    if not rows:
        return None
    found = [slot_errors(_slots(r), r.get("text")) for r in rows]
    out = {
        "chosen": ser((_slots(r), r.get("text")) for r in rows),
        "top_beam": ser((_slots(r), top_text(r)) for r in rows) if top_text else None,
        "references": ser((_slots(r), ref) for r in rows for ref in r.get("references") or []),
    }
    labelled = [(r.get("fidelity_label"), not f["errors"]) for r, f in zip(rows, found)
                if r.get("fidelity_label")]  # fmt: skip
    agree = sum((label == "accurate") == clean for label, clean in labelled)
    said_accurate = [clean for label, clean in labelled if label == "accurate"]
    clean = [label for label, ok in labelled if ok]
    out["agreement"] = {
        "labelled": len(labelled),
        "agreement": agree / len(labelled) if labelled else None,
        # of the texts the classifier calls accurate, the share SER finds no error in
        "accurate_precision": sum(said_accurate) / len(said_accurate) if said_accurate else None,
        # of the texts SER finds no error in, the share the classifier calls accurate
        "accurate_recall": sum(lab == "accurate" for lab in clean) / len(clean) if clean else None,
    }
    return out
