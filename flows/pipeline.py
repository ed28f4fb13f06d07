"""The full linear sequence: ingest → linearize → corrupt → train LM → train classifier →
generate + rerank → evaluate → report. Every stage skips itself when its inputs are unchanged,
so re-running a run id after a crash resumes where it stopped."""

from __future__ import annotations

from prefect import flow

from datatuner_core import registry, runs, stage_reader, storage
from datatuner_core.config import PipelineConfig, load_config, reader_options
from datatuner_core.runs import RunPaths, new_run_id
from tasks.stages import (
    corrupt_task,
    evaluate_task,
    generate_task,
    hard_negatives_task,
    ingest_task,
    linearize_task,
    sample_task,
    train_classifier_task,
    train_lm_task,
)


def prepare_data(config: PipelineConfig, run: RunPaths) -> dict:
    """Ingest, linearize and corrupt the configured dataset; returns the records manifest."""
    storage.write_json(storage.join_uri(run.run, "config.json"), config.model_dump(mode="json"))
    data = config.dataset
    records = ingest_task(
        data.format, data.paths.model_dump(exclude_none=True), run.stage("records"),
        reader_options(data.format, data.max_triples, data.ingest_memory),
        data.max_records.model_dump(),
    )  # fmt: skip
    linearize_task(run.stage("records"), run.stage("linearized"), config.linearize,
                   data.holdout_categories)  # fmt: skip
    corrupt_task(run.stage("linearized"), run.stage("corruptions"), config.corrupt)
    return records


def train_models(config: PipelineConfig, run: RunPaths) -> tuple[str, str]:
    """Train the LM and the classifier of this run; returns their version URIs. With
    `classifier.hard_negatives`, the LM's beams on a sample of train records, labelled by the
    rules of `hard_negatives`, join the classifier's synthetic pairs."""
    special = stage_reader.read_manifest(run.stage("linearized"))["extra"]["special_tokens"]
    train_lm_task(config, run.stage("linearized"), special, run.model("lm"))
    pairs = run.stage("corruptions")
    if n := config.classifier.hard_negatives:
        sample_task(run.stage("linearized"), run.stage("train_sample"), n, ["train"])
        beams = config.generate.model_copy(update={"rerank": False})
        generate_task(run.stage("train_sample"), run.stage("lm_beams"), run.model("lm"), None,
                      beams, None)  # fmt: skip
        hard_negatives_task(pairs, run.stage("lm_beams"), run.stage("pairs_with_lm_beams"))
        pairs = run.stage("pairs_with_lm_beams")
    train_classifier_task(config, pairs, special, run.model("classifier"))
    return run.model("lm"), run.model("classifier")


@flow(name="pipeline")
def pipeline(config_path: str | None = None, overrides: list[str] | None = None,
             run_id: str | None = None) -> dict:  # fmt: skip
    """Train both models on the configured dataset, verbalize its test split, report."""
    config = load_config(config_path, overrides or [])
    run = RunPaths(config.storage, run_id or new_run_id(config.name))
    records = prepare_data(config, run)
    lm, clf = train_models(config, run)
    split = "test" if config.dataset.paths.test else "validation"
    generations = run.stage("generations")
    generate_task(run.stage("linearized"), generations, lm, clf, config.generate, split)
    dev = None
    if config.generate.dev_records and split == "test":
        # the validation splits settings are chosen on, verbalized the same way, for the report
        sample_task(
            run.stage("linearized"), run.stage("validation_sample"), config.generate.dev_records
        )
        dev = run.stage("generations_validation")
        generate_task(run.stage("validation_sample"), dev, lm, clf, config.generate, None)
    evaluation = evaluate_task(generations, run.report, f"{config.name} {run.run_id}", dev, lm)
    for kind in registry.KINDS:
        registry.register_first(
            config.storage, kind, run.run_id, evaluation["headline"],
            generate=config.generate.model_dump(mode="json"),
        )  # fmt: skip
    summary = runs.summary(
        "run", run.run, records, run_id=run.run_id, generations=generations, report=run.report,
        metrics=evaluation["headline"],
    )  # fmt: skip
    storage.write_json(storage.join_uri(run.run, "summary.json"), summary)
    return summary
