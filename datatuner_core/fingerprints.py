"""What identifies a stage's work, for its cache key and its manifest: inputs by content, any
JSON-able parts by their SHA-256, and the code version."""

from __future__ import annotations

import hashlib
import json

from .storage import Location, locate, storage_error

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
            stamp = str(stamp).strip('"') if stamp else "sha256:" + content_sha256(loc)
        except OSError as exc:
            raise storage_error(uri, "read", exc) from None
        out.append({"uri": uri, "size": info.get("size"), "stamp": stamp})
    return out


def content_sha256(loc: Location) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()  # streamed: about 1 s per GB, paid once per ingest run
    with loc.fs.open(loc.path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(*parts: object) -> str:
    """SHA-256 over the JSON of `parts` (inputs, config, code version)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def code_version() -> str:
    """The package version, part of every stage's fingerprint and manifest."""
    from . import __version__

    return f"datatuner {__version__}"
