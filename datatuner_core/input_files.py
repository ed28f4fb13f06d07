"""The input files of a run: listed under a root (recursively, by suffix), opened for reading
(`.gz`, `.bz2`, `.xz`, `.zst` decompressed) and named relative to their root."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import fsspec

from .storage import Location, StorageError, StorageUnreachable, locate, short_error, storage_error

# Compressed inputs are read transparently (fsspec's compression="infer").
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def _check_reachable(loc: Location) -> None:
    """Turn connection and permission failures into one clear StorageError."""
    try:
        exists = loc.fs.exists(loc.path)
    except PermissionError as exc:
        raise StorageError(f"no permission for {loc.uri}: {short_error(exc)}") from None
    except Exception as exc:  # botocore raises its own classes for endpoint failures
        raise StorageUnreachable(f"cannot reach {loc.uri}: {short_error(exc)}") from None
    if not exists:
        raise StorageError(f"input not found: {loc.uri}")


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
            raise storage_error(uri, "list", exc) from None
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
            raise storage_error(uri, "read", exc) from None
        yield f  # errors of the caller's own reading pass through unchanged


def _options_for(uri: str, storage_options: dict | None) -> dict:
    loc = locate(uri, storage_options)
    return dict(getattr(loc.fs, "storage_options", {}) or {})
