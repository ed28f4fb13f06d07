"""The quality report: the paper's ablation table per preset, assembled from pipeline runs.

`python -m benchmarks.quality report --storage S [--keep benchmarks/results/quality.json]` reads
every `{name}-fine` / `{name}-coarse` run under `S/runs` and writes `quality.md` + `quality.json`:
per preset the systems No_FC_No_FS (coarse run, top beam), No_FC (fine run, top beam), FC (fine
run, chosen text) and one FC row per rescore (`runs/{run}/rescored/{label}`), each with BLEU all /
seen / unseen (WebNLG), chrF, the coverage error and the predicted labels; the coverage check on
the human references as the floor; the runs' training and generation figures; each classifier's
held-out catch per corruption rule; the GPU twin's results (`benchmarks.gpu_quality`); and,
with `--finetune CURVE TEST` (repeatable), webnlg-smol's LM recipes with dev seen and dev unseen
(`benchmarks.finetune curve`, where the recipe was chosen) beside the test figures of the same LM
(`benchmarks.finetune test`, reported after the choice) and issue 22's targets.
"""

from __future__ import annotations

import json
from pathlib import Path

from datatuner_core.corrupt import LABELS


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
    from datatuner_core.coverage_check import coverage_error_rate
    from datatuner_core.stage_reader import read_stage

    uri = str(storage / "runs" / run_id / "linearized")
    if not (Path(uri) / "_manifest.json").exists():
        return None
    rows = read_stage(uri).to_pylist()
    rows = [r for r in rows if r["split"] == "test" and r["references"]]
    if not rows or not any(r.get("entities") for r in rows):
        return None
    return coverage_error_rate(rows, lambda r: r["references"][0])


def rescored(storage: Path, run_id: str) -> list[dict]:
    """The `rescore` results of a run: FC rows with other classifiers (sorted by label)."""
    found = []
    for info_file in sorted((storage / "runs" / run_id / "rescored").glob("*/rescore.json")):
        info = json.loads(info_file.read_text())
        metrics = _json(info_file.parent / "report" / "metrics.json")
        folder = Path(info["classifier"]) if info["classifier"] else None  # --coverage-only
        found.append({**info, "metrics": metrics, **classifier_figures(folder)})
    return found


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


