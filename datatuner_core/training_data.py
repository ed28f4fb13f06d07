"""The trainer's data: where its rows come from (a stage folder each worker reads itself, or rows
in Ray's object store), their identity in a training job, and the order of the micro-batches."""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import fingerprints, stage_reader

BUCKET_CHUNK = 50  # batches per length-sorting chunk: batches of similar lengths, still shuffled


@dataclass
class StageRows:
    """Rows of a stage folder (optionally one split, or several: a tuple), read by each worker
    itself."""

    uri: str
    split: str | tuple[str, ...] | None = None
    storage_options: dict | None = None

    def load(self) -> list[dict]:
        rows = []
        for batch in stage_reader.iter_stage_batches(self.uri, self.storage_options):
            rows.extend(r for r in batch.to_pylist() if self.wants(r.get("split")))
        return rows

    def wants(self, split: str | None) -> bool:
        """Whether a row of `split` is one of these rows."""
        if self.split is None:
            return True
        return split in self.split if isinstance(self.split, tuple) else split == self.split

    def fingerprint(self) -> dict:
        """The rows' identity: the stage's content hash and the split (two stages with the
        same rows are the same training data wherever they live); a stage written before
        manifests carried a content hash: its location and lineage fingerprint."""
        manifest = stage_reader.read_manifest(self.uri, self.storage_options)
        if manifest.get("content_sha256"):
            return {"split": self.split, "content_sha256": manifest["content_sha256"]}
        return {"uri": self.uri, "split": self.split, "fingerprint": manifest["fingerprint"]}


def data_fingerprint(rows) -> dict:
    """Identify training data: a stage's manifest fingerprint, or a hash of in-memory rows."""
    if isinstance(rows, StageRows):
        return rows.fingerprint()
    rows = list(rows or [])
    return {"rows": len(rows), "sha256": fingerprints.fingerprint(rows)}


def as_source(rows):
    """What the driver hands the workers: a `StageRows` as it is, in-memory rows through Ray's
    object store."""
    import ray

    return rows if isinstance(rows, StageRows) else ray.put(list(rows or []))


def load_rows(source) -> list[dict]:
    """A worker's copy of the rows `as_source` handed over."""
    import ray

    if isinstance(source, StageRows):
        return source.load()
    if isinstance(source, ray.ObjectRef):
        return ray.get(source)
    return list(source or [])


def plan_batches(
    lengths: list[int],
    batch_size: int,
    seed: str | int,
    *,
    bucketed: bool = True,
    chunk: int = BUCKET_CHUNK,
) -> list[list[int]]:
    """Indices of every example once, in batches. Bucketed: shuffle, cut into chunks of
    `chunk × batch_size`, sort each chunk by length, batch, shuffle the batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not bucketed:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    span = chunk * batch_size
    batches = []
    for start in range(0, len(order), span):
        part = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches
