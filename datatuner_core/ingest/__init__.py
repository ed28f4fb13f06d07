"""Ingest: any supported input format → a `records` stage folder (plus quarantine).

Each format has a reader module with `SUFFIXES` and `read(files, root, split, options)` that yields
`Item`s: a record or a quarantine row, with the number of input units (XML entries, CSV rows,
N-Triples statements, JSONL lines) it accounts for. `ingest()` owns the counting, the stage
writer and the skip-if-unchanged rule, so every reader obeys `read == written + quarantined`.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

FORMATS = ("webnlg", "e2e", "viggo", "jsonl", "ntriples")


@dataclass
class Item:
    """What a reader yields: one record, one quarantine row, or neither (input consumed without a
    row of its own, such as N-Triples label statements), and the input units behind it."""

    record: dict | None = None
    quarantine: dict | None = None
    units: int = 1
    notes: dict[str, int] | None = None  # soft anomalies behind this item, counted by name


class IngestError(Exception):
    """A whole input that cannot be read as the named format (wrong columns, not the format)."""


def reader_module(fmt: str):
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return importlib.import_module(f"{__name__}.{fmt}")


_SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "trainset": "train",
    "dev": "validation",
    "devel": "validation",
    "valid": "validation",
    "validation": "validation",
    "devset": "validation",
    "test": "test",
    "testset": "test",
}


def infer_split(relative_path: str, default: str = "all") -> str:
    """The split a file belongs to, from the words of its path (`train/…`, `devel-fixed.csv`,
    `viggo-valid.csv`); the last matching path component wins."""
    found = default
    for part in relative_path.split("/"):
        for word in re.split(r"[^a-z]+", part.lower()):
            if word in _SPLIT_WORDS:
                found = _SPLIT_WORDS[word]
    return found


def safe_text(text: str) -> str:
    """Text that Arrow accepts, with undecodable bytes (surrogate escapes) shown as \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def ingest(
    fmt: str,
    input_uri: str | dict[str, str | None],
    output_uri: str,
    *,
    split: str | None = None,
    options: dict | None = None,
    max_records: dict[str, int | None] | None = None,
    storage_options: dict | None = None,
    shard_bytes: int = 64 * 1024 * 1024,
    force: bool = False,
    progress: Callable | None = None,
) -> dict:
    """Read `input_uri` as `fmt` and write a records stage at `output_uri`. Returns the manifest.

    `input_uri` is one file or folder, or a mapping `{split: uri}` (None entries are left out) whose
    records take the split they are listed under. `max_records` caps records per split, for quick
    runs: the rest of a capped split is not read (`notes.capped_splits` lists them). A stage
    already at `output_uri` made from the same inputs and options is kept as it is (its manifest
    is returned with `skipped: true`) unless `force`. Records whose id an earlier record of this
    ingest has are kept and counted in `notes.duplicate_ids` (ids compared by 64-bit hash; not
    for formats whose ids are unique by construction, `IDS_UNIQUE`); such notes are warned once.
    Limits on input units and values: `limits`.
    """
    from .. import fingerprints, input_files, stage_reader, stage_writer
    from ..schema import RECORDS

    module = reader_module(fmt)
    options = dict(options or {})
    caps = {k: v for k, v in (max_records or {}).items() if v is not None}
    sources = input_uri if isinstance(input_uri, dict) else {split: input_uri}
    plan = [
        (name, uri, input_files.list_inputs(uri, module.SUFFIXES, storage_options))
        for name, uri in sources.items()
        if uri is not None
    ]
    inputs = [
        i for _, _, files in plan for i in fingerprints.input_fingerprint(files, storage_options)
    ]
    # options that change how a reader works, not what it writes, stay out of the fingerprint
    kept = {k: v for k, v in options.items() if k not in RESOURCE_OPTIONS}
    config = {"format": fmt, "splits": list(sources), "options": kept, "max_records": caps}
    fp = fingerprints.fingerprint("ingest", inputs, config, fingerprints.code_version())
    if not force and (done := stage_reader.current_manifest(output_uri, fp, storage_options)):
        return {**done, "skipped": True}

    writer = stage_writer.StageWriter(
        output_uri, "ingest", RECORDS, shard_bytes=shard_bytes, storage_options=storage_options
    )
    stats, taken, capped = writer.stats, {}, set()
    seen = None if getattr(module, "IDS_UNIQUE", False) else set()  # hashes of the ids so far
    for forced, uri, files in plan:
        for item in module.read(files, uri, forced, options, storage_options=storage_options):
            if item.record is not None:
                record_split = item.record["split"]
                if taken.get(record_split, 0) >= caps.get(record_split, float("inf")):
                    capped.add(record_split)
                    if forced is not None:
                        break  # the rest of this split is not read
                    continue
                taken[record_split] = taken.get(record_split, 0) + 1
                if seen is not None:
                    _note_duplicate(seen, item)
            _count(writer, item)
            if progress is not None:
                progress(stats)
    if capped:
        stats.notes["capped_splits"] = sorted(capped)
    _warn_once(output_uri, stats.notes)
    return writer.commit(inputs=inputs, fingerprint=fp, config=config)


