"""Local paths made absolute once, at the edge (config load, CLI arguments, flow parameters).

A relative path means "relative to the directory the user ran the command in". It must not reach
a Prefect task, a Ray worker or an actor as such: Ray Train runs each worker in a folder of its own
under the Ray session, where the same relative path names nothing. URIs with a scheme (`s3://`,
`memory://`, …) are left as they are; `file://` URIs get an absolute path.
"""

from __future__ import annotations

import os
import re

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def absolute(uri: str | os.PathLike | None) -> str | None:
    """`uri` with a local path made absolute against the current directory; None stays None."""
    if uri is None:
        return None
    text = os.fspath(uri)
    if text.startswith("file://"):
        return "file://" + os.path.abspath(os.path.expanduser(text[len("file://") :]))
    if _SCHEME.match(text) or not text:
        return text
    return os.path.abspath(os.path.expanduser(text))
