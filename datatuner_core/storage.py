"""All I/O of the pipeline: URIs through fsspec, Parquet stage folders, manifests, atomic commits.

A URI is a plain path, `file://`, `s3://bucket/prefix` or `memory://`. S3 endpoint and credentials
come from the environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...) or from `storage_options`;
they are never written anywhere.

A stage folder holds `part-NNNNN.parquet`, `_quarantine/part-NNNNN.parquet` and `_manifest.json`.
The manifest is written last, in one atomic step, and lists the shards: a folder without one
is not a stage, and stray files from an interrupted attempt are ignored by readers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "_manifest.json"
QUARANTINE_DIR = "_quarantine"
MANIFEST_VERSION = 1
# Compressed inputs are read transparently (fsspec's compression="infer").
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
# A shard is closed once its buffered rows reach this many bytes of Arrow memory.
DEFAULT_SHARD_BYTES = 64 * 1024 * 1024
# Rows buffered before they are converted to Arrow (bounds Python-object memory).
ROW_BUFFER = 2_000
# Fail fast on an unreachable S3 endpoint instead of retrying for minutes.
S3_DEFAULTS = {
    "config_kwargs": {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}}
}


class StorageError(Exception):
    """An input or output location that cannot be used; the message names it."""


class StorageUnreachable(StorageError):
    """The storage endpoint did not answer (connection refused, timeout): worth a retry."""


class StageNotFound(StorageError):
    """A stage folder that has no `_manifest.json` (never finished, or not a stage)."""


@dataclass
class Location:
    """A filesystem and a path on it, plus the URI the user gave."""

    fs: fsspec.AbstractFileSystem
    path: str
    uri: str

    def child(self, *parts: str) -> Location:
        path = "/".join([self.path.rstrip("/"), *parts])
        return Location(self.fs, path, "/".join([self.uri.rstrip("/"), *parts]))

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def locate(uri: str, storage_options: dict | None = None) -> Location:
    """Resolve a URI (path, file://, s3://, memory://) to a Location."""
    uri = str(uri)
    options = dict(storage_options or {})
    if uri.startswith(("s3://", "s3a://")):
        options = {**S3_DEFAULTS, **options}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_url" not in options:
            options["endpoint_url"] = endpoint
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
    except (ValueError, ImportError) as exc:
        raise StorageError(f"cannot use {uri!r}: {exc}") from None
    return Location(fs, path, uri)


def join_uri(uri: str, *parts: str) -> str:
    """Join URI parts with '/', keeping the scheme."""
    return "/".join([str(uri).rstrip("/"), *[p.strip("/") for p in parts]])


# ----------------------------------------------------------------------------- inputs


def _check_reachable(loc: Location) -> None:
    """Turn connection and permission failures into one clear StorageError."""
    try:
        exists = loc.fs.exists(loc.path)
    except PermissionError as exc:
        raise StorageError(f"no permission for {loc.uri}: {_short(exc)}") from None
    except Exception as exc:  # botocore raises its own classes for endpoint failures
        raise StorageUnreachable(f"cannot reach {loc.uri}: {_short(exc)}") from None
    if not exists:
        raise StorageError(f"input not found: {loc.uri}")


def is_transient(exc: BaseException) -> bool:
    """Whether an error is worth a retry: an unreachable endpoint, a connection or timeout error
    (not a missing file, a permission problem or bad data)."""
    if isinstance(exc, StorageUnreachable | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, FileNotFoundError | PermissionError | StorageError):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    transient = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                 "ClientConnectorError", "ServerDisconnectedError", "ClientOSError"}  # fmt: skip
    return bool(names & transient)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def list_inputs(
    uri: str, suffixes: tuple[str, ...], storage_options: dict | None = None
) -> list[str]:
    """The input files at `uri`: the file itself, or every file under a folder whose name ends
    with one of `suffixes` (optionally compressed: `.xml.gz`), recursively, sorted; names starting
    with `_` are skipped. Raises StorageError if there are none."""
    loc = locate(uri, storage_options)
    _check_reachable(loc)
    if loc.fs.isdir(loc.path):
        wanted = tuple(s + c for s in suffixes for c in ("", *COMPRESSIONS))
        found = sorted(
            p for p in loc.fs.find(loc.path) if p.lower().endswith(wanted) and "/_" not in p
        )
        if not found:
            raise StorageError(f"no {'/'.join(suffixes)} files under {uri}")
        if "://" not in uri:
            return found
        return [loc.fs.unstrip_protocol(p) for p in found]
    return [uri]


