"""Arrow schemas of the data contracts (DESIGN.md, "Data contracts") and row builders.

Every format ingests to one `records` schema so datasets can be mixed: triple sets fill
`data.triples`, meaning representations fill `data.act` and `data.slots`.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

TRIPLE = pa.struct([("subject", pa.string()), ("predicate", pa.string()), ("object", pa.string())])
SLOT = pa.struct([("slot", pa.string()), ("value", pa.string())])
DATA = pa.struct([("triples", pa.list_(TRIPLE)), ("act", pa.string()), ("slots", pa.list_(SLOT))])

RECORDS = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("category", pa.string()),
        ("data", DATA),
        ("references", pa.list_(pa.string())),
        ("raw", pa.string()),
    ]
)

LINEARIZED = RECORDS.append(pa.field("linearized", pa.string())).append(
    pa.field("entities", pa.list_(pa.string()))
)

QUARANTINE = pa.schema(
    [
        ("source", pa.string()),
        ("location", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)

# Longest value (subject, object, slot value, literal) a record may carry, in characters.
MAX_VALUE_CHARS = 10_000
# How much of a bad input unit a quarantine row keeps, in characters.
MAX_QUARANTINE_RAW_CHARS = 20_000


class BadInput(ValueError):
    """One input unit that cannot become a record; its message is the quarantine reason."""


def content_id(*parts: object) -> str:
    """A stable id from content: the first 16 hex digits of a SHA-256 over the JSON of `parts`."""
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def make_record(
    *,
    id: str,
    source: str,
    split: str,
    raw: str,
    triples: list[tuple[str, str, str]] | None = None,
    act: str | None = None,
    slots: list[tuple[str, str]] | None = None,
    references: list[str] | None = None,
    category: str | None = None,
) -> dict:
    """Build one `records` row, checking the rules every format shares.

    Raises BadInput for an empty record, an empty triple part or slot name (slot values may be
    empty: ViGGO's `request_attribute(player_perspective[])`), or a value over MAX_VALUE_CHARS.
    """
    triples = triples or []
    slots = slots or []
    if not triples and not slots and not act:
        raise BadInput("empty record: no triples, act or slots")
    for value in [v for t in triples for v in t] + [k for k, _ in slots]:
        if value is None or not value.strip():
            raise BadInput("empty subject, predicate, object or slot name")
    for value in [v for t in triples for v in t] + [v for _, v in slots]:
        if len(value) > MAX_VALUE_CHARS:
            raise BadInput(f"value longer than {MAX_VALUE_CHARS} characters ({len(value)})")
    return {
        "id": id,
        "source": source,
        "split": split,
        "category": category,
        "data": {
            "triples": [{"subject": s, "predicate": p, "object": o} for s, p, o in triples],
            "act": act,
            "slots": [{"slot": k, "value": v} for k, v in slots],
        },
        "references": list(references or []),
        "raw": raw,
    }


def make_quarantine(source: str, location: str, reason: str, raw: str) -> dict:
    """One `quarantine` row; the raw text is cut to MAX_QUARANTINE_RAW_CHARS."""
    return {
        "source": source,
        "location": location,
        "reason": reason,
        "raw": raw[:MAX_QUARANTINE_RAW_CHARS],
    }


CORRUPTIONS = pa.schema(
    [
        ("id", pa.string()),
        ("record_id", pa.string()),
        ("split", pa.string()),
        ("linearized", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("rule", pa.string()),
    ]
)

CANDIDATE = pa.struct(
    [
        ("text", pa.string()),
        ("lm_score", pa.float64()),
        ("fidelity_label", pa.string()),
        ("fidelity_score", pa.float64()),
    ]
)

# One row per input record: the chosen text, its fidelity, every beam candidate, and what is
# needed to evaluate it (references, entities, category, data) without a join.
GENERATIONS = pa.schema(
    [
        ("id", pa.string()),
        ("linearized", pa.string()),
        ("text", pa.string()),  # null when generation failed (see `error`)
        ("fidelity_label", pa.string()),
        ("fidelity_score", pa.float64()),  # P(accurate) of the chosen text
        ("lm_score", pa.float64()),  # length-normalised log-probability of the chosen text
        ("candidates", pa.list_(CANDIDATE)),  # in beam order: candidates[0] is the top beam
        ("model_version", pa.string()),  # "lm-version+classifier-version"
        ("references", pa.list_(pa.string())),
        ("entities", pa.list_(pa.string())),
        ("category", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("data", DATA),
        ("truncated", pa.bool_()),  # the input was cut to fit the model's context
        ("error", pa.string()),  # why `text` is null
    ]
)
