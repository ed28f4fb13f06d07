"""Bulk verbalization: any ingestable input (a KG dump, a dataset, JSONL) → generations with
fidelity scores, by the production models or the ones named. Intermediate stages live under
`{output}/_stages/` (skipped by Parquet readers of the output folder)."""

from __future__ import annotations

from prefect import flow

from datatuner_core import registry, storage
from datatuner_core.config import load_config
from tasks.stages import generate_task, ingest_task, linearize_task


def resolve_models(root: str | None, lm: str | None, classifier: str | None) -> tuple[str, str]:
    """The model pair: given URIs win, else the registry's production pointers."""
    if lm and classifier:
        return lm, classifier
    if not root:
        raise ValueError("name the models: --registry URI, or --lm URI and --classifier URI")
    return (
        lm or registry.production_uri(root, "lm"),
        classifier or registry.production_uri(root, "classifier"),
    )


@flow(name="verbalize")
def verbalize(input_uri: str, fmt: str, output: str, registry_uri: str | None = None,
              lm: str | None = None, classifier: str | None = None,
              overrides: list[str] | None = None) -> dict:  # fmt: skip
    """Texts and fidelity scores for every record of `input_uri`, written to `output`."""
    config = load_config(None, overrides or [])
    lm, classifier = resolve_models(registry_uri, lm, classifier)
    work = storage.join_uri(output, "_stages")
    options = {"max_triples": config.dataset.max_triples} if fmt == "ntriples" else {}
    records = ingest_task(fmt, {"all": input_uri}, storage.join_uri(work, "records"), options, {})
    lin = storage.join_uri(work, "linearized")
    linearize_task(storage.join_uri(work, "records"), lin, config.linearize.mode)
    generated = generate_task(lin, output, lm, classifier, config.generate, None)
    return {
        "command": "verbalize", "output": output,
        "read": records["counts"]["read"], "written": records["counts"]["written"],
        "quarantined": records["counts"]["quarantined"],
        "generations": generated["counts"]["written"],
        "generation_errors": generated["counts"]["notes"].get("generation_errors", 0),
        "models": {"lm": lm, "classifier": classifier},
    }  # fmt: skip
