"""Thin Prefect tasks, one per core stage function: retries, logging, artifacts.

Caching: every stage function fingerprints its inputs (files' size and content, from the store's
ETag or a SHA-256 of the bytes, never the modification time; the upstream stage's fingerprint,
the options, the code version) and skips itself when the manifest at its
output carries the same fingerprint. That fingerprint is the cache key, checked against the
output itself, so a deleted or half-written output is recomputed (a Prefect result cache could
not know that). Prefect's own cache is therefore off (`cache_policy=NONE`).

Retries: only I/O and cluster steps, only on transient errors (`storage.is_transient`: an
unreachable endpoint, connection or timeout errors), with backoff. Bad data never retries.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from datatuner_core import regenerate, stage_reader, storage

BACKOFF = [2, 10, 30]  # seconds before retry 1, 2, 3


def transient(task, task_run, state) -> bool:
    """Retry condition: the failure was a transient storage or network error."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify, don't handle
        return storage.is_transient(exc)
    return False


io_task = task(
    cache_policy=NONE, retries=3, retry_delay_seconds=BACKOFF, retry_condition_fn=transient
)
compute_task = task(cache_policy=NONE)


def _publish(stage: str, manifest: dict) -> dict:
    """Log a stage's counts and publish them as a markdown artifact; return the manifest."""
    counts = manifest["counts"]
    state = "skipped (unchanged inputs)" if manifest.get("skipped") else "written"
    get_run_logger().info(
        "%s %s: read %s, written %s, quarantined %s → %s", stage, state,
        counts["read"], counts["written"], counts["quarantined"], manifest["output"],
    )  # fmt: skip
    reasons = "".join(f"| {k} | {v} |\n" for k, v in counts["quarantined_by_reason"].items())
    create_markdown_artifact(
        f"### {stage}\n\n{state} at `{manifest['output']}`\n\n"
        f"| read | written | quarantined | records |\n|---|---|---|---|\n"
        f"| {counts['read']} | {counts['written']} | {counts['quarantined']} | "
        f"{counts['records']} |\n\n"
        + (f"| reason | count |\n|---|---|\n{reasons}" if reasons else ""),
        key=f"{stage.replace('_', '-')}-counts",  # Prefect: lowercase, digits and dashes
        description=f"{stage} counts",
    )
    return manifest


@io_task
def ingest_task(fmt: str, paths: dict, output: str, options: dict, max_records: dict) -> dict:
    """Read the dataset into a records stage."""
    from datatuner_core.ingest import ingest

    return _publish("ingest", ingest(fmt, paths, output, options=options, max_records=max_records))


@io_task
def linearize_task(records: str, output: str, section, holdout_categories=()) -> dict:
    """Linearize a records stage (held-out categories → `validation_unseen`)."""
    from datatuner_core.linearize import linearize

    manifest = linearize(records, output, section, holdout_categories=holdout_categories)
    return _publish("linearize", manifest)


@io_task
def corrupt_task(linearized: str, output: str, section) -> dict:
    """Make the classifier's labelled pairs."""
    from datatuner_core.corrupt import corrupt

    manifest = corrupt(linearized, output, section)
    return _publish("corrupt", manifest)


@compute_task
def train_lm_task(config, linearized: str, special_tokens: list[str], output: str) -> dict:
    """Train the LM on Ray Train (resumes from its last checkpoint when re-run)."""
    from datatuner_core.lm import train_lm

    card = train_lm(
        linearized, output, config.lm, special_tokens=special_tokens, mode=config.linearize.mode
    )
    best = card.get("metrics", {}).get("best")
    get_run_logger().info("lm → %s: %s%s", output, best, _reused(card))
    return card


def _reused(card: dict) -> str:
    """Log suffix for a model an identical training job made before (nothing trained)."""
    if card.get("skipped"):
        return " (already trained by this job: nothing to do)"
    source = card.get("reused_from")
    return f" (identical job: copied from {source}, nothing trained)" if source else ""


