"""The fidelity classifier stage (method §6): a sequence-pair classifier over (linearized data,
text) that tells an accurate text from one with a value error, omission, repetition or
hallucination, trained on a corruption stage's pairs. Its parts: `classifier_pairs` (labels,
tokenizer, pair encoding), `classifier_model` (the model and its `training.TrainTask`),
`classifier_metrics` (confusion matrix, macro-F1, per-rule catch, report), `classifier_scorer`
(the saved model at work: `FidelityScorer`, used by the reranker).

Saved folder (`{root}/models/classifier/{version}/`): `config.json`, `model.safetensors`,
tokenizer files, `classifier.json` (lowercase, max_length, labels, base), `training_card.json`,
then `eval.json` and `eval_report.md` from the held-out split.
"""

from __future__ import annotations

import time

from . import linearize as lin
from . import stage_reader, storage
from .classifier_metrics import format_report, metrics_from_confusion
from .classifier_model import ClassifierTask
from .classifier_pairs import build_classifier_tokenizer, pairs_of
from .classifier_scorer import evaluate_classifier
from .config import ClassifierConfig
from .tokenizer import is_scratch
from .training import train_with_ray
from .training_data import StageRows

EVAL_FILE = "eval.json"
REPORT_FILE = "eval_report.md"


def train_classifier(
    corruptions_uri: str,
    output_uri: str,
    section: ClassifierConfig | dict,
    special_tokens: list[str],
    *,
    shape: tuple[int, int, int] | None = None,
    vocab_size: int = 8192,
    storage_options: dict | None = None,
) -> dict:
    """Train the classifier on the `train` pairs of a corruption stage through Ray Train,
    validating on `validation` (with `validation_unseen` beside it when the stage has pairs of
    held-out categories: `linearize.validation_splits`), then write the held-out metrics of the
    exported model, `eval.json` + `eval_report.md`, beside it. `output_uri` is a version folder
    (`registry.version_uri(root, "classifier", version)`). `section`: the `classifier` config
    section (a mapping is validated as one). `shape` / `vocab_size`: a scratch model's (layers,
    width, heads) and BPE vocabulary. Returns the training card with `eval` added."""
    started = time.time()
    section = ClassifierConfig.model_validate(section)
    stats = stage_reader.read_manifest(corruptions_uri, storage_options).get("extra") or {}
    totals = {k: v.get("total", 0) for k, v in (stats.get("pairs") or {}).items()}
    eval_split = lin.validation_splits(totals)
    train_source = StageRows(corruptions_uri, "train", storage_options)
    val_source = StageRows(corruptions_uri, eval_split, storage_options)
    pairs = pairs_of(train_source.load()) if is_scratch(section.base) else None
    if is_scratch(section.base) and not pairs:
        raise ValueError(f"{corruptions_uri}: no 'train' pairs to train on")
    tok_started = time.perf_counter()
    tokenizer = build_classifier_tokenizer(section.base, pairs, special_tokens, vocab_size)
    tokenizer_seconds = round(time.perf_counter() - tok_started, 3)
    del pairs
    task = ClassifierTask(
        tokenizer=tokenizer,
        base=section.base,
        max_length=section.max_length,
        shape=shape,
        special_tokens=list(special_tokens),
        freeze_layers=section.freeze_layers,
    )
    card = train_with_ray(
        task,
        train_source,
        val_source,
        section,
        output_uri,
        storage_options=storage_options,
        card_extra={"tokenizer_seconds": tokenizer_seconds, "vocab_size": len(tokenizer)},
    )
    metrics = _best_evaluation(card)
    if metrics is None:  # no complete evaluation recorded: score the exported model here
        metrics = evaluate_classifier(
            output_uri, val_source.load(), storage_options=storage_options
        )
    metrics["split"] = eval_split if isinstance(eval_split, str) else "+".join(eval_split)
    storage.write_json(storage.join_uri(output_uri, EVAL_FILE), metrics, storage_options)
    title = f"# Fidelity classifier — held-out `{metrics['split']}` split"
    report = f"{title}\n\n{format_report(metrics)}"
    storage.write_bytes(storage.join_uri(output_uri, REPORT_FILE), report.encode(), storage_options)
    return {**card, "eval": metrics, "total_seconds": round(time.time() - started, 3)}


def _best_evaluation(card: dict) -> dict | None:
    """The held-out metrics of the exported (best) checkpoint, from the trainer's own evaluation
    over every validation pair (summed over ranks): a second pass over the split is not needed."""
    best_step = card["metrics"]["best"]["step"]
    for evaluation in reversed(card["metrics"]["evaluations"]):
        if evaluation.get("step") == best_step and "confusion" in evaluation:
            metrics = metrics_from_confusion(evaluation["confusion"])
            metrics["val_loss"] = evaluation.get("val_loss")
            metrics["step"] = best_step
            if evaluation.get("by_rule"):
                metrics["by_rule"] = evaluation["by_rule"]
            return metrics
    return None
