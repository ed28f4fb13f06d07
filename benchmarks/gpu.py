"""GPU check of the smol preset's GPU twin: the same code paths on CUDA, with bf16.

What it runs (the WebNLG sample shipped in `sample/`, a locally trained tokenizer, and a random
Llama of SmolLM2-135M's exact shape: 30 blocks, width 576, 9 heads / 3 KV heads, a 49k vocabulary;
the packaged GGUF itself is 98 MB and does not travel to the GPU machine, which has no index):

1. `StateLM` loss in fp32 and under bf16 autocast on the same batch (they must agree to ~1 %);
2. training steps through DistributedDataParallel on the NCCL backend (world of one), bf16
   autocast, AdamW, for the GPU twin (nothing frozen) and the CPU recipe (bottom 15 blocks and the
   embeddings frozen, the special rows trained apart): tokens/s, and the loss must fall;
3. the saved checkpoint (special rows merged) loaded by the pipeline's own `Generator` on CUDA in
   bf16: beam search with the `<text>` state hook over every sample record, records/s.

    python -m benchmarks.gpu --out benchmarks/results/gpu.json   # on a CUDA machine
    python -m benchmarks.gpu --small --steps 3                   # CPU smoke run (tiny shapes)

Prints one JSON document (and writes it to --out). Needs torch, transformers, pyarrow, fsspec;
not Ray or Prefect (the Ray Train loop around these steps is covered by the CPU test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from .common import ROOT, description, emit_result

SMOL = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, vocab=49152)  # fmt: skip
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, vocab=512)  # fmt: skip


def sample_rows(work: str) -> list[dict]:
    """Linearized rows of the shipped WebNLG sample (every split), through the real stages."""
    import pyarrow.parquet as pq

    from datatuner_core.ingest import ingest
    from datatuner_core.linearize import linearize

    paths = {s: str(ROOT / "sample" / "webnlg" / s) for s in ("train", "dev", "test")}
    paths = {("validation" if s == "dev" else s): p for s, p in paths.items()}
    ingest("webnlg", paths, f"{work}/records")
    linearize(f"{work}/records", f"{work}/linearized")
    files = sorted(Path(work, "linearized").rglob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def llama(shape: dict, n_tokens: int, tok):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=max(shape["vocab"], n_tokens), hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"], max_position_embeddings=2048,
        rope_theta=100000.0, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def batches(examples: list[dict], size: int, pad_id: int) -> list[dict]:
    from datatuner_core.lm import collate_lm

    ordered = sorted(examples, key=lambda e: len(e["input_ids"]))
    return [collate_lm(ordered[i : i + size], pad_id) for i in range(0, len(ordered), size)]


def held_out_loss(model, batch: dict, device, bf16: bool) -> float:
    import torch

    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return float(model(**{k: v.to(device) for k, v in batch.items()}))


def train(model, batches_, device, steps: int, bf16: bool) -> dict:
    """`steps` AdamW steps through DDP (NCCL on CUDA, gloo on CPU) on every batch but the last
    (held out: its loss before and after); timing after 3 warm-ups."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    held, batches_ = batches_[-1], batches_[:-1]
    before = held_out_loss(model, held, device, bf16)

    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in ddp.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    losses, tokens, seconds, warm = [], 0, 0.0, 3
    for step in range(steps + warm):
        batch = {k: v.to(device) for k, v in batches_[step % len(batches_)].items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = ddp(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warm:
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
        losses.append(float(loss.detach()))
    after = held_out_loss(model, held, device, bf16)
    return {
        "steps": steps,
        "trainable_parameters": sum(p.numel() for p in params),
        "tokens_per_s": round(tokens / seconds, 1),
        "held_out_loss_before": round(before, 4),
        "held_out_loss_after": round(after, 4),
        "loss_fell": after < before,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=description(__doc__))
    ap.add_argument("--small", action="store_true", help="tiny shapes (a CPU smoke run)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    import torch.distributed as dist

    from datatuner_core import linearize as lin
    from datatuner_core.generator import Generator
    from datatuner_core.lm import encode_rows
    from datatuner_core.state_lm import StateLM, freeze
    from datatuner_core.tokenizer import build_tokenizer, special_token_ids

    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    shape = SMALL if args.small else SMOL
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    result: dict = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "backend": dist.get_backend(),
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "shape": shape,
    }
    with tempfile.TemporaryDirectory(prefix="datatuner-gpu-") as work:
        rows = sample_rows(work)
        train_rows = [r for r in rows if r["split"] == "train"]
        specials = lin.special_vocabulary(t for r in rows for t in lin.linearize_record(r)[1])
        corpus = [t for r in train_rows for t in [r["linearized"], *r["references"]]]
        tok = build_tokenizer("scratch:tiny", corpus, specials)
        examples, counts = encode_rows(tok, train_rows, specials, "fine", 256)
        data = batches(examples, args.batch, tok.pad_token_id)
        result["data"] = {"records": len(rows), "train_examples": counts["examples"],
                          "batches": len(data)}  # fmt: skip

        # 1. fp32 vs bf16 autocast loss on one batch
        torch.manual_seed(0)
        model = StateLM(llama(shape, len(tok), tok)).to(device)
        batch = {k: v.to(device) for k, v in data[len(data) // 2].items()}
        with torch.no_grad():
            fp32 = float(model(**batch))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(cuda)):
                bf16 = float(model(**batch))
        result["loss_fp32"], result["loss_bf16"] = round(fp32, 5), round(bf16, 5)
        result["loss_rel_diff"] = round(abs(bf16 - fp32) / fp32, 5)

        # 2. training steps: the GPU twin (nothing frozen), then the CPU recipe
        result["train_full"] = train(model, data, device, args.steps, bool(cuda))
        torch.manual_seed(0)
        base = llama(shape, len(tok), tok)
        freeze(base, layers=min(15, shape["num_hidden_layers"] // 2), embeddings=True)
        frozen = StateLM(base, special_token_ids(tok, specials)).to(device)
        result["train_frozen15_emb"] = train(frozen, data, device, args.steps, bool(cuda))

        # 3. the saved checkpoint through the pipeline's Generator (bf16 on CUDA)
        lm_dir = Path(work, "lm")
        model.merged().save_pretrained(lm_dir)
        tok.save_pretrained(lm_dir)
        (lm_dir / "training_card.json").write_text(json.dumps({"task_config": {"mode": "fine"}}))
        gen = Generator(str(lm_dir), beams=args.beams, max_new_tokens=64, batch_size=64)
        gen.generate_rows(rows[:8])  # warm-up
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = gen.generate_rows(rows)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        result["generate"] = {
            "device": gen.device,
            "dtype": str(next(gen.model.parameters()).dtype),
            "records": len(out),
            "failed": sum(1 for r in out if r.get("error")),
            "beams_per_record": min(len(r["candidates"]) for r in out),
            "records_per_s": round(len(out) / seconds, 2),
        }
    dist.destroy_process_group()
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
