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


GROW_TOKENS = 16  # the cache's first room for new tokens; it then doubles when full


class _GrowingLayer:
    """One layer's KV cache for beam search in one buffer per tensor, with room for `capacity`
    tokens (the generated part's room doubles when full, so memory follows the texts' length).
    A step writes its token in place (no `torch.cat` of the whole cache), and the beams' reorder
    moves only the **generated** part of each row (gathered, then written back in place); the
    prompt part (the first `prompt` positions, the same for every beam of a record) is copied
    only into rows that held another record's prompt (at the first expansion, or when a record
    leaves the batch and another takes its slot). `transformers`' `DynamicCache` copies the
    whole cache twice per step (the reorder's `index_select` and the append's `cat`). Attention
    reads a view of the filled part. Made by `_growing_cache` as a subclass of `DynamicLayer`
    (masks and lengths as it computes them)."""

    def __init__(self, capacity: int, rows: int):
        super().__init__()
        self.capacity, self.rows, self.length, self.prompt, self.n = capacity, rows, 0, 0, 0
        self._buffers = None  # (keys, values): [rows, heads, room, head_dim]
        self._records = None  # the record whose prompt each row holds (-1: none)

    def update(self, key_states, value_states, *args, **kwargs):
        import torch

        b, h, t, _ = key_states.shape
        if self._buffers is None:
            self.device, self.is_initialized = key_states.device, True
            rows, cap = max(self.rows, b), max(self.capacity, t)
            self._buffers = tuple(x.new_empty((rows, h, cap, x.size(-1)))
                                  for x in (key_states, value_states))  # fmt: skip
            self._records = torch.full((rows,), -1, dtype=torch.long, device=self.device)
            self._records[:b] = torch.arange(b, device=self.device)
            self.n, self.prompt = b, t
        if self.length + t > self._buffers[0].size(2):  # full: the generated part's room doubles
            room = self._buffers[0].size(2)
            more = max(t, GROW_TOKENS, room - self.prompt)
            self._buffers = tuple(
                torch.cat([x[: self.n], x.new_empty(x[: self.n].shape[:2] + (more,) + x.shape[3:])],
                          dim=2)
                for x in self._buffers
            )  # fmt: skip
        keys, values = self._buffers
        end = self.length + t
        keys[: self.n, :, self.length : end] = key_states
        values[: self.n, :, self.length : end] = value_states
        self.length = end
        self._set_rows(self.n)
        return self.keys, self.values

    def reorder_cache(self, beam_idx) -> None:
        import torch

        if self._buffers is None:
            return
        n, p, end = beam_idx.numel(), self.prompt, self.length
        moved = (beam_idx != torch.arange(n, device=beam_idx.device)).nonzero().flatten()
        if moved.numel() == 0 and n <= self.n:  # rows that stay (or leave from the end)
            self._set_rows(n)
            return
        if self._buffers[0].size(0) < n:  # more rows than foreseen
            self._buffers = tuple(
                torch.cat([x, x.new_empty((n - x.size(0),) + x.shape[1:])]) for x in self._buffers
            )
            self._records = torch.cat([self._records, self._records.new_full(
                (n - self._records.numel(),), -1)])  # fmt: skip
        records = self._records[: self.n].index_select(0, beam_idx)
        stale = (self._records[:n] != records).nonzero().flatten()
        for x in self._buffers:  # each: gathered first, then written (sources may be targets)
            if stale.numel():
                prompts = x[: self.n, :, :p].index_select(0, beam_idx.index_select(0, stale))
                x[:, :, :p].index_copy_(0, stale, prompts)
            if end > p and moved.numel():
                rows = moved if n <= self.n else torch.arange(n, device=beam_idx.device)
                texts = x[: self.n, :, p:end].index_select(0, beam_idx.index_select(0, rows))
                x[:, :, p:end].index_copy_(0, rows, texts)
        self._records[:n] = records
        self._set_rows(n)

    def _set_rows(self, n: int) -> None:
        self.n = n
        keys, values = self._buffers
        self.keys, self.values = keys[:n, :, : self.length], values[:n, :, : self.length]

    def get_seq_length(self) -> int:
        return self.length


def _growing_cache(model, capacity: int, rows: int):
    """A `DynamicCache` whose layers are `_GrowingLayer`s (`capacity` tokens, up to `rows`
    rows), where the model's cache is made of plain dynamic layers (GPT-2, Llama); else the
    model's own `DynamicCache`."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return cache
    layer_class = type("GrowingLayer", (_GrowingLayer, DynamicLayer), {})
    cache.layers = [layer_class(capacity, rows) for _ in cache.layers]
    return cache


def _fill_holes(order: list[int], survivors) -> list[int]:
    """The cache's record order after some records complete: a survivor keeps its slot, and
    the holes the complete ones leave are filled by the last survivors (not by shifting every
    later record up one slot), so the fewest rows change place (`_GrowingLayer` copies a moved
    row's prompt too). `order`: the records in slot order; `survivors`: those still decoding."""
    kept = [r for r in order if r in survivors]
    head = order[: len(kept)]
    movers = iter(r for r in order[len(kept) :] if r in survivors)
    return [r if r in survivors else next(movers) for r in head]


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
    device = prompt_embeds.device
    embed = model.get_input_embeddings()
    step_embed = step_embed or (lambda ids: embed(ids[:, None]))
    n = prompt_embeds.size(0)
    cache = {
        _cache_keyword(model): _growing_cache(
            model, prompt_embeds.size(1) + min(budget, GROW_TOKENS), n * beams
        )
    }
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
        blocks: dict[int, tuple[list[int], list[int]]] = {}  # record -> (parent rows, tokens)
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
                live[r] = [(toks, value) for _, toks, value in nxt]
                rows_per[r] = len(nxt)
                blocks[r] = ([row for row, _, _ in nxt], [toks[-1] for _, toks, _ in nxt])
            base += k
        active = _fill_holes(active, blocks)
        if not active:
            break
        parents = [row for r in active for row in blocks[r][0]]
        tokens = [token for r in active for token in blocks[r][1]]
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
