"""Resumable stages: output written in finished blocks that outlive a crash or a stop.

A long stage (generation of a dump: hours) writes its rows in blocks as they finish. A block is
a Parquet part at the stage folder's top level and then a journal entry, each written atomically:

    part-b{fingerprint[:8]}-{uuid}.parquet                  the rows
    _blocks/{fingerprint[:16]}/block-{uuid}.json            {"part", "rows", "bytes", "sha256",
                                                             "ids", "notes", "finished"}

The entry is written after its part, so an entry always names a whole part; a part without an
entry (the process died between the two) is not a finished block. A re-run with the same
fingerprint (same inputs, models, settings and code) keeps every finished block whose part is
whole and does only the inputs no kept block holds; blocks of another fingerprint are never
used. The stage's commit lists the kept parts in its manifest as they are (no copy), so after it
the folder holds exactly the stage's parts, as any stage does (a tool reading the folder with
pyarrow or DuckDB sees them all); it then removes the journal and every part the manifest does
not list (`StageWriter._remove_unlisted`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from . import stage_reader, storage

BLOCKS_DIR = "_blocks"


class BlockJournal:
    """The finished blocks of one stage attempt series (one fingerprint) in a stage folder.

    Use it only while holding the folder's `StageWriter` (its lock): one writer per folder."""

    def __init__(self, stage_uri: str, fingerprint: str, storage_options: dict | None = None):
        self.stage_uri, self.storage_options = stage_uri, storage_options
        self.stage = storage.locate(stage_uri, storage_options)
        self.prefix = f"part-b{fingerprint[:8]}-"
        self.loc = self.stage.child(BLOCKS_DIR, fingerprint[:16])

    def finished(self) -> list[dict]:
        """The journal entries whose parts are whole (size and checksum), oldest first; each
        entry's `path` is its part relative to the stage folder. Entries whose part is missing
        or changed are left out (their rows are done again) with one line on stderr."""
        names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in storage.list_dir(self.loc)]
        journals = sorted(n for n in names if n.startswith("block-") and n.endswith(".json"))
        if not journals:
            return []
        parts = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in storage.list_dir(self.stage)}
        entries, bad = [], 0
        for name in journals:
            try:
                journal = json.loads(storage.read_bytes(self.loc.child(name).uri,
                                                        self.storage_options))  # fmt: skip
            except (ValueError, FileNotFoundError):
                bad += 1
                continue
            part = parts.get(journal.get("part", ""))
            listed = {**journal, "path": journal.get("part")}
            whole = part is not None and part.get("size") == journal.get("bytes")
            part_loc = self.stage.child(journal["part"])
            if whole and not stage_reader.checksum_matches(part_loc, listed, part):
                whole = False
            if not whole:
                bad += 1
                continue
            entries.append(listed)
        if bad:
            print(f"[blocks] {bad} journal entr{'y' if bad == 1 else 'ies'} under {self.loc.uri} "
                  "name a missing or changed part: their rows are done again",
                  file=sys.stderr, flush=True)  # fmt: skip
        return sorted(entries, key=lambda e: (e.get("finished", 0), e["part"]))

    def write(self, rows: list[dict], schema: pa.Schema, notes: dict | None = None) -> dict:
        """Write one finished block (its part, then its entry); returns the entry."""
        key = uuid.uuid4().hex[:16]
        table = pa.Table.from_pylist(rows, schema=schema)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue().to_pybytes()
        part = f"{self.prefix}{key}.parquet"
        etag = storage.write_file(self.stage.child(part), data)
        entry = {
            "part": part,
            "rows": table.num_rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            **({"etag": etag} if etag else {}),
            "ids": [r["id"] for r in rows],
            "notes": dict(notes or {}),
            "finished": time.time(),
        }
        storage.write_file(self.loc.child(f"block-{key}.json"), json.dumps(entry).encode())
        return {**entry, "path": part}

    def clear(self) -> None:
        """Forget every finished block of this fingerprint (a forced re-run); their parts go
        with the next commit, which does not list them."""
        for entry in storage.list_dir(self.loc):
            if entry.get("type") == "file":
                self.loc.fs.rm(entry["name"])


class BlockBuffer:
    """Rows gathered into blocks: `add` rows as they finish; a block is written (part, then
    entry) once `every_s` seconds have passed since the last one or `max_rows` rows wait, and
    `flush()` writes what is left. `on_block(entry)` is called after each block."""

    def __init__(self, journal: BlockJournal, schema: pa.Schema, every_s: float, on_block,
                 max_rows: int = 50_000):  # fmt: skip
        self.journal, self.schema, self.every_s = journal, schema, every_s
        self.on_block, self.max_rows = on_block, max_rows
        self.rows: list[dict] = []
        self.notes: dict[str, int] = {}
        self.last = time.monotonic()
        self.write_s = 0.0  # time spent writing blocks

    def add(self, row: dict, notes: tuple[str, ...] = ()) -> None:
        self.rows.append(row)
        for name in notes:
            self.notes[name] = self.notes.get(name, 0) + 1

    def due(self) -> bool:
        return bool(self.rows) and (
            len(self.rows) >= self.max_rows or time.monotonic() - self.last >= self.every_s
        )

    def flush(self) -> dict | None:
        if not self.rows:
            return None
        started = time.monotonic()
        entry = self.journal.write(self.rows, self.schema, self.notes)
        self.rows, self.notes, self.last = [], {}, time.monotonic()
        self.write_s += self.last - started
        self.on_block(entry)
        return entry
