"""Beam search over a batch of records with a KV cache that shrinks as records finish.

`transformers`' `generate` keeps every record of a batch decoding until the last one ends: a
record whose `beams` hypotheses are complete still runs its rows through the model, and its cache
rows are copied with the others at every step. On WebNLG with length-sorted batches of 32 that is
about a third of the rows the model runs (`benchmarks/throughput.py`). This decoder runs the same
search (the ranking `transformers` uses, below) and drops a record's rows from the batch and from
the cache the step it is complete; the cache's per-step reorder and the drop are one
`index_select`. The prompt runs once per record (not once per beam) and is then repeated
`beams` times in the cache.

The search, per record (as `transformers` ranks its candidates, `early_stopping=True`):
at each step the best `2 x beams` continuations of the live hypotheses; one that ends in `<eos>`
among the first `beams` of them completes a hypothesis, the others refill the `beams` live ones;
at the budget the first `beams` end as they are; a record is complete with `beams` complete
hypotheses. Score: the sum of token log-probabilities / (tokens, `<eos>` included) **
`length_penalty`. Step 0 starts from one hypothesis (the prompt), so no two beams repeat.

It serves plain decoding only: no logits processor (coverage-aware decoding), n-gram ban or
repetition penalty; the Generator uses `generate` for those.
"""

from __future__ import annotations

import torch


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at each row's first real token (pads: 1, as
    `transformers` fills them; they are masked out)."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def _last_logits_only(model) -> dict:
    """`logits_to_keep=1` where the forward takes it: the output layer runs on each row's last
    position only. On a prompt of T tokens the full logits are a [B, T, vocab] tensor the search
    never reads (SmolLM2: 49k columns, a fifth of the prompt's FLOPs and B x T x 196 KB)."""
    import inspect

    return (
        {"logits_to_keep": 1}
        if "logits_to_keep" in inspect.signature(model.forward).parameters
        else {}
    )


def _cache_keyword(model) -> str:
    """The forward's name for the KV cache: `cache` (transformers >= 5.2x), else the older
    `past_key_values`."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def beam_search(
    model,
    prompt_embeds: torch.Tensor,
    mask: torch.Tensor,
    *,
    beams: int,
    budget: int,
    eos: int,
    length_penalty: float = 1.0,
    step_embed=None,
) -> list[list[tuple[list[int], float]]]:
    """Per record of the batch, `beams` (new tokens without `<eos>`, score), best first.

    `prompt_embeds` [B, T, H]: the left-padded prompts as embeddings (token + state); `mask`
    [B, T]: 1 on real tokens. `step_embed(ids [N]) -> [N, 1, H]`: the embedding of a generated
    token (default: the model's input embedding; the Generator adds the `<text>` state)."""
    from transformers import DynamicCache

    device = prompt_embeds.device
    embed = model.get_input_embeddings()
    step_embed = step_embed or (lambda ids: embed(ids[:, None]))
    n = prompt_embeds.size(0)
    cache = {_cache_keyword(model): DynamicCache(config=model.config)}
    last = _last_logits_only(model)
    out = model(inputs_embeds=prompt_embeds, attention_mask=mask, position_ids=_positions(mask),
                use_cache=True, **cache, **last)  # fmt: skip
    logp = out.logits[:, -1].float().log_softmax(-1)  # [B, V]
    vocab = logp.size(-1)
    # every record starts from one live hypothesis (its prompt)
    live: list[list[tuple[list[int], float]]] = [[([], 0.0)] for _ in range(n)]
    done: list[list[tuple[list[int], float]]] = [[] for _ in range(n)]
    active = list(range(n))  # records still decoding, in cache row-block order
    rows_per = [1] * n  # cache rows per active record (1 before the first expansion)
    last_pos = _positions(mask)[:, -1]  # [B]
    for step in range(budget):
        final = step == budget - 1
        totals = (
            logp
            + torch.tensor(
                [t for r in active for _, t in live[r]], device=device, dtype=logp.dtype
            )[:, None]
        )
        parents, tokens, keep_active = [], [], []
        base = 0
        for r in active:
            k = rows_per[r]
            flat = totals[base : base + k].flatten()
            top = flat.topk(min(2 * beams, flat.numel()))
            nxt = []
            for rank, (value, index) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                parent, token = index // vocab, index % vocab
                toks = live[r][parent][0]
                if token == eos or final:
                    if rank < beams:
                        text = toks if token == eos else toks + [token]
                        done[r].append((text, value / (len(toks) + 1) ** length_penalty))
                elif len(nxt) < beams:
                    nxt.append((base + parent, toks + [token], value))
            if len(done[r]) < beams and not final:
                keep_active.append(r)
                live[r] = [(toks, value) for _, toks, value in nxt]
                rows_per[r] = len(nxt)
                parents += [row for row, _, _ in nxt]
                tokens += [toks[-1] for _, toks, _ in nxt]
            base += k
        active = keep_active
        if not active:
            break
        index = torch.tensor(parents, device=device)
        # the drop of complete records and the beams' reorder, at once
        next(iter(cache.values())).reorder_cache(index)
        mask = torch.cat([mask.index_select(0, index), mask.new_ones((len(parents), 1))], dim=1)
        last_pos = last_pos.index_select(0, index) + 1
        ids = torch.tensor(tokens, device=device)
        out = model(inputs_embeds=step_embed(ids), attention_mask=mask,
                    position_ids=last_pos[:, None], use_cache=True, **cache, **last)  # fmt: skip
        logp = out.logits[:, -1].float().log_softmax(-1)
    return [sorted(d, key=lambda x: -x[1])[:beams] for d in done]
