"""Retraining as one plain function: ingest → linearize → corrupt → train LM → train classifier →
register. The Prefect `retrain` flow (issue 5) calls the same stage functions as tasks.

Everything lands under the config's storage root:

    {root}/runs/{run_id}/config.json                 the resolved config
    {root}/runs/{run_id}/{records,linearized,corruptions}/   stage folders
    {root}/models/lm/{run_id}/, {root}/models/classifier/{run_id}/   the trained models
    {root}/runs/{run_id}/retrain.json                the summary (written last)

A model version is named after its run, so running again with the same `run_id` skips the
finished stages (by manifest) and resumes training from its last checkpoint.
"""

from __future__ import annotations

import sys
import time

from . import registry, storage
from .config import PipelineConfig


def new_run_id(name: str) -> str:
    """`{name}-{UTC time}-{random}`: unique and sortable by time."""
    return f"{name}-{registry.new_version()}"


def _say(message: str) -> None:
    print(f"[retrain] {message}", file=sys.stderr, flush=True)


def prepare_data(config: PipelineConfig, run_uri: str) -> dict:
    """Ingest, linearize and corrupt the configured dataset; returns the three manifests."""
    from .corrupt import corrupt
    from .ingest import ingest
    from .linearize import linearize

    data = config.dataset
    paths = {k: v for k, v in data.paths.model_dump().items() if v is not None}
    if "train" not in paths:
        raise ValueError("config key 'dataset.paths.train': training needs a train split")
    records_uri = storage.join_uri(run_uri, "records")
    records = ingest(
        data.format,
        paths,
        records_uri,
        options={"max_triples": data.max_triples} if data.format == "ntriples" else {},
        max_records=data.max_records.model_dump(),
    )
    _say(f"ingest: {records['counts']['records']} records ({_counts(records)})")
    lin_uri = storage.join_uri(run_uri, "linearized")
    lin = linearize(records_uri, lin_uri, mode=config.linearize.mode)
    _say(f"linearize: {lin['counts']['written']} records, "
         f"{len(lin['extra']['special_tokens'])} special tokens")  # fmt: skip
    cor_uri = storage.join_uri(run_uri, "corruptions")
    c = config.corrupt
    cor = corrupt(lin_uri, cor_uri, per_example=c.per_example, seed=c.seed, balance=c.balance)
    _say(f"corrupt: {sum(s['total'] for s in cor['extra']['pairs'].values())} labelled pairs")
    return {"records": records, "linearized": lin, "corruptions": cor}


def _counts(manifest: dict) -> str:
    c = manifest["counts"]
    return f"read {c['read']}, written {c['written']}, quarantined {c['quarantined']}"


def train_lm(config: PipelineConfig, lin_uri: str, special_tokens: list[str], output_uri: str):
    """Build the tokenizer on the train split and train the LM through Ray Train."""
    from .lm import LMTask, training_pairs
    from .tokenizer import build_tokenizer, is_scratch
    from .training import StageRows, train_with_ray

    train = StageRows(lin_uri, "train")
    corpus = None
    if is_scratch(config.lm.base):
        pairs = training_pairs(train.load())
        corpus = [text for pair in pairs for text in pair]
    tokenizer = build_tokenizer(config.lm.base, corpus, special_tokens)
    task = LMTask(
        tokenizer=tokenizer,
        special_tokens=special_tokens,
        base=config.lm.base,
        mode=config.linearize.mode,
        max_length=config.lm.max_length,
    )
    return train_with_ray(task, train, StageRows(lin_uri, "validation"), config.lm, output_uri)


def retrain(config: PipelineConfig, *, run_id: str | None = None) -> dict:
    """Train both models on the configured dataset and register them. Returns the summary."""
    from .classifier import train_classifier

    started = time.time()
    root = config.storage
    run_id = run_id or new_run_id(config.name)
    run_uri = storage.join_uri(root, "runs", run_id)
    storage.write_json(storage.join_uri(run_uri, "config.json"), config.model_dump(mode="json"))
    _say(f"run {run_id} under {root}")
    stages = prepare_data(config, run_uri)
    special = stages["linearized"]["extra"]["special_tokens"]

    lin_uri = storage.join_uri(run_uri, "linearized")
    lm_uri = registry.version_uri(root, "lm", run_id)
    lm_card = train_lm(config, lin_uri, special, lm_uri)
    _say(f"lm: best val ppl {lm_card.get('best', {}).get('val_ppl')} -> {lm_uri}")
    clf_uri = registry.version_uri(root, "classifier", run_id)
    clf = train_classifier(
        storage.join_uri(run_uri, "corruptions"), clf_uri, config.classifier, special
    )
    _say(f"classifier: held-out macro-F1 {clf.get('eval', {}).get('macro_f1')} -> {clf_uri}")

    promoted = {
        kind: registry.register_first(root, kind, run_id, metrics) is not None
        for kind, metrics in (("lm", lm_card.get("best", {})), ("classifier", clf.get("eval", {})))
    }
    summary = {
        "command": "retrain",
        "run_id": run_id,
        "output": run_uri,
        "read": stages["records"]["counts"]["read"],
        "written": stages["records"]["counts"]["written"],
        "quarantined": stages["records"]["counts"]["quarantined"],
        "models": {"lm": lm_uri, "classifier": clf_uri},
        "promoted": promoted,
        "metrics": {"lm": lm_card.get("best", {}), "classifier": clf.get("eval", {})},
        "seconds": round(time.time() - started, 1),
    }
    storage.write_json(storage.join_uri(run_uri, "retrain.json"), summary)
    return summary
