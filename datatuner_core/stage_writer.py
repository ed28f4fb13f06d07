"""Writing a stage folder: Parquet shards, quarantine shards, then the manifest, last and atomic.

A stage folder holds `part-{attempt}-NNNNN.parquet`, `_quarantine/part-{attempt}-NNNNN.parquet`,
`_manifest.json` and, while a writer works in it, `_lock` (`stage_lock`). Shard names are unique
per attempt, so a new attempt never overwrites a shard that the current manifest lists. The
manifest is written last, in one atomic step, and names exactly the stage's shards: read a stage
by its manifest (`stage_reader`). After the manifest, the commit removes the `part-*` files at the
folder's top level and in its `_quarantine/` that the manifest does not list (earlier generations,
killed attempts, unused blocks) and the journal of a resumable stage (`_blocks/`, see `blocks.py`),
and nothing else: another subfolder is never this stage's, so stages nested inside it keep every
file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from . import fingerprints
from .stage_lock import StageLock, lock_wait_from_env, release_later
from .storage import Location, StorageError, list_dir, locate, storage_error, write_file

MANIFEST = "_manifest.json"
QUARANTINE_DIR = "_quarantine"
MANIFEST_VERSION = 1
# A shard is closed once its buffered rows reach this many bytes of Arrow memory.
DEFAULT_SHARD_BYTES = 64 * 1024 * 1024
# Rows buffered before they are converted to Arrow (bounds Python-object memory).
ROW_BUFFER = 2_000


@dataclass
class StageStats:
    """Counts of one stage, in input units, with the reasons for what did not pass."""

    read: int = 0
    written: int = 0
    quarantined: int = 0
    records: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int | list] = field(default_factory=dict)

    def note(self, name: str, n: int = 1) -> None:
        """Count a soft anomaly (kept data, but worth knowing)."""
        self.notes[name] = self.notes.get(name, 0) + n

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "written": self.written,
            "quarantined": self.quarantined,
            "records": self.records,
            "quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
            "notes": dict(sorted(self.notes.items())),
        }


def reason_key(reason: str) -> str:
    """The grouping key of a quarantine reason: the text before the first ':' or '('."""
    for sep in (":", "("):
        reason = reason.split(sep, 1)[0]
    return reason.strip()


class _ShardSink:
    """Buffers rows and writes them as Parquet shards of about `shard_bytes` each, named
    `{prefix}NNNNN.parquet`."""

    def __init__(
        self, loc: Location, schema: pa.Schema, shard_bytes: int, keep_empty: bool, prefix: str
    ):
        self.loc, self.schema, self.shard_bytes = loc, schema, shard_bytes
        self.keep_empty, self.prefix = keep_empty, prefix
        self.rows: list[dict] = []
        self.tables: list[pa.Table] = []
        self.buffered_bytes = 0
        self.files: list[dict] = []
        self.row_limit = 64  # rows converted at a time, adapted to the observed row size

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.row_limit:
            self._to_arrow()

    def _to_arrow(self) -> None:
        if self.rows:
            table = pa.Table.from_pylist(self.rows, schema=self.schema)
            self.tables.append(table)
            self.buffered_bytes += table.nbytes
            self.rows = []
            per_row = max(1, table.nbytes // max(1, table.num_rows))
            room = max(self.shard_bytes - self.buffered_bytes, per_row)
            self.row_limit = int(min(ROW_BUFFER, max(1, room // per_row)))
        if self.buffered_bytes >= self.shard_bytes:
            self.flush()

    def flush(self, final: bool = False) -> None:
        if self.rows:
            self._to_arrow()
        if not self.tables and final and not self.files and self.keep_empty:
            self.tables = [self.schema.empty_table()]  # an empty stage still carries its schema
        if not self.tables:
            return
        table = pa.concat_tables(self.tables)
        name = f"{self.prefix}{len(self.files):05d}.parquet"
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue().to_pybytes()
        etag = write_file(self.loc.child(name), data)
        self.files.append({"path": name, "rows": table.num_rows, "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(),
                           **({"etag": etag} if etag else {})})  # fmt: skip
        self.tables, self.buffered_bytes = [], 0


class StageWriter:
    """Writes one stage folder: shards, quarantine shards, then the manifest (last, atomic).

    Usage: `add(row)` / `quarantine(row)` while counting in `stats`, then `commit(...)`;
    `add_counted(row)` where one input row becomes one output row (the count is done for you).
    The writer holds the folder's lock from its start to its commit; `with StageWriter(...) as w:`
    (or `abort()`) gives it up at once when the stage fails, else it is given up when the writer
    is dropped, the process ends, or the same thread starts another writer on the folder.
    A second writer waits up to `lock_wait_s` (default: `DATATUNER_LOCK_WAIT_S`, else 0 s).
    """

    def __init__(
        self,
        uri: str,
        stage: str,
        schema: pa.Schema,
        *,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        storage_options: dict | None = None,
        lock_wait_s: float | None = None,
    ):
        from .schema import QUARANTINE

        self.uri, self.stage = uri, stage
        self.loc = locate(uri, storage_options)
        self.attempt = uuid.uuid4().hex[:12]
        self.committed = False
        self.lock = StageLock(self.loc, stage)
        self.lock.writer = weakref.ref(self)
        self._prepare(lock_wait_from_env() if lock_wait_s is None else lock_wait_s)
        weakref.finalize(self, release_later, self.lock)
        self.stats = StageStats()
        self.started = time.time()
        prefix = f"part-{self.attempt}-"
        self.out = _ShardSink(self.loc, schema, shard_bytes, keep_empty=True, prefix=prefix)
        self.bad = _ShardSink(self.loc.child(QUARANTINE_DIR), QUARANTINE, shard_bytes,
                              keep_empty=False, prefix=prefix)  # fmt: skip

    def _prepare(self, wait_s: float) -> None:
        """Take the folder's lock: also the first write, so an output that cannot be written (read
        only, a missing bucket, no permission) fails here, before any input is read. The current
        manifest stays until the new one replaces it: readers see the old stage meanwhile."""
        try:
            if self.loc.is_local:
                self.loc.fs.makedirs(self.loc.path, exist_ok=True)
            self.lock.acquire(wait_s)
        except Exception as exc:  # noqa: BLE001 - becomes one error naming the stage
            raise storage_error(self.uri, "write to", exc) from None

    def __enter__(self) -> StageWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.abort()

    def add(self, row: dict) -> None:
        self.out.add(row)

    def add_counted(self, row: dict) -> None:
        """Write one input row as one output row: counted read, written and one record."""
        self.out.add(row)
        self.stats.read += 1
        self.stats.written += 1
        self.stats.records += 1

    def adopt(self, block: dict) -> None:
        """List a finished block's part (`blocks.BlockJournal`: written by this attempt or an
        earlier one of the same fingerprint) as one of the stage's shards, as it is, and count
        its rows: one input row each, written, one record."""
        self.out.flush()  # the sink's own rows keep their order before the block's
        keep = ("path", "rows", "bytes", "sha256", "etag")
        self.out.files.append({k: block[k] for k in keep if k in block})
        self.stats.read += block["rows"]
        self.stats.written += block["rows"]
        self.stats.records += block["rows"]
        for name, n in (block.get("notes") or {}).items():
            self.stats.note(name, n)

    def quarantine(self, row: dict, units: int = 1) -> None:
        self.bad.add(row)
        self.stats.quarantined += units
        key = reason_key(row["reason"])
        self.stats.quarantined_by_reason[key] = self.stats.quarantined_by_reason.get(key, 0) + units

    def commit(
        self,
        *,
        inputs: list[dict],
        fingerprint: str,
        config: dict | None = None,
        extra: dict | None = None,
    ) -> dict:
        """Flush shards, check conservation, and write the manifest (if this writer still holds
        the lock); then remove the shards no longer listed and release the lock. Returns the
        manifest."""
        try:
            s = self.stats
            if s.read != s.written + s.quarantined:
                raise AssertionError(
                    f"{self.stage}: conservation broken: read {s.read} != written {s.written}"
                    f" + quarantined {s.quarantined}"
                )
            self.out.flush(final=True)
            self.bad.flush(final=True)
            manifest = self._manifest(inputs, fingerprint, config, extra)
            self.lock.check()
            write_file(self.loc.child(MANIFEST), json.dumps(manifest, indent=2).encode())
        except BaseException:
            self.abort()
            raise
        self.committed = True
        try:
            self._remove_unlisted(manifest)
        finally:
            self.lock.release()
        return manifest

    def _manifest(self, inputs, fingerprint, config, extra) -> dict:
        return {
            "manifest_version": MANIFEST_VERSION,
            "stage": self.stage,
            "output": self.uri,
            "attempt": self.attempt,
            "inputs": inputs,
            "fingerprint": fingerprint,
            # what the stage holds, whatever made it: equal rows give equal shards (same
            # schema, same shard cut, deterministic Parquet bytes), so two runs whose stages
            # match here can share what was trained on them (`training.train_with_ray`)
            "content_sha256": fingerprints.fingerprint([f["sha256"] for f in self.out.files]),
            "config": config or {},
            "config_hash": fingerprints.fingerprint(config or {}),
            "counts": self.stats.as_dict(),
            "files": self.out.files,
            "quarantine_files": [
                {**f, "path": f"{QUARANTINE_DIR}/{f['path']}"} for f in self.bad.files
            ],
            "timings": {
                "started": _iso(self.started),
                "finished": _iso(time.time()),
                "seconds": round(time.time() - self.started, 3),
            },
            "code_version": fingerprints.code_version(),
            **({"extra": extra} if extra else {}),
        }

    def abort(self) -> None:
        """Give this attempt up: remove its shards and release the lock; the stage that was
        there (if any) stays as it was."""
        if not self.committed:
            with contextlib.suppress(StorageError):
                self._remove_shards(lambda name: name.startswith(f"part-{self.attempt}-"))
        self.lock.release()

    def _remove_unlisted(self, manifest: dict) -> None:
        """Remove the `part-*` files (and their temporary files) at the top level and in
        `_quarantine/` that `manifest` does not list: earlier generations and killed attempts;
        and the journal of a resumable stage (`_blocks/`). Never anything in another subfolder:
        a folder nested here is not this stage's."""
        keep = {f["path"] for f in manifest["files"] + manifest["quarantine_files"]}
        self._remove_shards(lambda name: name not in keep)
        self._remove_blocks()

    def _remove_blocks(self) -> None:
        """The journal of a resumable stage (`_blocks/`, `blocks.BlockJournal`): its parts are
        top-level `part-*` files, listed or removed like any shard."""
        from .blocks import BLOCKS_DIR

        root = self.loc.child(BLOCKS_DIR)
        for folder in list_dir(root):
            sub = root.child(folder["name"].rstrip("/").rsplit("/", 1)[-1])
            for entry in list_dir(sub) if folder.get("type") == "directory" else [folder]:
                if entry.get("type") == "file":
                    with contextlib.suppress(FileNotFoundError):
                        root.fs.rm(entry["name"])
            if self.loc.is_local:
                with contextlib.suppress(OSError):
                    os.rmdir(sub.path)
        if self.loc.is_local:
            with contextlib.suppress(OSError):
                os.rmdir(root.path)

    def _remove_shards(self, remove: Callable[[str], bool]) -> None:
        for folder, prefix in ((self.loc, ""), (self.loc.child(QUARANTINE_DIR), QUARANTINE_DIR)):
            entries = list_dir(folder)
            if prefix and any(e["name"].endswith("/" + MANIFEST) for e in entries):
                continue  # `_quarantine` is itself a stage folder: not ours to clean
            for entry in entries:
                name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
                rel = f"{prefix}/{name}" if prefix else name
                is_shard = name.endswith(".parquet") or ".parquet.tmp-" in name
                if entry.get("type") == "file" and name.startswith("part-") and is_shard:
                    if remove(rel):
                        try:
                            folder.fs.rm(entry["name"])
                        except FileNotFoundError:
                            pass
                        except OSError as exc:
                            raise storage_error(folder.child(name).uri, "remove", exc) from None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
