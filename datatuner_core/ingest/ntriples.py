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
    into records of at most `options["max_triples"]` (default: `dataset.max_triples`'s, 7);
    id = f"{subject key}#{chunk}".
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

import lzma
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator

from .. import input_files
from ..schema import MAX_VALUE_CHARS, BadInput, make_quarantine, make_record
from . import IngestError, Item, LongLine, read_lines, safe_text
from .ntriples_syntax import (
    BNODE,
    EMPTY_LITERAL,
    IRI,
    LABEL,
    LINE_RE,
    LITERAL,
    BadTerm,
    label_rank,
    node_name,
    parse_line,
    predicate_name,
)

SUFFIXES = (".nt", ".nt.gz", ".ntriples", ".nt.bz2", ".nt.xz")

SOURCE = "ntriples"
IDS_UNIQUE = True  # `{subject}#{chunk}`: no duplicate-id check needed (it would cost memory)
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"

# seq = file index << LINE_BITS | line number: a global, sortable line position.
LINE_BITS = 40
_STREAM_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)

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

    from ..config import DatasetConfig

    max_triples = options.get("max_triples", DatasetConfig.model_fields["max_triples"].default)
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
                m = LINE_RE(text)
                if m is not None and "\\" not in text and len(text) <= MAX_VALUE_CHARS:
                    # the common case, inlined: no escapes, no term can be too long
                    s_iri, s_bn, p, o_iri, o_bn, o, lang, dt = m.groups()
                    s = s_iri if s_bn is None else "_:" + s_bn
                    if o_iri is not None:
                        o, k = o_iri, IRI
                    elif o_bn is not None:
                        o, k = "_:" + o_bn, BNODE
                    elif not o or o.isspace():
                        yield _bad_line(name, line_no, EMPTY_LITERAL, text)
                        continue
                    else:
                        k = LITERAL
                else:
                    try:
                        parsed = parse_line(text)
                    except BadTerm as exc:
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
