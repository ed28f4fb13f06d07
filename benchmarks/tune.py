"""Generation settings side by side on a run's DEV records (never on test): one sub-command a knob.

    python -m benchmarks.tune decoding --run RUN --lm LM --classifier CLF --records 120 \\
        --grid "1,1.0,0 3,1.0,0 3,1.0,3 5,1.0,0 5,1.5,0"
    python -m benchmarks.tune new-token-cap --run RUN --lm LM --classifier CLF --records 400 \\
        --settings "64,none 64,1.0 96,1.0"
    python -m benchmarks.tune length-sort --run RUN --lm LM --records 256 --beams 3
    python -m benchmarks.tune actors --run RUN --lm LM --classifier CLF --records 512 --actors "1 2"
    python -m benchmarks.tune dtype --run RUN --lm LM --classifier CLF --records 200 \\
        --preset configs/webnlg-smol.yaml --dtypes "float32 bfloat16"
    python -m benchmarks.tune consensus --generations GENERATIONS --weights "0 0.1 0.5 1 100"
    python -m benchmarks.tune weights --generations DEV.jsonl --classifier CLF --weights "0 0.3 1"

RUN is a run folder (`runs/{run_id}`: its linearized stage is sampled, seeded, the same records
every time), LM and CLF model version folders. Each setting runs in this one process on the same
records, so the figures compare; `--out FILE` writes the JSON result beside printing it.

- `decoding`: a grid of `beams,length_penalty,no_repeat_ngram[,int8]`; on each setting's beams,
  the reranking orders: label first without and with the coverage check, then the coverage check
  and LM score + weight x log P(accurate) (`generate.label_first: false`) for each `--weights`.
- `new-token-cap`: `max_new_tokens,ratio` settings (ratio `none`: no per-record cap).
- `length-sort`: `generate.length_sort` off and on through the real Ray Data stage, alternating
  `--repeats` times; the sort must change speed, not texts (`identical_candidates`).
- `actors`: the Ray Data stage with N actors (threads split among them), e.g. "1 2 1", alternating
  `--repeats` times; 1 and 2 threads sum floats in another order, so a near-tie may break apart.
- `dtype`: the preset's whole `generate` section in process with each `generate.dtype` (the LM's
  weights and arithmetic: float32, bfloat16), alternating `--repeats` times; speed, BLEU, top-beam
  BLEU, coverage error and how many texts equal the first setting's.
- `consensus`: no decoding; dev generations rows already made (a generations stage or a JSON-lines
  file of its rows, candidates kept) re-chosen by minimum Bayes risk: among the candidates with
  the fewest missing record entities, the highest LM score + weight x consensus, the mean
  sentence chrF (or BLEU) of a candidate against the record's other candidates (0-1). Per dev
  split: BLEU and coverage error of each weight beside the rows' own choice.
- `weights`: no decoding; stored dev candidates labelled once by `--classifier`, then re-chosen
  by each reranking order (`coverage`: the coverage check, then LM score + weight x log
  P(accurate); `label_first`: the label's severity between the two) and weight: per dev split
  and on the mean of the splits, BLEU, coverage error, the verdict's `accurate` rate and its
  precision against the coverage check; `best_on_dev` names the setting of the highest mean.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from .common import (
    add_dev_flags,
    description,
    emit_result,
    refuse_test_split,
    same_count,
    sample_rows,
    sample_stage,
    timed,
    write_json,
)

GRID = "1,1.0,0 3,1.0,0 3,1.0,3 5,1.0,0 5,1.5,0"


def decoding(args) -> None:
    """Each grid point's beams generated once, then re-chosen by every reranking order."""
    from datatuner_core import evaluate
    from datatuner_core.candidate_choice import score_and_choose
    from datatuner_core.generator import Generator

    rows = sample_rows(args.run, args.split, args.records)
    results = []
    for item in args.grid.split():
        beams, penalty, ngram, *rest = item.split(",")
        int8 = bool(rest and rest[0] == "int8")
        gen = Generator(
            args.lm, args.classifier, beams=int(beams), max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size, rerank=True, length_penalty=float(penalty),
            no_repeat_ngram=int(ngram), int8=int8, threads=args.threads,
        )  # fmt: skip
        out, seconds = timed(gen.generate_rows, rows)
        orders = [(False, True, 1.0), (True, True, 1.0)]  # (coverage, label_first, weight)
        orders += [(True, False, float(w)) for w in args.weights.split(",") if w.strip()]
        for coverage, label_first, weight in orders:
            # re-choose: the labels are kept (every candidate is scored once)
            score_and_choose(
                out, gen.scorer, rerank=True, coverage=coverage, weight=weight,
                label_first=label_first, batch_size=max(gen.batch_size, 32), verdict=gen.verdict,
            )  # fmt: skip
            m = evaluate.evaluate_generations(out)
            results.append({
                "beams": int(beams), "length_penalty": float(penalty),
                "no_repeat_ngram": int(ngram), "int8": int8, "coverage": coverage,
                "label_first": label_first, "weight": weight,
                "bleu": m["bleu"], "bleu_top_beam": m["top_beam"]["bleu"],
                "coverage_error": m["coverage"]["chosen"]["error_rate"],
                "coverage_error_top_beam": m["coverage"]["top_beam"]["error_rate"],
                "accurate": m["fidelity"]["chosen"]["counts"]["accurate"],
                "seconds": round(seconds, 1), "records_per_s": round(len(rows) / seconds, 2),
            })  # fmt: skip
            r = results[-1]
            order = "label, score" if label_first else f"score (weight {weight:g})"
            print(
                f"beams {r['beams']} lp {r['length_penalty']} ngram {r['no_repeat_ngram']} "
                f"{'int8 ' if int8 else ''}"
                f"coverage {coverage!s:5} then {order}: BLEU {r['bleu']:.2f} "
                f"(top beam {r['bleu_top_beam']:.2f}) coverage error "
                f"{r['coverage_error']:.3f} (top {r['coverage_error_top_beam']:.3f}) "
                f"accurate {r['accurate']}/{len(rows)}  {r['records_per_s']} records/s",
                flush=True,
            )
        del gen
    if args.out:
        write_json(args.out, {"records": len(rows), "results": results})


