"""Quality report: the paper's ablation (method §8) for one or more presets, from pipeline runs.

Systems, per preset:
- FC           fine-grained states, candidates reranked by the classifier (+ coverage check when
               the preset turns it on): the run's chosen texts;
- No_FC        fine-grained states, top beam: the same run's first candidates (one generation pass
               gives both: every beam is kept with its scores);
- No_FC_No_FS  coarse states (<data>/<text> only), top beam: a second run with
               `linearize.mode=coarse` (its LM is trained again).

    # train + generate + evaluate (hours on a CPU), then the report:
    .venv/bin/python benchmarks/quality.py run --preset configs/webnlg-smol.yaml --storage /tmp/q
    .venv/bin/python benchmarks/quality.py run --preset configs/webnlg-tiny.yaml --storage /tmp/q
    .venv/bin/python benchmarks/quality.py report --storage /tmp/q --out benchmarks/results \
        --keep benchmarks/results/quality.json   # the earlier report's other presets stay
    # only the fine-state run (FC and No_FC): add --no-coarse; only the coarse one: --modes coarse
    # a seeded test sample (half seen, half unseen) with a run's models, when the CPU budget
    # cannot verbalize the whole split:
    .venv/bin/python benchmarks/quality.py sample --run /tmp/q/runs/webnlg-smol-fine \
        --lm /tmp/q/models/lm/webnlg-smol-fine \
        --classifier /tmp/q/models/classifier/webnlg-smol-fine --records 300 \
        --beams 3 --coverage --out /tmp/q/sample.json
    # re-choose a finished run's beams with another classifier (minutes, not the LM's half
    # hour): train one on the run's corruptions with more steps, or name one with --classifier
    .venv/bin/python benchmarks/quality.py rescore --storage /tmp/q --run webnlg-smol-fine \
        --label clf1200 --set classifier.max_steps=1200

`run` calls `datatuner run PRESET --run-id {name}-fine|{name}-coarse` (extra `--set` overrides
pass through; the test split is never used to choose anything: decoding knobs come from the preset,
tuned on dev with `benchmarks/decoding.py`). `report` reads every `{name}-fine` / `{name}-coarse`
run under `--storage/runs` and writes `quality.md` + `quality.json`: BLEU all / seen / unseen
(WebNLG), chrF, the predicted-label distribution, the coverage error rate, the classifier's
macro-F1 on the held-out corruption split, and training / generation wall times. `rescore` adds
an FC row per classifier it was given (`runs/{run}/rescored/{label}/`: the same candidates,
rescored and re-chosen).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABELS = ("accurate", "value_error", "omission", "repetition", "hallucination")


def run(args) -> None:
    import yaml

    name = yaml.safe_load(Path(args.preset).read_text())["name"]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.no_coarse:
        modes = [m for m in modes if m != "coarse"]
    if not modes or set(modes) - {"fine", "coarse"}:
        raise SystemExit(f"--modes: a comma list of fine and coarse, not {args.modes!r}")
    for mode in modes:
        cmd = [
            str(ROOT / ".venv" / "bin" / "datatuner"), "run", args.preset,
            "--run-id", f"{name}-{mode}", "--set", f"storage={args.storage}",
            "--set", f"linearize.mode={mode}", *sum((["--set", s] for s in args.set), []),
        ]  # fmt: skip
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def classifier_figures(folder: Path | None) -> dict:
    """A classifier version's steps, wall time and held-out figures (all None without one)."""
    card = (_json(folder / "training_card.json") or {}) if folder else {}
    held_out = (_json(folder / "eval.json") or {}) if folder else {}
    return {
        "classifier_steps": card.get("metrics", {}).get("steps"),
        "classifier_wall_s": card.get("metrics", {}).get("wall_seconds"),
        # an identical training job's model, copied (the coarse run's, from the fine run's)
        "classifier_reused_from": card.get("reused_from"),
        "classifier_macro_f1": held_out.get("macro_f1"),
        "classifier_accuracy": held_out.get("accuracy"),
        "classifier_majority": held_out.get("majority_baseline"),
        # per corruption rule: the share of its held-out pairs predicted as its label
        "classifier_caught": {
            rule: r["caught"] for rule, r in (held_out.get("by_rule") or {}).items()
        }
        or None,
    }


