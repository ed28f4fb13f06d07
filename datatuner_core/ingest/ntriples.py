"""N-Triples reader (W3C N-Triples, https://www.w3.org/TR/n-triples/) → one record per subject.

Input units
    Every line that is not blank and not only a `# comment` is one input unit (one statement,
    or one bad line). Each bad line becomes one quarantine row, located `file:line`, with a reason
    whose text before the first ':' is a stable grouping key: "invalid UTF-8", "malformed
    N-Triples", "value longer than 10000 characters", "empty value", "line longer than N bytes".

Parsing
    One compiled regex matches a whole well-formed line (escapes allowed inside IRIs and
    literals); escape decoding runs only when the line holds a backslash. A line that the regex
    refuses goes to a token-by-token parser that either accepts it (odd but legal spacing) or names
    the fault ("missing final '.'", "literal as subject", "unterminated IRI", "bad escape \\q").
    Surrogate pairs written as two `\\uXXXX` escapes are joined; a lone surrogate is a bad escape.

Names (what a record's triples carry)
    * IRI (subject or object): its `rdfs:label` from the dump if it has one, the best by rank
      (0: `@en` / `@en-XX`, 1: no language tag and no datatype or xsd:string, 2: any other), ties
      broken by the lexicographically smallest label; else the IRI's local name (after the last
      '#' or '/', or the last ':' for `urn:`-like IRIs; percent-decoded; '_' as space). An IRI whose
      local name is empty falls back to the IRI itself, so a name is never blank.
    * Blank node: an rdfs:label if it has one, else its label without `_:` (`_:b0` → "b0"). Blank
      node labels are shared by all files of one ingest (a dump split into parts keeps its nodes).
    * Predicate: the local name split on lower→upper camelCase boundaries, lowercased, '_' as
      space (`birthPlace` → "birth place"). Predicate labels are not used.
    * Literal: its decoded lexical value; language tag and datatype are dropped.
    A literal that is empty or only whitespace cannot become a triple part: its line is
    quarantined ("empty value: ..."), as is a line with a term over MAX_VALUE_CHARS. A line
    longer than `limits.MAX_UNIT_BYTES` is skipped in bounded chunks (never held whole in memory,
    even one line of 1 GB in a `.gz`) and quarantined ("line longer than N bytes (M)").

Records
    Triples are grouped by subject: subjects in byte order of their key (the IRI, or `_:label`),
    and within a subject in (predicate IRI, object kind, object, line order) order, so records and
    ids depend on the graph, not on the order of lines in the dump. A subject's triples are cut
    into records of at most `options["max_triples"]` (default 7); id = f"{subject key}#{chunk}".
    `raw` holds the original lines behind the record, joined by "\\n".
    Duplicate statements are kept as they are (each line is a unit and a triple).

Conservation (read == written + quarantined, in lines)
    `rdfs:label` triples with a literal object are names, not facts. Each one is still accounted
    for exactly once: all label lines of a subject ride on the subject's first record (chunk 0):
    its `units` = its fact triples + the subject's label lines, and its `raw` holds those label
    lines too, so every record satisfies `units == len(raw.split("\\n"))`. A subject that has only
    label triples gives no record (a text saying "X is labelled X" is of no use): its label lines
    are consumed as names of the nodes that point at it, yielded as an Item with neither record
    nor quarantine row, and noted as `label_only_subjects`. So written = fact triples in records +
    label lines consumed; the manifest note `label_triples` counts the consumed label lines. If
    `make_record` refuses a chunk, the chunk is quarantined with all of its units.

Scale
    Nothing holds the whole dump in Python. Lines are parsed in batches into Arrow tables and
    appended to a DuckDB database file in a private temp folder (removed at the end, also on
    error), with a memory limit and a spill folder; the best label per node and the object names
    come from SQL joins, and the subject-ordered stream is read back in Arrow batches and grouped
    on the fly. Python memory is bounded by two batches of lines (one parsing, one being
    inserted) plus the triples of one subject; DuckDB's by its memory limit.

Options: `max_triples` (7), `batch_lines` (200000), `memory_limit` ("1GB"), `threads` (2),
`tmp_dir` (system temp folder).
"""

from __future__ import annotations

import functools
import lzma
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from urllib.parse import unquote

from .. import input_files
from ..schema import MAX_VALUE_CHARS, BadInput, make_quarantine, make_record
from . import IngestError, Item, LongLine, read_lines, safe_text

