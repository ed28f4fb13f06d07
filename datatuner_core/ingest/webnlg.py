"""WebNLG XML reader: `benchmark/entries/entry`, one record per entry.

Both published shapes are read: the enriched v1.4 release (`lex` holds `text` / `template`
children) and the 2017 challenge and later releases (`lex` holds the text itself). Triples come
from `modifiedtripleset/mtriple` (`subject | predicate | object`), falling back to
`originaltripleset/otriple`. Values are kept as in the source; linearization normalizes them.

The file is streamed: the bytes of each `<entry>…</entry>` are cut out and parsed on their own,
so memory is bounded by one entry and a malformed entry becomes a quarantine row while the rest
of the file is still read. The record id is `{file relative to the input root}#{eid}`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from .. import storage
from ..schema import BadInput, make_quarantine, make_record
from . import Item, infer_split, safe_text

SUFFIXES = (".xml",)
SOURCE = "webnlg"
_START = re.compile(rb"<entry[\s>/]")
_END = re.compile(rb"</entry\s*>")
_CHUNK = 1 << 20  # bytes read at a time


def read(
    files: list[str],
    root: str,
    split: str | None,
    options: dict,
    storage_options: dict | None = None,
) -> Iterator[Item]:
    """Yield one Item per `<entry>` of every file."""
    for uri in files:
        name = storage.relative_name(uri, root)
        file_split = split or infer_split(name)
        for index, (line, chunk, problem) in enumerate(_entry_chunks(uri, storage_options), 1):
            location = f"{name}:{line}"
            try:
                if problem:
                    raise BadInput(problem)
                record, empty = _entry_record(chunk, name, index, file_split)
                yield Item(record=record, notes={"empty_references": empty} if empty else None)
            except BadInput as exc:
                raw = safe_text(chunk.decode("utf-8", "surrogateescape"))
                yield Item(quarantine=make_quarantine(SOURCE, location, str(exc), raw))


def _entry_chunks(uri: str, storage_options: dict | None) -> Iterator[tuple[int, bytes, str]]:
    """(line of the entry's start, its bytes, a problem or '') for each `<entry>` element."""
    buf, line_at_buf, eof = b"", 1, False
    with storage.open_input(uri, storage_options) as f:
        while True:
            start = _START.search(buf)
            if start is None:
                if eof:
                    return
                keep = buf[-16:]  # a start tag may straddle the read boundary
                line_at_buf += buf[: len(buf) - len(keep)].count(b"\n")
                buf = keep
                data = f.read(_CHUNK)
                eof = not data
                buf += data
                continue
            line_at_buf += buf[: start.start()].count(b"\n")
            buf = buf[start.start() :]
            end = _END.search(buf)
            nxt = _START.search(buf, 1)
            if end is not None and (nxt is None or end.start() < nxt.start()):
                chunk, buf = buf[: end.end()], buf[end.end() :]
                yield line_at_buf, chunk, ""
                line_at_buf += chunk.count(b"\n")
            elif nxt is not None:  # another entry starts before this one closes
                chunk, buf = buf[: nxt.start()], buf[nxt.start() :]
                yield line_at_buf, chunk, "malformed XML: <entry> is not closed before the next one"
                line_at_buf += chunk.count(b"\n")
            elif eof:
                yield line_at_buf, buf, "malformed XML: <entry> is not closed before end of file"
                return
            else:
                data = f.read(_CHUNK)
                eof = not data
                buf += data


def _entry_record(chunk: bytes, name: str, index: int, split: str) -> tuple[dict, int]:
    """Parse one `<entry>` element into a records row and its number of empty `lex` texts
    (`<text/>`: counted, not kept). BadInput if it cannot be parsed."""
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"invalid UTF-8: byte {exc.start} of the entry") from None
    try:
        entry = ET.fromstring(text)
    except ET.ParseError as exc:
        raise BadInput(f"malformed XML: {exc}") from None
    triples = [_split_triple(t.text) for t in entry.iterfind("modifiedtripleset/mtriple")]
    if not triples:
        triples = [_split_triple(t.text) for t in entry.iterfind("originaltripleset/otriple")]
    texts = [_lex_text(lex) for lex in entry.iterfind("lex")]
    references = [t for t in texts if t]
    eid = entry.get("eid") or f"entry{index}"
    record = make_record(
        id=f"{name}#{eid}",
        source=SOURCE,
        split=split,
        category=entry.get("category"),
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
