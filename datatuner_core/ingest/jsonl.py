"""JSON Lines reader: one object a line, for a data team's own data.

    {"id": "a1", "triples": [["Alan Bean", "birthPlace", "Wheeler, Texas"]], "references": ["…"]}
    {"act": "inform", "slots": {"name": "The Eagle", "food": "French"}, "references": "…"}

- `triples`: a list of `[subject, predicate, object]` or of `{"subject", "predicate", "object"}`;
- or `slots`: an object `{slot: value}` or a list of `[slot, value]`, with an optional `act`;
- `id` (optional; a content hash of the data otherwise), `references` (a string or a list of
  strings, optional), `category` and `split` (optional; `split` overrides the file's split).
Unknown keys are ignored. Blank lines are skipped; every other line is one input unit. A line
that is not such a record is one quarantine row (`file:line`): bad JSON, nesting deeper than
`limits.MAX_JSON_DEPTH`, an integer of more than 4300 digits, a lone surrogate (`"\\ud800"`), a
value or reference over its limit, or a line longer than `limits.MAX_UNIT_BYTES`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from .. import input_files
from ..schema import BadInput, content_id, make_quarantine
from . import Item, LongLine, infer_split, limits, read_lines, safe_text

SUFFIXES = (".jsonl", ".ndjson")
SOURCE = "jsonl"


def read(
    files: list[str],
    root: str,
    split: str | None,
    options: dict,
    storage_options: dict | None = None,
) -> Iterator[Item]:
    """Yield one Item per non-blank line."""
    for uri in files:
        name = input_files.relative_name(uri, root)
        file_split = split or infer_split(name)
        for line_no, raw in read_lines(uri, storage_options):
            if not raw.strip():
                continue
            try:
                if isinstance(raw, LongLine):
                    raise BadInput(raw.reason())
                yield Item(record=_line_record(raw, file_split, split is not None))
            except BadInput as exc:
                text = safe_text(raw.decode("utf-8", "surrogateescape"))
                yield Item(quarantine=make_quarantine(SOURCE, f"{name}:{line_no}", str(exc), text))


def _line_record(raw: bytes, split: str, split_forced: bool) -> dict:
    if limits.json_depth_over(raw, limits.MAX_JSON_DEPTH):
        raise BadInput(f"malformed JSON: nested deeper than {limits.MAX_JSON_DEPTH} levels")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadInput(f"invalid UTF-8: byte {exc.start} of the line") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # the depth check above should make this unreachable
        raise BadInput("malformed JSON: nested too deep") from None
    except ValueError as exc:  # an integer of more digits than int() converts
        raise BadInput(f"malformed JSON: {str(exc).split(';')[0]}") from None
    if not isinstance(obj, dict):
        raise BadInput(f"malformed record: expected a JSON object, got {type(obj).__name__}")
    triples = [_triple(t) for t in _list(obj, "triples")]
    act = obj.get("act")
    if act is not None and not isinstance(act, str):
        raise BadInput("malformed record: 'act' must be a string")
    slots = _slots(obj.get("slots"))
    references = obj.get("references", [])
    if isinstance(references, str):
        references = [references]
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise BadInput("malformed record: 'references' must be a string or a list of strings")
    record_id = obj.get("id")
    if record_id is None:
        limits.check_data(triples, act, slots)
        record_id = content_id(SOURCE, triples, act, slots)
    line_split = (
        obj.get("split") if not split_forced and isinstance(obj.get("split"), str) else split
    )
    category = obj.get("category")
    return limits.checked_record(
        id=str(record_id),
        source=SOURCE,
        split=line_split,
        category=str(category) if category is not None else None,
        triples=triples,
        act=act,
        slots=slots,
        references=[" ".join(r.split()) for r in references if r.strip()],
        raw=raw.decode("utf-8"),
    )


def _list(obj: dict, key: str) -> list:
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise BadInput(f"malformed record: {key!r} must be a list")
    return value


def _triple(value) -> tuple[str, str, str]:
    if isinstance(value, dict):
        value = [value.get("subject"), value.get("predicate"), value.get("object")]
    if not isinstance(value, list) or len(value) != 3:
        expected = "expected [subject, predicate, object]"
        raise BadInput(f"malformed triple: {expected}, got {_short(value)}")
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        raise BadInput(f"malformed triple: parts must be strings or numbers, got {_short(value)}")
    return str(value[0]).strip(), str(value[1]).strip(), str(value[2]).strip()


def _slots(value) -> list[tuple[str, str]]:
    if value is None:
        return []
    items = value.items() if isinstance(value, dict) else value
    if not isinstance(items, (list, type({}.items()))):
        raise BadInput("malformed record: 'slots' must be an object or a list of [slot, value]")
    slots = []
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise BadInput(f"malformed slot: expected [slot, value], got {_short(item)}")
        slot, val = item
        if isinstance(val, list):
            val = ", ".join(str(v) for v in val)
        slots.append((str(slot).strip(), "" if val is None else str(val).strip()))
    return slots


def _short(value) -> str:
    """A value for a reason: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
