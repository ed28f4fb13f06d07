"""The smol preset's GPU twin on real weights: SmolLM2-135M fine-tuned in full (nothing frozen) with
bf16 autocast, then the full test split verbalized and scored, with the project's own pieces.

It exists because the GPU machine this project is sometimes lent has no Ray, no Prefect and no
package index: the pipeline cannot run there, its parts can. Same `LMTask` (tokenizer, encoding,
`StateLM` with state embeddings, saving), same length-bucketed batches, same `Generator` (beam
search with the `<text>` state hook, coverage reranking when no classifier is given) and same
`evaluate.evaluate_generations` as `datatuner run`; only the Ray Train loop is replaced by a plain
loop (AdamW, warm-up + linear decay, clipping). Nothing is chosen on the test split.

    python -m benchmarks.gpu_quality --base SmolLM2-135M-Instruct.Q4_1.gguf \\
        --data RUN/linearized --epochs 1 --batch 64 --out result.json

`--data` is a pipeline run's `linearized` stage (train and test splits). Writes the headline
metrics (BLEU all / seen / unseen, chrF, coverage error for the top beam and the chosen text),
training and generation times to `--out`, and the generations beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from .common import description, timed, write_json


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description(__doc__))
    ap.add_argument("--base", required=True, help="lm.base: a GGUF file, folder or alias")
    ap.add_argument("--data", required=True, help="a run's linearized stage")
    ap.add_argument("--mode", default="fine", choices=("fine", "coarse"), help="state ids")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--gen-batch", type=int, default=128)
    ap.add_argument("--limit", type=int, default=None, help="test records (smoke runs)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--out", required=True)
    return ap


def fine_tune(task, model, examples: list[dict], args, device) -> dict:
    """The plain loop: AdamW, warm-up + linear decay, clipping, bf16 autocast on CUDA, over the
    trainer's length-bucketed batches (a new plan each epoch)."""
    import torch

    from datatuner_core.training_data import plan_batches
    from datatuner_core.training_loop import lr_multiplier

    cuda = device.type == "cuda"
    lengths = [len(e["input_ids"]) for e in examples]
    steps_per_epoch = math.ceil(len(examples) / args.batch)
    total = max(1, int(steps_per_epoch * args.epochs))
    if args.max_steps:
        total = min(total, args.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, args.warmup, total)
    )
    model.train()
    step, tokens, losses, epoch = 0, 0, [], 0
    t0 = time.perf_counter()
    while step < total:
        for indices in plan_batches(lengths, args.batch, 42 + epoch):
            if step >= total:
                break
            batch = task.collate([examples[i] for i in indices])
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = model(**batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            losses.append(float(loss.detach()))
            step += 1
            if step % 50 == 0 or step == total:
                print(f"step {step}/{total} loss {sum(losses[-50:]) / len(losses[-50:]):.4f}",
                      flush=True)  # fmt: skip
        epoch += 1
    if cuda:
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    return {"steps": step, "epochs": round(step / steps_per_epoch, 2),
            "seconds": round(train_s, 1), "tokens_per_s": round(tokens / train_s, 1),
            "loss_last50": round(sum(losses[-50:]) / len(losses[-50:]), 4)}  # fmt: skip


def verbalize(task, model, rows: list[dict], args) -> tuple[list[dict], float]:
    """The fine-tuned model saved as the pipeline saves it, then the pipeline's `Generator`
    (coverage reranking, no classifier) over `rows`; the rows and the generation seconds."""
    from datatuner_core.generator import Generator

    with tempfile.TemporaryDirectory(prefix="datatuner-gpuq-") as tmp:
        model.eval()
        task.save(model, tmp)  # special rows merged; plain safetensors
        Path(tmp, "training_card.json").write_text(json.dumps({"task_config": {"mode": args.mode}}))
        gen = Generator(tmp, None, beams=args.beams, max_new_tokens=args.max_new_tokens,
                        batch_size=args.gen_batch, rerank=True, coverage=True)  # fmt: skip
        return timed(gen.generate_rows, rows)


def main(argv=None) -> None:
    args = parser().parse_args(argv)

    import torch

    from datatuner_core import evaluate
    from datatuner_core.lm import LMTask
    from datatuner_core.stage_reader import read_manifest, read_stage
    from datatuner_core.tokenizer import build_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    torch.manual_seed(42)
    specials = read_manifest(args.data)["extra"]["special_tokens"]
    rows = read_stage(args.data).to_pylist()
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "test"][: args.limit]
    result: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                    "base": Path(args.base).name, "args": vars(args)}  # fmt: skip

    t0 = time.perf_counter()
    tok = build_tokenizer(args.base, None, specials)
    task = LMTask(tokenizer=tok, special_tokens=specials, base=args.base, mode=args.mode)
    model = task.build_model().to(device)
    examples = task.encode(train_rows)
    result["load_s"] = round(time.perf_counter() - t0, 1)
    result["train_examples"] = len(examples)
    result["parameters"] = task.parameter_counts
    result["train"] = fine_tune(task, model, examples, args, device)
    out, gen_s = verbalize(task, model, test_rows, args)
    metrics = evaluate.evaluate_generations(out)
    result["generate"] = {"records": len(out), "seconds": round(gen_s, 1),
                          "records_per_s": round(len(out) / gen_s, 2),
                          "dtype": "bfloat16" if cuda else "float32"}  # fmt: skip
    result["headline"] = evaluate.headline(metrics)
    result["top_beam"] = {
        k: (metrics.get(k) or {}).get("top_beam_bleu") for k in ("seen", "unseen")
    }
    result["coverage"] = metrics.get("coverage")
    print(json.dumps(result, indent=2, default=str))
    target = write_json(args.out, result)
    keep = [{"id": r["id"], "category": r.get("category"), "text": r["text"],
             "top_beam": r["candidates"][0]["text"] if r["candidates"] else None}
            for r in out]  # fmt: skip
    target.with_suffix(".generations.json").write_text(json.dumps(keep) + "\n")


if __name__ == "__main__":
    main()