def classifier_minutes(run: dict) -> str:
    """A run's classifier training minutes, or where its reused model was trained."""
    source = run.get("classifier_reused_from")
    if source:
        return f"0 (reused: {Path(source).name}'s, {minutes(run['classifier_wall_s'])} there)"
    return minutes(run["classifier_wall_s"])


def collect(storage: Path, run_id: str) -> dict | None:
    """The figures of one run (None if it has no report yet)."""
    run_dir = storage / "runs" / run_id
    metrics = _json(run_dir / "report" / "metrics.json")
    if metrics is None:
        return None
    config = _json(run_dir / "config.json") or {}
    lm_card = _json(storage / "models" / "lm" / run_id / "training_card.json") or {}
    gen = _json(run_dir / "generations" / "_manifest.json") or {}
    seconds = (gen.get("timings") or {}).get("seconds")
    return {
        "run_id": run_id,
        "lm_base": config.get("lm", {}).get("base"),
        "classifier_base": config.get("classifier", {}).get("base"),
        "mode": config.get("linearize", {}).get("mode"),
        "decoding": config.get("generate"),
        "metrics": metrics,
        "lm_wall_s": lm_card.get("metrics", {}).get("wall_seconds"),
        "lm_tokens_per_s": lm_card.get("metrics", {}).get("tokens_per_s"),
        "lm_steps": lm_card.get("metrics", {}).get("steps"),
        "lm_val_ppl": (lm_card.get("metrics", {}).get("best") or {}).get("val_ppl"),
        **classifier_figures(storage / "models" / "classifier" / run_id),
        "generate_wall_s": seconds,
        "generate_records_per_s": (gen.get("extra") or {}).get("records_per_s"),
    }


def reference_coverage(storage: Path, run_id: str) -> dict | None:
    """The coverage check on the human references (the first of each test record): what the
    check reports for texts written by people, i.e. the floor a system is measured against."""
    sys.path.insert(0, str(ROOT))
    from datatuner_core import evaluate, stage_reader

    uri = str(storage / "runs" / run_id / "linearized")
    if not (Path(uri) / "_manifest.json").exists():
        return None
    rows = stage_reader.read_stage(uri).to_pylist()
    rows = [r for r in rows if r["split"] == "test" and r["references"]]
    if not rows or not any(r.get("entities") for r in rows):
        return None
    return evaluate.coverage_error_rate(rows, lambda r: r["references"][0])