def relative_name(uri: str, root: str) -> str:
    """`uri` relative to the input root `root`; the file name when `root` is the file itself.

    Record ids and quarantine locations use it, so they do not depend on where the data lies.
    """
    if "://" not in str(uri) and "://" not in str(root):
        rel = os.path.relpath(os.path.abspath(uri), os.path.abspath(root))
    else:
        uri_path, root_path = str(uri).split("://")[-1], str(root).split("://")[-1].rstrip("/")
        rel = uri_path[len(root_path) :].lstrip("/") if uri_path.startswith(root_path) else uri_path
    return os.path.basename(str(uri)) if rel in (".", "") else rel.replace(os.sep, "/")


@contextlib.contextmanager
def open_input(uri: str, storage_options: dict | None = None) -> Iterator[io.BufferedIOBase]:
    """Open an input file for binary reading; `.gz`, `.bz2`, `.xz`, `.zst` are decompressed."""
    loc = locate(uri, storage_options)
    try:
        handle = fsspec.open(
            uri if "://" in uri else loc.path,
            "rb",
            compression="infer",
            **_options_for(uri, storage_options),
        )
        with handle as f:
            yield f
    except FileNotFoundError:
        raise StorageError(f"input not found: {uri}") from None


def _options_for(uri: str, storage_options: dict | None) -> dict:
    loc = locate(uri, storage_options)
    return dict(getattr(loc.fs, "storage_options", {}) or {})


CONTENT_CHECKSUMS = ("ETag", "etag", "md5Hash", "crc32c")  # what object stores report of content


def input_fingerprint(uris: list[str], storage_options: dict | None = None) -> list[dict]:
    """Identify inputs by content: path, size and the store's content checksum (an object's ETag)
    or, where the filesystem has none (local disk, memory), the SHA-256 of the bytes.

    Not the modification time: a re-copy of the same data (a restored backup, a re-provisioned
    volume) keeps every stage's cache key, so a resumed run skips what it already finished; a
    change of content with the same size and time still re-runs them.
    """
    out = []
    for uri in uris:
        loc = locate(uri, storage_options)
        info = loc.fs.info(loc.path)
        stamp = next((info[k] for k in CONTENT_CHECKSUMS if info.get(k)), None)
        stamp = str(stamp).strip('"') if stamp else "sha256:" + _content_sha256(loc)
        out.append({"uri": uri, "size": info.get("size"), "stamp": stamp})
    return out


def _content_sha256(loc: Location) -> str:
    digest = hashlib.sha256()  # streamed: about 1 s per GB, paid once per ingest run
    with loc.fs.open(loc.path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(*parts: object) -> str:
    """SHA-256 over the JSON of `parts` (inputs, config, code version)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


_fingerprint = fingerprint  # for scopes where `fingerprint` names a value


def shard_for_rank(items: list[str], rank: int, world_size: int) -> list[str]:
    """The one sharding rule of the project: the sorted listing sliced [rank::world_size]."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return sorted(items)[rank::world_size]


# ----------------------------------------------------------------------------- stage writing


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
    """Buffers rows and writes them as Parquet shards of about `shard_bytes` each."""

    def __init__(self, loc: Location, schema: pa.Schema, shard_bytes: int, keep_empty: bool):
        self.loc, self.schema, self.shard_bytes = loc, schema, shard_bytes
        self.keep_empty = keep_empty
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
        name = f"part-{len(self.files):05d}.parquet"
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue().to_pybytes()
        _write_bytes(self.loc.child(name), data)
        sha = hashlib.sha256(data).hexdigest()
        self.files.append({"path": name, "rows": table.num_rows, "bytes": len(data), "sha256": sha})
        self.tables, self.buffered_bytes = [], 0


def _write_bytes(loc: Location, data: bytes) -> None:
    """Write a whole file; on local disk through a temporary name and an atomic rename."""
    if loc.is_local:
        parent = loc.path.rsplit("/", 1)[0]
        loc.fs.makedirs(parent, exist_ok=True)
        tmp = f"{loc.path}.tmp-{uuid.uuid4().hex[:8]}"
        with loc.fs.open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, loc.path)
    else:  # one PUT on object storage is atomic; memory:// is a dict
        try:
            loc.fs.pipe_file(loc.path, data)
        except FileNotFoundError:
            raise StorageError(f"cannot write {loc.uri}: the bucket does not exist") from None