# Reader options that bound the resources a reader uses and never change its output.
RESOURCE_OPTIONS = ("memory_limit", "threads", "tmp_dir", "batch_lines")

# Notes that mean some input may not be what the user thinks: warned once per ingest.
WARN_NOTES = ("duplicate_ids", "xml_errors_outside_entries", "xml_files_without_entries")


def _note_duplicate(seen: set, item: Item) -> None:
    """Count a record whose id an earlier record of the same split has (both are kept). The
    splits of a dataset are read from folders of their own, whose file names repeat (WebNLG's
    `train/1triples/Airport.xml#Id1` and `dev/1triples/Airport.xml#Id1` are both
    `1triples/Airport.xml#Id1`): a record is named by its split and id."""
    key = hash((item.record["split"], item.record["id"]))
    if key in seen:
        item.notes = {**(item.notes or {}), "duplicate_ids": 1}
    else:
        seen.add(key)


def _warn_once(output_uri: str, notes: dict) -> None:
    found = {name: notes[name] for name in WARN_NOTES if notes.get(name)}
    if found:
        details = ", ".join(f"{name} {n}" for name, n in found.items())
        logging.getLogger(__name__).warning("ingest into %s: %s", output_uri, details)


def _count(writer, item: Item) -> None:
    """Write one item and count it: read = written + quarantined, in input units."""
    stats = writer.stats
    stats.read += item.units
    if item.record is not None:
        writer.add(item.record)
        stats.written += item.units
        stats.records += 1
    elif item.quarantine is not None:
        writer.quarantine(item.quarantine, item.units)
    else:  # consumed into other rows (labels become names), so counted as written
        stats.written += item.units
    for name, n in (item.notes or {}).items():
        stats.note(name, n)


class LongLine(bytes):
    """The head of a line longer than `limits.MAX_UNIT_BYTES`; the rest was skipped without
    being held in memory. `length` is the whole line's size in bytes, `limit` the limit."""

    length: int = 0
    limit: int = 0

    def reason(self) -> str:
        return f"line longer than {self.limit} bytes ({self.length})"


def read_lines(uri: str, storage_options: dict | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without the newline) of a text file, streamed in blocks.

    A line longer than `limits.MAX_UNIT_BYTES` comes as a `LongLine` holding its head: memory
    stays bounded by the limit and two blocks whatever the file holds (a line of 1 GB in a `.gz`).
    """
    from .. import input_files
    from . import limits

    with input_files.open_input(uri, storage_options) as f:
        yield from split_lines(f.read, limits.MAX_UNIT_BYTES)


READ_BLOCK = 1 << 20  # bytes read at a time by `read_lines`


def split_lines(read: Callable[[int], bytes], limit: int) -> Iterator[tuple[int, bytes]]:
    """The lines of a stream read in blocks with `read`, as `read_lines` gives them."""
    number, line = 0, _Pending(limit)  # the line not ended yet
    while block := read(READ_BLOCK):
        parts = block.split(b"\n")
        if len(parts) == 1:
            line.add(parts[0])
            continue
        line.add(parts[0])
        number += 1
        yield number, line.finish()
        for part in parts[1:-1]:
            number += 1
            short = len(part) <= limit
            yield number, part.rstrip(b"\r") if short else _long(part, len(part), limit)
        line = _Pending(limit)
        line.add(parts[-1])
    if line.size:
        yield number + 1, line.finish()


class _Pending:
    """A line read in pieces: its first `limit + 1` bytes and its size."""

    def __init__(self, limit: int):
        self.limit, self.head, self.size = limit, b"", 0

    def add(self, piece: bytes) -> None:
        if len(self.head) <= self.limit:
            self.head += piece[: self.limit + 1 - len(self.head)]
        self.size += len(piece)

    def finish(self) -> bytes:
        if self.size <= self.limit:
            return self.head.rstrip(b"\r")
        return _long(self.head, self.size, self.limit)


def _long(head: bytes, length: int, limit: int) -> LongLine:
    """A line over the limit (`length` bytes before its newline, a `\\r` included)."""
    from ..schema import MAX_QUARANTINE_RAW_CHARS

    long = LongLine(head[: min(limit, MAX_QUARANTINE_RAW_CHARS)])
    long.length, long.limit = length, limit
    return long
