"""ViGGO CSV reader (`mr`, `ref`): MRs like `inform(name[SpellForce 3], rating[poor])`.

Rows with the same MR in a file become one record with several references (see `mr.py`).
List values (`platforms[PC, Xbox]`) stay one slot value; linearization splits them into entities.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import Item
from .mr import parse_act, read_mr_csv

SUFFIXES = (".csv",)


def read(
    files: list[str],
    root: str,
    split: str | None,
    options: dict,
    storage_options: dict | None = None,
) -> Iterator[Item]:
    """Yield one record per distinct MR (units = its rows) and one quarantine row per bad row."""
    return read_mr_csv(files, root, split, storage_options, source="viggo", parse=parse_act)
