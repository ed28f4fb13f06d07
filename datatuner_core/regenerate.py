"""Incremental regeneration: re-generate only what changed since the last successful snapshot.

A record is regenerated when it is new, when its linearized content changed (SHA-256 of the
linearized string and references), or when the production model pair changed since the last
snapshot; every other record's generation is carried over unchanged. Each run writes a complete
dated snapshot (a generations stage) plus `changes.json`, and only then moves the `latest.json`
pointer, so a failed night leaves the previous snapshot in place.

    {root}/snapshots/{name}/{snapshot_id}/       generations stage (complete)
    {root}/snapshots/{name}/{snapshot_id}/_changes.json
    {root}/snapshots/{name}/latest.json          {"snapshot", "uri", "models", "created_at"}
"""

from __future__ import annotations

import hashlib
import json
import time

from . import stage_reader, stage_writer, storage
from .schema import LINEARIZED


def content_hash(row: dict) -> str:
    """What a record's text depends on: its linearized data and references."""
    payload = json.dumps([row.get("linearized"), row.get("references") or []], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def snapshots_root(root: str, name: str) -> str:
    return storage.join_uri(root, "snapshots", name)


def latest_snapshot(root: str, name: str, storage_options: dict | None = None) -> dict | None:
    """The pointer to the last successful snapshot, or None."""
    uri = storage.join_uri(snapshots_root(root, name), "latest.json")
    return storage.read_json(uri, storage_options, missing_ok=True)


def plan_changes(
    linearized_uri: str,
    previous: dict | None,
    models: dict,
    todo_uri: str,
    storage_options: dict | None = None,
) -> dict:
    """Split the current records into those to regenerate (written as a linearized stage at
    `todo_uri`) and those to carry over; returns the plan with counts and the carried ids."""
    old: dict[str, str] = {}
    same_models = previous is not None and previous.get("models") == models
    if same_models:
        for batch in stage_reader.iter_stage_batches(previous["uri"], storage_options):
            for row in batch.to_pylist():
                if row["text"] is not None:
                    old[row["id"]] = content_hash(row)
    writer = stage_writer.StageWriter(
        todo_uri, "regenerate-plan", LINEARIZED, storage_options=storage_options
    )
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    current, carried = set(), set()
    for batch in stage_reader.iter_stage_batches(linearized_uri, storage_options):
        for row in batch.to_pylist():
            current.add(row["id"])
            writer.stats.read += 1
            writer.stats.written += 1
            before = old.get(row["id"])
            if before == content_hash(row):
                counts["unchanged"] += 1
                carried.add(row["id"])
                continue
            counts["new" if before is None else "changed"] += 1
            writer.add(row)
            writer.stats.records += 1
    removed = len(set(old) - current)
    manifest = writer.commit(inputs=[{"uri": linearized_uri}], fingerprint=f"plan-{time.time()}")
    return {
        **counts,
        "removed": removed,
        "models_changed": previous is not None and not same_models,
        "regenerate": manifest["counts"]["records"],
        "carried": carried,
    }


def write_snapshot(
    previous: dict | None,
    regenerated_uri: str | None,
    carried: set[str],
    snapshot_uri: str,
    storage_options: dict | None = None,
) -> dict:
    """A complete generations stage: the carried rows of the previous snapshot plus the
    regenerated ones. Returns the manifest."""
    from .schema import GENERATIONS

    writer = stage_writer.StageWriter(
        snapshot_uri, "regenerate", GENERATIONS, storage_options=storage_options
    )
    sources = []
    if previous is not None and carried:
        sources.append((previous["uri"], carried))
    if regenerated_uri is not None:
        sources.append((regenerated_uri, None))
    for uri, keep in sources:
        for batch in stage_reader.iter_stage_batches(uri, storage_options):
            for row in batch.to_pylist():
                if keep is not None and row["id"] not in keep:
                    continue
                writer.add_counted(row)
    inputs = [{"uri": uri} for uri, _ in sources]
    return writer.commit(inputs=inputs, fingerprint=f"snapshot-{time.time()}")


def publish_snapshot(root: str, name: str, snapshot_id: str, uri: str, models: dict,
                     changes: dict, storage_options: dict | None = None) -> dict:  # fmt: skip
    """Write the change summary beside the snapshot, then move `latest.json` to it (last)."""
    storage.write_json(storage.join_uri(uri, "_changes.json"), changes, storage_options)
    pointer = {
        "snapshot": snapshot_id,
        "uri": uri,
        "models": models,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "changes": changes,
    }
    storage.write_json(
        storage.join_uri(snapshots_root(root, name), "latest.json"), pointer, storage_options
    )
    return pointer
