"""Fine-tuning recipes for the smol LM side by side, judged on held-out-category dev (issue 22).

A recipe is a set of `lm` keys over `configs/webnlg-smol.yaml`'s own `lm` section (`RECIPES`):
freezing (bottom 15 blocks and the input embeddings frozen, the output layer untied and trained;
the preset's recipe until 2026-12-03, called `preset` in the results of before), LoRA adapters on
every block (every pretrained weight frozen, the tied output layer too) at lr 5e-4 (`lora16`), 1e-3
(`lora16-lr1e3`) and 2e-3 (`lora16-lr2e3`, the shipped recipe since stop 44), LoRA above 15 frozen
blocks, and full fine-tuning.

- `cost`: in this process, no Ray: the same `--steps` batches of 16 real WebNLG train examples
  (length-bucketed, seeded) through each recipe's model and AdamW, recipes alternating `--repeats`
  times: seconds per optimizer step, tokens/s, trainable parameters. What a CPU-minute buys.
- `curve`: each recipe trained through the real trainer (`lm.train_lm`, Ray Train) for
  `--max-steps` with a validation every `--eval-every` steps (perplexity on `validation` and on
  `validation_unseen`, the held-out categories), then the best checkpoint verbalizes a seeded
  sample of `--records` records of each dev split with the preset's decoding, no classifier
  (top beam): BLEU and coverage error per split. Never the test split.
- `dev`: trained LMs (`--lms`, the one in place first) side by side on a larger dev sample than a
  curve's (`--unseen-records` of `validation_unseen`, `--records` of `validation`: the pipeline's
  seeded sample, whose first 100 are the curve's), with the preset's whole generate section: each
  LM's figures per split, and each LM against the first by paired bootstrap of corpus BLEU (per
  split and on the dev mean: the difference, its 95 % interval, the share of samples it wins).
  For a choice a 100-record curve cannot settle. Rows kept per LM and split; a stopped run resumes.
- `test`: once a recipe is chosen, a trained LM (`--lm`) verbalizes the WebNLG test split in this
  process with the preset's whole generate section (reranking with no classifier, so a preset
  whose classifier takes part in the choice is refused, as for `--dev-sample pipeline`): the
  headline figures of `datatuner evaluate` (all / seen / unseen, top beam, oracle, coverage
  error), minutes and records/s. Reported, never used to choose. A stopped run given the same
  `--generations` rows file again keeps the rows there and generates only the rest.
- `paired`: two LMs' `test` rows files of the same records by category group (WebNLG's unseen
  categories, the preset's held-out ones, the trained ones): BLEU of each, paired bootstrap of the
  difference. Reported after a test run, never used to choose.

    python -m benchmarks.finetune cost --work W --recipes "freeze15 lora16 lora16-top15 full"
    python -m benchmarks.finetune curve --work W --recipes "freeze15 lora16" --max-steps 120 \\
        --eval-every 40 --records 100 --out benchmarks/results/finetune-curve.json
    python -m benchmarks.finetune dev --work W --lms "W/models/lora16-lr2e3-300 \\
        W/models/lora16-lr1e3-300" --records 300 --unseen-records 573 --generations W/dev
    python -m benchmarks.finetune test --work W --lm W/models/lora16-lr1e3-300 \\
        --generations W/test.jsonl --out benchmarks/results/finetune-test.json

`--work` holds the WebNLG records and linearized stages (with the preset's held-out categories),
made on first use and reused after, and the trained models.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from .common import SHARED_DATA, description, emit_result, timed

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
PRESET = Path(__file__).resolve().parent.parent / "configs" / "webnlg-smol.yaml"

RECIPES = {
    "freeze15": {"lora_rank": 0, "freeze_layers": 15, "freeze_embeddings": True, "lr": 2.0e-4},
    "lora16": {"lora_rank": 16, "lora_alpha": 32.0, "freeze_layers": 0,
               "freeze_embeddings": False, "lr": 5.0e-4},
    "lora16-lr1e3": {"lora_rank": 16, "lora_alpha": 32.0, "freeze_layers": 0,
                     "freeze_embeddings": False, "lr": 1.0e-3},
    "lora16-lr2e3": {"lora_rank": 16, "lora_alpha": 32.0, "freeze_layers": 0,
                     "freeze_embeddings": False, "lr": 2.0e-3},
    "lora16-top15": {"lora_rank": 16, "lora_alpha": 32.0, "freeze_layers": 15,
                     "freeze_embeddings": False, "lr": 5.0e-4},
    "full": {"lora_rank": 0, "freeze_layers": 0, "freeze_embeddings": False, "lr": 1.0e-4},
}  # fmt: skip


def preset_config():
    from datatuner_core.config import load_config

    return load_config(str(PRESET), [])


def prepare(work: Path, entries: int | None = None) -> tuple[str, list[str]]:
    """The preset's WebNLG train and dev linearized (held-out categories as `validation_unseen`)
    under `work`; returns (linearized stage, special tokens). Skips what is already there."""
    from datatuner_core import linearize as lin
    from datatuner_core.ingest import ingest

    config = preset_config()
    paths = {"train": str(SHARED_DATA / "webnlg" / "train"),
             "validation": str(SHARED_DATA / "webnlg" / "dev")}  # fmt: skip
    caps = {"train": entries, "validation": entries}  # None: the whole splits
    ingest("webnlg", paths, str(work / "records"), max_records=caps)
    manifest = lin.linearize(
        str(work / "records"), str(work / "linearized"),
        holdout_categories=config.dataset.holdout_categories,
    )  # fmt: skip
    return str(work / "linearized"), manifest["extra"]["special_tokens"]


def lm_section(name: str, base: str | None = None, **extra):
    """The preset's `lm` section with recipe `name`'s keys (and `base`, `extra`) over it."""
    section = preset_config().lm
    return section.model_copy(update={**RECIPES[name], **({"base": base} if base else {}), **extra})


def steps(model, optimizer, batches) -> None:
    """One optimizer step per batch."""
    for batch in batches:
        model(**batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def cost(args) -> None:
    import torch

    from datatuner_core import lm
    from datatuner_core.stage_reader import read_stage
    from datatuner_core.tokenizer import build_tokenizer
    from datatuner_core.training_data import plan_batches

    torch.set_num_threads(args.threads)
    linearized, specials = prepare(Path(args.work), args.entries)
    rows = [r for r in read_stage(linearized).to_pylist() if r["split"] == "train"]
    base = lm_section(args.recipes.split()[0], args.base)
    corpus = (
        [t for pair in lm.training_pairs(rows) for t in pair] if lm.is_scratch(base.base) else None
    )
    tok = build_tokenizer(base.base, corpus, specials)
    examples, _ = lm.encode_rows(tok, rows[: args.rows], specials, "fine", base.max_length)
    plan = plan_batches([len(e["input_ids"]) for e in examples], base.batch_size, 7)
    batches = [lm.collate_lm([examples[i] for i in b], tok.pad_token_id) for b in plan]
    batches = batches[: args.steps + 1]  # the first is a warm-up, not timed
    tokens = sum(int((b["labels"] != -100).sum()) for b in batches[1:])
    names = args.recipes.split()
    seconds: dict[str, list[float]] = {n: [] for n in names}
    params: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name in names:
            section = lm_section(name, args.base)
            task = lm.LMTask(
                tokenizer=tok, special_tokens=specials, base=section.base,
                max_length=section.max_length, freeze_layers=section.freeze_layers,
                freeze_embeddings=section.freeze_embeddings, lora_rank=section.lora_rank,
                lora_alpha=section.lora_alpha,
            )  # fmt: skip
            torch.manual_seed(0)
            model = task.build_model().train()
            params[name] = task.parameter_counts
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=section.lr)

            steps(model, optimizer, batches[:1])
            _, s = timed(steps, model, optimizer, batches[1:])
            seconds[name].append(s / (len(batches) - 1))
            print(f"{name}: {seconds[name][-1]:.2f} s/step", flush=True)
            del model, optimizer
    result = {
        "what": "seconds per optimizer step (forward, backward, AdamW) of the smol LM, the same "
        f"{len(batches) - 1} batches of {base.batch_size} WebNLG train examples per recipe, "
        f"{args.threads} threads, recipes alternating {args.repeats} times (median)",
        "command": f'python -m benchmarks.finetune cost --work W --recipes "{args.recipes}" '
        f"--steps {args.steps} --repeats {args.repeats}",
        "machine": {"cpus": os.cpu_count(), "arch": platform.processor() or platform.machine()},
        "recipes": {},
    }
    for name in names:
        median = sorted(seconds[name])[len(seconds[name]) // 2]
        result["recipes"][name] = {
            "settings": RECIPES[name], "seconds_per_step": round(median, 2),
            "label_tokens_per_s": round(tokens / (len(batches) - 1) / median, 1),
            "all_seconds": [round(s, 2) for s in seconds[name]], **params[name],
        }  # fmt: skip
    emit_result(result, args.out)
    return result


def curve(args) -> None:
    from datatuner_core import evaluate
    from datatuner_core.generator import Generator
    from datatuner_core.lm import train_lm

    work = Path(args.work)
    linearized, specials = prepare(work, args.entries)
    config = preset_config()
    dev = dev_rows(work, args.records, args.dev_sample)
    rerank = args.dev_sample == "pipeline"
    result = {
        "what": "each recipe trained for max_steps (the learning rate decaying to 0 there) through "
        "the real trainer on WebNLG train without the held-out categories; the curve is the "
        "validation perplexity per split; then the best checkpoint verbalizes the same seeded "
        f"{args.records} records of each dev split with webnlg-smol's decoding, no classifier",
        "command": f'python -m benchmarks.finetune curve --work W --recipes "{args.recipes}" '
        f"--max-steps {args.max_steps} --eval-every {args.eval_every} --records {args.records}"
        + (" --dev-sample pipeline" if rerank else ""),
        "max_steps": args.max_steps,
        "recipes": {},
    }
    for name in args.recipes.split():
        section = lm_section(
            name, args.base, max_steps=args.max_steps, eval_every=args.eval_every,
            checkpoint_every=None, warmup_steps=min(config.lm.warmup_steps, args.max_steps // 4),
        )  # fmt: skip
        out = str(work / "models" / f"{name}-{args.max_steps}")
        started = time.monotonic()
        card = train_lm(linearized, out, section, special_tokens=specials, mode="fine")
        train_minutes = (time.monotonic() - started) / 60
        metrics = card["metrics"]
        entry = {
            "settings": RECIPES[name],
            "parameters": card.get("parameters"),
            "train_minutes": round(train_minutes, 1),
            "tokens_per_s": metrics.get("tokens_per_s"),
            "curve": [
                {k: e.get(k) for k in e if k == "step" or k.startswith("val_ppl")}
                for e in metrics["evaluations"]
            ],
            "best": metrics["best"],
            "dev": {},
        }
        gen_section = config.generate.model_copy(update={"rerank": rerank})
        gen = Generator(out, None, gen_section, threads=args.threads)
        for split, rows in dev.items():
            if not rows:  # a capped smoke run (`--entries`) may hold no held-out category
                continue
            texts, seconds = timed(gen.generate_rows, rows)
            m = evaluate.headline(evaluate.evaluate_generations(texts))
            entry["dev"][split] = {
                "records": len(rows), "bleu": round(m["bleu"], 2),
                "coverage_error": round(m["coverage_error"], 4),
                "generate_seconds": round(seconds, 1),
            }  # fmt: skip
            if rerank:
                entry["dev"][split].update({
                    k: round(m[k], 4 if "coverage" in k else 2)
                    for k in ("bleu_top_beam", "oracle_bleu", "coverage_error_top_beam")
                    if m.get(k) is not None
                })  # fmt: skip
        del gen
        result["recipes"][name] = entry
        print(name, entry, flush=True)
        emit_result(result, args.out)  # what is done so far survives a stop


def dev_rows(work: Path, records: int, how: str) -> dict[str, list[dict]]:
    """`records` linearized rows of each dev split (`validation_unseen`, `validation`).

    `benchmark`: `common.sample_rows`, the sample of the earlier curves. `pipeline`: the
    validation sample `datatuner run` verbalizes beside the test split (`linearize.sample_splits`,
    `generate.dev_records`), so that the figures stand beside a full run's dev figures. With
    webnlg-smol's reranking (coverage check, then the LM score: `weight: 0`, `label_first:
    false`) the classifier does not take part in the choice, so the reranked text without one is
    the text the pipeline would choose; a preset whose classifier does is refused."""
    from benchmarks.common import sample_rows
    from datatuner_core import linearize as lin
    from datatuner_core.stage_reader import read_stage

    splits = ("validation_unseen", "validation")
    if how == "benchmark":
        return {s: sample_rows(str(work), s, records) for s in splits}
    gen = preset_config().generate
    if gen.weight != 0 or gen.label_first:
        raise SystemExit("--dev-sample pipeline: the preset's reranking uses the classifier")
    out = work / f"validation_sample_{records}"
    lin.sample_splits(str(work / "linearized"), str(out), records, splits)
    rows = read_stage(str(out)).to_pylist()
    return {s: [r for r in rows if r["split"] == s] for s in splits}


def test_split(args) -> dict:
    """The test split verbalized by `args.lm` with the preset's decoding, in chunks with progress;
    each chunk's rows appended to `--generations` (JSON lines) as it finishes."""
    from datatuner_core import evaluate
    from datatuner_core import linearize as lin
    from datatuner_core.generator import Generator
    from datatuner_core.ingest import ingest
    from datatuner_core.stage_reader import read_stage

    config = preset_config()
    if config.generate.weight != 0 or config.generate.label_first:
        raise SystemExit("finetune test: the preset's reranking uses the classifier")
    work = Path(args.work) / "test"
    if not (work / "linearized" / "_manifest.json").exists():
        ingest("webnlg", {"test": str(SHARED_DATA / "webnlg" / "test")}, str(work / "records"),
               max_records={"test": args.entries})  # fmt: skip
        lin.linearize(str(work / "records"), str(work / "linearized"),
                      holdout_categories=config.dataset.holdout_categories)  # fmt: skip
    rows = [r for r in read_stage(str(work / "linearized")).to_pylist() if r["split"] == "test"]
    rows = sorted(rows, key=lambda r: len(r["linearized"]))[: args.records]
    gen = Generator(args.lm, None, config.generate, threads=args.threads)
    started = time.monotonic()
    done, kept = generate_resumable(gen, rows, args.generations, args.lm, args.chunk)
    todo = len(rows) - kept
    minutes = (time.monotonic() - started) / 60
    headline = evaluate.headline(evaluate.evaluate_generations(done))
    result = {
        "what": "WebNLG test verbalized in process by one LM with the preset's generate section "
        "whole (coverage check, then the LM score; no classifier takes part in the choice, and "
        "the rows carry no fidelity labels); reported, not used to choose",
        "command": f"python -m benchmarks.finetune test --work W --lm {args.lm}",
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "threads": args.threads, "dtype_asked": config.generate.dtype,
        "records": len(done), "resumed": kept, "minutes": round(minutes, 1),
        "records_per_s": round(todo / (minutes * 60), 3) if todo else None,
        "retried": gen.retried,
        "test": {k: v for k, v in headline.items() if v is not None},
    }  # fmt: skip
    emit_result(result, args.out)
    return result


def dev(args) -> dict:
    """Trained LMs (`--lms`, the first the one in place) side by side on a larger dev sample than
    a curve's: `--unseen-records` of `validation_unseen` and `--records` of `validation` (the
    pipeline's seeded sample, whose first 100 are a curve's), verbalized with the preset's
    generate section, rows kept per LM and split under `--generations` (a stopped run resumes).
    Per LM and split: BLEU, top beam, oracle, coverage error; then each other LM against the
    first by paired bootstrap on each split and on the dev mean. Never the test split."""
    from datatuner_core import evaluate
    from datatuner_core.bleu import CorpusScorer, paired_bootstrap
    from datatuner_core.generator import Generator

    config = preset_config()
    if config.generate.weight != 0 or config.generate.label_first:
        raise SystemExit("finetune dev: the preset's reranking uses the classifier")
    work = Path(args.work)
    prepare(work, args.entries)
    counts = {"validation_unseen": args.unseen_records or args.records,
              "validation": args.records}  # fmt: skip
    samples = {split: dev_split_sample(work, split, n) for split, n in counts.items()}
    lms = args.lms.split()
    if args.generations:
        Path(args.generations).mkdir(parents=True, exist_ok=True)
    result = {
        "what": "trained LMs verbalizing the same seeded dev sample (the pipeline's: its first 100 "
        "per split are a curve's) with the preset's generate section, no classifier; each LM "
        "against the first by paired bootstrap (Koehn 2004) of corpus BLEU, per split and on "
        "the mean of the two splits; never the test split",
        "command": f'python -m benchmarks.finetune dev --work W --lms "{args.lms}" '
        f"--records {args.records} --unseen-records {counts['validation_unseen']}",
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "records": {split: len(rows) for split, rows in samples.items()},
        "lms": {},
        "against_first": {},
    }  # fmt: skip
    texts: dict[str, dict[str, list[dict]]] = {lm: {} for lm in lms}
    for split, rows in samples.items():  # the held-out split first: the one a choice hangs on
        for lm in lms:
            gen = Generator(lm, None, config.generate, threads=args.threads)
            rows_file = (
                str(Path(args.generations) / f"{Path(lm).name}.{split}.jsonl")
                if args.generations
                else None
            )
            started = time.monotonic()
            done, kept = generate_resumable(gen, rows, rows_file, lm, args.chunk)
            order = {r["id"]: i for i, r in enumerate(rows)}
            texts[lm][split] = sorted(done, key=lambda t: order[t["id"]])
            m = evaluate.headline(evaluate.evaluate_generations(texts[lm][split]))
            result["lms"].setdefault(lm, {})[split] = {
                **{k: v for k, v in m.items() if v is not None},
                "resumed": kept,
                "minutes": round((time.monotonic() - started) / 60, 1),
            }
            del gen
            emit_result(result, args.out)  # what is done so far survives a stop
    first = lms[0]
    for lm in lms[1:]:
        groups = {}
        for split in samples:
            scorer = CorpusScorer([t.get("references") for t in texts[first][split]])
            groups[split] = (scorer, *(
                scorer.segment_statistics([t.get("text") for t in texts[x][split]], names=["bleu"])
                for x in (lm, first)
            ))  # fmt: skip
        result["against_first"][lm] = {
            **{split: paired_bootstrap([g], args.samples) for split, g in groups.items()},
            "mean": paired_bootstrap(list(groups.values()), args.samples),
        }
    emit_result(result, args.out)
    return result


def dev_split_sample(work: Path, split: str, n: int) -> list[dict]:
    """The pipeline's seeded sample of `n` records of one dev split (`linearize.sample_splits`:
    the first 100 of it are `dev_rows(work, 100, "pipeline")`'s), in its own order."""
    from datatuner_core import linearize as lin
    from datatuner_core.stage_reader import read_stage

    out = work / f"dev_sample_{split}_{n}"
    lin.sample_splits(str(work / "linearized"), str(out), n, (split,))
    return [r for r in read_stage(str(out)).to_pylist() if r["split"] == split]


def paired(args) -> dict:
    """Two LMs' rows of the same test records (`test --generations` files, `--rows A B`) compared
    by group: WebNLG's unseen categories, the preset's held-out categories (seen by WebNLG, never
    trained on here), the categories trained on; BLEU of each and a paired bootstrap of B - A.
    Reported, never used to choose: it says where two LMs differ once the test split is run."""
    import json

    from datatuner_core.bleu import CorpusScorer, paired_bootstrap
    from datatuner_core.breakdown import WEBNLG_UNSEEN

    held = set(preset_config().dataset.holdout_categories)
    rows_a, rows_b = (
        {r["id"]: r for r in map(json.loads, Path(f).read_text().splitlines())} for f in args.rows
    )
    if set(rows_a) != set(rows_b):
        raise SystemExit(f"finetune paired: the two files hold different records "
                         f"({len(rows_a)} and {len(rows_b)}, {len(set(rows_a) ^ set(rows_b))} "
                         "in one only)")  # fmt: skip
    groups = {
        "webnlg_unseen": lambda c: c in WEBNLG_UNSEEN,
        "held_out": lambda c: c in held,
        "trained": lambda c: c not in held and c not in WEBNLG_UNSEEN,
    }
    result = {
        "what": "two LMs' texts of the same test records by category group: BLEU of each and a "
        "paired bootstrap of B - A (Koehn 2004); reported, never used to choose",
        "command": "python -m benchmarks.finetune paired --rows " + " ".join(args.rows),
        "held_out": sorted(held),
        "groups": {},
    }
    for name, member in groups.items():
        ids = sorted(i for i, r in rows_a.items() if member(r.get("category")))
        if not ids:
            continue
        scorer = CorpusScorer([rows_a[i]["references"] for i in ids])
        a, b = (scorer.segment_statistics([rows[i]["text"] for i in ids], names=["bleu"])
                for rows in (rows_a, rows_b))  # fmt: skip
        result["groups"][name] = {
            "records": len(ids),
            "bleu_a": round(scorer.scores(a)["bleu"], 2),
            "bleu_b": round(scorer.scores(b)["bleu"], 2),
            "b_minus_a": paired_bootstrap([(scorer, b, a)], args.samples),
        }
    emit_result(result, args.out)
    return result


def generate_resumable(gen, rows: list[dict], path: str | None, lm: str, chunk: int = 48):
    """`rows` verbalized by `gen` in chunks with a progress line each; each chunk's rows appended
    to `path` (JSON lines) as it finishes, and the rows an earlier stopped run left there for these
    ids by this LM kept (`kept_rows`). Returns (every row, how many were kept)."""
    import json

    done = kept_rows(path, {r["id"] for r in rows}, lm) if path else []
    if done:
        print(f"resuming: {len(done)} of {len(rows)} records already in {path}, "
              "not generated again", flush=True)  # fmt: skip
    kept = {t["id"] for t in done}
    todo = [r for r in rows if r["id"] not in kept]
    sink = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
    started = time.monotonic()
    try:
        for i in range(0, len(todo), chunk):
            texts = gen.generate_rows(todo[i : i + chunk])
            done += texts
            if sink:
                sink.writelines(json.dumps(t, default=str) + "\n" for t in texts)
                sink.flush()
            spent = time.monotonic() - started
            print(f"{len(done)}/{len(rows)} records, {spent / 60:.1f} min, "
                  f"{(i + len(texts)) / spent:.2f} records/s", flush=True)  # fmt: skip
    finally:
        if sink:
            sink.close()
    return done, len(kept)


def kept_rows(path: str, ids: set[str], lm: str) -> list[dict]:
    """The rows an earlier, stopped `test` left in `path` (JSON lines) for these ids, by this LM;
    the file is rewritten with only those (a half-written last line, another LM's rows or ids of
    another selection are dropped), so that the run appends the rest. None when it is absent."""
    import json

    from datatuner_core.generator import model_version

    target = Path(path)
    if not target.exists():
        return []
    version, kept, seen = model_version(lm), [], set()
    for line in target.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a stop cut short
        if row.get("id") in ids and row["id"] not in seen and row.get("model_version") == version:
            kept.append(row)
            seen.add(row["id"])
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, target)
    return kept


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description(__doc__))
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn in (("cost", cost), ("curve", curve)):
        s = sub.add_parser(name)
        s.set_defaults(fn=fn)
        s.add_argument("--work", required=True)
        s.add_argument("--recipes", default="freeze15 lora16")
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--out", default=None)
        s.add_argument("--base", default=None, help="another lm.base (a smoke test: scratch:tiny)")
        s.add_argument("--entries", type=int, default=None, help="at most this many per split")
    c = sub.choices["cost"]
    c.add_argument("--steps", type=int, default=3)
    c.add_argument("--repeats", type=int, default=2)
    c.add_argument("--rows", type=int, default=2000, help="train records encoded for batches")
    v = sub.choices["curve"]
    v.add_argument("--max-steps", type=int, default=120)
    v.add_argument("--eval-every", type=int, default=40)
    v.add_argument("--records", type=int, default=100)
    v.add_argument(
        "--dev-sample", choices=("benchmark", "pipeline"), default="benchmark",
        help="pipeline: the dev sample of `datatuner run`, reranked as the preset, top beam too",
    )  # fmt: skip
    d = sub.add_parser("dev", help="trained LMs side by side on a larger dev sample")
    d.set_defaults(fn=dev)
    d.add_argument("--work", required=True)
    d.add_argument("--lms", required=True, help="trained LM folders, the one in place first")
    d.add_argument("--records", type=int, default=300, help="records of `validation`")
    d.add_argument("--unseen-records", type=int, default=None,
                   help="records of `validation_unseen` (default: --records)")  # fmt: skip
    d.add_argument("--samples", type=int, default=1000, help="bootstrap samples")
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--entries", type=int, default=None, help="ingest at most this many")
    d.add_argument("--chunk", type=int, default=48, help="records per progress line")
    d.add_argument("--generations", default=None,
                   help="a folder for the rows (JSON lines per LM and split); a stopped run "
                   "given the same folder again keeps its rows")  # fmt: skip
    d.add_argument("--out", default=None)
    q = sub.add_parser("paired", help="two LMs' test rows by category group, reported")
    q.set_defaults(fn=paired)
    q.add_argument("--rows", nargs=2, required=True, metavar=("A", "B"),
                   help="two `test --generations` files of the same records")  # fmt: skip
    q.add_argument("--samples", type=int, default=1000, help="bootstrap samples")
    q.add_argument("--out", default=None)
    t = sub.add_parser("test", help="a chosen LM on the WebNLG test split, reported")
    t.set_defaults(fn=test_split)
    t.add_argument("--work", required=True, help="its test/ folder holds the linearized split")
    t.add_argument("--lm", required=True, help="a trained LM folder")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--records", type=int, default=None, help="the shortest N only (a smoke run)")
    t.add_argument("--entries", type=int, default=None, help="ingest at most this many")
    t.add_argument("--chunk", type=int, default=48, help="records per progress line")
    t.add_argument("--generations", default=None,
                   help="also write the rows here (JSON lines); a stopped run given the same file "
                   "again keeps its rows and generates only the rest")  # fmt: skip
    t.add_argument("--out", default=None)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    main()
