"""Re-judge a finished generations stage with another classifier, without generating again.

Every beam of a generations stage is kept with its LM score, so the choice among them can be made
again: `rescore_stage` clears the candidates' fidelity labels, scores them with the classifier it
is given (or with none: the coverage check, then the LM score) and re-chooses each record the way
the generate section's reranking does. Minutes instead of the LM's hours: what a longer-trained
classifier, or a different reranking order, buys on the same candidates.
"""

from __future__ import annotations

import time

from .candidate_choice import score_and_choose
from .config import GenerateConfig
from .fingerprints import fingerprint
from .schema import GENERATIONS
from .stage_reader import read_manifest, read_stage
from .stage_writer import StageWriter


def clear_labels(rows: list[dict]) -> list[dict]:
    """Forget every candidate's fidelity label and score (in place), so that `score_and_choose`
    scores them all again; returns `rows`."""
    for r in rows:
        for c in r["candidates"] or []:
            c["fidelity_label"] = c["fidelity_score"] = None
    return rows


def rescore_rows(
    rows: list[dict], classifier_uri: str | None, section: GenerateConfig, *, coverage: bool = False
) -> None:
    """Score every candidate of `rows` (generations rows, in place) with the classifier at
    `classifier_uri` (none: no labels) and re-choose each record by `section`'s reranking; the
    coverage check is on when the section or `coverage` asks for it."""
    from .classifier_scorer import FidelityScorer

    scorer = FidelityScorer(classifier_uri) if classifier_uri else None
    score_and_choose(
        clear_labels(rows), scorer, rerank=True, coverage=section.coverage or coverage,
        weight=section.weight, label_first=section.label_first,
        batch_size=max(section.batch_size, 32), verdict=section.verdict,
    )  # fmt: skip


def rescore_stage(
    generations_uri: str,
    output_uri: str,
    section: GenerateConfig,
    *,
    classifier_uri: str | None = None,
    coverage_only: bool = False,
    storage_options: dict | None = None,
) -> dict:
    """Write the generations stage at `generations_uri` again to `output_uri`, each record
    re-chosen from its own candidates (`rescore_rows`); without `classifier_uri`, `coverage_only`
    chooses by the coverage check and then the LM score. Returns the new stage's manifest, whose
    `extra.seconds` is the time the scoring and choosing took."""
    if classifier_uri is None and not coverage_only:
        raise ValueError("rescore_stage: give a classifier_uri, or coverage_only=True")
    rows = read_stage(generations_uri, storage_options).to_pylist()
    started = time.time()
    rescore_rows(rows, classifier_uri, section, coverage=coverage_only)
    seconds = round(time.time() - started, 1)
    writer = StageWriter(output_uri, "generate", GENERATIONS, storage_options=storage_options)
    for r in rows:
        writer.add_counted(r)
    source = read_manifest(generations_uri, storage_options)
    inputs = [{"uri": generations_uri, "fingerprint": source["fingerprint"]},
              {"classifier": classifier_uri}]  # fmt: skip
    config = section.model_dump()
    fp = fingerprint("rescore", inputs, config)
    return writer.commit(inputs=inputs, fingerprint=fp, config=config, extra={"seconds": seconds})