class StageWriter:
    """Writes one stage folder: shards, quarantine shards, then the manifest (last, atomic).

    Usage: `add(row)` / `quarantine(row)` while counting in `stats`, then `commit(...)`;
    `add_counted(row)` where one input row becomes one output row (the count is done for you).
    """

    def __init__(
        self,
        uri: str,
        stage: str,
        schema: pa.Schema,
        *,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        storage_options: dict | None = None,
    ):
        from .schema import QUARANTINE

        self.uri, self.stage = uri, stage
        self.loc = locate(uri, storage_options)
        self._prepare()  # raises StorageUnreachable / StorageError naming the URI
        self.stats = StageStats()
        self.started = time.time()
        self.out = _ShardSink(self.loc, schema, shard_bytes, keep_empty=True)
        self.bad = _ShardSink(
            self.loc.child(QUARANTINE_DIR), QUARANTINE, shard_bytes, keep_empty=False
        )

    def _prepare(self) -> None:
        """Remove an old manifest first (so the folder is not a stage while it is rewritten)."""
        try:
            if self.loc.fs.exists(self.loc.child(MANIFEST).path):
                self.loc.fs.rm(self.loc.child(MANIFEST).path)
            self.loc.fs.makedirs(self.loc.path, exist_ok=True)
        except PermissionError as exc:
            raise StorageError(f"cannot write to {self.uri}: {_short(exc)}") from None
        except Exception as exc:
            raise StorageUnreachable(f"cannot write to {self.uri}: {_short(exc)}") from None

    def add(self, row: dict) -> None:
        self.out.add(row)

    def add_counted(self, row: dict) -> None:
        """Write one input row as one output row: counted read, written and one record."""
        self.out.add(row)
        self.stats.read += 1
        self.stats.written += 1
        self.stats.records += 1

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
        """Flush shards, check conservation, and write the manifest. Returns the manifest."""
        s = self.stats
        if s.read != s.written + s.quarantined:
            raise AssertionError(
                f"{self.stage}: conservation broken: read {s.read} != written {s.written}"
                f" + quarantined {s.quarantined}"
            )
        self.out.flush(final=True)
        self.bad.flush(final=True)
        self._remove_stale()
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "stage": self.stage,
            "output": self.uri,
            "inputs": inputs,
            "fingerprint": fingerprint,
            # what the stage holds, whatever made it: equal rows give equal shards (same
            # schema, same shard cut, deterministic Parquet bytes), so two runs whose stages
            # match here can share what was trained on them (`training.train_with_ray`)
            "content_sha256": _fingerprint([f["sha256"] for f in self.out.files]),
            "config": config or {},
            "config_hash": _fingerprint(config or {}),
            "counts": s.as_dict(),
            "files": self.out.files,
            "quarantine_files": [
                {**f, "path": f"{QUARANTINE_DIR}/{f['path']}"} for f in self.bad.files
            ],
            "timings": {
                "started": _iso(self.started),
                "finished": _iso(time.time()),
                "seconds": round(time.time() - self.started, 3),
            },
            "code_version": code_version(),
            **({"extra": extra} if extra else {}),
        }
        _write_bytes(self.loc.child(MANIFEST), json.dumps(manifest, indent=2).encode())
        return manifest

    def _remove_stale(self) -> None:
        """Delete shards left by an earlier, larger attempt (names this commit does not list)."""
        keep = {f["path"] for f in self.out.files} | {
            f"{QUARANTINE_DIR}/{f['path']}" for f in self.bad.files
        }
        base = self.loc.path.rstrip("/")
        for path in self.loc.fs.find(base):
            rel = path[len(base) :].lstrip("/") if path.startswith(base) else path
            rel = rel.split("://")[-1]
            if (
                rel.endswith(".parquet")
                and rel not in keep
                and rel.rsplit("/", 1)[-1].startswith("part-")
            ):
                self.loc.fs.rm(path)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def code_version() -> str:
    from . import __version__

    return f"datatuner {__version__}"


# ----------------------------------------------------------------------------- stage reading


def read_manifest(uri: str, storage_options: dict | None = None) -> dict:
    """The manifest of the stage at `uri`; StageNotFound if it has none."""
    try:
        return read_json(join_uri(uri, MANIFEST), storage_options)
    except FileNotFoundError:
        raise StageNotFound(
            f"no stage at {uri}: {MANIFEST} is missing (the stage never finished, or this is "
            "not a stage folder)"
        ) from None


def current_manifest(
    uri: str, fingerprint_: str, storage_options: dict | None = None
) -> dict | None:
    """The manifest at `uri` if it exists and was made from the same fingerprint, else None."""
    try:
        manifest = read_manifest(uri, storage_options)
    except StageNotFound:
        return None
    return manifest if manifest.get("fingerprint") == fingerprint_ else None


def stage_files(
    uri: str, storage_options: dict | None = None, quarantine: bool = False
) -> list[str]:
    """URIs of the shards the manifest lists, in order."""
    manifest = read_manifest(uri, storage_options)
    key = "quarantine_files" if quarantine else "files"
    return [join_uri(uri, f["path"]) for f in manifest[key]]


