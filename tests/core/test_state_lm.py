"""State embeddings for any causal LM: on GPT-2 the generic path (`E[token] + E[state]` as
`inputs_embeds`) gives the same logits and the same beams as GPT-2's own `token_type_ids`; on an
architecture without token types (Llama, SmolLM2's) the states change the logits and cached
generation equals a full recomputation with every generated token in the `<text>` state."""

from __future__ import annotations

import pytest
import torch

from datatuner_core import lm
from datatuner_core.state_lm import (
    StateLM,
    decoder_layers,
    embed_with_states,
    freeze,
    generation_inputs,
    text_state,
)
from datatuner_core.tokenizer import build_tokenizer

DATA = (
    "<subject> Aarhus Airport <predicate> city served <object> Aarhus, Denmark ; "
    "<subject> Aarhus Airport <predicate> elevation <object> 25.0"
)
TEXT = "Aarhus Airport serves Aarhus, Denmark and is 25 metres above sea level."
SPECIALS = ["<data>", "<text>", "<eos>", "<pad>", "<object>", "<predicate>", "<subject>"]


@pytest.fixture(scope="module")
def tok():
    corpus = [DATA, TEXT, "Aarhus is in Denmark.", "The airport serves the city of Aarhus."] * 5
    return build_tokenizer("scratch:tiny", corpus, SPECIALS, vocab_size=400)


def gpt2(tok, seed=0):
    torch.manual_seed(seed)
    return lm.build_lm("scratch:tiny", tok, shape=(2, 64, 2)).eval()


def gpt2_gelu_new(tok, seed=0):
    """`gpt2` as scratch models were built before `gelu_pytorch_tanh`: GPT-2's `gelu_new`."""
    import transformers

    config = gpt2(tok).config
    config.activation_function = "gelu_new"
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).eval()


def llama(tok, seed=0):
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def batch_of(tok, mode="fine"):
    a = lm.encode_example(tok, DATA, TEXT, mode, 256)
    b = lm.encode_example(tok, "<subject> X <predicate> y <object> Z", "X is Z.", mode, 256)
    return lm.collate_lm([a, b], tok.pad_token_id)