def classifier_minutes(run: dict) -> str:
    """A run's classifier training minutes, or where its reused model was trained."""
    source = run.get("classifier_reused_from")
    if source:
        return f"0 (reused: {Path(source).name}'s, {minutes(run['classifier_wall_s'])} there)"
    return minutes(run["classifier_wall_s"])


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
    """A table of `benchmarks.gpu_quality` results (the GPU twin, run without Ray): per run,
    its top beam (No_FC, or No_FC_No_FS with coarse states) and its coverage-reranked text."""
    lines = ["## GPU twin (benchmarks.gpu_quality: full fine-tune, bf16, no classifier)", "",
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


TARGETS = {"bleu": 50.0, "bleu_unseen": 45.0, "coverage_error": 0.08}


def finetune_entry(curve_file: str, test_file: str) -> dict:
    """One LM recipe: its `benchmarks.finetune curve` result (one recipe: the validation
    perplexity per step and the chosen checkpoint's dev BLEU per split) with its test figures
    (the `test` figures of a `benchmarks.finetune test` result, or of a run's result file)."""
    curve, test = json.loads(Path(curve_file).read_text()), json.loads(Path(test_file).read_text())
    if len(curve.get("recipes") or {}) != 1:
        raise SystemExit(f"--finetune: {curve_file} must hold one recipe's curve")
    if not isinstance(test.get("test"), dict) or "bleu" not in test["test"]:
        raise SystemExit(f"--finetune: {test_file} has no test figures")
    ((recipe, entry),) = curve["recipes"].items()
    return {"recipe": recipe, "curve_file": Path(curve_file).name,
            "test_file": Path(test_file).name, "max_steps": curve.get("max_steps"),
            "settings": entry.get("settings"), "train_minutes": entry.get("train_minutes"),
            "tokens_per_s": entry.get("tokens_per_s"), "curve": entry.get("curve") or [],
            "dev": entry.get("dev") or {}, "test": test["test"],
            "test_minutes": test.get("minutes") or test["test"].get("generation_minutes_here"),
            }  # fmt: skip


def _met(value, target: float, higher: bool, pct: bool = False) -> str:
    """`met (value)` or `missed by GAP (value)`: BLEU points, or percentage points with pct."""
    if value is None:
        return "—"
    gap = value - target if higher else target - value
    if gap >= 0:
        return f"met ({fmt(value, pct)})"
    size = f"{abs(gap) * 100:.2f} points" if pct else f"{abs(gap):.2f}"
    return f"missed by {size} ({fmt(value, pct)})"


def _dev_cell(x: dict) -> str:
    """A dev split's BLEU: chosen (top beam, oracle)."""
    return f"{fmt(x.get('bleu'))} ({fmt(x.get('bleu_top_beam'))}, {fmt(x.get('oracle_bleu'))})"


def finetune_lines(entries: list[dict]) -> list[str]:
    """webnlg-smol's LM recipes: validation perplexity per step on both dev splits (the
    unseen-dev curve), dev BLEU where the choice was made, test BLEU reported after it."""
    lines = [
        "## webnlg-smol's LM recipes: dev (chosen on) beside test (reported)", "",
        "`benchmarks.finetune curve` (100 + 100 seeded dev records, the preset's decoding, no "
        "classifier) and `benchmarks.finetune test` (all 1,862 test records, the same LM and "
        "decoding). BLEU of the text chosen (coverage check, then LM score) / top beam / oracle "
        "(the best candidate per record). The sections after this one come from whole pipeline "
        "runs (`benchmarks.quality run`), each with the LM recipe its run table names.", "",
        "| recipe | lr | steps | LM min | val ppl seen / unseen | dev seen | dev unseen | "
        "test all | test seen | test unseen | test top beam | test oracle | "
        "test coverage error (top beam) | test generate min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for e in entries:
        last = e["curve"][-1] if e["curve"] else {}
        seen, unseen = (
            _dev_cell(e["dev"].get(k) or {}) for k in ("validation", "validation_unseen")
        )

        t = e["test"]
        lines.append(
            f"| {e['recipe']} | {(e['settings'] or {}).get('lr', '—')} | {e['max_steps']} | "
            f"{fmt(e['train_minutes'])} | {fmt(last.get('val_ppl@validation'))} / "
            f"{fmt(last.get('val_ppl@validation_unseen'))} | {seen} | {unseen} | "
            f"{fmt(t.get('bleu'))} | {fmt(t.get('bleu_seen'))} | "
            f"{fmt(t.get('bleu_unseen'))} | {fmt(t.get('bleu_top_beam'))} | "
            f"{fmt(t.get('oracle_bleu'))} | {fmt(t.get('coverage_error'), True)} "
            f"({fmt(t.get('coverage_error_top_beam'), True)}) | {fmt(e['test_minutes'])} |"
        )
    lines += ["", "Dev columns: chosen (top beam, oracle).", "",
              "| recipe | issue 22: test all ≥ 50 | unseen ≥ 45 | coverage error ≤ 8 % | "
              "chosen ≥ top beam |", "|---|---|---|---|---|"]  # fmt: skip
    for e in entries:
        t = e["test"]
        top = t.get("bleu_top_beam")
        lines.append(
            f"| {e['recipe']} | {_met(t.get('bleu'), TARGETS['bleu'], True)} | "
            f"{_met(t.get('bleu_unseen'), TARGETS['bleu_unseen'], True)} | "
            f"{_met(t.get('coverage_error'), TARGETS['coverage_error'], False, True)} | "
            f"{'—' if top is None else _met(t.get('bleu'), top, True)} |"
        )
    lines += [
        "",
        "Validation perplexity per step (the unseen-dev curve):",
        "",
        "| recipe | step | val ppl seen | val ppl unseen |",
        "|---|---|---|---|",
    ]
    for e in entries:
        for point in e["curve"]:
            lines.append(
                f"| {e['recipe']} | {point.get('step')} | {fmt(point.get('val_ppl@validation'))}"
                f" | {fmt(point.get('val_ppl@validation_unseen'))} |"
            )
    return [*lines, ""]


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
    if not (names or kept_presets or getattr(args, "finetune", None) or kept.get("finetune")):
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
    recipes = [finetune_entry(c, t) for c, t in getattr(args, "finetune", None) or []]
    recipes = recipes or kept.get("finetune") or []
    if recipes:  # first: the LM recipes' dev and test figures; the pipeline runs' ablation after
        out["finetune"] = recipes
        lines += finetune_lines(recipes)
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