def iter_stage_batches(
    uri: str,
    storage_options: dict | None = None,
    *,
    quarantine: bool = False,
    files: list[str] | None = None,
    batch_size: int = 1_000,
) -> Iterator[pa.RecordBatch]:
    """Stream the stage's rows as record batches, shard by shard (bounded memory)."""
    for file_uri in files if files is not None else stage_files(uri, storage_options, quarantine):
        loc = locate(file_uri, storage_options)
        with loc.fs.open(loc.path, "rb") as f:
            # Arrow's thread pool reading a Python file object can abort the interpreter at exit
            # ("terminate called without an active exception"): read on this thread only.
            reader = pq.ParquetFile(f, pre_buffer=False)
            yield from reader.iter_batches(batch_size=batch_size, use_threads=False)


def read_stage(
    uri: str, storage_options: dict | None = None, *, quarantine: bool = False
) -> pa.Table:
    """The whole stage as one table (for small stages and tests)."""
    files = stage_files(uri, storage_options, quarantine)
    if not files:
        from .schema import QUARANTINE

        return QUARANTINE.empty_table()
    tables = []
    for file_uri in files:
        loc = locate(file_uri, storage_options)
        with loc.fs.open(loc.path, "rb") as f:
            tables.append(pq.read_table(f, use_threads=False, pre_buffer=False))
    return pa.concat_tables(tables)


def write_json(uri: str, payload: dict, storage_options: dict | None = None) -> None:
    """Write a JSON document atomically."""
    _write_bytes(locate(uri, storage_options), json.dumps(payload, indent=2).encode())


def write_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write a whole file atomically (temporary name + rename locally, one PUT on S3)."""
    _write_bytes(locate(uri, storage_options), data)


def upload_dir(
    local_dir: str, uri: str, storage_options: dict | None = None, *, skip: list[str] = ()
) -> list[str]:
    """Copy every file under a local folder to `uri` (same relative names, but those in
    `skip`); returns the names.

    Local targets get each file atomically; callers write a marker or pointer last.
    """
    names = []
    for dirpath, _, filenames in sorted(os.walk(local_dir)):
        for filename in sorted(filenames):
            path = os.path.join(dirpath, filename)
            rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
            if rel in skip:
                continue
            with open(path, "rb") as f:
                _write_bytes(locate(join_uri(uri, rel), storage_options), f.read())
            names.append(rel)
    return names


def copy_dir(
    src: str, dst: str, storage_options: dict | None = None, *, skip: list[str] = ()
) -> list[str]:
    """Copy every file under `src` to `dst` (`local_dir` then `upload_dir`), leaving out the
    relative names in `skip`; returns the names copied."""
    keep: list = []
    return upload_dir(local_dir(src, keep, storage_options), dst, storage_options, skip=skip)


def read_bytes(
    uri: str, storage_options: dict | None = None, default: bytes | None = None
) -> bytes:
    """A whole file; `default` when it does not exist (FileNotFoundError if no default)."""
    loc = locate(uri, storage_options)
    try:
        with loc.fs.open(loc.path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        if default is None:
            raise
        return default


def read_json(uri: str, storage_options: dict | None = None, *, missing_ok: bool = False):
    """A JSON document; None when it does not exist and `missing_ok`."""
    data = read_bytes(uri, storage_options, default=b"" if missing_ok else None)
    return json.loads(data) if data else None


def local_dir(uri: str, keep: list, storage_options: dict | None = None) -> str:
    """A local folder holding the files at `uri`: the folder itself when local, else a temporary
    copy whose handle is appended to `keep` (the copy lives as long as that list)."""
    import tempfile

    loc = locate(uri, storage_options)
    if loc.is_local:
        if not os.path.isdir(loc.path):
            raise StorageError(f"not found: {uri}")
        return loc.path
    tmp = tempfile.TemporaryDirectory(prefix="datatuner-")
    keep.append(tmp)
    return download_dir(uri, tmp.name, storage_options)


def download_dir(uri: str, local_dir: str, storage_options: dict | None = None) -> str:
    """Copy the files under `uri` into a local folder (for loaders that need a path); returns it.

    A local `uri` is returned as it is, with nothing copied.
    """
    loc = locate(uri, storage_options)
    if loc.is_local:
        return loc.path
    if not loc.fs.exists(loc.path):
        raise StorageError(f"not found: {uri}")
    base = loc.path.rstrip("/")
    for path in loc.fs.find(base):
        rel = path[len(base) :].lstrip("/")
        target = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with loc.fs.open(path, "rb") as src, open(target, "wb") as dst:
            dst.write(src.read())
    return local_dir
