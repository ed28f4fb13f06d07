"""Where the pipeline's bytes live: URIs through fsspec, whole files and folders, and the errors
that name them.

A URI is a plain path, `file://`, `s3://bucket/prefix` or `memory://`. S3 endpoint and credentials
come from the environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...) or from `storage_options`;
they are never written anywhere. A whole file is written atomically: through a temporary name and
a rename on local disk, in one PUT on object storage.

Stage folders are written by `stage_writer` (one writer at a time: `stage_lock`) and read by their
manifest through `stage_reader`; input files are listed and opened by `input_files` and identified
by content in `fingerprints`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass

import fsspec

# Fail fast on an unreachable S3 endpoint instead of retrying for minutes.
S3_DEFAULTS = {
    "config_kwargs": {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}}
}


class StorageError(Exception):
    """An input or output location that cannot be used; the message names it."""


class StorageUnreachable(StorageError):
    """The storage endpoint did not answer (connection refused, timeout): worth a retry."""


def storage_error(uri: str, action: str, exc: BaseException) -> StorageError:
    """One StorageError naming `uri` for any failure of the store (permission, not a folder,
    missing bucket, endpoint down); unreachable endpoints stay retryable (StorageUnreachable)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, FileNotFoundError) and "bucket" in str(exc).lower():
        bucket = str(uri).split("://", 1)[-1].split("/", 1)[0]
        return StorageError(f"cannot {action} {uri}: the bucket {bucket!r} does not exist")
    kind = StorageUnreachable if is_transient(exc) else StorageError
    return kind(f"cannot {action} {uri}: {short_error(exc)}")


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
        return "file" in protocols(self.fs)


def protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    """The protocols a filesystem answers to (`("s3", "s3a")`, `("file", "local")`)."""
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


def short_error(exc: BaseException) -> str:
    """An error in one line: its class and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether `fs` is S3 (conditional writes, ETags)."""
    return "s3" in protocols(fs)


def list_dir(loc: Location) -> list[dict]:
    """The entries directly in a folder, fresh from the store; [] if it does not exist."""
    try:
        loc.fs.invalidate_cache(loc.path)
        return loc.fs.ls(loc.path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise storage_error(loc.uri, "list", exc) from None


def write_file(loc: Location, data: bytes) -> str | None:
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
        raise storage_error(loc.uri, "write", exc) from None


def write_json(uri: str, payload: dict, storage_options: dict | None = None) -> None:
    """Write a JSON document atomically."""
    write_file(locate(uri, storage_options), json.dumps(payload, indent=2).encode())


def write_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write a whole file atomically (temporary name + rename locally, one PUT on S3)."""
    write_file(locate(uri, storage_options), data)


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
                write_file(locate(join_uri(uri, rel), storage_options), f.read())
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
        raise storage_error(uri, "read", exc) from None


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
