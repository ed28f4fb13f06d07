"""Meaning representations in CSV files (E2E, ViGGO): the MR parser and the grouped CSV reader.

E2E MRs are `slot[value], slot[value], …`; ViGGO MRs wrap them in a dialogue act,
`act(slot[value], slot[v1, v2], …)`. Values may be empty (`player_perspective[]`) and may hold
commas; brackets inside values must be balanced.

Rows with the same MR in one file become one record whose references are the rows' texts in file
order, so the record count is the number of distinct MRs. One file's MRs are held in memory while
it is read (these CSVs are tens of MB at most); every row is still one input unit.

Each CSV row is checked on its own (strict RFC 4180 quoting, the header's number of fields): a bad
row is one quarantine row at its first line and reading resumes at the next line, so an unbalanced
quote costs one row, not the rest of the file. Cells have the limits of any value: an MR
`schema.MAX_VALUE_CHARS`, a reference `limits.MAX_REFERENCE_CHARS` characters.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator

from .. import input_files
from ..schema import MAX_VALUE_CHARS, BadInput, content_id, make_quarantine
from . import IngestError, Item, LongLine, infer_split, limits, read_lines, safe_text
from .limits import check_text

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
        name = input_files.relative_name(uri, root)
        file_split = split or infer_split(name)
        groups: dict[str, dict] = {}  # MR text → {"act", "slots", "refs", "rows"}
        for line, row, problem in _csv_rows(uri, name, storage_options):
            location = f"{name}:{line}"
            if problem:
                yield Item(quarantine=make_quarantine(source, location, problem, row["line"]))
                continue
            mr, ref = row["mr"], row["ref"]
            try:
                if mr != safe_text(mr) or ref != safe_text(ref):
                    raise BadInput("invalid UTF-8 in the row")
                check_text(mr, "MR", MAX_VALUE_CHARS)
                check_text(ref, "reference", limits.MAX_REFERENCE_CHARS)
                key = " ".join(mr.split())
                if key not in groups:
                    act, slots = parse(key)
                    groups[key] = {"act": act, "slots": slots, "refs": [], "rows": 0}
            except BadInput as exc:
                raw = safe_text(",".join(f"{k}={v}" for k, v in row.items()))
                yield Item(quarantine=make_quarantine(source, location, str(exc), raw))
                continue
            group = groups[key]
            group["rows"] += 1
            ref = " ".join(ref.split())
            if ref:
                group["refs"].append(ref)
        for key, group in groups.items():
            try:
                record = limits.checked_record(
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


def _csv_rows(uri: str, name: str, storage_options: dict | None) -> Iterator[tuple[int, dict, str]]:
    """(first line, row, problem) of each row of a CSV file with a header, streamed.

    A row is `{column: value}`; a row that cannot be read is `{"line": its first line}` with the
    problem. Rows are checked one by one (RFC 4180, strict quoting): a row with the wrong number of
    fields, bad quoting, or a quoted field still open after `limits.MAX_CSV_ROW_LINES` lines or
    `limits.MAX_UNIT_BYTES` bytes costs its first line only, and reading resumes at the next line.
    Undecodable bytes are kept as surrogate escapes (the caller quarantines them).
    """
    csv.field_size_limit(max(csv.field_size_limit(), limits.MAX_UNIT_BYTES))
    lines = _RowLines(read_lines(uri, storage_options))
    reader = csv.reader(lines, strict=True)
    header = None
    while True:
        lines.start_row()
        try:
            fields = next(reader)
        except StopIteration:
            break
        except (csv.Error, _BadRow) as exc:
            problem = str(exc) if isinstance(exc, _BadRow) else f"malformed CSV row: {exc}"
            if header is None:
                raise IngestError(f"{name}:{lines.first}: unreadable CSV header: {exc}") from None
            yield lines.first, {"line": lines.give_back()}, problem
            continue
        if not fields:
            continue  # a blank line is not a row
        if header is None:
            header = fields
            if "mr" not in header or "ref" not in header:
                raise IngestError(f"{name}: expected CSV columns 'mr' and 'ref', found {header}")
        elif len(fields) != len(header):
            problem = f"malformed CSV row: {len(fields)} fields, the header has {len(header)}"
            yield lines.first, {"line": lines.give_back()}, problem
        else:
            yield lines.first, dict(zip(header, fields, strict=True)), ""


class _BadRow(Exception):
    """A row that spans too many lines or bytes, or holds a line over the limit."""


class _RowLines:
    """The lines of a CSV file as text for `csv.reader`, one row at a time: it bounds the lines
    and bytes one row may take, and gives back all but the first line of a bad row, so reading
    resumes at the line after it."""

    def __init__(self, lines: Iterator[tuple[int, bytes]]):
        self.lines, self.back = lines, []  # `back`: (number, bytes) to read again, in order
        self.taken: list[tuple[int, bytes]] = []
        self.first, self.size = 0, 0

    def __iter__(self):
        return self

    def start_row(self) -> None:
        self.taken, self.size = [], 0

    def __next__(self) -> str:
        number, line = self.back.pop(0) if self.back else next(self.lines)
        self.taken.append((number, line))
        if len(self.taken) == 1:
            self.first = number
        self.size += len(line) + 1
        if isinstance(line, LongLine) and len(self.taken) == 1:
            raise _BadRow(line.reason())
        if isinstance(line, LongLine) or self.size > limits.MAX_UNIT_BYTES:
            raise _BadRow(f"malformed CSV row: longer than {limits.MAX_UNIT_BYTES} bytes")
        if len(self.taken) > limits.MAX_CSV_ROW_LINES:
            lines = limits.MAX_CSV_ROW_LINES
            raise _BadRow(f"malformed CSV row: quoted field open for more than {lines} lines")
        return line.decode("utf-8", "surrogateescape") + "\n"

    def give_back(self) -> str:
        """The first line of the current row, as text; its other lines will be read again."""
        (_, first), rest = self.taken[0], self.taken[1:]
        self.back[:0] = rest
        self.taken = []
        return safe_text(first.decode("utf-8", "surrogateescape"))
