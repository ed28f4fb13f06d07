"""Limits on one input unit and on the text values of a record, and the checks that apply them.

A unit or a value over a limit becomes one quarantine row whose reason names the limit, so one
bad unit never stops a run and memory per unit stays bounded. Readers read the limits from this
module when they run (tests patch them smaller).

- `MAX_UNIT_BYTES`: the longest input unit read: a line (JSONL, N-Triples, CSV), a CSV row, an
  XML entry. A longer one is skipped in bounded chunks and quarantined with its line number.
- `MAX_VALUE_CHARS` (from `schema`): a triple part, slot name or value, id, category or act.
- `MAX_REFERENCE_CHARS`: one reference text.
- `MAX_JSON_DEPTH`: nesting of arrays and objects in one JSONL line (a record needs 4).
- `MAX_CSV_ROW_LINES`: physical lines one CSV row may span through a quoted field.
"""

from __future__ import annotations

import re

from ..schema import MAX_VALUE_CHARS, BadInput, make_record

MAX_UNIT_BYTES = 4 * 1024 * 1024  # bytes: one line, CSV row or XML entry
MAX_REFERENCE_CHARS = 20_000  # characters: one reference text
MAX_JSON_DEPTH = 32  # levels of [ and { in one JSONL line
MAX_CSV_ROW_LINES = 50  # physical lines: one CSV row

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # a JSON string
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def checked_record(**fields) -> dict:
    """`schema.make_record` plus the limits on every text value and a check that every text can
    be written as UTF-8 (no lone surrogates). BadInput names the field that failed."""
    record = make_record(**fields)
    for field in ("id", "split", "category"):
        check_text(record[field], field, MAX_VALUE_CHARS)
    check_text(record["raw"], "raw input", None)
    data = record["data"]
    check_data([tuple(t.values()) for t in data["triples"]], data["act"], data["slots"])
    for reference in record["references"]:
        check_text(reference, "reference", MAX_REFERENCE_CHARS)
    return record


def check_data(triples: list, act: str | None, slots: list) -> None:
    """The text checks of `checked_record` on a record's data (before an id is made of it)."""
    for triple in triples:
        for what, value in zip(("subject", "predicate", "object"), triple, strict=True):
            check_text(value, what, None)
            _check_value_length(value)
    check_text(act, "act", MAX_VALUE_CHARS)
    for slot in slots:
        name, value = slot.values() if isinstance(slot, dict) else slot
        check_text(name, "slot name", MAX_VALUE_CHARS)
        check_text(value, "slot value", None)
        _check_value_length(value)


def _check_value_length(value: str) -> None:
    """As `schema.make_record` words it, so reasons stay the same whichever check comes first."""
    if value is not None and len(value) > MAX_VALUE_CHARS:
        raise BadInput(f"value longer than {MAX_VALUE_CHARS} characters ({len(value)})")


def check_text(value: str | None, what: str, max_chars: int | None) -> None:
    """BadInput if `value` is longer than `max_chars` or holds a lone surrogate."""
    if value is None:
        return
    if max_chars is not None and len(value) > max_chars:
        raise BadInput(f"{what} longer than {max_chars} characters ({len(value)})")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code, at = ord(value[exc.start]), exc.start
            raise BadInput(
                f"invalid text: lone surrogate \\u{code:04x} in the {what}, character {at}"
            ) from None


def json_depth_over(raw: bytes, limit: int) -> bool:
    """Whether a JSON text nests arrays and objects deeper than `limit` (strings skipped)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # too few brackets to nest that deep: the common case, no scan
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    depth = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False
