"""Meaning representations in CSV files (E2E, ViGGO): the MR parser and the grouped CSV reader.

E2E MRs are `slot[value], slot[value], …`; ViGGO MRs wrap them in a dialogue act,
`act(slot[value], slot[v1, v2], …)`. Values may be empty (`player_perspective[]`) and may hold
commas; brackets inside values must be balanced.

Rows with the same MR in one file become one record whose references are the rows' texts in file
order, so the record count is the number of distinct MRs. One file's MRs are held in memory while
it is read (these CSVs are tens of MB at most); every row is still one input unit.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator

from .. import storage
from ..schema import BadInput, content_id, make_quarantine, make_record
from . import IngestError, Item, infer_split, safe_text

_ACT = re.compile(r"^\s*([A-Za-z_][\w ]*?)\s*\((.*)\)\s*$", re.S)


def parse_slots(text: str) -> list[tuple[str, str]]:
    """`name[The Eagle], eatType[pub]` → [("name", "The Eagle"), ("eatType", "pub")]."""
    slots, i, n = [], 0, len(text)
    while i < n:
        while i < n and text[i] in " ,\t\n":
            i += 1
        if i >= n:
            break
        open_at = text.find("[", i)
        if open_at < 0:
            raise BadInput(f"unparsable MR: no '[' after slot name at character {i}")
        slot = text[i:open_at].strip()
        if not slot or any(c in slot for c in "[],()"):
            raise BadInput(f"unparsable MR: bad slot name {slot!r} at character {i}")
        depth, j = 1, open_at + 1
        while j < n and depth:
            depth += {"[": 1, "]": -1}.get(text[j], 0)
            j += 1
        if depth:
            raise BadInput(f"unparsable MR: unclosed '[' of slot {slot!r}")
        slots.append((slot, text[open_at + 1 : j - 1].strip()))
        i = j
        if i < n and text[i] not in " ,":
            raise BadInput(f"unparsable MR: unexpected {text[i]!r} after slot {slot!r}")
    if not slots:
        raise BadInput("unparsable MR: no slots")
    return slots


def parse_act(text: str) -> tuple[str, list[tuple[str, str]]]:
    """`inform(name[X], rating[good])` → ("inform", [("name", "X"), ("rating", "good")])."""
    match = _ACT.match(text)
    if not match:
        raise BadInput("unparsable MR: expected act(slot[value], ...)")
    act, inner = match.group(1).strip(), match.group(2)
    return act, parse_slots(inner) if inner.strip() else []


def read_mr_csv(
    files: list[str],
    root: str,
    split: str | None,
    storage_options: dict | None,
    *,
    source: str,
    parse: Callable[[str], tuple[str | None, list[tuple[str, str]]]],
) -> Iterator[Item]:
    """Read CSV files with `mr` and `ref` columns; one record per distinct MR of each file."""
    for uri in files:
        name = storage.relative_name(uri, root)
        file_split = split or infer_split(name)
        groups: dict[str, dict] = {}  # MR text → {"act", "slots", "refs", "rows", "lines"}
        for line, row in _csv_rows(uri, name, storage_options):
            mr, ref = row.get("mr"), row.get("ref") or ""
            raw = safe_text(",".join(f"{k}={v}" for k, v in row.items() if k is not None))
            location = f"{name}:{line}"
            try:
                if None in row or mr is None:
                    raise BadInput("malformed CSV row: wrong number of fields")
                if mr != safe_text(mr) or ref != safe_text(ref):
                    raise BadInput("invalid UTF-8 in the row")
                key = " ".join(mr.split())
                if key not in groups:
                    act, slots = parse(key)
                    groups[key] = {"act": act, "slots": slots, "refs": [], "rows": 0}
            except BadInput as exc:
                yield Item(quarantine=make_quarantine(source, location, str(exc), raw))
                continue
            group = groups[key]
            group["rows"] += 1
            ref = " ".join(ref.split())
            if ref:
                group["refs"].append(ref)
        for key, group in groups.items():
            try:
                record = make_record(
                    id=content_id(source, file_split, key),
                    source=source,
                    split=file_split,
                    act=group["act"],
                    slots=group["slots"],
                    references=group["refs"],
                    raw=key,
                )
                missing = group["rows"] - len(group["refs"])
                notes = {"rows_without_reference": missing} if missing else None
                yield Item(record=record, units=group["rows"], notes=notes)
            except BadInput as exc:
                q = make_quarantine(source, f"{name}: MR {key[:60]!r}", str(exc), key)
                yield Item(quarantine=q, units=group["rows"])


def _csv_rows(uri: str, name: str, storage_options: dict | None) -> Iterator[tuple[int, dict]]:
    """(line number, row dict) of a CSV file with a header; undecodable bytes kept as escapes."""
    with storage.open_input(uri, storage_options) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        header = reader.fieldnames or []
        if "mr" not in header or "ref" not in header:
            raise IngestError(f"{name}: expected CSV columns 'mr' and 'ref', found {header}")
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as exc:
            raise IngestError(f"{name}:{reader.line_num}: unreadable CSV: {exc}") from None
