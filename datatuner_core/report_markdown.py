"""The text of `report.md`: one section per part of the metrics (headline, splits, fidelity
labels, coverage, SER, examples, breakdowns, the LM's curve), each left out when its data is."""

from __future__ import annotations

from .corrupt import LABELS
from .metrics import METEOR_NOTE


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _headline(metrics: dict) -> list[str]:
    top = metrics.get("top_beam") or {}
    rows = []
    for name, key in (
        ("BLEU (all)", "bleu"),
        ("BLEU (lowercased)", "bleu_lowercase"),
        ("chrF", "chrf"),
    ):
        rows.append([name, _num(metrics.get(key)), _num(top.get(key))])
    standard = metrics.get("standard") or {}
    top_standard = metrics.get("top_beam_standard") or {}
    for name, key in (("NIST", "nist"), ("ROUGE-L", "rouge_l"), ("CIDEr", "cider")):
        if standard.get(key) is not None:
            rows.append([name, _num(standard[key]), _num(top_standard.get(key))])
    for part in ("seen", "unseen"):
        if metrics.get(part):
            rows.append(
                [
                    f"BLEU {part}",
                    _num(metrics[part].get("bleu")),
                    _num(metrics[part].get("top_beam_bleu")),
                ]
            )
    counts = (
        f"{metrics.get('n', 0)} inputs, {metrics.get('n_scored', 0)} with references, "
        f"{metrics.get('n_failed', 0)} failed generations"
    )
    if "changed_by_rerank" in metrics:
        counts += f", reranking changed {metrics['changed_by_rerank']} texts"
    return [
        "## Headline",
        "",
        *_table(["metric", "reranked", "top beam"], rows),
        "",
        counts + ".",
    ]


def _fidelity(metrics: dict) -> list[str]:
    fidelity = metrics.get("fidelity") or {}
    chosen, top = fidelity.get("chosen") or {}, fidelity.get("top_beam") or {}
    if not chosen.get("labelled") and not top.get("labelled"):
        return []
    labels = list(dict.fromkeys([*LABELS, *chosen.get("counts", {}), *top.get("counts", {})]))
    rows = [
        [
            label,
            str(chosen.get("counts", {}).get(label, 0)),
            _pct(chosen.get("shares", {}).get(label)),
            str(top.get("counts", {}).get(label, 0)),
            _pct(top.get("shares", {}).get(label)),
        ]
        for label in labels
    ]
    rows.append(
        [
            "mean P(accurate)",
            _num(chosen.get("mean_fidelity_score"), 3),
            "",
            _num(top.get("mean_fidelity_score"), 3),
            "",
        ]
    )
    header = ["predicted label", "reranked", "share", "top beam", "share"]
    out = ["## Predicted fidelity labels", "", *_table(header, rows)]
    coverage = metrics.get("coverage") or {}
    trust = []
    if (precision := (coverage.get("accurate_precision") or {})).get("accurate"):
        trust.append(
            f"Of the {precision['accurate']} texts reported `accurate`, "
            f"{_pct(precision['precision'])} have no coverage error (nothing missing, nothing "
            "hallucinated): the verdict's precision."
        )
    if (agree := coverage.get("classifier_agreement") or {}).get("candidates"):
        trust.append(
            f"On all {agree['candidates']} candidates, the classifier's own label agrees with "
            f"the coverage check on {_pct(agree['agreement'])} (`accurate` = no error); its "
            f"`accurate` is right on {_pct(agree['precision'])}, and it flags "
            f"{_pct(agree['error_recall'])} of the candidates with an error."
        )
    return out + ([""] + trust if trust else [])


