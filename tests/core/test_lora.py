"""LoRA adapters (`datatuner_core.lora`, `lm.lora_rank`): the adapted model starts as the pretrained
one, only the adapters (and the special tokens' rows) train, and the saved model, with the
adapters folded in, is a plain checkpoint whose logits are the adapted model's."""

from __future__ import annotations

import pytest
import torch

from datatuner_core import lm
from datatuner_core.config import load_config
from datatuner_core.lora import LoRALinear, add_adapters, merge_adapters
from datatuner_core.state_lm import StateLM, decoder_layers, freeze
from datatuner_core.trained_models import task_identity

from .test_state_lm import SPECIALS, batch_of, gpt2, llama, tok  # noqa: F401  (fixture)


def specials_of(tok):  # noqa: F811
    return [tok.convert_tokens_to_ids(t) for t in SPECIALS]


def train_steps(model, batch, steps=3, lr=0.05):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("build", [llama, gpt2], ids=["llama", "gpt2-conv1d"])
def test_adapters_start_as_the_base_train_alone_and_merge_into_a_plain_model(tok, build):  # noqa: F811
    batch = batch_of(tok)
    model = build(tok)
    with torch.no_grad():
        base_loss = float(StateLM(model)(**batch))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapted = add_adapters(model, rank=4, alpha=8.0)
    # every linear layer of both blocks (Llama: q k v o gate up down; GPT-2: 2 attention, 2 MLP)
    assert adapted == (14 if build is llama else 8)
    wrapped = StateLM(model, trainable_ids=specials_of(tok)).train()
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable == {"rows"} | {n for n in trainable if ".lora_" in n}
    assert sum(".lora_a" in n for n in trainable) == adapted
    with torch.no_grad():  # B starts at zero: the pretrained model's loss (no dropout)
        assert float(wrapped.eval()(**batch)) == pytest.approx(base_loss, abs=1e-5)
    train_steps(wrapped.train(), batch, steps=5, lr=0.02)
    with torch.no_grad():
        assert float(wrapped.eval()(**batch)) < base_loss - 0.1
    # no pretrained weight moved (the base layers sit under `.base` inside the wrappers)
    now = {n.replace(".base.", "."): p for n, p in model.named_parameters() if ".lora_" not in n}
    assert now.keys() == before.keys()
    assert all(torch.equal(before[n], p) for n, p in now.items())
    wrapped.eval()
    with torch.no_grad():
        expected = wrapped.logits_and_targets(**batch)[0]
        plain = wrapped.merged()
        assert not any(isinstance(m, LoRALinear) for m in plain.modules())
        assert {n for n, _ in plain.named_parameters()} == set(before)
        # the plain model through the generic state path: the adapted model's logits
        got = StateLM(plain).logits_and_targets(**batch)[0]
        untrained = StateLM(build(tok)).logits_and_targets(**batch)[0]
    assert torch.allclose(expected, got, atol=1e-5)
    assert not torch.allclose(got, untrained, atol=1e-3)


def test_tied_frozen_head_trains_the_special_output_rows(tok):  # noqa: F811
    """LoRA keeps a tied output layer tied and frozen: the new tokens' output rows (<eos> ends
    every text) are the trainable rows too, and the merged tied model gives the trained loss."""
    model = llama(tok)
    add_adapters(model, rank=4, alpha=8.0)
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    assert head.weight is embed.weight and not head.weight.requires_grad
    wrapped = StateLM(model, trainable_ids=specials_of(tok)).train()
    assert wrapped.tied_rows
    batch = batch_of(tok)
    eos = int(wrapped.slot[tok.convert_tokens_to_ids("<eos>")])
    rows = wrapped.rows.detach().clone()
    train_steps(wrapped, batch)
    assert (wrapped.rows.detach()[eos] - rows[eos]).norm() > 0  # learned as an output row
    wrapped.eval()
    with torch.no_grad():
        trained = float(wrapped(**batch))
        plain = wrapped.merged()
        assert plain.get_output_embeddings().weight is plain.get_input_embeddings().weight
        assert float(StateLM(plain)(**batch)) == pytest.approx(trained, abs=1e-5)


def test_adapters_above_frozen_layers_and_an_untied_head(tok):  # noqa: F811
    model = llama(tok)
    freeze(model, layers=1, embeddings=True)  # unties the head, which keeps training
    add_adapters(model, rank=2, alpha=2.0, skip_layers=1)
    layers = decoder_layers(model)
    assert not any(isinstance(m, LoRALinear) for m in layers[0].modules())
    assert sum(isinstance(m, LoRALinear) for m in layers[1].modules()) == 7
    assert model.get_output_embeddings().weight.requires_grad
    assert not model.get_input_embeddings().weight.requires_grad
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n
                   and not n.startswith("lm_head"))  # fmt: skip
    with pytest.raises(ValueError, match="none would have adapters"):
        add_adapters(llama(tok), rank=2, alpha=2.0, skip_layers=2)
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(torch.nn.Linear(4, 4), rank=0, alpha=1.0)
    assert merge_adapters(model) == 7 and merge_adapters(model) == 0


def test_lm_task_with_lora_saves_a_plain_checkpoint(tok, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    task = lm.LMTask(tokenizer=tok, special_tokens=SPECIALS, base="scratch:tiny", shape=(2, 64, 2),
                     lora_rank=4, lora_alpha=8.0)  # fmt: skip
    torch.manual_seed(0)
    model = task.build_model()
    counts = task.parameter_counts
    assert counts["trainable_parameters"] < counts["parameters"] / 4
    batch = batch_of(tok)
    train_steps(model, batch)
    model.eval()
    with torch.no_grad():
        expected = float(model(**batch))
    task.save(model, str(tmp_path))
    assert (tmp_path / "model.safetensors").exists()
    again = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True).eval()
    assert not any(isinstance(m, LoRALinear) for m in again.modules())
    with torch.no_grad():
        assert float(StateLM(again)(**batch)) == pytest.approx(expected, abs=1e-5)


def test_lora_keys_and_the_identity_of_jobs_without_them(tok):  # noqa: F811
    config = load_config(None, ["lm.lora_rank=16", "lm.lora_alpha=32"])
    assert (config.lm.lora_rank, config.lm.lora_alpha) == (16, 32.0)
    assert load_config(None, []).lm.lora_rank == 0
    with pytest.raises(ValueError):
        load_config(None, ["lm.lora_rank=-1"])
    plain = task_identity(lm.LMTask(tokenizer=tok, special_tokens=SPECIALS))
    # a model trained before the key keeps its identity (its job is reused, not retrained)
    assert "lora_rank" not in plain and "lora_alpha" not in plain
    adapted = task_identity(lm.LMTask(tokenizer=tok, special_tokens=SPECIALS, lora_rank=8))
    assert adapted["lora_rank"] == 8 and adapted["lora_alpha"] == 16.0