def rescore(args) -> None:
    """Re-choose a finished run's candidates with another classifier: every candidate of
    `runs/{run}/generations` is rescored and each record re-chosen by the preset's reranking;
    the texts go to `runs/{run}/rescored/{label}/generations` (a stage, read == written) and its
    report beside it. Without --classifier, one is first trained on the run's corruption stage
    with the preset's classifier settings and the --set overrides, to
    `models/classifier/{run}-{label}` (what a longer classifier budget buys, without
    regenerating). --coverage-only chooses by the coverage check and then the LM score alone
    (what the classifier's labels add over the check)."""
    import time

    sys.path.insert(0, str(ROOT))
    from datatuner_core import evaluate, fingerprints, stage_reader, stage_writer
    from datatuner_core import report as reports
    from datatuner_core.classifier import FidelityScorer, train_classifier
    from datatuner_core.config import load_config
    from datatuner_core.generate import score_and_choose
    from datatuner_core.schema import GENERATIONS

    root = Path(args.storage)
    run_dir = root / "runs" / args.run
    preset = args.preset or str(run_dir / "config.json")  # the run's own settings (JSON is YAML)
    config = load_config(preset, [f"storage={root}", *args.set])
    classifier = args.classifier
    if classifier is None and not args.coverage_only:
        classifier = str(root / "models" / "classifier" / f"{args.run}-{args.label}")
        special = stage_reader.read_manifest(str(run_dir / "linearized"))["extra"]["special_tokens"]
        train_classifier(str(run_dir / "corruptions"), classifier, config.classifier, special)
    source = str(run_dir / "generations")
    rows = stage_reader.read_stage(source).to_pylist()
    for r in rows:
        for c in r["candidates"]:
            c["fidelity_label"] = c["fidelity_score"] = None
    started = time.time()
    g = config.generate
    score_and_choose(
        rows, FidelityScorer(classifier) if classifier else None, rerank=True,
        coverage=g.coverage or args.coverage_only, weight=g.weight, label_first=g.label_first,
        batch_size=max(g.batch_size, 32), verdict=g.verdict,
    )  # fmt: skip
    seconds = round(time.time() - started, 1)
    out = run_dir / "rescored" / args.label
    writer = stage_writer.StageWriter(str(out / "generations"), "generate", GENERATIONS)
    for r in rows:
        writer.add_counted(r)
    inputs = [{"uri": source, "fingerprint": stage_reader.read_manifest(source)["fingerprint"]},
              {"classifier": classifier}]  # fmt: skip
    fp = fingerprints.fingerprint("rescore", inputs, g.model_dump())
    writer.commit(inputs=inputs, fingerprint=fp, config=g.model_dump(), extra={"seconds": seconds})
    metrics = evaluate.evaluate_stage(str(out / "generations"))
    reports.write_report(metrics, str(out / "report"), title=f"{args.run} rescored {args.label}")
    info = {"run": args.run, "label": args.label, "classifier": classifier,
            "rescore_seconds": seconds, "headline": evaluate.headline(metrics)}  # fmt: skip
    (out / "rescore.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


def rescored(storage: Path, run_id: str) -> list[dict]:
    """The `rescore` results of a run: FC rows with other classifiers (sorted by label)."""
    found = []
    for info_file in sorted((storage / "runs" / run_id / "rescored").glob("*/rescore.json")):
        info = json.loads(info_file.read_text())
        metrics = _json(info_file.parent / "report" / "metrics.json")
        folder = Path(info["classifier"]) if info["classifier"] else None  # --coverage-only
        found.append({**info, "metrics": metrics, **classifier_figures(folder)})
    return found


def system_rows(fine: dict | None, coarse: dict | None, extra: list[dict] = ()) -> list[dict]:
    """FC / No_FC from the fine run, No_FC_No_FS from the coarse run's top beam, and an FC row
    per `rescore` result of the fine run (`extra`)."""
    rows = []

    def row(system: str, run: dict, which: str) -> dict:
        m = run["metrics"]
        top = which == "top_beam"
        part = m["top_beam"] if top else m

        def split(name: str):
            s = m.get(name) or {}
            return s.get("top_beam_bleu") if top else s.get("bleu")

        fidelity = (m.get("fidelity") or {}).get(which) or {}
        coverage = (m.get("coverage") or {}).get(which) or {}
        return {
            "system": system,
            "bleu": part.get("bleu"),
            "bleu_seen": split("seen"),
            "bleu_unseen": split("unseen"),
            "chrf": part.get("chrf"),
            "labels": fidelity.get("counts") if fidelity.get("labelled") else None,
            "coverage_error": coverage.get("error_rate"),
            "coverage_missing": coverage.get("missing_rate"),
            "coverage_hallucinated": coverage.get("hallucination_rate"),
            "n": part.get("n"),
        }

    if coarse:
        rows.append(row("No_FC_No_FS", coarse, "top_beam"))
    if fine:
        rows.append(row("No_FC", fine, "top_beam"))
        rows.append(row("FC", fine, "chosen"))
    for r in extra:
        if r.get("metrics"):
            name = f"FC (classifier {r['label']})" if r.get("classifier") else "coverage rerank"
            rows.append(row(name, r, "chosen"))
    return rows


def fmt(value, pct: bool = False) -> str:
    if value is None:
        return "—"
    if pct:
        return f"{100 * value:.1f} %"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def minutes(seconds) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f}"


def collect_preset(storage: Path, name: str) -> dict:
    """One preset's runs under `storage`: the fine and coarse runs, the fine run's rescores and
    the coverage check on the human references."""
    fine, coarse = collect(storage, f"{name}-fine"), collect(storage, f"{name}-coarse")
    any_run = fine or coarse
    return {
        "storage": [str(storage)], "fine": fine, "coarse": coarse,
        "rescored": rescored(storage, f"{name}-fine"),
        "reference_coverage": reference_coverage(storage, any_run["run_id"]) if any_run else None,
    }  # fmt: skip


