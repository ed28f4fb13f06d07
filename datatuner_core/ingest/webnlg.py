"""WebNLG XML reader: `benchmark/entries/entry`, one record per entry.

Both published shapes are read: the enriched v1.4 release (`lex` holds `text` / `template`
children) and the 2017 challenge and later releases (`lex` holds the text itself). Triples come
from `modifiedtripleset/mtriple` (`subject | predicate | object`), falling back to
`originaltripleset/otriple`. Values are kept as in the source; linearization normalizes them.

The file is streamed through an XML parser (`xml_entries`): comments, CDATA and processing
instructions mean what XML says, memory is bounded by one entry (`limits.MAX_UNIT_BYTES`), no
entity is expanded, and a malformed entry becomes a quarantine row while the rest of the file is
still read. `read` counts entries. A file with no entry that is not XML either (a JSONL file given
as `--format webnlg`) is one quarantine row, located by its name; XML errors outside entries and
XML files without entries are counted in the notes (`xml_errors_outside_entries`,
`xml_files_without_entries`). The record id is `{file relative to the input root}#{eid}`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

from .. import input_files
from ..schema import BadInput, make_quarantine
from . import Item, infer_split, limits, safe_text
from .xml_entries import Entry, EntryStream

SUFFIXES = (".xml",)
SOURCE = "webnlg"


def read(
    files: list[str],
    root: str,
    split: str | None,
    options: dict,
    storage_options: dict | None = None,
) -> Iterator[Item]:
    """Yield one Item per `<entry>` of every file (and one for a file that is not XML)."""
    for uri in files:
        name = input_files.relative_name(uri, root)
        file_split = split or infer_split(name)
        with input_files.open_input(uri, storage_options) as f:
            stream = EntryStream(f)
            for index, entry in enumerate(stream, 1):
                yield _entry_item(entry, name, index, file_split, stream.encoding)
        yield from _file_items(stream, name)


def _entry_item(entry: Entry, name: str, index: int, split: str, encoding: str | None) -> Item:
    try:
        if entry.problem:
            raise BadInput(entry.problem)
        record, empty = _entry_record(entry, name, index, split, encoding)
        return Item(record=record, notes={"empty_references": empty} if empty else None)
    except BadInput as exc:
        raw = safe_text(entry.raw.decode("utf-8", "surrogateescape"))
        return Item(quarantine=make_quarantine(SOURCE, f"{name}:{entry.line}", str(exc), raw))


def _file_items(stream: EntryStream, name: str) -> Iterator[Item]:
    """What a file says beyond its entries: not XML at all, no entries, errors between them."""
    if stream.entries == 0 and stream.errors:
        reason = f"not a WebNLG XML file: {stream.first_error}"
        raw = safe_text(stream.head.decode("utf-8", "surrogateescape"))
        yield Item(quarantine=make_quarantine(SOURCE, name, reason, raw))
    elif stream.entries == 0:
        yield Item(units=0, notes={"xml_files_without_entries": 1})
    elif stream.errors:
        yield Item(units=0, notes={"xml_errors_outside_entries": stream.errors})


def _entry_record(
    entry: Entry, name: str, index: int, split: str, encoding: str | None
) -> tuple[dict, int]:
    """One `<entry>` element as a records row and its number of empty `lex` texts (`<text/>`:
    counted, not kept). BadInput if it cannot be one."""
    try:
        text = entry.raw.decode(encoding or "utf-8")
    except (UnicodeDecodeError, LookupError):
        text = entry.raw.decode("utf-8", "replace")
    element = entry.element
    triples = [_split_triple(t.text) for t in element.iterfind("modifiedtripleset/mtriple")]
    if not triples:
        triples = [_split_triple(t.text) for t in element.iterfind("originaltripleset/otriple")]
    texts = [_lex_text(lex) for lex in element.iterfind("lex")]
    references = [t for t in texts if t]
    eid = element.get("eid") or f"entry{index}"
    record = limits.checked_record(
        id=f"{name}#{eid}",
        source=SOURCE,
        split=split,
        category=element.get("category"),
        triples=triples,
        references=references,
        raw=text,
    )
    return record, len(texts) - len(references)


def _split_triple(text: str | None) -> tuple[str, str, str]:
    parts = [p.strip() for p in (text or "").split(" | ")]
    if len(parts) != 3:
        raise BadInput(f"malformed triple: expected 'subject | predicate | object', got {text!r}")
    return parts[0], parts[1], parts[2]


def _lex_text(lex: ET.Element) -> str:
    """A `lex`'s reference text: its `text` child (v1.4) or its own text (2017 challenge)."""
    child = lex.find("text")
    text = child.text if child is not None else lex.text
    return " ".join((text or "").split())