SUFFIXES = (".nt", ".nt.gz", ".ntriples", ".nt.bz2", ".nt.xz")

SOURCE = "ntriples"
IDS_UNIQUE = True  # `{subject}#{chunk}`: no duplicate-id check needed (it would cost memory)
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"

# Kinds of object, stored in the `k` column (also the sort order of object kinds); LABEL marks
# an rdfs:label row (its object is a literal).
IRI, BNODE, LITERAL, LABEL = 0, 1, 2, 3
# seq = file index << LINE_BITS | line number: a global, sortable line position.
LINE_BITS = 40

# ----------------------------------------------------------------------------- grammar

_IRI_CHARS = r'[^\x00-\x20<>"{}|^`\\]'
_IRI_BODY = rf"{_IRI_CHARS}*(?:\\[uU]{_IRI_CHARS}*)*"  # escapes are checked when decoded
_LIT_BODY = r'[^"\\\n\r]*(?:\\.[^"\\\n\r]*)*'
_PN_TAIL = r"\w\-\u00B7\u0300-\u036F\u203F\u2040"
_BN_BODY = rf"\w(?:[{_PN_TAIL}.]*[{_PN_TAIL}])?"
_LANG = r"[a-zA-Z]+(?:-[a-zA-Z0-9]+)*"
_WS = r"[ \t]*"

_LINE = re.compile(
    rf"{_WS}(?:<({_IRI_BODY})>|_:({_BN_BODY}))"  # 1 subject IRI, 2 subject blank node
    rf"{_WS}<({_IRI_BODY})>"  # 3 predicate
    rf"{_WS}(?:<({_IRI_BODY})>|_:({_BN_BODY})"  # 4 object IRI, 5 object blank node
    rf'|"({_LIT_BODY})"(?:@({_LANG})|{_WS}\^\^{_WS}<({_IRI_BODY})>)?)'  # 6 literal 7 lang 8 type
    rf"{_WS}\.{_WS}(?:#.*)?",
    re.S,
).fullmatch

