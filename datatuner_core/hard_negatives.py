"""Rule labels for the LM's own texts: hard negatives for the classifier, and the evidence behind
the reported fidelity verdict (`rerank.fidelity_verdict`).

A text is checked against its record with the report's coverage check (`coverage_check`), so the
labels, the reranker and the metric agree on what "mentioned" means:

- `missing`: the record's entities the text does not mention (`coverage_check.entity_present`:
  accents, case and punctuation folded; numbers, ISO dates, `English language`, country aliases
  and comma-separated parts accepted in their usual paraphrases);
- `foreign`: entities of *other* records found in the text (`coverage_check.coverage_errors` with a
  corpus `EntityIndex`; none without one);
- `invented`: numbers in the text (whole digit tokens after normalisation: `1,000` = 1000,
  `26th` = 26) that occur nowhere in the record — neither in its linearization nor in the
  accepted forms of its entities (`1945-04-26` gives 1945, 04, 4, 26, `April`...);
- `repeated`: sentences (`sentences.split_sentences`, normalised, 3+ words) that occur twice, or a
  run of `REPEAT_NGRAM` words that occurs twice (a runaway text that never ends a sentence).

The label, by precedence:
1. `value_error`: a foreign or invented value *and* a missing entity — a value was stated wrongly;
2. `hallucination`: a foreign or invented value, nothing missing — something was added;
3. `omission`: a missing entity;
4. `repetition`: a repeated sentence;
5. `accurate`: none of these (the rules cannot see a wrong predicate or a paraphrased error: an
   `accurate` rule label means "no evidence against", which is why the verdict keeps the
   classifier's label then).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .coverage_check import EntityIndex, coverage_errors, entity_forms, normalize
from .sentences import split_sentences

REPEAT_NGRAM = 8  # words; shorter runs repeat legitimately ("is located in the city of")
MIN_REPEATED_SENTENCE_WORDS = 3
HARD_NEGATIVE_RULE = "lm_beam"  # the `rule` of a hard-negative pair (the classifier's by_rule)


def _record_numbers(entities: Sequence[str], linearized: str | None) -> set[str]:
    """Every digit token of the record, as written and without leading zeros."""
    forms = [normalize(linearized or "")]
    for entity in entities:
        whole, parts = entity_forms(entity)
        forms += [*whole, *(f for part in parts for f in part)]
    tokens = {t for form in forms for t in form.split() if t.isdigit()}
    return tokens | {str(int(t)) for t in tokens}


def invented_numbers(
    text: str | None, entities: Sequence[str], linearized: str | None
) -> list[str]:
    """Numbers the text states that occur nowhere in the record."""
    known = _record_numbers(entities, linearized)
    found = [t for t in normalize(text or "").split() if t.isdigit()]
    return list(dict.fromkeys(t for t in found if t not in known and str(int(t)) not in known))


def repeated_spans(text: str | None) -> list[str]:
    """Sentences (3+ words) that occur twice, else the first repeated run of REPEAT_NGRAM words."""
    sentences = [normalize(s) for s in split_sentences(text or "")]
    seen, repeated = set(), []
    for s in sentences:
        if len(s.split()) >= MIN_REPEATED_SENTENCE_WORDS and s in seen:
            repeated.append(s)
        seen.add(s)
    if repeated:
        return list(dict.fromkeys(repeated))
    words, grams = normalize(text or "").split(), set()
    for i in range(len(words) - REPEAT_NGRAM + 1):
        gram = " ".join(words[i : i + REPEAT_NGRAM])
        if gram in grams:
            return [gram]
        grams.add(gram)
    return []


def rule_findings(
    text: str | None,
    entities: Sequence[str],
    linearized: str | None = None,
    others: EntityIndex | None = None,
) -> dict:
    """What the rules find in `text` against its record: missing, foreign, invented, repeated."""
    errors = coverage_errors(
        text, list(entities), others if others is not None else EntityIndex(())
    )
    return {
        "missing": errors["missing"],
        "foreign": errors["hallucinated"],
        "invented": invented_numbers(text, entities, linearized),
        "repeated": repeated_spans(text),
    }


def rule_label(findings: dict) -> str:
    """The label of `rule_findings` by the module's precedence."""
    extra = findings["foreign"] or findings["invented"]
    if extra:
        return "value_error" if findings["missing"] else "hallucination"
    if findings["missing"]:
        return "omission"
    return "repetition" if findings["repeated"] else "accurate"


