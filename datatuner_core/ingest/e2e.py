"""Cleaned E2E CSV reader (`mr`, `ref`, …): MRs like `name[The Eagle], eatType[coffee shop]`.

Rows with the same MR in a file become one record with several references (see `mr.py`).
"""

from __future__ import annotations

from collections.abc import Iterator

from . import Item
from .mr import parse_slots, read_mr_csv

SUFFIXES = (".csv",)


def parse(text: str) -> tuple[None, list[tuple[str, str]]]:
    """An E2E MR has no dialogue act, only slots."""
    return None, parse_slots(text)


def read(
    files: list[str],
    root: str,
    split: str | None,
    options: dict,
    storage_options: dict | None = None,
) -> Iterator[Item]:
    """Yield one record per distinct MR (units = its rows) and one quarantine row per bad row."""
    return read_mr_csv(files, root, split, storage_options, source="e2e", parse=parse)
