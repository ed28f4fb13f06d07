"""Bulk verbalization: any ingestable input (a KG dump, a dataset, JSONL) → generations with
fidelity scores, by the production models or the ones named. Intermediate stages live under
`{output}/_stages/` (skipped by Parquet readers of the output folder). The input may also be a
stage this pipeline wrote: a records stage (from `ingest`) is linearized, a linearized stage is
generated from directly."""

from __future__ import annotations

from prefect import flow

from datatuner_core import registry, runs, stage_writer, storage
from datatuner_core.config import load_config, reader_options
from datatuner_core.paths import absolute
from tasks.stages import generate_task, ingest_task, linearize_task

# The stages `verbalize --input` takes, by the manifest's `stage`: a records stage (`ingest`) or a
# linearized one (`linearize`).
STAGE_INPUTS = {"ingest": "records", "linearize": "linearized"}


def input_stage(uri: str) -> dict | None:
    """The manifest when `uri` is a records or linearized stage folder, else None (raw files)."""
    loc = storage.locate(uri)
    if loc.fs.isfile(loc.path):
        return None  # a file: raw input
    manifest = storage.read_json(storage.join_uri(uri, stage_writer.MANIFEST), missing_ok=True)
    if manifest is None:
        return None
    if manifest.get("stage") not in STAGE_INPUTS:
        raise ValueError(
            f"{uri} is a {manifest.get('stage')!r} stage; verbalize takes raw input files or a "
            f"{' or '.join(STAGE_INPUTS.values())} stage"
        )
    return manifest


@flow(name="verbalize")
def verbalize(input_uri: str, fmt: str | None, output: str, registry_uri: str | None = None,
              lm: str | None = None, classifier: str | None = None,
              overrides: list[str] | None = None) -> dict:  # fmt: skip
    """Texts and fidelity scores for every record of `input_uri`, written to `output`.

    With `registry_uri` (and not both models named), generation uses the settings the production
    pair was evaluated with (recorded at promotion); `overrides` (`generate.beams=3`, …) win over
    them. Without `fmt`, `input_uri` must be a records or linearized stage folder."""
    input_uri, output = absolute(input_uri), absolute(output)
    registry_uri, lm, classifier = absolute(registry_uri), absolute(lm), absolute(classifier)
    from_registry = registry_uri and not (lm and classifier)
    recorded = registry.production_generate(registry_uri) if from_registry else {}
    config = load_config(None, overrides or [], base={"generate": recorded} if recorded else None)
    lm, classifier = registry.resolve_models(registry_uri, lm, classifier)
    work = storage.join_uri(output, "_stages")
    stage = None if fmt else input_stage(input_uri)  # with a format: raw input files
    if stage is None:
        if not fmt:
            raise ValueError(f"{input_uri} is not a stage folder: give its --format")
        options = reader_options(fmt, config.dataset.max_triples, config.dataset.ingest_memory)
        records_uri = storage.join_uri(work, "records")
        records = ingest_task(fmt, {"all": input_uri}, records_uri, options, {})
    else:
        records_uri, records = input_uri, stage  # the given stage stands for the records
    if stage is not None and stage["stage"] == "linearize":
        lin = input_uri
    else:
        lin = storage.join_uri(work, "linearized")
        linearize_task(records_uri, lin, config.linearize)
    generated = generate_task(lin, output, lm, classifier, config.generate, None)
    counts = generated["counts"]
    return runs.summary(
        "verbalize", output, records,
        records=counts["records"],
        quarantined_by_reason=records["counts"]["quarantined_by_reason"],
        notes={**records["counts"]["notes"], **counts["notes"]},
        shards=len(generated["files"]), skipped=bool(generated.get("skipped")),
        generations=counts["written"],
        generation_errors=counts["notes"].get("generation_errors", 0),
        resumed=(generated.get("extra") or {}).get("resumed"),
        models={"lm": lm, "classifier": classifier},
        generate=config.generate.model_dump(mode="json"),
    )  # fmt: skip