@compute_task
def train_classifier_task(config, corruptions: str, special_tokens: list[str], output: str) -> dict:
    """Train the fidelity classifier on Ray Train and evaluate it on the held-out pairs."""
    from datatuner_core.classifier import train_classifier

    card = train_classifier(corruptions, output, config.classifier, special_tokens)
    get_run_logger().info(
        "classifier → %s: macro-F1 %s%s", output, card["eval"].get("macro_f1"), _reused(card)
    )
    return card


@io_task
def sample_task(linearized: str, output: str, per_split: int, splits=None) -> dict:
    """A seeded sample of some splits' records (default: the validation splits)."""
    from datatuner_core.linearize import sample_splits

    return _publish("sample", sample_splits(linearized, output, per_split, splits))


@io_task
def hard_negatives_task(corruptions: str, beams: str, output: str) -> dict:
    """The corruption pairs plus the LM's own beams on train records, labelled by rules."""
    from datatuner_core.hard_negatives import with_hard_negatives

    return _publish("hard_negatives", with_hard_negatives(corruptions, beams, output))


@io_task
def generate_task(linearized: str, output: str, lm: str, classifier: str | None, generate, split):
    """Generate and rerank on Ray Data; a progress artifact follows the finished blocks."""
    from datatuner_core.generate import generate_stage

    manifest = generate_stage(
        linearized, output, generate, lm_uri=lm, classifier_uri=classifier, split=split,
        on_progress=_ProgressArtifact(f"generate → {output}"),
    )  # fmt: skip
    return _publish("generate", manifest)


class _ProgressArtifact:
    """A Prefect progress artifact (percent done), created at the first call, then updated."""

    def __init__(self, description: str):
        self.description, self.id = description, None

    def __call__(self, done: int, total: int) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = 100.0 * done / max(total, 1)
        text = f"{self.description}: {done:,} / {total:,} records"
        try:
            if self.id is None:
                self.id = create_progress_artifact(
                    percent, key="generate-progress", description=text
                )
            else:
                update_progress_artifact(self.id, percent, description=text)
        except Exception as exc:  # noqa: BLE001 - a progress display never stops the work
            get_run_logger().warning("progress artifact not updated: %s", exc)


@io_task
def evaluate_task(
    generations: str, report: str, title: str, dev: str | None = None, lm: str | None = None
) -> dict:
    """Score the generations; write metrics.json, report.md and plots; publish the report.
    `dev`: a generations stage of the validation splits' sample, scored per split beside test;
    `lm`: the LM version whose validation curve the report shows."""
    from datatuner_core.report import report_stage

    result = report_stage(generations, report, title=title, dev=dev, lm=lm)
    markdown = next(f for f in result["files"] if f.endswith("report.md"))
    create_markdown_artifact(storage.read_bytes(markdown).decode(), key="report", description=title)
    return result


@io_task
def judge_task(generations: str, classifier: str) -> float:
    """Share of the chosen texts of a generations stage that `classifier` labels accurate."""
    from datatuner_core.classifier_scorer import FidelityScorer

    rows = [r for r in stage_reader.read_stage(generations).to_pylist() if r["text"] is not None]
    scores = FidelityScorer(classifier).score([(r["linearized"], r["text"]) for r in rows])
    return sum(s["label"] == "accurate" for s in scores) / max(len(scores), 1)


@io_task
def plan_task(linearized: str, previous: dict | None, models: dict, todo: str) -> dict:
    """Which records to regenerate, which to carry over."""
    return regenerate.plan_changes(linearized, previous, models, todo)


@task(cache_policy=NONE)
def snapshot_task(previous, regenerated: str | None, carried: set, snapshot: str) -> dict:
    """Write the complete snapshot."""
    return regenerate.write_snapshot(previous, regenerated, carried, snapshot)
