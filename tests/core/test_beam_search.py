"""The shrinking-batch beam search (`datatuner_core/beam_search.py`) against `transformers`'
`generate` on the same prompts: the same hypotheses with the same scores, records of one batch
ending at different steps, and complete records leaving the batch."""

from __future__ import annotations

import pytest
import torch

from datatuner_core.beam_search import beam_search

from .test_state_lm import gpt2, llama, tok  # noqa: F401 - tok: the models' tokenizer fixture


def _prompts(model, lengths, seed=3):
    """Left-padded random prompts of `lengths` tokens: (embeddings, mask)."""
    g = torch.Generator().manual_seed(seed)
    vocab, width = model.config.vocab_size, max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(5, vocab, (n,), generator=g)
        mask[row, width - n :] = 1
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    return ids, embeds, mask


def _hf(model, ids, embeds, mask, beams, budget, eos):
    """`generate`'s beams per record: (tokens before `<eos>`, score), best first."""
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, inputs_embeds=embeds, attention_mask=mask, num_beams=beams,
            num_return_sequences=beams, max_new_tokens=budget, do_sample=False,
            early_stopping=beams > 1, eos_token_id=eos, pad_token_id=0, output_scores=True,
            return_dict_in_generate=True,
        )  # fmt: skip
    sequences = out.sequences[:, ids.size(1) :].tolist()
    if beams > 1:
        scores = out.sequences_scores.tolist()
    else:
        steps = torch.stack(out.scores, 1).float().log_softmax(-1)
        scores = []
        for row, toks in enumerate(sequences):
            n = toks.index(eos) + 1 if eos in toks else len(toks)
            scores.append(sum(steps[row, k, toks[k]].item() for k in range(n)) / n)
    result = []
    for i in range(ids.size(0)):
        beams_i = []
        for j in range(i * beams, (i + 1) * beams):
            toks = sequences[j]
            beams_i.append((toks[: toks.index(eos)] if eos in toks else toks, scores[j]))
        result.append(beams_i)
    return result


def _early(found, budget) -> bool:
    """Whether a record's every beam ends at least two steps before the budget."""
    return any(all(len(t) < budget - 2 for t, _ in b) for b in found)


def _varied_eos(model, ids, embeds, mask, beams, budget, early=False) -> int:
    """An `<eos>` with which `generate`'s texts end at different steps, some before the budget,
    with `early` a whole record too (random weights: one of the tokens the model emits most)."""
    with torch.inference_mode():
        out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=budget,
                             do_sample=False, pad_token_id=0)  # fmt: skip
    values, counts = torch.cat([out.flatten(), ids.flatten()]).unique(return_counts=True)
    for token in values[counts.argsort(descending=True)].tolist():
        found = _hf(model, ids, embeds, mask, beams, budget, token)
        lengths = {len(t) for b in found for t, _ in b}
        if len(lengths) > 1 and min(lengths) < budget and (not early or _early(found, budget)):
            return token
    raise AssertionError("no token ends the texts at different steps")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("beams", [1, 3])
def test_the_same_hypotheses_and_scores_as_generate(tok, arch, beams):  # noqa: F811
    model = (gpt2 if arch == "gpt2" else llama)(tok, seed=5)
    ids, embeds, mask = _prompts(model, [4, 9, 6, 12, 7])
    budget = 10
    eos = _varied_eos(model, ids, embeds, mask, beams, budget)
    want = _hf(model, ids, embeds, mask, beams, budget, eos)
    got = beam_search(model, embeds, mask, beams=beams, budget=budget, eos=eos)
    assert [[toks for toks, _ in b] for b in got] == [[toks for toks, _ in b] for b in want]
    for g, w in zip(got, want, strict=True):
        assert [s for _, s in g] == pytest.approx([s for _, s in w], abs=1e-4)
    lengths = {len(toks) for b in got for toks, _ in b}
    assert len(lengths) > 1 and min(lengths) < budget  # texts end at different steps


