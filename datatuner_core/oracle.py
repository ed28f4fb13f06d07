"""The oracle: what a perfect chooser could reach among each input's candidates.

Per input, the candidate with the best sentence BLEU (sacrebleu's BLEU on that input's
references, exp-smoothed) and, separately, the candidate with the fewest coverage errors; their
corpus BLEU and coverage error bound what any reranker can get from these candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

from .bleu import CorpusScorer
from .coverage_check import EntityIndex, error_count


def oracle(
    rows: Sequence[dict], scorer: CorpusScorer, chosen: dict, index: EntityIndex | None
) -> dict:
    """The best BLEU and coverage reachable by picking one candidate per input (rows carry
    `candidate_texts`; an input without candidates keeps its text). BLEU: per input the
    candidate of best sentence BLEU, then the corpus BLEU of those picks; coverage: per input the
    fewest (missing + hallucinated) entities of any candidate, over all entities (`index`: the
    corpus entities, as in `coverage_error_rate`)."""
    lists = [r.get("candidate_texts") or [r.get("text")] for r in rows]
    width = max((len(texts) for texts in lists), default=0)
    texts = [r.get("text") for r in rows]
    names = [n for n in ("bleu", "bleu_lowercase") if n in scorer.metrics]  # chrF: no oracle
    by_rank = [  # segment statistics of every input's k-th candidate
        scorer.segment_statistics(
            [t[k] if k < len(t) else None for t in lists], reuse=(texts, chosen), names=names
        )
        for k in range(width)
    ]
    picked: dict = {name: [] for name in names}
    bleu = scorer.metrics.get("bleu")
    for i, k in scorer.row.items():  # ties: the earlier candidate (beam order)
        sentence = [bleu._compute_score_from_stats(s["bleu"][k]).score for s in by_rank]
        best = max(range(len(lists[i])), key=sentence.__getitem__)
        for name in names:
            picked[name].append(by_rank[best][name][k])
    picked["failed"] = [all(t is None for t in candidates) for candidates in lists]
    out = scorer.scores(picked)
    errors = total = 0
    for row, candidates in zip(rows, lists, strict=True) if index is not None else ():
        entities = row.get("entities") or []
        total += len(entities)
        errors += min(error_count(t, entities, index) for t in candidates)
    return {
        "bleu": out["bleu"],
        "bleu_lowercase": out["bleu_lowercase"],
        "coverage_error": errors / total if index is not None and total else None,
        "candidates_per_input": sum(len(t) for t in lists) / len(lists) if lists else None,
    }