def merge_preset(new: dict, kept: dict | None) -> dict:
    """A preset found in this storage over the same preset of a kept report: each run (fine,
    coarse) and each rescore label from the storage where it has one, else the kept one's (a
    report assembled over sessions whose storages are gone keeps every figure it had)."""
    if not kept:
        return new
    labels = {r["label"]: r for r in kept.get("rescored") or []}
    labels.update({r["label"]: r for r in new["rescored"]})
    return {
        "storage": list(dict.fromkeys([*(kept.get("storage") or []), *new["storage"]])),
        "fine": new["fine"] or kept.get("fine"),
        "coarse": new["coarse"] or kept.get("coarse"),
        "rescored": [labels[k] for k in sorted(labels)],
        "reference_coverage": new["reference_coverage"] or kept.get("reference_coverage"),
    }  # fmt: skip


def preset_lines(name: str, entry: dict) -> list[str]:
    """The markdown of one preset: its systems, its runs' figures and its classifiers' rules."""
    fine, coarse, again = entry["fine"], entry["coarse"], entry["rescored"]
    any_run = fine or coarse or {}
    base, clf_base = any_run.get("lm_base"), any_run.get("classifier_base")
    lines = [f"## {name} (LM {base}, classifier {clf_base})",
             "",
             "| system | BLEU | seen | unseen | chrF | coverage error (missing / halluc.) | "
             + " | ".join(LABELS) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(LABELS)]  # fmt: skip
    systems, floor = entry["systems"], entry["reference_coverage"]
    if floor:
        human = {"system": "human reference (first of each record)",
                 "coverage_error": floor["error_rate"],
                 "coverage_missing": floor["missing_rate"],
                 "coverage_hallucinated": floor["hallucination_rate"]}  # fmt: skip
        systems = [*systems, human]
    for s in systems:
        counts = s.get("labels") or {}
        lines.append(
            f"| {s['system']} | {fmt(s.get('bleu'))} | {fmt(s.get('bleu_seen'))} | "
            f"{fmt(s.get('bleu_unseen'))} | {fmt(s.get('chrf'))} | "
            f"{fmt(s['coverage_error'], True)} "
            f"({fmt(s['coverage_missing'], True)} / {fmt(s['coverage_hallucinated'], True)}) | "
            + " | ".join(str(counts.get(label, "—")) for label in LABELS)
            + " |"
        )
    lines += ["", "| run | LM steps | LM val ppl | LM tokens/s | LM train min | classifier "
              "macro-F1 (acc, majority) | classifier min | generate min (records/s) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in (fine, coarse):
        if run:
            lines.append(
                f"| {run['run_id']} | {fmt(run['lm_steps'])} | {fmt(run['lm_val_ppl'])} | "
                f"{fmt(run['lm_tokens_per_s'])} | {minutes(run['lm_wall_s'])} | "
                f"{fmt(run['classifier_macro_f1'])} ({fmt(run['classifier_accuracy'])}, "
                f"{fmt(run['classifier_majority'])}) | {classifier_minutes(run)} | "
                f"{minutes(run['generate_wall_s'])} ({fmt(run['generate_records_per_s'])}) |"
            )
    for r in (r for r in again if r.get("classifier")):  # coverage-only has no classifier
        lines.append(
            f"| {r['run']} rescored {r['label']} (same beams) | | | | | "
            f"{fmt(r['classifier_macro_f1'])} ({fmt(r['classifier_accuracy'])}; "
            f"{fmt(r['classifier_steps'])} steps) | {minutes(r['classifier_wall_s'])} | "
            f"rescore {minutes(r['rescore_seconds'])} |"
        )
    return [*lines, *caught_lines([fine, coarse, *again]), ""]


def report(args) -> None:
    """quality.md / quality.json from the runs under --storage; with --keep, the presets (and
    runs, and rescores) of an earlier quality.json that this storage lacks are carried over."""
    storage = Path(args.storage)
    runs_dir = storage / "runs"
    names = sorted({p.name.rsplit("-", 1)[0] for p in runs_dir.glob("*-fine")}
                   | {p.name.rsplit("-", 1)[0] for p in runs_dir.glob("*-coarse")})  # fmt: skip
    kept = {}
    if args.keep:
        if not Path(args.keep).is_file():
            raise SystemExit(f"--keep: no quality.json at {args.keep}")
        kept = json.loads(Path(args.keep).read_text())
    kept_presets, presets = kept.get("presets") or {}, {}
    if not names and not kept_presets:
        raise SystemExit(f"no {{name}}-fine or {{name}}-coarse runs under {runs_dir}")
    for name in sorted({*names, *kept_presets}):
        old = kept_presets.get(name)
        if old and "storage" not in old:  # written before presets named their storage
            old = {**old, "storage": [kept.get("storage")] if kept.get("storage") else []}
        entry = merge_preset(collect_preset(storage, name), old) if name in names else old
        entry["systems"] = system_rows(entry["fine"], entry["coarse"], entry["rescored"])
        presets[name] = entry
    out = {"storage": str(storage), "presets": presets}
    lines = ["# Quality report (the paper's ablation)", ""]
    for name, entry in presets.items():
        lines += preset_lines(name, entry)
    twins = [json.loads(Path(f).read_text()) | {"file": Path(f).name} for f in args.gpu_twin]
    twins = twins or kept.get("gpu_twin") or []
    if twins:
        out["gpu_twin"] = twins
        lines += gpu_twin_lines(twins)
    target = Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "quality.md").write_text("\n".join(lines) + "\n")
    (target / "quality.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\n".join(lines))


