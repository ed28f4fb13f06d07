"""Reading a stage folder by its manifest: the manifest itself, whether its shards are whole, and
their rows (streamed in batches, or as one table)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .fingerprints import content_sha256
from .stage_writer import MANIFEST
from .storage import (
    Location,
    StorageError,
    is_s3,
    join_uri,
    list_dir,
    locate,
    protocols,
    read_json,
    storage_error,
)


class StageNotFound(StorageError):
    """A stage folder that has no `_manifest.json` (never finished, or not a stage)."""


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
        for entry in list_dir(loc.child(folder) if folder else loc):
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
        elif not checksum_matches(loc.child(f["path"]), f, entry):
            problems.append(f"{f['path']} does not match its checksum")
    return problems


def checksum_matches(loc: Location, listed: dict, entry: dict) -> bool:
    """Whether a listed shard (`listed`: its manifest entry) still has its checksum: the ETag on
    S3, the SHA-256 of the bytes on local disk and memory://; True where neither is known."""
    if is_s3(loc.fs):
        etag = str(entry.get("ETag", "")).strip('"')
        return not listed.get("etag") or etag == listed["etag"]
    if not listed.get("sha256") or not (loc.is_local or "memory" in protocols(loc.fs)):
        return True
    try:
        return content_sha256(loc) == listed["sha256"]
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
        raise storage_error(file_uri, "read", exc) from None
