"""Nightly regeneration: re-ingest the configured source, re-generate only the records whose
linearized content or production models changed since the last snapshot, carry the rest over,
and publish a complete dated snapshot with a change summary."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from datatuner_core import regenerate as regen
from datatuner_core import registry, runs, storage
from datatuner_core.config import load_config, reader_options
from tasks.stages import generate_task, ingest_task, linearize_task, plan_task, snapshot_task


@flow(name="regenerate")
def regenerate(config_path: str | None = None, overrides: list[str] | None = None,
               snapshot_id: str | None = None) -> dict:  # fmt: skip
    """Incremental nightly corpus regeneration with the production models."""
    config = load_config(config_path, overrides or [])
    lm, classifier = registry.resolve_models(config.storage, None, None)
    models = {"lm": lm, "classifier": classifier}
    snapshot_id = snapshot_id or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = regen.snapshots_root(config.storage, config.name)
    work = storage.join_uri(base, "_work", snapshot_id)
    data = config.dataset
    paths = data.paths.model_dump(exclude_none=True)
    options = reader_options(data.format, data.max_triples, data.ingest_memory)
    records = ingest_task(data.format, paths, storage.join_uri(work, "records"), options,
                          data.max_records.model_dump())  # fmt: skip
    lin = storage.join_uri(work, "linearized")
    linearize_task(storage.join_uri(work, "records"), lin, config.linearize)
    previous = regen.latest_snapshot(config.storage, config.name)
    plan = plan_task(lin, previous, models, storage.join_uri(work, "todo"))
    regenerated = None
    if plan["regenerate"]:
        regenerated = storage.join_uri(work, "generations")
        generate_task(storage.join_uri(work, "todo"), regenerated, lm, classifier,
                      config.generate, None)  # fmt: skip
    snapshot_uri = storage.join_uri(base, snapshot_id)
    manifest = snapshot_task(previous, regenerated, plan["carried"], snapshot_uri)
    changes = {k: v for k, v in plan.items() if k != "carried"}
    changes["carried_over"] = len(plan["carried"])
    regen.publish_snapshot(config.storage, config.name, snapshot_id, snapshot_uri, models, changes)
    get_run_logger().info("snapshot %s: %s", snapshot_id, changes)
    return runs.summary(
        "regenerate", snapshot_uri, records, snapshot=snapshot_id,
        records=manifest["counts"]["written"], changes=changes,
    )  # fmt: skip