def label_beam(
    text: str | None,
    entities: Sequence[str],
    linearized: str | None = None,
    others: EntityIndex | None = None,
) -> str:
    """The rule label (one of `corrupt.LABELS`) of one LM text against its record."""
    return rule_label(rule_findings(text, entities, linearized, others))


def hard_negative_pairs(rows: Iterable[dict], *, keep_accurate: bool = True) -> list[dict]:
    """Classifier pairs (the corruption stage's columns) from generations rows of train records:
    every distinct candidate text, labelled by `label_beam` against its record with a corpus
    index of all the rows' entities (`foreign` = another record's entity). `keep_accurate=False`
    keeps only the negatives (the corruption stage already gives accurate pairs)."""
    rows = [r for r in rows if r.get("candidates")]
    index = EntityIndex(e for r in rows for e in r.get("entities") or [])
    pairs = []
    for row in rows:
        texts = dict.fromkeys(c["text"] for c in row["candidates"] if (c["text"] or "").strip())
        for k, text in enumerate(texts):
            label = label_beam(text, row.get("entities") or [], row.get("linearized"), index)
            if label == "accurate" and not keep_accurate:
                continue
            pairs.append({
                "id": f"{row['id']}/{HARD_NEGATIVE_RULE}/{k}", "record_id": str(row["id"]),
                "split": row.get("split"), "linearized": row.get("linearized"), "text": text,
                "label": label, "rule": HARD_NEGATIVE_RULE,
            })  # fmt: skip
    return pairs


def with_hard_negatives(
    corruptions_uri: str,
    beams_uri: str,
    output_uri: str,
    *,
    storage_options: dict | None = None,
    force: bool = False,
) -> dict:
    """A corruption stage for the classifier: every pair of `corruptions_uri`, plus the
    `hard_negative_pairs` of a generations stage of *train* records (`beams_uri`: the run's LM,
    its generate settings, no reranking) as train pairs — the LM's own omissions, invented values
    and repetitions beside the synthetic corruptions of human texts.

    Counts are of the beam records: each one read is written (its distinct candidate texts become
    pairs) or quarantined (no text: its generation failed). `extra.pairs.train` is recomputed
    with the new pairs; `extra.hard_negatives` holds their count by label."""
    from collections import Counter

    from . import fingerprints, stage_reader, stage_writer
    from .corrupt import corruption_stats
    from .schema import CORRUPTIONS, make_quarantine

    uris = (corruptions_uri, beams_uri)
    sources = [(u, stage_reader.read_manifest(u, storage_options)) for u in uris]
    inputs = [{"uri": u, "fingerprint": m["fingerprint"]} for u, m in sources]
    fp = fingerprints.fingerprint("hard_negatives", inputs, fingerprints.code_version())
    if not force and (done := stage_reader.current_manifest(output_uri, fp, storage_options)):
        return {**done, "skipped": True}
    writer = stage_writer.StageWriter(
        output_uri, "corrupt", CORRUPTIONS, storage_options=storage_options
    )
    train = []
    for batch in stage_reader.iter_stage_batches(corruptions_uri, storage_options):
        for pair in batch.to_pylist():
            writer.add(pair)
            if pair["split"] == "train":
                train.append(pair)
    rows = []
    for batch in stage_reader.iter_stage_batches(beams_uri, storage_options):
        for row in batch.to_pylist():
            writer.stats.read += 1
            if not any((c.get("text") or "").strip() for c in row.get("candidates") or []):
                reason = f"no LM text to label: {row.get('error') or 'no candidates'}"
                writer.quarantine(make_quarantine(row.get("source") or "", row["id"], reason, ""))
                continue
            writer.stats.written += 1
            writer.stats.records += 1
            rows.append(row)
    pairs = [{**pair, "split": "train"} for pair in hard_negative_pairs(rows)]
    for pair in pairs:
        writer.add(pair)
    extra = dict(sources[0][1].get("extra") or {})
    extra["pairs"] = {**(extra.get("pairs") or {}), "train": corruption_stats(train + pairs)}
    extra["hard_negatives"] = {
        "records": len(rows),
        "pairs": len(pairs),
        "by_label": dict(sorted(Counter(p["label"] for p in pairs).items())),
    }
    return writer.commit(inputs=inputs, fingerprint=fp, config={}, extra=extra)