def _per_record(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _coverage(metrics: dict) -> list[str]:
    coverage = metrics.get("coverage") or {}
    systems = [(n, coverage.get(k)) for n, k in (("top beam", "top_beam"), ("reranked", "chosen"))]
    rows = [
        [
            name,
            _pct(c.get("records_missing_share")),
            _per_record(c.get("missing_per_record")),
            _per_record(c.get("hallucinated_per_record")),
            _pct(c["record_error_share"]),
            f"{c['missing']} of {c['entities']} ({_pct(c['missing_rate'])})",
        ]
        for name, c in systems
        if c
    ]
    if not rows:
        return []
    header = [
        "text",
        "records missing an entity",
        "missing per record",
        "hallucinated per record",
        "records with any error",
        "entities missing",
    ]
    note = (
        "An independent check that does not use the classifier: the record's entities missing "
        "from the text, and entities of other records found in it. It is a heuristic: on the "
        "WebNLG test references themselves it flags 6.1 % of the entities."
    )
    return ["## Does the text state every fact?", "", note, "", *_table(header, rows)]


def _ser(metrics: dict) -> list[str]:
    found = metrics.get("ser") or {}
    systems = [("top beam", "top_beam"), ("reranked", "chosen"), ("human references", "references")]
    rows = [
        [name, _pct(t["ser"]), t["missing"], t["wrong"], t["repeated"], t["hallucinated"],
         t["units"], _pct(t["text_error_rate"]), t["texts"]]
        for name, key in systems
        if (t := found.get(key))
    ]  # fmt: skip
    if not rows:
        return []
    header = ["text", "SER", "missing", "wrong", "repeated", "hallucinated", "slot values",
              "texts with an error", "texts"]  # fmt: skip
    agree = found.get("agreement") or {}
    note = (
        "Slot error rate of the meaning representations (datatuner_core/ser.py, a rule-based "
        "slot aligner with the paraphrases of each slot's values): errors / slot values. On the "
        "human references it is the aligner's own error floor (on cleaned E2E most of their "
        "'hallucinations' are slots the cleaning dropped from the MR although the text states "
        "them)."
    )
    lines = ["## Slot error rate (meaning representations)", "", note, "", *_table(header, rows)]
    if agree.get("labelled"):
        lines += [
            "",
            f"Classifier against SER on {agree['labelled']} labelled texts (accurate ⟺ no slot "
            f"error): agreement {_pct(agree['agreement'])}; of the texts labelled accurate, "
            f"{_pct(agree['accurate_precision'])} have no slot error; of the texts with no slot "
            f"error, {_pct(agree['accurate_recall'])} are labelled accurate.",
        ]
    return lines


def _examples(metrics: dict) -> list[str]:
    found = metrics.get("examples") or {}
    out = []
    for kind, title in (("good", "Good texts"), ("bad", "Texts with a flaw")):
        items = found.get(kind) or []
        if not items:
            continue
        out += [f"### {title}", ""]
        for item in items:
            verdict = item.get("label") or "no verdict"
            score = "" if item.get("score") is None else f", P(accurate) {item['score']:.2f}"
            flaws = []
            if item.get("missing"):
                flaws.append("missing: " + ", ".join(item["missing"]))
            if item.get("hallucinated"):
                flaws.append("not in the data: " + ", ".join(item["hallucinated"]))
            out += [
                f"- **data** `{_short(item.get('data'))}`",
                f"  - **text** {item.get('text') or '(generation failed)'}",
                f"  - verdict: {verdict}{score}" + (f"; {'; '.join(flaws)}" if flaws else ""),
            ]
            if item.get("reference"):
                out.append(f"  - a human reference: {item['reference']}")
        out.append("")
    return ["## Examples", "", *out] if out else []


def _short(text: str | None, limit: int = 160) -> str:
    text = (text or "").replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _breakdowns(metrics: dict) -> list[str]:
    titles = {
        "seen_unseen": "WebNLG seen / unseen categories",
        "by_category": "By category",
        "by_size": "By input size (triples or slots)",
    }
    out = []
    for key, title in titles.items():
        groups = (metrics.get("breakdown") or {}).get(key)
        if not groups:
            continue
        rows = [
            [
                name,
                str(s["n"]),
                _num(s["bleu"]),
                _num(s["bleu_lowercase"]),
                _num(s["chrf"]),
                _num(s.get("top_beam_bleu")),
            ]
            for name, s in groups.items()
        ]
        first = {"seen_unseen": "categories", "by_category": "category", "by_size": "size"}[key]
        header = [first, "n", "BLEU", "BLEU lc", "chrF", "BLEU top beam"]
        out += [f"### {title}", "", *_table(header, rows), ""]
    return ["## Breakdown", "", *out] if out else []


SPLIT_NAMES = {
    "test": "test (reported)",
    "validation": "validation (seen categories)",
    "validation_unseen": "validation_unseen (held-out categories)",
}


def _splits(metrics: dict) -> list[str]:
    """Test beside the validation splits settings are chosen on (the pipeline's dev sample)."""
    dev = metrics.get("validation") or {}
    if not dev:
        return []
    from .evaluate import split_summary

    parts = {"test": split_summary(metrics), **dev}
    rows = [
        [
            SPLIT_NAMES.get(name, name), str(s["n"]), _num(s["bleu"]), _num(s["bleu_top_beam"]),
            _num(s["bleu_oracle"]), _pct(s["coverage_error"]), _pct(s["coverage_error_top_beam"]),
            _pct(s["coverage_error_oracle"]),
        ]
        for name, s in parts.items()
    ]  # fmt: skip
    header = ["split", "n", "BLEU reranked", "BLEU top beam", "BLEU oracle",
              "coverage error", "coverage error top beam", "coverage error oracle"]  # fmt: skip
    return [
        "## Test beside the validation splits",
        "",
        "Settings are chosen on the validation splits (a seeded sample of each, "
        "`generate.dev_records`), never on test; `validation_unseen` holds the categories "
        "neither model trained on (`dataset.holdout_categories`). Oracle: the best pick among "
        "the candidates, the reranker's ceiling.",
        "",
        *_table(header, rows),
    ]


def _curve(metrics: dict) -> list[str]:
    """The LM's validations during training (`lm.eval_every`), per validation split."""
    points = metrics.get("lm_curve") or []
    if not points:
        return []
    splits = sorted({k.split("@", 1)[1] for p in points for k in p if k.startswith("val_ppl@")})
    header = ["step", "val ppl", *[f"ppl {s}" for s in splits]]
    rows = [
        [str(p["step"]), _num(p.get("val_ppl"), 3),
         *[_num(p.get(f"val_ppl@{s}"), 3) for s in splits]]
        for p in points
    ]  # fmt: skip
    best = metrics.get("lm_best_step")
    note = f" The exported model is step {best}'s (lowest val ppl)." if best is not None else ""
    return ["## LM validation curve", "", *_table(header, rows), "", note.strip()]


def render_markdown(
    metrics: dict, title: str, extra: dict | None = None, plots: list[str] | None = None
) -> bytes:
    """The text of `report.md`."""
    lines = [f"# {title}", ""]
    if extra:
        lines += [*_table(["", ""], [[k, f"`{v}`"] for k, v in extra.items()]), ""]
    for section in (_headline, _splits, _fidelity, _coverage, _ser, _examples, _breakdowns,
                    _curve):  # fmt: skip
        if part := section(metrics):
            lines += [*part, ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.removesuffix('.png')}]({p})" for p in plots]
    lines += [
        "",
        "BLEU: sacrebleu corpus BLEU, cased, 13a tokenizer, references grouped per input; "
        "chrF: sacrebleu chrF. Top beam: the LM's most likely text (the paper's No_FC); "
        "reranked: the text chosen among the beams with the fidelity classifier (DataTuner_FC). "
        "NIST (n <= 5, NLTK), ROUGE-L (F-measure against the best reference, rouge-score) and "
        "CIDEr (CIDEr-D, pycocoevalcap) on lowercased tokens, as the E2E challenge reports them; "
        f"METEOR: {METEOR_NOTE}.",
    ]
    return ("\n".join(lines).rstrip() + "\n").encode()