def parse_settings(text: str) -> list[tuple[int, float | None]]:
    """`"64,none 64,1.0"` -> [(64, None), (64, 1.0)]: max_new_tokens and ratio per setting."""
    out = []
    for item in text.split():
        tokens, ratio = item.split(",")
        out.append((int(tokens), None if ratio == "none" else float(ratio)))
    return out


def new_token_cap(args) -> None:
    """In-process `Generator` with reranking per setting, in the split's own order."""
    from datatuner_core import evaluate
    from datatuner_core.generator import Generator

    rows = sample_rows(args.run, args.split, args.records, source_order=True)
    results, first = [], None
    for tokens, ratio in parse_settings(args.settings):
        gen = Generator(
            args.lm, args.classifier, beams=args.beams, max_new_tokens=tokens,
            batch_size=args.batch_size, rerank=args.classifier is not None, coverage=True,
            max_new_tokens_ratio=ratio, max_new_tokens_slack=args.slack, threads=args.threads,
        )  # fmt: skip
        out, seconds = timed(gen.generate_rows, rows)
        metrics = evaluate.evaluate_generations(out)
        first = first or {r["id"]: r["text"] for r in out}
        results.append({
            "max_new_tokens": tokens, "ratio": ratio, "slack": args.slack,
            "seconds": round(seconds, 1), "records_per_s": round(len(out) / seconds, 3),
            "bleu": metrics["bleu"], "coverage_error": evaluate.headline(metrics)["coverage_error"],
            "same_texts_as_first": same_count(first, out),
        })  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    result = {
        "records": len(rows), "split": args.split, "beams": args.beams,
        "batch_size": args.batch_size, "classifier": args.classifier, "settings": results,
    }  # fmt: skip
    emit_result(result, args.out)


def stage_side_by_side(args, settings: list[tuple[str, dict]]) -> tuple[int, list, list]:
    """The real Ray Data generation stage on a seeded sample, once per setting (name, more
    `generate` section keys) and `--repeats` times in turn, so that a drift in the machine's
    load falls on all. Returns the sample size, each setting's seconds and its last rows."""
    from datatuner_core.config import GenerateConfig
    from datatuner_core.generate import generate_stage
    from datatuner_core.ray_setup import ensure_ray
    from datatuner_core.stage_reader import read_stage

    work = Path(tempfile.mkdtemp(prefix=f"bench-{args.command}-"))
    n = sample_stage(args.run, args.split, args.records, str(work / "lin"), args.order)
    ensure_ray()
    seconds: list[list[float]] = [[] for _ in settings]
    rows: list[list[dict]] = [[] for _ in settings]
    for i in range(args.repeats):
        for k, (name, knobs) in enumerate(settings):
            out = str(work / f"gen-{k}-{i}")
            started = time.perf_counter()
            section = GenerateConfig(
                beams=args.beams,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
                in_process_max=0,
                **knobs,
            )
            classifier = getattr(args, "classifier", None) if section.rerank else None
            generate_stage(str(work / "lin"), out, section, lm_uri=args.lm,
                           classifier_uri=classifier, split=None)  # fmt: skip
            seconds[k].append(round(time.perf_counter() - started, 1))
            print(f"{name}: {seconds[k][-1]} s", flush=True)
            rows[k] = read_stage(out).to_pylist()
    return n, seconds, rows


