"""Retrain when new data lands: prepare the data, train both models, compare the new pair with the
production pair on the same dev set, and promote it only if it is not worse."""

from __future__ import annotations

from prefect import flow, get_run_logger

from datatuner_core import registry, runs, storage
from datatuner_core.config import load_config
from datatuner_core.runs import RunPaths, new_run_id
from flows.pipeline import prepare_data, train_models
from tasks.stages import evaluate_task, generate_task, judge_task


def _dev_scores(run: RunPaths, name: str, lm: str, classifier: str, config, judge: str) -> dict:
    """Generate the dev split with a model pair; BLEU, and the accurate rate by `judge`."""
    out = run.stage(f"dev-{name}")
    generate_task(run.stage("linearized"), out, lm, classifier, config.generate, "validation")
    evaluation = evaluate_task(out, run.stage(f"report-{name}"), f"{config.name} dev ({name})")
    return {"bleu": evaluation["headline"]["bleu"], "accurate_rate": judge_task(out, judge),
            "lm": lm, "classifier": classifier}  # fmt: skip


@flow(name="retrain")
def retrain(config_path: str | None = None, overrides: list[str] | None = None,
            run_id: str | None = None) -> dict:  # fmt: skip
    """Train a new model pair and promote it to production if it is not worse on dev."""
    config = load_config(config_path, overrides or [])
    run = RunPaths(config.storage, run_id or new_run_id(config.name))
    records = prepare_data(config, run)
    lm, clf = train_models(config, run)
    judge = run.model("classifier")  # one judge for both pairs' texts
    candidate = _dev_scores(run, "candidate", lm, clf, config, judge)
    current = {k: registry.production(config.storage, k) for k in registry.KINDS}
    production = None
    if all(current.values()):
        production = _dev_scores(
            run, "production", current["lm"]["uri"], current["classifier"]["uri"], config, judge
        )
    decision = registry.decide_promotion(candidate, production)
    for kind in registry.KINDS:
        if decision["promote"]:
            registry.promote(config.storage, kind, run.run_id, reason=decision["reason"],
                             metrics=candidate,
                             generate=config.generate.model_dump(mode="json"))  # fmt: skip
        else:
            registry.record_decision(config.storage, kind, {**decision, "version": run.run_id})
    get_run_logger().info("promotion: %s (%s)", decision["promote"], decision["reason"])
    summary = runs.summary(
        "retrain", run.run, records, run_id=run.run_id, models={"lm": lm, "classifier": clf},
        promotion=decision, report=run.stage("report-candidate"), metrics=candidate,
    )  # fmt: skip
    storage.write_json(storage.join_uri(run.run, "retrain.json"), summary)
    return summary
