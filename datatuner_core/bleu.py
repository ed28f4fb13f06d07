"""Corpus BLEU and chrF (method §8), sacrebleu's own: `BLEU()` cased with the 13a tokenizer,
`BLEU(lowercase=True)` as the paper reports it, `CHRF()`.

References are grouped per input: reference stream k holds the k-th reference of every input,
padded with None where an input has fewer (sacrebleu drops None; padding with "" would add a
zero-length reference that can change the brevity penalty). Inputs without references are left
out and counted; a null text (failed generation) is scored as an empty hypothesis and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def reference_streams(references_lists: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-input reference lists → sacrebleu's reference streams, padded with None."""
    width = max((len(refs) for refs in references_lists), default=0)
    return [[refs[k] if k < len(refs) else None for refs in references_lists] for k in range(width)]


class CorpusScorer:
    """BLEU (cased and lowercased) and chrF against one corpus's references, for any hypotheses
    and any subset of inputs. References are processed once (sacrebleu's reference cache);
    segment statistics are computed once per system and summed per subset, which is exactly how
    sacrebleu's `corpus_score` aggregates, so a subset's score equals `corpus_bleu` on it."""

    def __init__(self, references_lists: Sequence[Sequence[str] | None]):
        from sacrebleu.metrics import BLEU, CHRF

        cleaned = [
            [r for r in refs or [] if r is not None and r.strip()] for refs in references_lists
        ]
        self.n = len(cleaned)
        # input index → row among the inputs that have references (the only ones scored)
        self.row = {i: k for k, i in enumerate(i for i, refs in enumerate(cleaned) if refs)}
        streams = reference_streams([refs for refs in cleaned if refs])
        self.metrics = (
            {
                "bleu": BLEU(references=streams),
                "bleu_lowercase": BLEU(lowercase=True, references=streams),
                "chrf": CHRF(references=streams),
            }
            if streams
            else {}
        )

    def segment_statistics(
        self,
        hypotheses: Sequence[str | None],
        reuse: tuple[Sequence, dict] | None = None,
        names: Iterable[str] | None = None,
    ) -> dict:
        """Per-input statistics of one system's texts (a null text is an empty hypothesis).
        `reuse=(other_hypotheses, their_statistics)` copies the statistics of identical texts
        (the top beam is mostly the chosen text). `names`: only these metrics (default all)."""
        if len(hypotheses) != self.n:
            raise ValueError(f"{len(hypotheses)} hypotheses but {self.n} reference lists")
        out: dict = {"failed": [h is None for h in hypotheses]}
        wanted = set(self.metrics if names is None else names)
        for name, metric in self.metrics.items():
            if name not in wanted:
                continue
            # what sacrebleu's _extract_corpus_statistics does, row by row, on the cached refs
            cache, stats = metric._ref_cache, []
            for i, k in self.row.items():
                if reuse is not None and reuse[0][i] == hypotheses[i]:
                    stats.append(reuse[1][name][k])
                else:
                    hyp = metric._preprocess_segment(hypotheses[i] or "")
                    stats.append(metric._compute_segment_statistics(hyp, cache[k]))
            out[name] = stats
        return out

    def scores(self, statistics: dict, indices: Iterable[int] | None = None) -> dict:
        """Corpus scores of the inputs `indices` (all by default), with their counts."""
        indices = list(range(self.n) if indices is None else indices)
        rows = [self.row[i] for i in indices if i in self.row]
        out: dict = {name: None for name in ("bleu", "bleu_lowercase", "chrf")}
        if rows:
            for name, metric in self.metrics.items():
                if name in statistics:  # a metric left out of `segment_statistics` stays None
                    stats = [statistics[name][k] for k in rows]
                    out[name] = metric._aggregate_and_compute(stats).score
        return {
            **out,
            "n": len(indices),
            "n_scored": len(rows),
            "n_without_references": len(indices) - len(rows),
            "n_failed": sum(statistics["failed"][i] for i in indices),
        }


def corpus_scores(
    hypotheses: Sequence[str | None], references_lists: Sequence[Sequence[str] | None]
) -> dict:
    """Corpus BLEU (cased, 13a), lowercased BLEU and chrF of `hypotheses` against the references
    of each input. `n` counts every input; `n_scored` those with at least one reference."""
    if len(hypotheses) != len(references_lists):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references_lists)} reference lists"
        )
    scorer = CorpusScorer(references_lists)
    return scorer.scores(scorer.segment_statistics(hypotheses))


def paired_bootstrap(
    groups: Sequence[tuple[CorpusScorer, dict, dict]], samples: int = 1000, seed: int = 0
) -> dict:
    """Paired bootstrap resampling (Koehn, 2004) of the corpus-BLEU difference between two systems
    A and B on the same inputs. `groups`: one (scorer, A's statistics, B's statistics) per test
    set (`CorpusScorer.segment_statistics`, with "bleu"); each sample redraws every set's inputs
    with replacement and takes the mean over the sets of BLEU(A) - BLEU(B), as the dev mean of two
    splits is. Returns the observed difference (`delta`), its 95 % interval (`low`,
    `high`), the share of samples where the difference is above 0 (A scores higher:
    `above_zero`), and the number of samples."""
    import random

    draw = random.Random(seed)

    def mean_delta(picks: list[list[int]]) -> float:
        deltas = [
            scorer.scores(a, idx)["bleu"] - scorer.scores(b, idx)["bleu"]
            for (scorer, a, b), idx in zip(groups, picks)
        ]
        return sum(deltas) / len(deltas)

    observed = mean_delta([list(range(scorer.n)) for scorer, _, _ in groups])
    deltas = sorted(
        mean_delta([draw.choices(range(scorer.n), k=scorer.n) for scorer, _, _ in groups])
        for _ in range(samples)
    )
    return {
        "delta": round(observed, 2),
        "low": round(deltas[int(0.025 * samples)], 2),
        "high": round(deltas[min(samples - 1, int(0.975 * samples))], 2),
        "above_zero": round(sum(d > 0 for d in deltas) / samples, 3),
        "samples": samples,
    }
