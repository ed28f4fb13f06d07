"""The E2E challenge's metric set beside BLEU: NIST, ROUGE-L and CIDEr from maintained libraries
that run offline (NLTK's `corpus_nist`, Google's `rouge-score`, `pycocoevalcap`'s CIDEr-D), on
the texts of the inputs that have references.

- Tokens: lowercased, words and punctuation split (`tokenize`), as the E2E challenge's scripts
  compare; ROUGE-L uses `rouge-score`'s own tokenizer (lowercased alphanumeric runs).
- NIST: n-grams up to 5 over the corpus (NLTK; the information weights come from the references).
- ROUGE-L: the LCS F-measure against the best-matching reference of each input, averaged, x100.
- CIDEr: CIDEr-D (4-grams, sigma 6, clipped, x10), the corpus mean; its IDF comes from the
  corpus's own references, so a subset's figure is not comparable with the whole's.
- METEOR is not computed: NLTK's METEOR needs the WordNet corpus (a download) and the original
  is a Java program; neither can be installed offline, so the report says so instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

METEOR_NOTE = (
    "not computed: NLTK's METEOR needs the WordNet corpus (a download) and the original METEOR "
    "is a Java program; neither installs offline"
)
_TOKEN = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]", re.UNICODE)


def tokenize(text: str | None, lowercase: bool = True) -> list[str]:
    """Words (with inner hyphens, apostrophes and dots) and single punctuation marks."""
    text = text or ""
    return _TOKEN.findall(text.lower() if lowercase else text)


def nist(hypotheses: Sequence[list[str]], references: Sequence[Sequence[list[str]]]) -> float:
    """Corpus NIST (n <= 5) of tokenized hypotheses against their tokenized references."""
    from nltk.translate.nist_score import corpus_nist

    longest = max((len(h) for h in hypotheses), default=0)
    if not longest:
        return 0.0
    # NLTK divides by the hypotheses' n-gram count of every order up to n: none are longer than
    # `longest` tokens, so the orders stop there (texts of 3 words: NIST-3)
    n = min(5, longest)
    return float(corpus_nist([list(refs) for refs in references], list(hypotheses), n=n))


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean ROUGE-L F-measure (x100), each text against its best-matching reference."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [scorer.score_multi(list(refs), hyp or "")["rougeL"].fmeasure
              for hyp, refs in zip(hypotheses, references, strict=True)]  # fmt: skip
    return 100.0 * sum(scores) / len(scores) if scores else 0.0


def cider(hypotheses: Sequence[list[str]], references: Sequence[Sequence[list[str]]]) -> float:
    """Corpus CIDEr-D of tokenized hypotheses (pycocoevalcap's scorer, fed tokens joined by
    spaces: its Java tokenizer is not used)."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    if len(hypotheses) < 2:
        return 0.0  # the IDF of a one-input corpus is zero for every n-gram
    scorer = CiderScorer(n=4, sigma=6.0)
    for hyp, refs in zip(hypotheses, references, strict=True):
        scorer += (" ".join(hyp), [" ".join(r) for r in refs])
    score, _ = scorer.compute_score()
    return float(score)


def standard_metrics(
    hypotheses: Sequence[str | None], references_lists: Sequence[Sequence[str] | None]
) -> dict:
    """NIST, ROUGE-L and CIDEr of `hypotheses` (a null text counts as empty) over the inputs
    with at least one reference; METEOR's absence stated."""
    pairs = [
        (hyp or "", [r for r in refs or [] if r and r.strip()])
        for hyp, refs in zip(hypotheses, references_lists, strict=True)
    ]
    pairs = [(hyp, refs) for hyp, refs in pairs if refs]
    out: dict = {"nist": None, "rouge_l": None, "cider": None, "meteor": None,
                 "meteor_note": METEOR_NOTE, "n_scored": len(pairs)}  # fmt: skip
    if not pairs:
        return out
    texts = [hyp for hyp, _ in pairs]
    refs = [refs for _, refs in pairs]
    hyp_tokens = [tokenize(t) for t in texts]
    ref_tokens = [[tokenize(r) for r in rs] for rs in refs]
    out["nist"] = nist(hyp_tokens, ref_tokens)
    out["rouge_l"] = rouge_l(texts, refs)
    out["cider"] = cider(hyp_tokens, ref_tokens)
    return out
