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
    """One layer's KV cache in two preallocated buffers of `capacity` tokens (ping-pong; the
    generated part's room doubles when full, so memory follows the texts' length), for beam
    search. A step writes its token in place (no `torch.cat` of the whole cache), and the
    beams' reorder copies the **generated** part of each row from its parent into the other
    buffer; the prompt part (the first `prompt` positions, the same for every beam of a record)
    is copied only into rows that held another record's prompt (after a record leaves the batch,
    or at the first expansion). Attention reads a view of the filled part. Made by
    `_growing_cache` as a subclass of `transformers`' `DynamicLayer` (masks and lengths as it
    computes them)."""

    def __init__(self, capacity: int, rows: int):
        super().__init__()
        self.capacity, self.rows, self.length, self.prompt, self.n = capacity, rows, 0, 0, 0
        self._buffers = None  # [(keys, values) read now, (keys, values) the next reorder writes]
        self._records = None  # per buffer, the record whose prompt each row holds (-1: none)

    def update(self, key_states, value_states, *args, **kwargs):
        import torch

        b, h, t, _ = key_states.shape
        if self._buffers is None:
            self.device, self.is_initialized = key_states.device, True
            rows, cap = max(self.rows, b), max(self.capacity, t)

            def empty(like):
                return like.new_empty((rows, h, cap, like.size(-1)))

            self._buffers = [(empty(key_states), empty(value_states)), None]  # 2nd: on demand
            self._records = [torch.full((rows,), -1, dtype=torch.long, device=self.device)
                             for _ in range(2)]  # fmt: skip
            self._records[0][:b] = torch.arange(b, device=self.device)
            self.n, self.prompt = b, t
        keys, values = self._buffers[0]
        if self.length + t > keys.size(2):  # full: the generated part's room doubles
            more = max(t, GROW_TOKENS, keys.size(2) - self.prompt)
            self._buffers = [
                None if pair is None else tuple(
                    torch.cat([x[: self.n], x.new_empty((self.n,) + x.shape[1:2] + (more,)
                                                        + x.shape[3:])], dim=2)
                    for x in pair)
                for pair in self._buffers
            ]  # fmt: skip
            keys, values = self._buffers[0]
        end = self.length + t
        keys[: self.n, :, self.length : end] = key_states
        values[: self.n, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = keys[: self.n, :, :end], values[: self.n, :, :end]
        return self.keys, self.values

    def reorder_cache(self, beam_idx) -> None:
        import torch

        if self._buffers is None:
            return
        n, p, end = beam_idx.numel(), self.prompt, self.length
        moved = (beam_idx != torch.arange(n, device=beam_idx.device)).nonzero().flatten()
        if n <= self.n and (moved.numel() == 0 or bool((beam_idx[moved] >= n).all())):
            # rows that stay or take a row from beyond the new end (greedy search, a record
            # leaving): in place, no second buffer
            if moved.numel():
                sources = beam_idx.index_select(0, moved)
                for x in self._buffers[0]:
                    x[:, :, :end].index_copy_(0, moved, x[:, :, :end].index_select(0, sources))
                self._records[0][moved] = self._records[0].index_select(0, sources)
            self._set_rows(n)
            return
        records = self._records[0][: self.n].index_select(0, beam_idx)
        if self._buffers[1] is None or self._buffers[1][0].size(0) < n:
            rows = max(n, self._buffers[0][0].size(0))
            self._buffers[1] = tuple(x.new_empty((rows,) + x.shape[1:]) for x in self._buffers[0])
            self._records[1] = torch.full((rows,), -1, dtype=torch.long, device=self.device)
        stale = (self._records[1][:n] != records).nonzero().flatten()
        for src, dst in zip(self._buffers[0], self._buffers[1], strict=True):
            if stale.numel():  # rows that held another record's prompt: the prompt too
                dst[:, :, :p].index_copy_(
                    0, stale, src[: self.n, :, :p].index_select(0, beam_idx.index_select(0, stale))
                )
            torch.index_select(src[: self.n, :, p:end], 0, beam_idx, out=dst[:n, :, p:end])
        self._records[1][:n] = records
        self._buffers.reverse()
        self._records.reverse()
        self._set_rows(n)

    def _set_rows(self, n: int) -> None:
        self.n = n
        keys, values = self._buffers[0]
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
