"""GPU check of `generate.engine: vllm` against the hf engine, side by side in one run.

What it runs (no download: the shipped WebNLG sample, a locally trained tokenizer, and a Llama of
SmolLM2-135M's exact shape trained for `--steps` steps on the sample, so that its texts are
texts and greedy ties are rare):

1. the serving export (`datatuner_core.serving`) of the trained LM, and its logits against the
   state LM's through plain `transformers` on the same device (max |difference|);
2. the pipeline's `Generator` with `engine: hf`, greedy (`beams: 1`), over `--records` records
   (the sample's, repeated): records/s;
3. the same with `engine: vllm`: records/s and the share of records whose greedy text equals the
   hf engine's (in bf16 both; the exact equality in float32 is `tests/core/test_serving.py`'s);
4. `engine: vllm` with `--beams` candidates (the greedy text and beams - 1 samples): records/s.

    pip install -e '.[gpu]'                                       # on the CUDA machine, once
    python -m benchmarks.gpu_engine --out benchmarks/results/gpu-engine-h200.json
    python -m benchmarks.gpu_engine --small --steps 3             # CPU smoke run: 1. and 2. only

Prints one JSON document (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from .common import description, emit_result
from .gpu import SMALL, SMOL, batches, llama, sample_rows, train


def _timed(gen, rows: list[dict]) -> tuple[list[dict], float]:
    import torch

    gen.generate_rows(rows[:8])  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = gen.generate_rows(rows)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def _export_logits_check(lm_dir: str, served_dir: str, rows: list[dict], device) -> float:
    """Max |logit difference| between the state LM and the export on the first records' prompts
    (each prompt, then one text token through the folded matrix)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datatuner_core.lm import default_vocab, encode_prompt
    from datatuner_core.serving import prompt_embeds
    from datatuner_core.state_lm import embed_with_states

    tok = AutoTokenizer.from_pretrained(lm_dir)
    vocab = default_vocab(tok)
    model = AutoModelForCausalLM.from_pretrained(lm_dir, use_safetensors=True).to(device).eval()
    served = AutoModelForCausalLM.from_pretrained(served_dir, use_safetensors=True).to(device)
    worst = 0.0
    for row in rows[:16]:
        p = encode_prompt(tok, row["linearized"], "fine", 200, vocab)
        ids = torch.tensor([p["input_ids"] + [vocab.eos]], device=device)
        states = torch.tensor([p["token_type_ids"] + [vocab.text]], device=device)
        with torch.no_grad():
            a = model(inputs_embeds=embed_with_states(model, ids, states)).logits
            prompt = prompt_embeds(served, ids[:, :-1], states[:, :-1], vocab.text)
            last = served.get_input_embeddings()(ids[:, -1:])
            b = served(inputs_embeds=torch.cat([prompt, last], dim=1)).logits
        worst = max(worst, float((a - b).abs().max()))
    return worst


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=description(__doc__))
    ap.add_argument("--small", action="store_true", help="tiny shapes (a CPU smoke run)")
    ap.add_argument("--steps", type=int, default=300, help="training steps of the LM")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--beams", type=int, default=3, help="vLLM candidates per record in 4.")
    ap.add_argument("--records", type=int, default=4000, help="records generated per engine")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    import torch.distributed as dist

    from datatuner_core import linearize as lin
    from datatuner_core import vllm_engine
    from datatuner_core.generator import Generator
    from datatuner_core.lm import encode_rows
    from datatuner_core.serving import export_serving
    from datatuner_core.state_lm import StateLM
    from datatuner_core.tokenizer import build_tokenizer

    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    shape = SMALL if args.small else SMOL
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    result: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                    "torch": torch.__version__, "shape": shape, "vllm": None}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="datatuner-gpu-engine-") as work:
        rows = sample_rows(work)
        train_rows = [r for r in rows if r["split"] == "train"]
        specials = lin.special_vocabulary(t for r in rows for t in lin.linearize_record(r)[1])
        corpus = [t for r in train_rows for t in [r["linearized"], *r["references"]]]
        tok = build_tokenizer("scratch:tiny", corpus, specials)
        examples, _ = encode_rows(tok, train_rows, specials, "fine", 256)
        torch.manual_seed(0)
        model = StateLM(llama(shape, len(tok), tok)).to(device)
        result["train"] = train(model, batches(examples, args.batch, tok.pad_token_id), device,
                                args.steps, bool(cuda))  # fmt: skip
        lm_dir, served_dir = Path(work, "lm"), Path(work, "served")
        model.merged().save_pretrained(lm_dir)
        tok.save_pretrained(lm_dir)
        (lm_dir / "training_card.json").write_text(json.dumps({"task_config": {"mode": "fine"}}))
        dist.destroy_process_group()

        # 1. the export's logits
        export_serving(str(lm_dir), str(served_dir))
        result["export_max_abs_logit_diff"] = _export_logits_check(
            str(lm_dir), str(served_dir), rows, device
        )
        # 2. the hf engine, greedy
        records = [dict(r, id=f"{r['id']}#{i}") for i in range(-(-args.records // len(rows)))
                   for r in rows][: args.records]  # fmt: skip
        common = dict(max_new_tokens=args.max_new_tokens, batch_size=64, rerank=False)
        hf = Generator(str(lm_dir), None, engine="hf", beams=1, **common)
        hf_rows, hf_s = _timed(hf, records)
        result["hf_greedy"] = {
            "records": len(hf_rows),
            "records_per_s": round(len(hf_rows) / hf_s, 2),
            "failed": sum(1 for r in hf_rows if r["error"]),
        }
        del hf
        if not vllm_engine.available():
            result["vllm"] = "not run: no CUDA GPU with vLLM (pip install -e '.[gpu]')"
            emit_result(result, args.out)
            return result
        # 3. the vllm engine, greedy: the same texts?
        vl = Generator(str(lm_dir), None, engine="vllm", beams=1, **common)
        vl_rows, vl_s = _timed(vl, records)
        same = sum(a["text"] == b["text"] for a, b in zip(vl_rows, hf_rows, strict=True))
        result["vllm_greedy"] = {
            "records": len(vl_rows), "records_per_s": round(len(vl_rows) / vl_s, 2),
            "speedup_over_hf": round(hf_s / vl_s, 2),
            "greedy_texts_equal_hf": round(same / len(vl_rows), 4),
            "failed": sum(1 for r in vl_rows if r["error"]),
        }  # fmt: skip
        result["vllm_greedy"]["examples_differing"] = [
            {"hf": b["text"], "vllm": a["text"]}
            for a, b in zip(vl_rows, hf_rows, strict=True)
            if a["text"] != b["text"]
        ][:5]
        # 4. the vllm engine with candidates
        vl.beams = args.beams
        cand_rows, cand_s = _timed(vl, records)
        result["vllm_candidates"] = {
            "beams": args.beams, "records_per_s": round(len(cand_rows) / cand_s, 2),
            "candidates_per_record": min(len(r["candidates"]) for r in cand_rows),
        }  # fmt: skip
        import vllm

        result["vllm"] = vllm.__version__
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
