"""Stream the `<entry>` elements of an XML file with a real XML parser (expat), so comments,
CDATA and processing instructions mean what XML says, while one bad entry costs only itself.

Parsing: the file is fed to expat in chunks. An `entry` element (one not inside another) is built
into an ElementTree element as it streams; its `raw` is its source bytes, from `<entry` to the
end of its end tag. Entity declarations stop the parser (no entity is ever expanded, so a billion
laughs or an external entity does nothing), parameter entities and external DTDs are never read.

Recovery: expat stops at the first error, so after one the file is searched on as bytes:
- inside an entry (or in an entry's start tag), the entry becomes a bad `Entry` that ends at its
  `</entry>`, or before the next `<entry` (an entry is never inside another), or at the end of
  the file; parsing resumes there with a fresh parser that is first fed the start tags of the
  elements open around the entry (`<benchmark><entries>`), so the rest reads as before;
- outside entries (prolog, between entries), the error is counted in `errors` and parsing resumes
  at the next `<entry` (or, before the root element, at the next start tag).
Only after an error is any text searched for a tag; an `<entry` in a comment or CDATA section
that follows a malformed entry may then be taken for an entry.

Memory: the buffer holds the current entry (up to `limits.MAX_UNIT_BYTES`) or the bytes since the
last event, plus one chunk; an entry over the limit is no longer built or kept (its head is) and
becomes a bad `Entry`. Expat itself holds one unfinished token (a tag, a comment) whole.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from xml.parsers import expat

from ..schema import MAX_QUARANTINE_RAW_CHARS
from . import limits

CHUNK = 1 << 20  # bytes read at a time
_ENTRY_START = re.compile(rb"<entry[\s>/]")
_ENTRY_END = re.compile(rb"</entry\s*>")
_ANY_START = re.compile(rb"<[A-Za-z_:]")
_TAG_REST = re.compile(rb"""(?:"[^"]*"|'[^']*'|[^"'>])*>""")  # to the '>' that ends a tag
_OVERLAP = 16  # bytes kept across reads while searching: a tag may straddle two reads
_E = expat.errors  # its XML_ERROR_* names hold messages; `codes` maps a message to its code
_EOF_CODES = {_E.codes[_E.XML_ERROR_NO_ELEMENTS], _E.codes[_E.XML_ERROR_UNCLOSED_TOKEN]}


@dataclass
class Entry:
    """One `<entry>`: its element, or the problem that kept it from being one."""

    line: int  # line of its start tag
    raw: bytes  # its source bytes (the head only, for one over the limit)
    element: ET.Element | None
    problem: str = ""


class _Open:
    """The entry being read."""

    def __init__(self, start: int, line: int):
        self.start, self.line = start, line
        self.builder: ET.TreeBuilder | None = ET.TreeBuilder()
        self.head: bytes | None = None  # set when the entry went over the limit


class _Stop(Exception):
    """Raised in a handler to stop the parser at `offset` (in the file)."""

    def __init__(self, message: str, offset: int, nested: bool = False):
        super().__init__(message)
        self.message, self.offset, self.nested = message, offset, nested