def test_complete_records_leave_the_batch(tok):  # noqa: F811
    """Rows per forward pass: the batch starts at one row per record (the prompt), then
    `beams` per live record, and shrinks as records complete: fewer rows in all than
    `generate`, which decodes every record until the last one ends."""
    model = llama(tok, seed=1)  # a seed with a token that ends a whole record early
    ids, embeds, mask = _prompts(model, [4, 9, 6, 12, 7])
    eos = _varied_eos(model, ids, embeds, mask, 3, 10, early=True)
    rows: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: rows.append(kw["inputs_embeds"].size(0)), with_kwargs=True
    )
    try:
        found = beam_search(model, embeds, mask, beams=3, budget=10, eos=eos)
    finally:
        hook.remove()
    assert rows[0] == 5 and rows[1] == 15  # the prompts once each, then 3 beams per record
    assert all(a >= b for a, b in zip(rows[1:], rows[2:]))  # never grows
    assert rows[-1] < 15 and sum(rows[1:]) < 15 * (len(rows) - 1)
    assert all(len(b) == 3 for b in found)
    want = _hf(model, ids, embeds, mask, 3, 10, eos)
    assert [[t for t, _ in b] for b in found] == [[t for t, _ in b] for b in want]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_output_layer_runs_on_the_last_position_only(tok, arch):  # noqa: F811
    """The prompt's forward asks for the last position's logits only (`logits_to_keep=1`): the
    full [records, tokens, vocab] logits are never made, and the beams are `generate`'s."""
    model = (gpt2 if arch == "gpt2" else llama)(tok, seed=5)
    ids, embeds, mask = _prompts(model, [4, 9, 6, 12, 7])
    shapes: list[tuple] = []
    hook = model.register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.logits.shape)))
    try:
        got = beam_search(model, embeds, mask, beams=3, budget=6, eos=2)
    finally:
        hook.remove()
    vocab = model.config.vocab_size
    assert shapes[0] == (5, 1, vocab)  # the prompt: not (5, 12, vocab)
    assert all(s[1] == 1 for s in shapes)
    want = _hf(model, ids, embeds, mask, 3, 6, 2)
    assert [[t for t, _ in b] for b in got] == [[t for t, _ in b] for b in want]


def test_holes_left_by_complete_records_are_filled_from_the_end():
    from datatuner_core.beam_search import _fill_holes

    assert _fill_holes([0, 1, 2, 3, 4], {0: 1, 2: 1, 4: 1}) == [0, 4, 2]  # 4 moves, 2 stays
    assert _fill_holes([3, 1, 2], {3: 1, 1: 1, 2: 1}) == [3, 1, 2]  # nothing complete
    assert _fill_holes([3, 1, 2], {}) == []
    assert _fill_holes([0, 1, 2, 3], {2: 1, 3: 1}) == [2, 3]  # both move up, in order


@pytest.mark.parametrize("grow", [16, 2])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_search_runs_on_its_own_cache_with_one_copy_per_step(tok, arch, grow, monkeypatch):  # noqa: F811
    """The cache is `_GrowingLayer`s (no `torch.cat` of the whole cache per step), its rows
    follow the beams and the records that leave as `DynamicCache`'s do: the same beams and
    scores as `generate` with records ending at different steps (more than one batch slot
    refilled), and the prompt part copied into a row only when the row changes record; with a
    first room of 2 new tokens the buffers grow three times on the way, with the same beams."""
    from datatuner_core import beam_search as bs

    monkeypatch.setattr(bs, "GROW_TOKENS", grow)
    model = gpt2(tok, seed=5) if arch == "gpt2" else llama(tok, seed=1)
    ids, embeds, mask = _prompts(model, [4, 9, 6, 12, 7, 5, 8])
    # llama: whole records complete early (their slots refilled); gpt2: texts end at varied steps
    eos = _varied_eos(model, ids, embeds, mask, 3, 10, early=arch == "llama")
    made = []
    real = bs._growing_cache

    def spy(model, capacity, rows):
        cache = real(model, capacity, rows)
        made.append(cache)
        return cache

    bs._growing_cache = spy
    try:
        got = beam_search(model, embeds, mask, beams=3, budget=10, eos=eos)
    finally:
        bs._growing_cache = real
    layers = made[0].layers
    assert all(type(layer).__name__ == "GrowingLayer" for layer in layers)
    assert all(layer.prompt == 12 and layer.capacity == 12 + min(10, grow) for layer in layers)
    room = {layer._buffers[0].size(2) for layer in layers}
    assert room == ({22} if grow == 16 else {12 + 16})  # 2, 4, 8, 16: doubled three times
    want = _hf(model, ids, embeds, mask, 3, 10, eos)
    assert [[t for t, _ in b] for b in got] == [[t for t, _ in b] for b in want]
    for g, w in zip(got, want, strict=True):
        assert [s for _, s in g] == pytest.approx([s for _, s in w], abs=1e-4)
