"""Generation throughput against the original's decoder, side by side in one run: the same LM, the
same WebNLG dev records, the same beam search (beams, new-token budget), no reranking:

  (a) per_record: the original's way (docs/method: one input at a time, its live hypotheses
      batched at each step, the whole sequence re-encoded every step: no KV cache);
  (b) in_process: `Generator.generate_rows` in this process: length-sorted batches, a KV cache;
  (c) ray_data: the generate stage on Ray Data (`generate.in_process_max=0`), as `verbalize`
      runs a large input, with `generate.actors` actors.

(a) is slow, so it decodes `--baseline-records` records spread evenly over the input (WebNLG's files
go by triple count: the first records are the shortest); records/s compare directly.
Issue 24's target: (c) at least 20x (a). The texts of (a) and (b) are compared too: the same
beam search, so the same top texts but for ties and float rounding.

    python -m benchmarks.throughput --lm LM --records 1000 --baseline-records 40 \
        --out benchmarks/results/throughput-tiny.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .common import ROOT, SHARED_DATA, add_set_flag, description, emit_result, timed


def dev_stage(work: Path, n: int, split: str = "validation") -> tuple[str, list[dict]]:
    """A linearized stage of `n` WebNLG records of `split` spread evenly over it (every k-th:
    WebNLG's files go by triple count, so the first `n` would be the shortest), and its rows."""
    from datatuner_core.ingest import ingest
    from datatuner_core.linearize import linearize
    from datatuner_core.schema import LINEARIZED
    from datatuner_core.stage_reader import read_stage
    from datatuner_core.stage_writer import StageWriter

    folder = {"validation": "dev"}.get(split, split)
    ingest("webnlg", {split: str(SHARED_DATA / "webnlg" / folder)}, str(work / "records"))
    linearize(str(work / "records"), str(work / "all"))
    rows = read_stage(str(work / "all")).to_pylist()
    rows = rows[:: max(1, len(rows) // n)][:n]
    writer = StageWriter(str(work / "linearized"), "linearize", LINEARIZED)
    for row in rows:
        writer.add_counted(row)
    writer.commit(inputs=[{"uri": str(work / "all")}], fingerprint=f"spread-{split}-{n}")
    return str(work / "linearized"), rows


def per_record_beam_search(gen, linearized: str) -> list[tuple[str, float]]:
    """The original's decoder for one record: at each step every live hypothesis is re-encoded
    whole (prompt + its tokens so far: no cache), the live ones batched. The step's candidates
    are ranked as `transformers` ranks them: the best `2 x beams` continuations; one that ends
    (`<eos>`) among the first `beams` is complete, the others refill the `beams` live ones; at
    the budget the first `beams` end as they are; it stops when `beams` are complete. Score:
    sum of log-probabilities / (tokens with `<eos>`) ** length_penalty."""
    import torch

    from datatuner_core.state_lm import embed_with_states

    ids, states, _ = gen._prompt(linearized)
    budget, width, eos = gen.new_token_cap(len(ids)), gen.beams, gen.vocab.eos
    live: list[tuple[list[int], float]] = [([], 0.0)]
    done: list[tuple[list[int], float]] = []
    for step in range(budget):
        seqs = torch.tensor([ids + toks for toks, _ in live])
        types = torch.tensor([states + [gen.vocab.text] * step] * len(live))
        with torch.inference_mode():
            logits = gen.model(inputs_embeds=embed_with_states(gen.model, seqs, types)).logits
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
        totals = (logp + torch.tensor([[total] for _, total in live])).flatten()
        top = totals.topk(2 * width)
        vocab = logp.size(-1)
        nxt, last = [], step == budget - 1  # at the budget the best `beams` end as they are
        for rank, (value, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            toks, token = live[flat // vocab][0], flat % vocab
            if token == eos or last:
                if rank < width:
                    text = toks if token == eos else toks + [token]
                    done.append((text, value / (len(toks) + 1) ** gen.length_penalty))
            elif len(nxt) < width:
                nxt.append((toks + [token], value))
        live = nxt
        if len(done) >= width:
            break
    best = sorted(done, key=lambda d: -d[1])[:width]
    return [(gen.tokenizer.decode(t, skip_special_tokens=True).strip(), s) for t, s in best]


KEYS = ("beams", "max_new_tokens", "max_new_tokens_ratio", "batch_size", "actors", "length_sort")


def per_record_loop(gen, rows: list[dict]) -> list[list[tuple[str, float]]]:
    """(a): the records one after another, each decoded on its own."""
    return [per_record_beam_search(gen, r["linearized"]) for r in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--lm", required=True, help="LM version folder (URI)")
    parser.add_argument("--records", type=int, default=1000,
                        help="WebNLG records for (b), (c), spread over the split")  # fmt: skip
    parser.add_argument("--split", default="validation", choices=("validation", "train"),
                        help="the split they come from (train: more records, the fixed costs "
                        "of Ray's start and actors spread over more)")  # fmt: skip
    parser.add_argument("--baseline-records", type=int, default=40, help="records for (a)")
    parser.add_argument(
        "--preset",
        default=str(ROOT / "configs" / "webnlg-tiny.yaml"),
        help="its generate section: beams, tokens, batch, actors (no reranking)",
    )
    add_set_flag(parser, "generate.KEY=VALUE over the preset's")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from datatuner_core.config import load_config
    from datatuner_core.generate import generate_stage
    from datatuner_core.generator import Generator
    from datatuner_core.stage_reader import read_stage

    cfg = load_config(args.preset, args.set)
    section = cfg.generate.model_copy(update={"rerank": False, "coverage_retry": False})
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    lin, rows = dev_stage(work, args.records, args.split)
    threads = torch.get_num_threads()
    gen = Generator(args.lm, None, section, threads=threads)
    base = rows[:: max(1, len(rows) // args.baseline_records)][: args.baseline_records]
    a_texts, a_s = timed(per_record_loop, gen, base)
    b_rows, b_s = timed(gen.generate_rows, rows)
    gen = None  # its memory back before the actors load their own copies
    ray_section = section.model_copy(update={"in_process_max": 0})
    manifest, c_s = timed(generate_stage, lin, str(work / "generations"), ray_section,
                          lm_uri=args.lm, split=None)  # fmt: skip
    c_rows = {r["id"]: r for r in read_stage(str(work / "generations")).to_pylist()}
    b_top = {r["id"]: r["text"] for r in b_rows}
    rate = {
        "per_record": len(base) / a_s,
        "in_process": len(rows) / b_s,
        "ray_data": len(rows) / c_s,
    }
    result = {
        "command": "python -m benchmarks.throughput " + " ".join(argv or sys.argv[1:]),
        "records": len(rows),
        "split": args.split,
        "baseline_records": len(base),
        "threads": threads,
        "generate": {k: getattr(section, k) for k in KEYS},
        "seconds": {
            "per_record": round(a_s, 2),
            "in_process": round(b_s, 2),
            "ray_data": round(c_s, 2),
        },
        "records_per_s": {k: round(v, 3) for k, v in rate.items()},
        "ray_data_over_per_record": round(rate["ray_data"] / rate["per_record"], 1),
        "in_process_over_per_record": round(rate["in_process"] / rate["per_record"], 1),
        "ray_data_time_over_in_process": round(c_s / b_s, 2),
        "ray_data_engine": manifest["extra"].get("engine"),
        "same_top_text_per_record_vs_in_process": sum(
            beams[0][0] == b_top[r["id"]] for r, beams in zip(base, a_texts)
        ),
        "same_top_text_ray_data_vs_in_process": sum(
            c_rows[i]["text"] == t for i, t in b_top.items() if i in c_rows
        ),
    }
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
