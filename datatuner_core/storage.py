"""All I/O of the pipeline: URIs through fsspec, Parquet stage folders, manifests, atomic commits.

A URI is a plain path, `file://`, `s3://bucket/prefix` or `memory://`. S3 endpoint and credentials
come from the environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...) or from `storage_options`;
they are never written anywhere.

A stage folder holds `part-{attempt}-NNNNN.parquet`, `_quarantine/part-{attempt}-NNNNN.parquet`,
`_manifest.json` and, while a writer works in it, `_lock`. Shard names are unique per attempt, so a
new attempt never overwrites a shard that the current manifest lists. The manifest is written last,
in one atomic step, and names exactly the stage's shards: read a stage by its manifest. After the
manifest, the commit removes the `part-*` files at the folder's top level and in its `_quarantine/`
that the manifest does not list (earlier generations, killed attempts, unused blocks) and the
journal of a resumable stage (`_blocks/`, see `blocks.py`), and nothing else: another subfolder is
never this stage's, so stages nested inside it keep every file.

One writer per stage folder (`StageLock`): a second writer waits up to `lock_wait_s`
(`DATATUNER_LOCK_WAIT_S`, default 0) and then fails with one line naming the stage.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "_manifest.json"
QUARANTINE_DIR = "_quarantine"
LOCK = "_lock"
# On object storage the lock holder rewrites `_lock` this often (seconds) ...
LOCK_HEARTBEAT_S = 15.0
# ... and a lock whose heartbeat is older than this is taken over (its writer died elsewhere).
LOCK_STALE_S = 120.0
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


class StageLocked(StorageError):
    """Another writer holds the stage folder's lock (or took it over from this one)."""


def _storage_error(uri: str, action: str, exc: BaseException) -> StorageError:
    """One StorageError naming `uri` for any failure of the store (permission, not a folder,
    missing bucket, endpoint down); unreachable endpoints stay retryable (StorageUnreachable)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, FileNotFoundError) and "bucket" in str(exc).lower():
        bucket = str(uri).split("://", 1)[-1].split("/", 1)[0]
        return StorageError(f"cannot {action} {uri}: the bucket {bucket!r} does not exist")
    kind = StorageUnreachable if is_transient(exc) else StorageError
    return kind(f"cannot {action} {uri}: {_short(exc)}")


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
        try:
            listing = loc.fs.find(loc.path)
        except OSError as exc:
            raise _storage_error(uri, "list", exc) from None
        found = sorted(p for p in listing if p.lower().endswith(wanted) and "/_" not in p)
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
    handle = fsspec.open(
        uri if "://" in uri else loc.path, "rb", compression="infer",
        **_options_for(uri, storage_options),
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(handle)
        except FileNotFoundError:
            raise StorageError(f"input not found: {uri}") from None
        except OSError as exc:  # permission, a folder, a store error: named, not raw
            raise _storage_error(uri, "read", exc) from None
        yield f  # errors of the caller's own reading pass through unchanged


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
        try:
            info = loc.fs.info(loc.path)
            stamp = next((info[k] for k in CONTENT_CHECKSUMS if info.get(k)), None)
            stamp = str(stamp).strip('"') if stamp else "sha256:" + _content_sha256(loc)
        except OSError as exc:
            raise _storage_error(uri, "read", exc) from None
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
        etag = _write_bytes(self.loc.child(name), data)
        self.files.append({"path": name, "rows": table.num_rows, "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(),
                           **({"etag": etag} if etag else {})})  # fmt: skip
        self.tables, self.buffered_bytes = [], 0


def _write_bytes(loc: Location, data: bytes) -> str | None:
    """Write a whole file; on local disk through a temporary name and an atomic rename.
    Returns the object's ETag where the store gives one (S3)."""
    try:
        if loc.is_local:
            parent = loc.path.rsplit("/", 1)[0]
            loc.fs.makedirs(parent, exist_ok=True)
            tmp = f"{loc.path}.tmp-{uuid.uuid4().hex[:8]}"
            with loc.fs.open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, loc.path)
            return None
        # one PUT on object storage is atomic; memory:// is a dict
        out = loc.fs.pipe_file(loc.path, data)
        return str(out["ETag"]).strip('"') if isinstance(out, dict) and "ETag" in out else None
    except Exception as exc:  # noqa: BLE001 - every store error becomes one naming the file
        raise _storage_error(loc.uri, "write", exc) from None


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    return "s3" in _protocols(fs)