_TOK_IRI = re.compile(rf"<({_IRI_BODY})>")
_TOK_BN = re.compile(rf"_:({_BN_BODY})")
_TOK_LIT = re.compile(rf'"({_LIT_BODY})"', re.S)
_TOK_LANG = re.compile(rf"@({_LANG})")
_TOK_WS = re.compile(_WS)
_IRI_SCAN = re.compile(rf"{_IRI_CHARS}*")
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|([tbnrf\"'\\])|(.?))", re.S)
_ECHAR = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


_STREAM_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


_EMPTY_LITERAL = "empty value: literal object is empty or only whitespace"


class _Bad(Exception):
    """A line that is not an N-Triples statement; the message is the quarantine reason."""


def _unescape(body: str, iri: bool) -> str:
    """Decode `\\uXXXX`, `\\UXXXXXXXX` (and, in literals, `\\t \\b \\n \\r \\f \\" \\' \\\\`)."""
    surrogates = False

    def one(m: re.Match) -> str:
        nonlocal surrogates
        hexa = m.group(1) or m.group(2)
        if hexa:
            cp = int(hexa, 16)
            if cp > 0x10FFFF:
                raise _Bad(f"malformed N-Triples: bad escape {m.group(0)}")
            if 0xD800 <= cp <= 0xDFFF:
                surrogates = True
            return chr(cp)
        if m.group(3) and not iri:
            return _ECHAR[m.group(3)]
        what = "in IRI " if iri and m.group(3) else ""
        raise _Bad(f"malformed N-Triples: bad escape {what}{m.group(0)}")

    out = _ESCAPE.sub(one, body)
    if surrogates:  # Java-style pairs (\uD83D\uDE00) → one character; a lone half is an error
        try:
            out = out.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise _Bad("malformed N-Triples: bad escape (lone surrogate)") from None
    return out


def _show(text: str, pos: int) -> str:
    """What is at `pos`, for a reason: a short quoted snippet or 'end of line'."""
    if pos >= len(text):
        return "end of line"
    return repr(text[pos : pos + 12])


def _iri_token(text: str, pos: int, what: str) -> tuple[str, int]:
    m = _TOK_IRI.match(text, pos)
    if m:
        return m.group(1), m.end()
    if ">" not in text[pos:]:
        raise _Bad(f"malformed N-Triples: unterminated IRI ({what})")
    stop = _IRI_SCAN.match(text, pos + 1).end()
    c = text[stop]
    if "<" in text[stop : text.index(">", stop)]:  # the '>' found belongs to a later IRI
        raise _Bad(f"malformed N-Triples: unterminated IRI ({what})")
    if c == "\\":
        bad = _ESCAPE.match(text, stop).group(0)
        raise _Bad(f"malformed N-Triples: bad escape in IRI {bad}")
    raise _Bad(f"malformed N-Triples: invalid character {c!r} in IRI ({what})")


def _bnode_token(text: str, pos: int, what: str) -> tuple[str, int]:
    m = _TOK_BN.match(text, pos)
    if not m:
        raise _Bad(f"malformed N-Triples: bad blank node label ({what})")
    return m.group(1), m.end()


def _parse_slow(text: str) -> tuple:
    """Parse a line token by token (the regex refused it): the same groups as `_LINE`, or _Bad."""
    pos = _TOK_WS.match(text, 0).end()
    s_iri = s_bn = o_iri = o_bn = lit = lang = dt = None
    c = text[pos : pos + 1]
    if c == "<":
        s_iri, pos = _iri_token(text, pos, "subject")
    elif text.startswith("_:", pos):
        s_bn, pos = _bnode_token(text, pos, "subject")
    elif c == '"':
        raise _Bad("malformed N-Triples: literal as subject")
    else:
        raise _Bad(
            f"malformed N-Triples: expected IRI or blank node as subject, found {_show(text, pos)}"
        )

    pos = _TOK_WS.match(text, pos).end()
    c = text[pos : pos + 1]
    if c == "<":
        p, pos = _iri_token(text, pos, "predicate")
    elif c == '"':
        raise _Bad("malformed N-Triples: literal as predicate")
    elif text.startswith("_:", pos):
        raise _Bad("malformed N-Triples: blank node as predicate")
    else:
        raise _Bad(f"malformed N-Triples: expected IRI as predicate, found {_show(text, pos)}")

    pos = _TOK_WS.match(text, pos).end()
    c = text[pos : pos + 1]
    if c == "<":
        o_iri, pos = _iri_token(text, pos, "object")
    elif text.startswith("_:", pos):
        o_bn, pos = _bnode_token(text, pos, "object")
    elif c == '"':
        m = _TOK_LIT.match(text, pos)
        if not m:
            raise _Bad("malformed N-Triples: unterminated literal")
        lit, pos = m.group(1), m.end()
        if text.startswith("@", pos):
            m = _TOK_LANG.match(text, pos)
            if not m:
                raise _Bad(f"malformed N-Triples: bad language tag {_show(text, pos)}")
            lang, pos = m.group(1), m.end()
        else:
            after = _TOK_WS.match(text, pos).end()
            if text.startswith("^^", after):
                pos = _TOK_WS.match(text, after + 2).end()
                if not text.startswith("<", pos):
                    raise _Bad("malformed N-Triples: datatype is not an IRI")
                dt, pos = _iri_token(text, pos, "datatype")
    else:
        raise _Bad(
            "malformed N-Triples: expected IRI, blank node or literal as object, "
            f"found {_show(text, pos)}"
        )

    pos = _TOK_WS.match(text, pos).end()
    if pos >= len(text) or text[pos] == "#":
        raise _Bad("malformed N-Triples: missing final '.'")
    if text[pos] != ".":
        raise _Bad(f"malformed N-Triples: expected final '.', found {_show(text, pos)}")
    pos = _TOK_WS.match(text, pos + 1).end()
    if pos < len(text) and text[pos] != "#":
        raise _Bad(f"malformed N-Triples: unexpected text after final '.': {_show(text, pos)}")
    return s_iri, s_bn, p, o_iri, o_bn, lit, lang, dt


def parse_line(text: str) -> tuple | None:
    """One line → (subject key, predicate IRI, object, object kind, lang, datatype), or None for
    a blank or comment line. Raises _Bad with the reason for a bad line. Subject and blank node
    object keys are the IRI or `_:label`."""
    m = _LINE(text)
    if m is not None:
        groups = m.groups()
    else:
        stripped = text.strip(" \t")
        if not stripped or stripped[0] == "#":
            return None
        groups = _parse_slow(text)
    s_iri, s_bn, p, o_iri, o_bn, lit, lang, dt = groups
    if "\\" in text:
        if s_iri and "\\" in s_iri:
            s_iri = _unescape(s_iri, True)
        if "\\" in p:
            p = _unescape(p, True)
        if o_iri and "\\" in o_iri:
            o_iri = _unescape(o_iri, True)
        if lit and "\\" in lit:
            lit = _unescape(lit, False)
        if dt and "\\" in dt:
            dt = _unescape(dt, True)
    s = s_iri if s_bn is None else "_:" + s_bn
    if o_iri is not None:
        o, k = o_iri, IRI
    elif o_bn is not None:
        o, k = "_:" + o_bn, BNODE
    else:
        o, k = lit, LITERAL
        if not o or o.isspace():
            raise _Bad(_EMPTY_LITERAL)
    if len(text) > MAX_VALUE_CHARS:  # decoded terms are never longer than the line
        longest = max(len(s), len(p), len(o))
        if longest > MAX_VALUE_CHARS:
            raise _Bad(f"value longer than {MAX_VALUE_CHARS} characters ({longest})")
    return s, p, o, k, lang, dt


# ----------------------------------------------------------------------------- names


@functools.lru_cache(maxsize=1 << 16)
def _local(iri: str) -> str:
    """The local part of an IRI: after the last '#' or '/', else after the last ':'."""
    trimmed = iri.rstrip("/#")
    cut = max(trimmed.rfind("#"), trimmed.rfind("/"))
    if cut < 0:
        cut = trimmed.rfind(":")
    local = trimmed[cut + 1 :]
    if "%" in local:
        local = unquote(local, errors="replace")
    return local


@functools.lru_cache(maxsize=1 << 17)
def iri_name(iri: str) -> str:
    """The readable name of an IRI without a label: its local name, '_' as space."""
    name = " ".join(_local(iri).replace("_", " ").split())
    return name or iri


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


@functools.lru_cache(maxsize=1 << 14)
def predicate_name(iri: str) -> str:
    """`…/birthPlace` → "birth place"."""
    name = " ".join(_CAMEL.sub(" ", _local(iri)).replace("_", " ").lower().split())
    return name or iri


def node_name(key: str) -> str:
    """Name of a subject or object node without a label: blank node label or IRI local name."""
    return key[2:] if key.startswith("_:") else iri_name(key)


def label_rank(lang: str | None, dt: str | None) -> int:
    if lang is not None:
        lang = lang.lower()
        return 0 if lang == "en" or lang.startswith("en-") else 2
    return 1 if dt is None or dt == XSD_STRING else 2


# ----------------------------------------------------------------------------- reader


def read(
    files: list[str],
    root: str,
    split: str | None,
    options: dict,
    storage_options: dict | None = None,
) -> Iterator[Item]:
    """Yield quarantine Items while loading the files, then one record Item per chunk of each
    subject, in subject order (see the module docstring)."""
    import duckdb
    import pyarrow as pa

    max_triples = options.get("max_triples", 7)
    batch_lines = options.get("batch_lines", 200_000)
    for key, value in (("max_triples", max_triples), ("batch_lines", batch_lines)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise IngestError(f"ntriples option {key} must be a positive integer, not {value!r}")
    split = split or "all"
    names = [input_files.relative_name(uri, root) for uri in files]

    tmp = tempfile.mkdtemp(prefix="datatuner-nt-", dir=options.get("tmp_dir"))
    con = None
    try:
        con = duckdb.connect(os.path.join(tmp, "triples.duckdb"))
        spill = os.path.join(tmp, "spill")
        os.makedirs(spill)
        con.execute(f"SET memory_limit='{_sql_text(str(options.get('memory_limit', '1GB')))}'")
        con.execute(f"SET temp_directory='{_sql_text(spill)}'")
        con.execute(f"SET threads={int(options.get('threads', 2))}")
        con.execute("SET preserve_insertion_order=false")
        con.execute("SET enable_progress_bar=false")
        # one table for facts and labels (r: label rank, NULL for facts): a UNION ALL of two
        # tables under the ORDER BY ran out of memory in DuckDB where one table does not
        con.execute(
            "CREATE TABLE triples (seq BIGINT, s VARCHAR, p VARCHAR, o VARCHAR, k UTINYINT,"
            " r UTINYINT, raw VARCHAR)"
        )

        yield from _load(con, pa, files, names, storage_options, batch_lines)
        yield from _records(con, names, split, max_triples)
    finally:
        if con is not None:
            con.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _sql_text(value: str) -> str:
    return value.replace("'", "''")


def _load(con, pa, files, names, storage_options, batch_lines) -> Iterator[Item]:
    """Parse every line; append facts and labels to DuckDB in batches; yield quarantine Items.

    The DuckDB insert of one batch runs in a worker thread (DuckDB releases the GIL) while the
    next batch is parsed; at most one batch is in flight, so memory stays at about two batches.
    """
    from concurrent.futures import ThreadPoolExecutor

    c_seq, c_s, c_p, c_o, c_k, c_r, c_raw = [], [], [], [], [], [], []
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nt-insert")
    inflight = None

    def flush() -> None:
        nonlocal inflight, c_seq, c_s, c_p, c_o, c_k, c_r, c_raw
        table = None
        if c_seq:
            table = pa.table({
                "seq": pa.array(c_seq, pa.int64()),
                "s": pa.array(c_s, pa.string()),
                "p": pa.array(c_p, pa.string()),
                "o": pa.array(c_o, pa.string()),
                "k": pa.array(c_k, pa.uint8()),
                "r": pa.array(c_r, pa.uint8()),
                "raw": pa.array(c_raw, pa.string()),
            })  # fmt: skip
            c_seq, c_s, c_p, c_o, c_k, c_r, c_raw = [], [], [], [], [], [], []
        if inflight is not None:
            inflight.result()  # re-raises a failed insert
            inflight = None
        if table is not None:
            inflight = pool.submit(_append, con, table)

    try:
        pending = 0
        for index, (uri, name) in enumerate(zip(files, names, strict=True)):
            base = index << LINE_BITS
            lines = read_lines(uri, storage_options)
            while True:
                try:
                    line_no, raw = next(lines)
                except StopIteration:
                    break
                except _STREAM_ERRORS as exc:  # a broken .gz/.bz2/.xz stream
                    raise IngestError(f"cannot read {name}: {type(exc).__name__}: {exc}") from None
                if raw.__class__ is LongLine:
                    if raw.lstrip(b" \t")[:1] != b"#":  # a long comment is still no unit
                        yield _bad_line(name, line_no, raw.reason(), raw.decode("utf-8", "replace"))
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    stripped = raw.strip(b" \t")
                    if not stripped or stripped[:1] == b"#":
                        continue  # a comment is not a unit, whatever its bytes
                    reason = f"invalid UTF-8: {exc.reason} at byte {exc.start}"
                    yield _bad_line(name, line_no, reason, raw.decode("utf-8", "surrogateescape"))
                    continue
                m = _LINE(text)
                if m is not None and "\\" not in text and len(text) <= MAX_VALUE_CHARS:
                    # the common case, inlined: no escapes, no term can be too long
                    s_iri, s_bn, p, o_iri, o_bn, o, lang, dt = m.groups()
                    s = s_iri if s_bn is None else "_:" + s_bn
                    if o_iri is not None:
                        o, k = o_iri, IRI
                    elif o_bn is not None:
                        o, k = "_:" + o_bn, BNODE
                    elif not o or o.isspace():
                        yield _bad_line(name, line_no, _EMPTY_LITERAL, text)
                        continue
                    else:
                        k = LITERAL
                else:
                    try:
                        parsed = parse_line(text)
                    except _Bad as exc:
                        yield _bad_line(name, line_no, str(exc), text)
                        continue
                    except Exception as exc:  # never let one line stop the run
                        reason = f"malformed N-Triples: {type(exc).__name__}"
                        yield _bad_line(name, line_no, reason, text)
                        continue
                    if parsed is None:
                        continue
                    s, p, o, k, lang, dt = parsed
                c_seq.append(base | line_no)
                c_s.append(s)
                c_p.append(p)
                c_o.append(o)
                if k == LITERAL and p == RDFS_LABEL:
                    c_k.append(LABEL)
                    c_r.append(label_rank(lang, dt))
                else:
                    c_k.append(k)
                    c_r.append(None)
                c_raw.append(text)
                pending += 1
                if pending >= batch_lines:
                    flush()
                    pending = 0
        flush()
        flush()  # waits for the last insert
    finally:
        pool.shutdown(wait=True)


def _append(con, table) -> None:
    cursor = con.cursor()
    try:
        cursor.register("_batch", table)
        cursor.execute("INSERT INTO triples SELECT * FROM _batch")
        cursor.unregister("_batch")
    finally:
        cursor.close()


def _bad_line(name: str, line_no: int, reason: str, text: str) -> Item:
    return Item(
        quarantine=make_quarantine(
            source=SOURCE, location=f"{name}:{line_no}", reason=reason, raw=safe_text(text)
        )
    )


# Per subject: its labels first (best first: r NULLS LAST), then its facts; `name` is the best
# label of an IRI or blank node object.
_STREAM_SQL = f"""
WITH names AS (
    SELECT s AS node, min({{'r': r, 'l': o}}).l AS name FROM triples WHERE k = {LABEL} GROUP BY s
)
SELECT t.s, t.k, t.p, t.o, n.name, t.raw, t.seq
FROM triples t LEFT JOIN names n ON n.node = t.o AND t.k < {LITERAL}
ORDER BY t.s, t.r NULLS LAST, t.p, t.k, t.o, t.seq
"""


def _records(con, names, split, max_triples) -> Iterator[Item]:
    """Stream the subject-ordered rows and cut each subject's triples into records."""
    relation = con.sql(_STREAM_SQL)
    reader = (
        relation.to_arrow_reader(50_000)
        if hasattr(relation, "to_arrow_reader")
        else relation.fetch_arrow_reader(50_000)
    )
    group = _Subject(names, split, max_triples)
    for batch in reader:
        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        for s, k, p, o, name, raw, seq in zip(*columns, strict=True):
            if s != group.key:
                yield from group.finish()
                group.start(s)
            if k == LABEL:
                group.label(o, raw, seq)
            else:
                yield from group.fact(p, k, o, name, raw, seq)
    yield from group.finish()


class _Subject:
    """The triples of the current subject, cut into records as they arrive."""

    def __init__(self, names: list[str], split: str, max_triples: int):
        self.names, self.split, self.max = names, split, max_triples
        self.key: str | None = None

    def start(self, key: str) -> None:
        self.key = key
        self.name: str | None = None
        self.labels: list[tuple[str, str, int]] = []  # (label, raw line, seq), best first
        self.chunk = 0
        self.triples: list[tuple[str, str, str]] = []
        self.raw: list[str] = []
        self.seqs: list[int] = []

    def label(self, label: str, raw: str, seq: int) -> None:
        if self.name is None:
            self.name = label  # rows come best label first
        self.labels.append((label, raw, seq))

    def fact(self, p, k, o, name, raw, seq) -> Iterator[Item]:
        if self.name is None:
            self.name = node_name(self.key)
        if self.chunk == 0 and not self.triples and self.labels:
            # the subject's label lines are accounted for by its first record
            self.raw = [raw for _, raw, _ in self.labels]
            self.seqs = [seq for _, _, seq in self.labels]
            self.labels = []
        if k == LITERAL:
            obj = o
        else:
            obj = name if name is not None else node_name(o)
        self.triples.append((self.name, predicate_name(p), obj))
        self.raw.append(raw)
        self.seqs.append(seq)
        if len(self.triples) >= self.max:
            yield self._emit()

    def finish(self) -> Iterator[Item]:
        if self.key is None:
            return
        if self.labels:  # a subject with labels only: its labels only name it elsewhere
            n = len(self.labels)
            yield Item(units=n, notes={"label_triples": n, "label_only_subjects": 1})
            self.labels = []
        if self.triples:
            yield self._emit()
        self.key = None

    def _emit(self) -> Item:
        units = len(self.raw)
        record_id = f"{self.key}#{self.chunk}"
        raw = "\n".join(self.raw)
        try:
            item = Item(
                record=make_record(
                    id=record_id, source=SOURCE, split=self.split, raw=raw, triples=self.triples
                ),
                units=units,
            )
            labels = units - len(self.triples)
            if labels:
                item.notes = {"label_triples": labels}
        except BadInput as exc:
            first = min(self.seqs)
            location = f"{self.names[first >> LINE_BITS]}:{first & ((1 << LINE_BITS) - 1)}"
            item = Item(
                quarantine=make_quarantine(
                    source=SOURCE,
                    location=f"{location} ({record_id})",
                    reason=str(exc),
                    raw=safe_text(raw),
                ),
                units=units,
            )
        self.chunk += 1
        self.triples, self.raw, self.seqs = [], [], []
        return item