def candidates_of(rows: list[dict]) -> dict[str, list[str]]:
    return {r["id"]: [c["text"] for c in r["candidates"]] for r in rows}


def length_sort(args) -> None:
    """No classifier: reranking does not depend on the order."""
    settings = [(f"length_sort {on!s:5}", {"rerank": False, "length_sort": on})
                for on in (False, True)]  # fmt: skip
    n, seconds, rows = stage_side_by_side(args, settings)
    unsorted, ordered = (candidates_of(r) for r in rows)
    same = sum(ordered[k] == v for k, v in unsorted.items())
    off, on = (sum(s) / len(s) for s in seconds)
    result = {
        "records": n, "split": args.split, "order": args.order, "beams": args.beams,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "seconds_unsorted": seconds[0],
        "seconds_sorted": seconds[1], "records_per_s_unsorted": round(n / off, 3),
        "records_per_s_sorted": round(n / on, 3), "speedup": round(off / on, 3),
        "identical_candidates": same,
    }  # fmt: skip
    emit_result(result, args.out)


def actors(args) -> None:
    """1 actor x all cores against N actors x fewer threads, as `generate.actors` runs them."""
    from datatuner_core import evaluate

    counts = [int(a) for a in args.actors.split()]
    settings = [(f"actors {a}", {"actors": a, "rerank": args.classifier is not None,
                                 "coverage": True, "max_new_tokens_ratio": args.ratio})
                for a in counts]  # fmt: skip
    n, seconds, rows = stage_side_by_side(args, settings)
    first_text = {r["id"]: r["text"] for r in rows[0]}
    first_cands = candidates_of(rows[0])
    mean = [sum(s) / len(s) for s in seconds]
    found = []
    for k, a in enumerate(counts):
        metrics = evaluate.evaluate_generations(rows[k])
        found.append({
            "actors": a, "seconds": seconds[k], "records": len(rows[k]),
            "records_per_s": round(n / mean[k], 3),
            "speedup_over_first": round(mean[0] / mean[k], 3),
            "bleu": metrics["bleu"],
            "coverage_error": evaluate.headline(metrics)["coverage_error"],
            "same_texts_as_first": same_count(first_text, rows[k]),
            "same_candidates_as_first": same_count(
                first_cands, rows[k], key=lambda r: [c["text"] for c in r["candidates"]]
            ),
        })  # fmt: skip
    result = {
        "records": n, "split": args.split, "order": args.order, "beams": args.beams,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "ratio": args.ratio, "classifier": args.classifier, "settings": found,
    }  # fmt: skip
    emit_result(result, args.out)


def dtype(args) -> None:
    """The preset's generate section, in process, once per dtype (alternating `--repeats`)."""
    from datatuner_core import evaluate
    from datatuner_core.config import load_config
    from datatuner_core.generator import Generator

    rows = sample_rows(args.run, args.split, args.records)
    section = load_config(args.preset).generate
    results, first = [], None
    for _ in range(args.repeats):
        for name in args.dtypes.split():
            gen = Generator(args.lm, args.classifier, section, dtype=name, threads=args.threads,
                            rerank=args.classifier is not None)  # fmt: skip
            out, seconds = timed(gen.generate_rows, rows)
            metrics = evaluate.evaluate_generations(out)
            first = first or {r["id"]: r["text"] for r in out}
            results.append({
                "dtype": name, "resolved": gen.lm_dtype, "seconds": round(seconds, 1),
                "records_per_s": round(len(out) / seconds, 3), "bleu": metrics["bleu"],
                "bleu_top_beam": metrics["top_beam"]["bleu"],
                "coverage_error": evaluate.headline(metrics)["coverage_error"],
                "same_texts_as_first": same_count(first, out),
            })  # fmt: skip
            print(json.dumps(results[-1]), flush=True)
            del gen
    by = {}
    for r in results:
        by.setdefault(r["dtype"], []).append(r["seconds"])
    base = args.dtypes.split()[0]
    result = {
        "records": len(rows), "preset": args.preset, "threads": args.threads,
        "classifier": args.classifier is not None, "results": results,
        "speedup_over_first": {k: round(sum(by[base]) / sum(v), 2) for k, v in by.items()},
    }  # fmt: skip
    emit_result(result, args.out)