def _ls(loc: Location) -> list[dict]:
    """The entries directly in a folder, fresh from the store; [] if it does not exist."""
    try:
        loc.fs.invalidate_cache(loc.path)
        return loc.fs.ls(loc.path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise _storage_error(loc.uri, "list", exc) from None


def _pid_alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # someone else's process, or no pid recorded: assume alive
    return True


_HELD: dict[str, StageLock] = {}  # the locks this process holds, by lock file
_GUARD = threading.RLock()  # check-and-write of a lock is atomic within this process


class _Conflict(Exception):
    """A conditional write of `_lock` lost to another writer."""


class StageLock:
    """One writer per stage folder: the file `_lock` names its owner (host, pid, start time).

    Local disk: an `flock` on `_lock`, released by the kernel when the process dies, so a killed
    writer's lock is free at once. S3: `_lock` is created with `If-None-Match: *`, its heartbeat
    rewritten with `If-Match` every LOCK_HEARTBEAT_S, and a lock whose writer is gone (a dead
    pid on this host, or no heartbeat for LOCK_STALE_S) is taken over, again with `If-Match`,
    so two takers cannot both win. Other stores (memory://): the same protocol, atomic within
    one process only. Within one process, a lock whose writer was abandoned (its thread gone,
    or the thread now asking again: a retry after a failure) is taken over as well.
    """

    def __init__(self, loc: Location, stage: str):
        self.loc, self.file = loc, loc.child(LOCK)
        self.key = f"{_protocols(loc.fs)[0]}://{self.file.path}"
        self.owner = {"owner": uuid.uuid4().hex, "stage": stage, "host": socket.gethostname(),
                      "pid": os.getpid(), "started": _iso(time.time()),
                      "heartbeat": time.time()}  # fmt: skip
        self.thread = threading.get_ident()
        self.writer: weakref.ref | None = None  # the writer holding it, if any
        self.fd: int | None = None  # local: the flock'ed file
        self.token: str | None = None  # object stores: the ETag (or MD5) of our `_lock`
        self.lost = False
        self._stop = threading.Event()

    # -- acquire / check / release

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the lock, waiting up to `wait_s` seconds; StageLocked (naming the stage) if a
        live writer still holds it then."""
        deadline = time.monotonic() + max(0.0, wait_s)
        while not self._try_acquire():
            if time.monotonic() >= deadline:
                raise StageLocked(self._busy_message())
            time.sleep(min(0.2, max(0.01, deadline - time.monotonic())))
        if self.fd is None:
            threading.Thread(target=self._beat, daemon=True, name=f"lock {self.loc.uri}").start()

    def check(self) -> None:
        """Raise StageLocked unless this writer still holds the lock (before its commit)."""
        held = self.fd is not None or (self.token is not None and not self.lost)
        if held and self.fd is None:
            current, _ = self._read()
            held = bool(current) and current.get("owner") == self.owner["owner"]
        if not held:
            raise StageLocked(
                f"stage {self.loc.uri}: this writer lost its lock to another writer "
                f"({self.file.uri}); nothing was committed"
            )

    def release(self) -> None:
        """Give the lock up (and remove `_lock` if it is still ours)."""
        self._stop.set()
        with _GUARD:
            if _HELD.get(self.key) is self:
                del _HELD[self.key]
            if self.fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.file.path)
                os.close(self.fd)
                self.fd = None
            elif self.token is not None:
                self.token = None
                try:
                    current, _ = self._read()
                    if current and current.get("owner") == self.owner["owner"]:
                        self.loc.fs.rm(self.file.path)
                except Exception as exc:  # noqa: BLE001 - the lock goes stale on its own
                    print(f"[storage] could not remove {self.file.uri}: {_short(exc)}",
                          file=sys.stderr)  # fmt: skip

    # -- the protocol

    def _try_acquire(self) -> bool:
        with _GUARD:
            holder = _HELD.get(self.key)
            if holder is not None and holder is not self and holder._abandoned():
                holder.lost = True
                holder.release()
            taken = self._try_local() if self.loc.is_local else self._try_object()
            if taken:
                _HELD[self.key] = self
            return taken

    def _abandoned(self) -> bool:
        if (self.writer is not None and self.writer() is None) or (
            self.thread == threading.get_ident()
        ):
            return True
        return not any(t.ident == self.thread for t in threading.enumerate())

    def _try_local(self) -> bool:
        import fcntl

        while True:
            fd = os.open(self.file.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed that file while we waited for it: try again
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.owner).encode(), 0)
        self.fd = fd
        return True

    def _try_object(self) -> bool:
        for _ in range(3):
            try:
                self.token = self._put(create=True)
                return True
            except _Conflict:
                pass
            current, token = self._read()
            if current is not None:
                break  # else it was released meanwhile: create it again
        else:
            return False
        if not self._stale(current):
            return False
        try:
            self.token = self._put(match=token)  # take over only the lock we judged stale
        except _Conflict:
            return False
        return True

    def _stale(self, held: dict) -> bool:
        if held.get("host") == self.owner["host"]:
            if held.get("pid") == os.getpid():
                return self.key not in _HELD  # ours, but no writer of this process holds it
            if not _pid_alive(held.get("pid")):
                return True
        try:
            return time.time() - float(held.get("heartbeat", 0)) > LOCK_STALE_S
        except (TypeError, ValueError):
            return True

    def _put(self, *, create: bool = False, match: str | None = None) -> str:
        """Write our `_lock`: only if there is none (`create`) or only over the version `match`;
        _Conflict if that condition does not hold. Returns the new version's token."""
        fs, path = self.loc.fs, self.file.path
        data = json.dumps(self.owner).encode()
        if _is_s3(fs):
            condition = {"mode": "create"} if create else {"IfMatch": match} if match else {}
            try:
                out = fs.pipe_file(path, data, **condition)
            except FileExistsError:  # If-None-Match failed
                raise _Conflict from None
            except OSError as exc:
                if exc.errno == errno.EINVAL and "condition" in str(exc):  # If-Match failed
                    raise _Conflict from None
                raise
            fs.invalidate_cache(path)
            return str(out["ETag"])
        with _GUARD:
            if create and fs.exists(path):
                raise _Conflict
            if match is not None and self._read()[1] != match:
                raise _Conflict
            fs.pipe_file(path, data)
            return hashlib.md5(data).hexdigest()

    def _read(self) -> tuple[dict | None, str | None]:
        """The lock's content and version token (ETag on S3, else the MD5 of its bytes)."""
        fs, path = self.loc.fs, self.file.path
        try:
            fs.invalidate_cache(path)
            tag = fs.info(path).get("ETag") if _is_s3(fs) else None
            data = fs.cat_file(path)
        except FileNotFoundError:
            return None, None
        try:
            content = json.loads(data)
        except ValueError:
            content = {}  # being written (local) or damaged: judged by its age
        return (content if isinstance(content, dict) else {}), tag or hashlib.md5(data).hexdigest()

    def _beat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            self.owner["heartbeat"] = time.time()
            try:
                self.token = self._put(match=self.token)
            except _Conflict:
                self.lost = True  # taken over: the commit will refuse
                return
            except Exception as exc:  # noqa: BLE001 - a missed beat; the next one retries
                print(f"[storage] heartbeat of {self.file.uri} failed: {_short(exc)}",
                      file=sys.stderr)  # fmt: skip

    def _busy_message(self) -> str:
        current, _ = self._read()
        who = "another writer"
        if current:
            beat = current.get("heartbeat")
            age = f", last heartbeat {time.time() - float(beat):.0f} s ago" if beat else ""
            who = (f"{current.get('stage', 'a')} writer, pid {current.get('pid')} on "
                   f"{current.get('host')}, since {current.get('started')}{age}")  # fmt: skip
        return (
            f"stage {self.loc.uri} is being written by another writer ({who}); wait for it to "
            f"finish, or remove {self.file.uri} if that writer is gone"
        )


def _release_later(lock: StageLock) -> None:
    """Release the lock of a writer that was dropped without commit or abort. The garbage
    collector may run this on any thread, the fsspec event loop's included, where a blocking
    store call (or waiting for `_GUARD`, held by a thread that waits on that loop) would
    deadlock: so it runs on a thread of its own (directly when the interpreter exits)."""
    if sys.is_finalizing():
        lock.release()
        return
    threading.Thread(target=lock.release, daemon=True, name=f"release {lock.loc.uri}").start()


def _lock_wait_s() -> float:
    try:
        return float(os.environ.get("DATATUNER_LOCK_WAIT_S", "0"))
    except ValueError:
        raise StorageError("DATATUNER_LOCK_WAIT_S must be a number of seconds") from None


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
        self._prepare(_lock_wait_s() if lock_wait_s is None else lock_wait_s)
        weakref.finalize(self, _release_later, self.lock)
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
            raise _storage_error(self.uri, "write to", exc) from None

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
            _write_bytes(self.loc.child(MANIFEST), json.dumps(manifest, indent=2).encode())
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
            "content_sha256": _fingerprint([f["sha256"] for f in self.out.files]),
            "config": config or {},
            "config_hash": _fingerprint(config or {}),
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
            "code_version": code_version(),
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
        for folder in _ls(root):
            sub = root.child(folder["name"].rstrip("/").rsplit("/", 1)[-1])
            for entry in _ls(sub) if folder.get("type") == "directory" else [folder]:
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
            entries = _ls(folder)
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
                            raise _storage_error(folder.child(name).uri, "remove", exc) from None


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
    if manifest.get("fingerprint") != fingerprint_:
        return None
    if problems := verify_stage(uri, manifest, storage_options):
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(f"[storage] stage {uri} is not whole: {problems[0]}{more}; writing it again",
              file=sys.stderr)  # fmt: skip
        return None
    return manifest


def verify_stage(
    uri: str, manifest: dict | None = None, storage_options: dict | None = None
) -> list[str]:
    """What is wrong with the shards a stage's manifest lists (empty: nothing). Each must exist
    with its size, and its checksum where that is cheap: the SHA-256 of the bytes on local disk
    and memory://, on S3 the object's ETag against the one its upload returned (any rewrite of
    the object changes it)."""
    manifest = manifest if manifest is not None else read_manifest(uri, storage_options)
    loc = locate(uri, storage_options)
    listed = manifest.get("files", []) + manifest.get("quarantine_files", [])
    found: dict[str, dict] = {}
    for folder in sorted({f["path"].rpartition("/")[0] for f in listed}):
        for entry in _ls(loc.child(folder) if folder else loc):
            found[f"{folder}/" * bool(folder) + entry["name"].rstrip("/").rsplit("/", 1)[-1]] = (
                entry
            )
    problems = []
    for f in listed:
        entry = found.get(f["path"])
        if entry is None or entry.get("type") != "file":
            problems.append(f"{f['path']} is missing")
        elif f.get("bytes") is not None and entry.get("size") != f["bytes"]:
            problems.append(f"{f['path']} has {entry.get('size')} bytes, not {f['bytes']}")
        elif not _checksum_matches(loc.child(f["path"]), f, entry):
            problems.append(f"{f['path']} does not match its checksum")
    return problems


def _checksum_matches(loc: Location, listed: dict, entry: dict) -> bool:
    if _is_s3(loc.fs):
        etag = str(entry.get("ETag", "")).strip('"')
        return not listed.get("etag") or etag == listed["etag"]
    if not listed.get("sha256") or not (loc.is_local or "memory" in _protocols(loc.fs)):
        return True
    try:
        return _content_sha256(loc) == listed["sha256"]
    except FileNotFoundError:
        return False


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
        with _open_shard(file_uri, storage_options) as f:
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
        with _open_shard(file_uri, storage_options) as f:
            tables.append(pq.read_table(f, use_threads=False, pre_buffer=False))
    return pa.concat_tables(tables)


def _open_shard(file_uri: str, storage_options: dict | None):
    """A shard a manifest lists, open for reading; StorageError naming it if it is gone."""
    loc = locate(file_uri, storage_options)
    try:
        return loc.fs.open(loc.path, "rb")
    except FileNotFoundError:
        raise StorageError(
            f"shard {file_uri} is listed in its stage's manifest but missing: write the stage again"
        ) from None
    except OSError as exc:
        raise _storage_error(file_uri, "read", exc) from None


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
    except OSError as exc:  # permission, not a folder, a store error: named, not raw
        raise _storage_error(uri, "read", exc) from None


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
