"""Quality runs: the paper's ablation (method §8) for one or more presets, from pipeline runs.

Systems, per preset:
- FC           fine-grained states, candidates reranked by the classifier (+ coverage check when
               the preset turns it on): the run's chosen texts;
- No_FC        fine-grained states, top beam: the same run's first candidates (one generation pass
               gives both: every beam is kept with its scores);
- No_FC_No_FS  coarse states (<data>/<text> only), top beam: a second run with
               `linearize.mode=coarse` (its LM is trained again).

    # train + generate + evaluate (hours on a CPU), then the report:
    python -m benchmarks.quality run --preset configs/webnlg-smol.yaml --storage /tmp/q
    python -m benchmarks.quality run --preset configs/webnlg-tiny.yaml --storage /tmp/q
    python -m benchmarks.quality report --storage /tmp/q --out benchmarks/results \
        --keep benchmarks/results/quality.json   # the earlier report's other presets stay
    # webnlg-smol's LM recipes, dev (benchmarks.finetune curve) beside test (… test):
    python -m benchmarks.quality report --storage /tmp/q --keep benchmarks/results/quality.json \
        --finetune benchmarks/results/finetune-curve-lora300-lr1e3.json \
                   benchmarks/results/webnlg-smol-lora300-lr1e3-test.json
    # only the fine-state run (FC and No_FC): add --no-coarse; only the coarse one: --modes coarse
    # a seeded test sample (half seen, half unseen) with a run's models, when the CPU budget
    # cannot verbalize the whole split:
    python -m benchmarks.quality sample --run /tmp/q/runs/webnlg-smol-fine \
        --lm /tmp/q/models/lm/webnlg-smol-fine \
        --classifier /tmp/q/models/classifier/webnlg-smol-fine --records 300 \
        --beams 3 --coverage --out /tmp/q/sample.json
    # re-choose a finished run's beams with another classifier (minutes, not the LM's half
    # hour): train one on the run's corruptions with more steps, or name one with --classifier
    python -m benchmarks.quality rescore --storage /tmp/q --run webnlg-smol-fine \
        --label clf1200 --set classifier.max_steps=1200

`run` calls `datatuner run PRESET --run-id {name}-fine|{name}-coarse` (extra `--set` overrides
pass through; the test split is never used to choose anything: decoding knobs come from the preset,
tuned on dev with `python -m benchmarks.tune decoding`). `report` (benchmarks.quality_report)
reads every `{name}-fine` / `{name}-coarse` run under `--storage/runs` and writes `quality.md` +
`quality.json`. `rescore` re-chooses a run's candidates with `datatuner_core.rescore` and adds an
FC row per classifier it was given (`runs/{run}/rescored/{label}/`: the same candidates, rescored
and re-chosen).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from .common import ROOT, add_set_flag, cli_command, description, set_argv, timed, write_json
from .quality_report import report


def run(args) -> None:
    import yaml

    name = yaml.safe_load(Path(args.preset).read_text())["name"]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.no_coarse:
        modes = [m for m in modes if m != "coarse"]
    if not modes or set(modes) - {"fine", "coarse"}:
        raise SystemExit(f"--modes: a comma list of fine and coarse, not {args.modes!r}")
    for mode in modes:
        cmd = cli_command(
            "run", args.preset, "--run-id", f"{name}-{mode}", "--set", f"storage={args.storage}",
            "--set", f"linearize.mode={mode}", *set_argv(args.set),
        )  # fmt: skip
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


def rescore(args) -> None:
    """Re-choose a finished run's candidates with another classifier (`rescore_stage`): the
    texts go to `runs/{run}/rescored/{label}/generations` (a stage, read == written), its report
    and `rescore.json` beside it. Without --classifier, one is first trained on the run's
    corruption stage with the preset's classifier settings and the --set overrides, to
    `models/classifier/{run}-{label}` (what a longer classifier budget buys, without
    regenerating). --coverage-only chooses by the coverage check and then the LM score alone
    (what the classifier's labels add over the check)."""
    from datatuner_core import evaluate
    from datatuner_core import report as reports
    from datatuner_core.classifier import train_classifier
    from datatuner_core.config import load_config
    from datatuner_core.rescore import rescore_stage
    from datatuner_core.stage_reader import read_manifest

    root = Path(args.storage)
    run_dir = root / "runs" / args.run
    preset = args.preset or str(run_dir / "config.json")  # the run's own settings (JSON is YAML)
    config = load_config(preset, [f"storage={root}", *args.set])
    classifier = args.classifier
    if classifier is None and not args.coverage_only:
        classifier = str(root / "models" / "classifier" / f"{args.run}-{args.label}")
        special = read_manifest(str(run_dir / "linearized"))["extra"]["special_tokens"]
        train_classifier(str(run_dir / "corruptions"), classifier, config.classifier, special)
    out = run_dir / "rescored" / args.label
    manifest = rescore_stage(
        str(run_dir / "generations"), str(out / "generations"), config.generate,
        classifier_uri=classifier, coverage_only=args.coverage_only,
    )  # fmt: skip
    metrics = evaluate.evaluate_stage(str(out / "generations"))
    reports.write_report(metrics, str(out / "report"), title=f"{args.run} rescored {args.label}")
    info = {"run": args.run, "label": args.label, "classifier": classifier,
            "rescore_seconds": manifest["extra"]["seconds"],
            "headline": evaluate.headline(metrics)}  # fmt: skip
    write_json(out / "rescore.json", info)
    print(json.dumps(info, indent=2))


def sample(args) -> None:
    """Generate + rerank + evaluate on a seeded sample of the test split, half seen, half unseen
    categories where the data is WebNLG (for CPU budgets that cannot verbalize the whole split in
    one sitting; the full split is `datatuner run`). Decoding comes from the arguments, chosen on
    dev beforehand. Writes the generations rows and the metrics as JSON."""
    import random

    from datatuner_core import evaluate
    from datatuner_core.breakdown import WEBNLG_SEEN, is_webnlg
    from datatuner_core.generator import Generator
    from datatuner_core.stage_reader import read_stage

    rows = [r for r in read_stage(f"{args.run}/linearized").to_pylist()
            if r["split"] == "test"]  # fmt: skip
    rng = random.Random(args.seed)
    if is_webnlg(r.get("category") for r in rows):
        seen = [r for r in rows if r.get("category") in WEBNLG_SEEN]
        unseen = [r for r in rows if r.get("category") not in WEBNLG_SEEN]
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
    out, seconds = timed(gen.generate_rows, picked)
    metrics = evaluate.evaluate_generations(out)
    result = {
        "records": len(out), "seconds": round(seconds, 1),
        "records_per_s": round(len(out) / seconds, 3),
        "full_split_minutes_at_this_rate": round(len(rows) / (len(out) / seconds) / 60, 1),
        "decoding": {"beams": args.beams, "coverage": args.coverage, "int8": args.int8},
        "headline": evaluate.headline(metrics), "metrics": metrics,
    }  # fmt: skip
    write_json(args.out, {"result": result, "rows": out})
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"}, indent=2))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quality", description=description(__doc__)
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train, generate and evaluate a preset (fine and coarse)")
    r.add_argument("--preset", required=True)
    r.add_argument("--storage", required=True)
    r.add_argument("--modes", default="fine,coarse",
                   help="which runs: fine (FC, No_FC) and/or coarse (No_FC_No_FS)")  # fmt: skip
    r.add_argument("--no-coarse", action="store_true", help="skip the No_FC_No_FS run")
    add_set_flag(r, "extra config override")
    p_ = sub.add_parser("report", help="assemble quality.md / quality.json from the runs")
    p_.add_argument("--storage", required=True)
    p_.add_argument("--out", default="benchmarks/results")
    p_.add_argument("--gpu-twin", nargs="*", default=[], metavar="JSON",
                    help="benchmarks.gpu_quality results to add as a table (default: the "
                    "--keep report's)")  # fmt: skip
    p_.add_argument("--finetune", nargs=2, action="append", default=[], metavar=("CURVE", "TEST"),
                    help="a benchmarks.finetune curve result (one recipe) and its LM's test "
                    "figures: dev beside test, repeatable (default: the --keep report's)",
                    )  # fmt: skip
    p_.add_argument("--keep", metavar="JSON",
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
    add_set_flag(q, "config override (classifier.*)")
    which.add_argument("--coverage-only", action="store_true",
                       help="no classifier: the coverage check, then the LM score")  # fmt: skip
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    {"run": run, "report": report, "sample": sample, "rescore": rescore}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