def test_gpt2_generic_state_path_equals_token_type_ids(tok):
    model, batch = gpt2(tok), batch_of(tok)
    with torch.no_grad():
        native = model(
            input_ids=batch["input_ids"],
            token_type_ids=batch["token_type_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        generic = lm.forward_lm(model, batch)
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert torch.allclose(native.logits, generic.logits, atol=1e-5)
    assert float(native.loss) == pytest.approx(float(generic.loss), rel=1e-6)
    assert not torch.allclose(plain.logits, generic.logits, atol=1e-3)  # states matter


def test_sliced_loss_equals_full_loss(tok):
    for model in (gpt2(tok), llama(tok)):
        batch = batch_of(tok)
        with torch.no_grad():
            full = lm.forward_lm(model, batch).loss
            sliced = StateLM(model)(**batch)
            summed = StateLM(model)(**batch, reduction="sum")
        labelled = int((batch["labels"][:, 1:] != lm.IGNORE).sum())
        assert float(sliced) == pytest.approx(float(full), rel=1e-5)
        assert float(summed) == pytest.approx(float(full) * labelled, rel=1e-5)


def prompts(tok, mode="fine"):
    """Two left-padded prompts `<data> D <text>` with their states and mask."""
    items = [
        lm.encode_prompt(tok, DATA, mode, 256),
        lm.encode_prompt(tok, "<subject> X <predicate> y <object> Z", mode, 256),
    ]
    width, pad = max(len(p["input_ids"]) for p in items), tok.pad_token_id
    ids = torch.full((2, width), pad)
    states = torch.full((2, width), pad)
    mask = torch.zeros((2, width), dtype=torch.long)
    for row, p in enumerate(items):
        n = len(p["input_ids"])
        ids[row, width - n :] = torch.tensor(p["input_ids"])
        states[row, width - n :] = torch.tensor(p["token_type_ids"])
        mask[row, width - n :] = 1
    return ids, states, mask


GEN = dict(max_new_tokens=12, do_sample=False, output_scores=True, return_dict_in_generate=True)


def test_gpt2_cached_beam_search_equals_token_type_ids(tok):
    """Beam search with a KV cache: same sequences and scores by both paths (GPT-2 copies the last
    token type, `<text>`, to generated tokens; `text_state` adds `E[<text>]` to them)."""
    model = gpt2(tok, seed=3)
    ids, states, mask = prompts(tok)
    text_id = tok.convert_tokens_to_ids("<text>")
    kw = dict(GEN, num_beams=3, num_return_sequences=3, attention_mask=mask,
              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    with torch.no_grad():
        native = model.generate(input_ids=ids, token_type_ids=states, **kw)
        inputs = generation_inputs(model, ids, states)  # before text_state: no <text> in them
        with text_state(model, text_id):
            generic = model.generate(**inputs, **kw)
    assert native.sequences.tolist() == generic.sequences.tolist()
    assert torch.allclose(native.sequences_scores, generic.sequences_scores, atol=1e-5)
    # the hook is gone afterwards: plain embeddings again
    emb = model.get_input_embeddings()
    assert torch.equal(emb(ids), model.transformer.wte.weight[ids])


def test_cached_generation_equals_full_recompute_without_token_types(tok):
    """Llama has no token types: greedy decoding with the cache and `text_state` picks, at every
    step, the argmax of a full forward pass whose generated tokens carry the `<text>` state."""
    model = llama(tok, seed=5)
    ids, states, mask = prompts(tok)
    text_id = tok.convert_tokens_to_ids("<text>")
    inputs = generation_inputs(model, ids, states)
    with torch.no_grad(), text_state(model, text_id):
        out = model.generate(
            **inputs, attention_mask=mask,
            eos_token_id=None, pad_token_id=tok.pad_token_id, **GEN,
        )  # fmt: skip
    width = ids.size(1)
    new = out.sequences[:, width:]
    assert new.size(1) == GEN["max_new_tokens"]
    full_ids = out.sequences
    full_states = torch.cat([states, torch.full_like(new, text_id)], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(new)], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(
            inputs_embeds=embed_with_states(model, full_ids, full_states),
            attention_mask=full_mask,
            position_ids=positions,
        ).logits
    for step in range(new.size(1)):
        expected = logits[:, width - 1 + step].argmax(-1)
        assert new[:, step].tolist() == expected.tolist()
        assert torch.allclose(out.scores[step], logits[:, width - 1 + step], atol=1e-4)
    # and the states change what is generated compared with no states at all
    with torch.no_grad():
        stateless = model(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert not torch.allclose(stateless, logits[:, width - 1], atol=1e-3)


def test_freeze_bottom_layers_and_untie_embeddings(tok):
    model = llama(tok)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    counts = freeze(model, layers=1, embeddings=True)
    layers = decoder_layers(model)
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    assert head.weight is not embed.weight and head.weight.requires_grad
    assert not embed.weight.requires_grad and model.config.tie_word_embeddings is False
    assert counts["trainable_parameters"] == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    # one training step moves the head and the top layer, not the frozen parts
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapped = StateLM(model).train()
    wrapped(**batch_of(tok)).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert "lm_head.weight" in moved and any(n.startswith("model.layers.1.") for n in moved)
    assert not any(n.startswith("model.layers.0.") or "embed_tokens" in n for n in moved)
    with pytest.raises(ValueError, match="layers"):
        freeze(llama(tok), layers=9)


def test_frozen_embeddings_still_train_the_special_rows_and_merge_them(tok):
    model = llama(tok)
    batch = batch_of(tok)
    specials = [tok.convert_tokens_to_ids(t) for t in SPECIALS]
    with torch.no_grad():
        plain_loss = float(StateLM(model)(**batch))
    freeze(model, layers=1, embeddings=True)
    wrapped = StateLM(model, trainable_ids=specials).train()
    assert wrapped.rows.shape == (len(specials), model.config.hidden_size)
    # before training the separate rows are the matrix's own: same loss as the plain path
    with torch.no_grad():
        assert float(wrapped(**batch)) == pytest.approx(plain_loss, abs=1e-5)
    matrix = model.get_input_embeddings().weight.detach().clone()
    rows = wrapped.rows.detach().clone()
    optimizer = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        wrapped(**batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    # the markers' and states' rows moved (<eos> is never an input before a label, <pad> masked)
    moved = (wrapped.rows.detach() - rows).norm(dim=1)
    slot = {t: int(wrapped.slot[tok.convert_tokens_to_ids(t)]) for t in SPECIALS}
    assert all(moved[slot[t]] > 0 for t in SPECIALS if t not in ("<eos>", "<pad>"))
    # ... the frozen matrix did not, until merged() writes the rows into it
    assert torch.equal(model.get_input_embeddings().weight, matrix)
    wrapped.eval()
    with torch.no_grad():
        trained = float(wrapped(**batch))
        plain = wrapped.merged()
        assert plain is model
        weight = model.get_input_embeddings().weight
        assert torch.equal(weight[specials], wrapped.rows.detach())
        others = [i for i in range(len(tok)) if i not in specials]
        assert torch.equal(weight[others], matrix[others])
        # the merged plain model gives the trained loss through the generic state path
        assert float(StateLM(plain)(**batch)) == pytest.approx(trained, abs=1e-5)