class EntryStream:
    """Iterate over the `Entry`s of a binary file object. Afterwards: `entries` (how many),
    `errors` (XML errors outside entries), `first_error`, `encoding` (declared), `head` (the
    file's first bytes, for a quarantine row)."""

    def __init__(self, f, tag: str = "entry"):
        self.f, self.tag = f, tag
        self.buf, self.buf_start, self.lines_before = bytearray(), 0, 0
        self.eof = False
        self.entries, self.errors, self.first_error = 0, 0, ""
        self.encoding: str | None = None
        self.head = b""
        self.stack: list[str] = []  # open elements around entries
        self.entry: _Open | None = None
        self.ready: list[Entry] = []

    # ------------------------------------------------------------------ driving the parser

    def __iter__(self) -> Iterator[Entry]:
        self._start_parser(0)
        done = False
        while not done:
            if self.fed == self._end() and not self.eof:
                self._read()
            data = bytes(self.buf[self.fed - self.buf_start :])
            self.fed += len(data)
            try:
                self.parser.Parse(data, self.eof)
                done = self.eof
            except (expat.ExpatError, _Stop) as exc:
                done = self._recover(exc)
            yield from self.ready
            self.ready.clear()
            self._trim()

    def _start_parser(self, offset: int) -> None:
        """A fresh parser reading the file from `offset`, inside the elements open there."""
        p = expat.ParserCreate(self.encoding)
        p.buffer_text = True
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._outside_start
        p.EndElementHandler = self._outside_end
        p.CharacterDataHandler = self._outside_data
        p.CommentHandler = lambda _text: self._mark()
        p.ProcessingInstructionHandler = lambda _target, _data: self._mark()
        p.EntityDeclHandler = self._entity_declaration
        p.UnparsedEntityDeclHandler = self._entity_declaration
        p.XmlDeclHandler = self._xml_declaration
        prefix = "".join(f"<{name}>" for name in self.stack).encode(self.encoding or "utf-8")
        self.parser, self.base = p, offset - len(prefix)
        self.line_base, self.fed, self.mark = self._line_at(offset), offset, offset
        self.stack = []
        p.Parse(prefix, False)  # opens the elements again

    def _read(self) -> None:
        data = self.f.read(CHUNK)
        if not data:
            self.eof = True
        elif not self.head:
            self.head = data[:MAX_QUARANTINE_RAW_CHARS]
        self.buf += data

    def _end(self) -> int:
        return self.buf_start + len(self.buf)

    def _trim(self) -> None:
        """Drop the bytes no longer needed: all before the open entry, or the last event."""
        entry = self.entry
        if entry is not None and entry.builder is not None:
            if self.fed - entry.start <= limits.MAX_UNIT_BYTES:
                return self._drop_before(entry.start)
            self._over_limit(entry)
        self._drop_before(min(self.mark, self.fed))

    def _drop_before(self, offset: int) -> None:
        n = offset - self.buf_start
        if n > 0:
            self.lines_before += self.buf.count(b"\n", 0, n)
            del self.buf[:n]
            self.buf_start = offset

    def _line_at(self, offset: int) -> int:
        return self.lines_before + self.buf.count(b"\n", 0, offset - self.buf_start) + 1

    # ------------------------------------------------------------------ handlers

    def _at(self) -> int:
        return self.base + self.parser.CurrentByteIndex

    def _mark(self) -> None:
        self.mark = self._at()

    def _handlers(self, start, end, data) -> None:
        p = self.parser
        p.StartElementHandler, p.EndElementHandler, p.CharacterDataHandler = start, end, data

    def _outside_start(self, name: str, attrs: dict) -> None:
        at = self.mark = self._at()
        if name != self.tag:
            self.stack.append(name)
            return
        self.entry = entry = _Open(at, self.line_base + self.parser.CurrentLineNumber - 1)
        self._inside(entry)
        entry.builder.start(name, attrs)

    def _outside_end(self, _name: str) -> None:
        self.mark = self._at()
        self.stack.pop()

    def _outside_data(self, _text: str) -> None:
        self.mark = self._at()

    def _inside(self, entry: _Open) -> None:
        """Handlers for the inside of `entry`: the hot path, so the builder's own methods where
        possible. Entries do not nest: an `entry` start tag inside one is an error, and the first
        `entry` end tag is the entry's."""
        tag, builder = self.tag, entry.builder

        def start(name: str, attrs: dict) -> None:
            if name == tag:
                at = self._at()
                raise _Stop("malformed XML: <entry> is not closed before the next one", at, True)
            if builder_start is not None:
                builder_start(name, attrs)

        def end(name: str) -> None:
            if name == tag:
                self._close(entry)
            elif builder_end is not None:
                builder_end(name)

        if builder is None:  # over the limit: nothing is built
            builder_start = builder_end = None
            self._handlers(start, end, self._outside_data)
        else:
            builder_start, builder_end = builder.start, builder.end
            self._handlers(start, end, builder.data)

    def _close(self, entry: _Open) -> None:
        at = self.mark = self._at()
        end = self.buf_start + _TAG_REST.match(self.buf, at + 1 - self.buf_start).end()
        self.entry, self.entries = None, self.entries + 1
        self._handlers(self._outside_start, self._outside_end, self._outside_data)
        if entry.builder is not None and end - entry.start > limits.MAX_UNIT_BYTES:
            self._over_limit(entry)
        if entry.builder is None:
            problem = f"entry longer than {limits.MAX_UNIT_BYTES} bytes ({end - entry.start})"
            self.ready.append(Entry(entry.line, entry.head, None, problem))
        else:
            entry.builder.end(self.tag)
            raw = bytes(self.buf[entry.start - self.buf_start : end - self.buf_start])
            self.ready.append(Entry(entry.line, raw, entry.builder.close()))

    def _entity_declaration(self, name: str, *_) -> None:
        raise _Stop(f"entity declarations are not allowed ({name!r})", self._at())

    def _xml_declaration(self, _version, encoding, _standalone) -> None:
        self.encoding = self.encoding or encoding

    def _over_limit(self, entry: _Open) -> None:
        """Stop building an entry over the limit; keep its head for the quarantine row."""
        start = entry.start - self.buf_start
        entry.builder, entry.head = None, bytes(self.buf[start : start + MAX_QUARANTINE_RAW_CHARS])
        if self.entry is entry:
            self._inside(entry)

    # ------------------------------------------------------------------ recovery

    def _recover(self, exc: Exception) -> bool:
        """Account for the error and restart after it. True when the file is done."""
        eof_error = False
        if isinstance(exc, _Stop):
            at, message = exc.offset, exc.message
        else:
            eof_error = self.eof and exc.code in _EOF_CODES
            at = self.base + max(self.parser.ErrorByteIndex, 0)
            line = self.line_base + exc.lineno - 1
            message = f"{expat.ErrorString(exc.code)} at line {line}"
        entry, self.entry = self.entry, None
        if entry is None and not isinstance(exc, _Stop):  # in an entry's start tag?
            lt = self.buf.rfind(b"<", self.mark - self.buf_start, at + 1 - self.buf_start)
            if lt >= 0 and _ENTRY_START.match(self.buf, lt):
                entry = _Open(self.buf_start + lt, self._line_at(self.buf_start + lt))
        if entry is not None:
            return self._bad_entry(entry, at, message, exc, eof_error)
        self.errors += 1
        self.first_error = self.first_error or message
        found = self._search(_ENTRY_START if self.stack else _ANY_START, None, at + 1, None)
        if found is None:
            return True
        self._start_parser(found[1])
        return False

    def _bad_entry(
        self, entry: _Open, at: int, message: str, exc: Exception, eof_error: bool
    ) -> bool:
        """The entry ends at its `</entry>`, before the next `<entry`, or at the end of file."""
        if isinstance(exc, _Stop) and exc.nested:
            found = (_ENTRY_START, at, at)
        else:
            found = self._search(_ENTRY_END, _ENTRY_START, max(at, entry.start + 1), entry)
        if found is None:
            end = resume = None
            if eof_error:
                message = "<entry> is not closed before end of file"
        elif found[0] is _ENTRY_END:
            end = resume = found[2]
        else:
            end = resume = found[1]
        if not message.startswith("malformed XML"):
            message = f"malformed XML: {message}"
        raw = entry.head
        if raw is None:
            stop = (end or self._end()) - self.buf_start
            raw = bytes(self.buf[entry.start - self.buf_start : stop])
            try:
                raw.decode(self.encoding or "utf-8")
            except UnicodeDecodeError as err:
                message = f"invalid UTF-8: byte {err.start} of the entry"
            except LookupError:
                pass
        self.entries += 1
        self.ready.append(Entry(entry.line, raw, None, message))
        if resume is None:
            return True
        self._start_parser(resume)
        return False

    def _search(self, first, second, start: int, entry: _Open | None):
        """The earliest match of `first` or `second` at or after `start`, reading on as needed:
        (pattern, start, end), or None at end of file. Bytes searched are dropped on the way,
        except the head of `entry` up to the limit."""
        pos = start
        while True:
            found = []
            for pattern in (first, second):
                m = pattern and pattern.search(self.buf, max(pos - self.buf_start, 0))
                if m:
                    found.append((m.start(), pattern, m))
            if found:
                _, pattern, m = min(found, key=lambda f: f[0])
                return pattern, self.buf_start + m.start(), self.buf_start + m.end()
            if self.eof:
                return None
            pos = max(pos, self._end() - _OVERLAP)
            keep = pos
            if entry is not None and entry.head is None:
                if self._end() - entry.start <= limits.MAX_UNIT_BYTES:
                    keep = entry.start
                else:
                    self._over_limit(entry)
            self._drop_before(keep)
            self._read()