def caught_lines(runs: list[dict | None]) -> list[str]:
    """A table of each classifier's held-out share caught per corruption rule (classifiers
    evaluated before `by_rule` existed have none and are left out)."""
    with_rules = [r for r in runs if r and r.get("classifier_caught")]
    if not with_rules:
        return []
    rules = list(dict.fromkeys(rule for r in with_rules for rule in r["classifier_caught"]))
    lines = ["", "Classifier, held-out pairs predicted as their rule's label (`original`: accurate "
             "kept accurate):", "", "| classifier | " + " | ".join(rules) + " |",
             "|---|" + "---|" * len(rules)]  # fmt: skip
    for r in with_rules:
        name = r.get("run_id") or f"{r['run']} rescored {r['label']}"
        lines.append(
            f"| {name} | " + " | ".join(fmt(r["classifier_caught"].get(q)) for q in rules) + " |"
        )
    return lines


def gpu_twin_lines(twins: list[dict]) -> list[str]:
    """A table of `benchmarks/gpu_quality.py` results (the GPU twin, run without Ray): per run,
    its top beam (No_FC, or No_FC_No_FS with coarse states) and its coverage-reranked text."""
    lines = ["## GPU twin (benchmarks/gpu_quality.py: full fine-tune, bf16, no classifier)", "",
             "| result file | device | states | epochs | system | BLEU | seen | unseen | chrF | "
             "coverage error (missing / halluc.) | train s (tokens/s) | generate s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in twins:
        h, mode = t["headline"], t["args"].get("mode", "fine")
        top_name = "No_FC_No_FS (top beam)" if mode == "coarse" else "No_FC (top beam)"
        for system, bleu, seen, unseen, chrf, which in (
            (top_name, h["bleu_top_beam"], t["top_beam"]["seen"], t["top_beam"]["unseen"], None,
             "top_beam"),
            ("coverage rerank", h["bleu"], h["bleu_seen"], h["bleu_unseen"], h["chrf"], "chosen"),
        ):  # fmt: skip
            cov = (t.get("coverage") or {}).get(which) or {}
            lines.append(
                f"| {t['file']} | {t['device']} | {mode} | {t['train']['epochs']} | {system} | "
                f"{fmt(bleu)} | {fmt(seen)} | {fmt(unseen)} | {fmt(chrf)} | "
                f"{fmt(cov.get('error_rate'), True)} ({fmt(cov.get('missing_rate'), True)} / "
                f"{fmt(cov.get('hallucination_rate'), True)}) | {t['train']['seconds']} "
                f"({t['train']['tokens_per_s']}) | {t['generate']['seconds']} |"
            )
    return [*lines, ""]


def sample(args) -> None:
    """Generate + rerank + evaluate on a seeded sample of the test split, half seen, half unseen
    categories where the data is WebNLG (for CPU budgets that cannot verbalize the whole split in
    one sitting; the full split is `datatuner run`). Decoding comes from the arguments, chosen on
    dev beforehand. Writes the generations rows and the metrics as JSON."""
    import random
    import time

    sys.path.insert(0, str(ROOT))
    from datatuner_core import evaluate, stage_reader
    from datatuner_core.generate import Generator

    rows = [r for r in stage_reader.read_stage(f"{args.run}/linearized").to_pylist()
            if r["split"] == "test"]  # fmt: skip
    rng = random.Random(args.seed)
    if evaluate.is_webnlg(r.get("category") for r in rows):
        seen = [r for r in rows if r.get("category") in evaluate.WEBNLG_SEEN]
        unseen = [r for r in rows if r.get("category") not in evaluate.WEBNLG_SEEN]
        half = args.records // 2
        picked = rng.sample(seen, min(half, len(seen))) + rng.sample(
            unseen, min(args.records - half, len(unseen))
        )
    else:
        picked = rng.sample(rows, min(args.records, len(rows)))
    gen = Generator(
        args.lm, args.classifier, beams=args.beams, max_new_tokens=args.max_new_tokens,
        batch_size=16, rerank=True, coverage=args.coverage, int8=args.int8, threads=args.threads,
    )  # fmt: skip
    started = time.time()
    out = gen.generate_rows(picked)
    seconds = time.time() - started
    metrics = evaluate.evaluate_generations(out)
    result = {
        "records": len(out), "seconds": round(seconds, 1),
        "records_per_s": round(len(out) / seconds, 3),
        "full_split_minutes_at_this_rate": round(len(rows) / (len(out) / seconds) / 60, 1),
        "decoding": {"beams": args.beams, "coverage": args.coverage, "int8": args.int8},
        "headline": evaluate.headline(metrics), "metrics": metrics,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps({"result": result, "rows": out}, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"}, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train, generate and evaluate a preset (fine and coarse)")
    r.add_argument("--preset", required=True)
    r.add_argument("--storage", required=True)
    r.add_argument(
        "--modes",
        default="fine,coarse",
        help="which runs: fine (FC, No_FC) and/or coarse (No_FC_No_FS)",
    )
    r.add_argument("--no-coarse", action="store_true", help="skip the No_FC_No_FS run")
    r.add_argument("--set", action="append", default=[], help="extra config override")
    p = sub.add_parser("report", help="assemble quality.md / quality.json from the runs")
    p.add_argument("--storage", required=True)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--gpu-twin", nargs="*", default=[], metavar="JSON",
                   help="benchmarks/gpu_quality.py results to add as a table (default: the "
                   "--keep report's)")  # fmt: skip
    p.add_argument("--keep", metavar="JSON",
                   help="an earlier quality.json: its presets, runs and rescores that --storage "
                   "has not are kept")  # fmt: skip
    s = sub.add_parser("sample", help="generate + rerank + evaluate a seeded test sample")
    s.add_argument("--run", required=True, help="a run folder (its linearized stage)")
    s.add_argument("--lm", required=True)
    s.add_argument("--classifier", required=True)
    s.add_argument("--records", type=int, default=300)
    s.add_argument("--beams", type=int, default=3)
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--coverage", action="store_true")
    s.add_argument("--int8", action="store_true")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    q = sub.add_parser("rescore", help="re-choose a run's beams with another classifier")
    q.add_argument("--storage", required=True)
    q.add_argument("--run", required=True, help="a run id under --storage/runs (e.g. NAME-fine)")
    q.add_argument("--preset", help="config for reranking and classifier keys (default: the run's)")
    q.add_argument("--label", required=True, help="names the result: rescored/{label}")
    which = q.add_mutually_exclusive_group()
    which.add_argument("--classifier", help="a classifier version folder (default: train one)")
    q.add_argument("--set", action="append", default=[], help="config override (classifier.*)")
    which.add_argument("--coverage-only", action="store_true",
                   help="no classifier: the coverage check, then the LM score")  # fmt: skip
    args = parser.parse_args(argv)
    {"run": run, "report": report, "sample": sample, "rescore": rescore}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