def consensus_scores(texts: list[str], metric) -> list[float]:
    """Each text's mean sentence score (0-1) against the others (`metric`: a sacrebleu metric)."""
    out = []
    for i, text in enumerate(texts):
        others = [t for j, t in enumerate(texts) if j != i]
        scores = [metric.sentence_score(text, [o]).score / 100 for o in others]
        out.append(sum(scores) / len(scores) if scores else 0.0)
    return out


def read_generations(path: str) -> list[dict]:
    """Generations rows from a stage folder or a JSON-lines file of them."""
    from datatuner_core.stage_reader import read_stage

    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    return read_stage(path).to_pylist()


def consensus(args) -> None:
    """Minimum-Bayes-risk re-choice of stored dev candidates, per weight and metric."""
    import sacrebleu

    from datatuner_core import evaluate
    from datatuner_core.rerank import missing_entities

    rows = [r for r in read_generations(args.generations) if r.get("candidates")]
    if not rows or any(r["split"] == "test" for r in rows):
        raise SystemExit("consensus re-chooses dev generations with candidates; test is not used")
    metrics = {
        "chrf": sacrebleu.metrics.CHRF(),
        "bleu": sacrebleu.metrics.BLEU(effective_order=True),
    }
    missing = [[missing_entities(c["text"], r["entities"]) for c in r["candidates"]] for r in rows]

    def report(chosen: list[dict]) -> dict:
        out = {}
        for split in sorted({r["split"] for r in chosen}) + ["all"]:
            part = [r for r in chosen if split in ("all", r["split"])]
            m = evaluate.headline(evaluate.evaluate_generations(part))
            out[split] = {"records": len(part), "bleu": round(m["bleu"], 2),
                          "coverage_error": round(m["coverage_error"], 4)}  # fmt: skip
        return out

    result = {"generations": args.generations, "records": len(rows), "own_choice": report(rows)}
    print("own choice", result["own_choice"], flush=True)
    for name in args.metrics.split():
        agree = [
            consensus_scores([c["text"] for c in r["candidates"]], metrics[name]) for r in rows
        ]
        for weight in (float(w) for w in args.weights.split()):
            chosen = []
            for r, gaps, u in zip(rows, missing, agree, strict=True):
                cands = r["candidates"]
                k = min(
                    range(len(cands)),
                    key=lambda i: (gaps[i], -(cands[i]["lm_score"] + weight * u[i]), i),
                )
                chosen.append({**r, "text": cands[k]["text"], "lm_score": cands[k]["lm_score"]})
            result[f"{name}@{weight:g}"] = report(chosen)
            print(name, weight, result[f"{name}@{weight:g}"], flush=True)
    emit_result(result, args.out)


def weights(args) -> dict:
    """Stored dev candidates labelled once by a classifier, then re-chosen by each reranking order
    and weight of log P(accurate); per dev split and on the mean of the splits: BLEU, coverage
    error, the verdict's `accurate` rate and its precision against the coverage check."""
    from datatuner_core import evaluate
    from datatuner_core.candidate_choice import score_and_choose

    rows = [r for path in args.generations for r in read_generations(path) if r.get("candidates")]
    if not rows or any(r["split"] == "test" for r in rows):
        raise SystemExit("weights re-chooses dev generations with candidates; test is not used")
    scorer = None
    if args.classifier:
        from datatuner_core.classifier_scorer import FidelityScorer

        scorer = FidelityScorer(args.classifier)
        for r in rows:  # labelled again by this classifier
            for c in r["candidates"]:
                c["fidelity_label"] = c["fidelity_score"] = None
    elif any(c.get("fidelity_label") is None for r in rows for c in r["candidates"]):
        raise SystemExit("weights: the candidates carry no classifier labels; give --classifier")
    started = time.perf_counter()
    score_and_choose(rows, scorer, rerank=False)  # every candidate labelled, once
    label_seconds = time.perf_counter() - started
    splits = sorted({r["split"] for r in rows})
    result = {
        "what": "stored dev candidates, labelled once by the classifier, re-chosen by each order "
        "and weight (coverage check first, then the combined score LM + weight x log P(accurate); "
        "label_first: the label's severity before the score); the verdict the user sees per text",
        "generations": args.generations, "classifier": args.classifier,
        "records": {s: sum(r["split"] == s for r in rows) for s in splits},
        "label_seconds": round(label_seconds, 1), "settings": {},
    }  # fmt: skip
    for order in args.orders.split():
        for weight in (float(w) for w in args.weights.split()):
            score_and_choose(rows, None, rerank=True, coverage=True, weight=weight,
                             label_first=order == "label_first", verdict=True)  # fmt: skip
            entry = {}
            for split in splits:
                m = evaluate.headline(evaluate.evaluate_generations(
                    [r for r in rows if r["split"] == split]))  # fmt: skip
                entry[split] = {
                    k: round(m[k], 4 if k != "bleu" and k != "bleu_top_beam" else 2)
                    for k in ("bleu", "bleu_top_beam", "coverage_error", "accurate_rate",
                              "verdict_accurate_precision")
                    if m.get(k) is not None
                }  # fmt: skip
            entry["mean_bleu"] = round(sum(entry[s]["bleu"] for s in splits) / len(splits), 2)
            name = f"{order}@{weight:g}"
            result["settings"][name] = entry
            print(name, entry, flush=True)
    best = max(result["settings"], key=lambda k: result["settings"][k]["mean_bleu"])
    result["best_on_dev"] = best
    emit_result(result, args.out)
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune", description=description(__doc__))
    sub = p.add_subparsers(dest="command", required=True)
    d = add_dev_flags(sub.add_parser("decoding", help="decoding grid x rerank orders"), 120, False)
    d.add_argument("--classifier", required=True)
    d.add_argument("--grid", default=GRID,
                   help="space-separated beams,length_penalty,no_repeat_ngram[,int8]")  # fmt: skip
    d.add_argument("--weights", default="0,0.5,1",
                   help="label_first=false variants: weights of log P(accurate)")  # fmt: skip
    d.add_argument("--max-new-tokens", type=int, default=64)
    d.add_argument("--threads", type=int, default=2)
    c = add_dev_flags(sub.add_parser("new-token-cap", help="max_new_tokens / ratio settings"), 400)
    c.add_argument("--classifier", default=None, help="rerank with it (else the top beam)")
    c.add_argument("--settings", default="64,none 64,1.0", help="max_new_tokens,ratio ...")
    c.add_argument("--slack", type=int, default=16)
    c.add_argument("--threads", type=int, default=None)
    s = add_dev_flags(sub.add_parser("length-sort", help="generate.length_sort off / on"), 256)
    a = add_dev_flags(sub.add_parser("actors", help="generation actor counts"), 512)
    a.add_argument("--classifier", default=None, help="rerank with it (else the top beam)")
    a.add_argument("--actors", default="1 2", help="actor counts; one may repeat: '1 2 1'")
    a.add_argument("--ratio", type=float, default=None, help="generate.max_new_tokens_ratio")
    t = add_dev_flags(sub.add_parser("dtype", help="generate.dtype settings"), 200, False)
    t.add_argument("--classifier", default=None, help="rerank with it (else the top beam)")
    t.add_argument("--preset", default="configs/webnlg-smol.yaml", help="its generate section")
    t.add_argument("--dtypes", default="float32 bfloat16", help="generate.dtype values")
    t.add_argument("--repeats", type=int, default=1)
    t.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("consensus", help="minimum-Bayes-risk re-choice of stored dev candidates")
    m.add_argument("--generations", required=True, help="a generations stage or a .jsonl of rows")
    m.add_argument("--weights", default="0 0.1 0.25 0.5 1 2 100", help="weights of the consensus")
    m.add_argument("--metrics", default="chrf bleu", help="sentence metrics: chrf, bleu")
    m.add_argument("--out", default=None, help="also write the JSON result here")
    for q, order in ((s, "random"), (a, "source")):
        q.add_argument("--max-new-tokens", type=int, default=64)
        q.add_argument("--repeats", type=int, default=1)
        q.add_argument("--order", choices=("random", "source"), default=order,
                       help="the sample's order: random, or the split's own (WebNLG: by "
                       "triple count)")  # fmt: skip
    w = sub.add_parser("weights", help="classifier weight and order on stored dev candidates")
    w.add_argument("--generations", nargs="+", required=True,
                   help="dev generations (stages or JSON lines), candidates kept")  # fmt: skip
    w.add_argument("--classifier", default=None, help="label the candidates with it")
    w.add_argument("--weights", default="0 0.1 0.3 1 3", help="weights of log P(accurate)")
    w.add_argument("--orders", default="coverage label_first",
                   help="coverage: coverage check, then the combined score; label_first: the "
                   "label's severity between the two")  # fmt: skip
    w.add_argument("--out", default=None)
    return p


COMMANDS = {"decoding": decoding, "new-token-cap": new_token_cap, "length-sort": length_sort,
            "actors": actors, "dtype": dtype, "consensus": consensus,
            "weights": weights}  # fmt: skip


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command not in ("length-sort", "consensus", "weights"):  # these check the splits
        refuse_test_split(args, f"tune {args.command}")
    COMMANDS[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
