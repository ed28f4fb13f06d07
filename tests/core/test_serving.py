"""The serving export (`datatuner_core.serving`): a plain causal LM with the `<text>` state folded
into its input embeddings gives, through plain `transformers` and no hook, the same logits and
the same greedy and beam-search outputs as the state-embedding LM (GPT-2 and a tied Llama); the
saved export loads untied from safetensors and says how to build its prompts."""

from __future__ import annotations

import json

import pytest
import torch

from datatuner_core import lm, storage
from datatuner_core.serving import (
    SERVING_CARD,
    export_serving,
    fold_text_state,
    prompt_embeds,
    read_serving_card,
)
from datatuner_core.state_lm import embed_with_states, generation_inputs, text_state
from tests.core.test_state_lm import gpt2, llama, prompts
from tests.core.test_state_lm import tok as tok  # noqa: F401 - the module-scoped fixture

GEN = dict(max_new_tokens=10, do_sample=False, output_scores=True, return_dict_in_generate=True)
MODELS = {"gpt2": gpt2, "llama": llama}


def _text_id(tok):
    return tok.convert_tokens_to_ids("<text>")


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_export_logits_equal_the_state_lm_on_prompt_and_text(tok, arch):
    """One forward pass over `<data> D <text> T`: the state LM with every text token in the
    `<text>` state, and the export fed the prompt as `prompt_embeds` and T through its own
    (folded) embedding matrix: the same logits at every position."""
    model = MODELS[arch](tok, seed=7)
    served = fold_text_state(model, _text_id(tok))
    ids, states, mask = prompts(tok)
    text = torch.tensor([tok("Aarhus is in Denmark .", add_special_tokens=False)["input_ids"]] * 2)
    full_ids = torch.cat([ids, text], dim=1)
    full_states = torch.cat([states, torch.full_like(text, _text_id(tok))], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(text)], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = model(
            inputs_embeds=embed_with_states(model, full_ids, full_states),
            attention_mask=full_mask, position_ids=positions,
        ).logits  # fmt: skip
        embeds = torch.cat(
            [
                prompt_embeds(served, ids, states, _text_id(tok)),
                served.get_input_embeddings()(text),
            ],
            dim=1,
        )
        got = served(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions).logits
        stateless = served(input_ids=full_ids, attention_mask=full_mask).logits
    real = full_mask.bool()
    assert torch.allclose(got[real], expected[real], atol=1e-4)
    assert not torch.allclose(stateless[real], expected[real], atol=1e-3)  # the states matter
    # the original is untouched: still tied (llama) and unshifted
    assert torch.equal(
        model.get_input_embeddings().weight, MODELS[arch](tok, seed=7).get_input_embeddings().weight
    )


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("beams", [1, 3])
def test_export_generates_what_the_state_lm_generates(tok, arch, beams):
    """Cached decoding, greedy and beam search: the export with the prompt as embeddings and no
    hook returns the generator's sequences and scores (`generation_inputs` + `text_state`)."""
    model = MODELS[arch](tok, seed=11)
    served = fold_text_state(model, _text_id(tok))
    ids, states, mask = prompts(tok)
    kw = dict(GEN, num_beams=beams, num_return_sequences=beams, attention_mask=mask,
              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    with torch.no_grad():
        inputs = generation_inputs(model, ids, states)
        with text_state(model, _text_id(tok)):
            expected = model.generate(**inputs, **kw)
        got = served.generate(
            input_ids=ids, inputs_embeds=prompt_embeds(served, ids, states, _text_id(tok)), **kw
        )
    assert got.sequences.tolist() == expected.sequences.tolist()
    assert got.sequences.size(1) > ids.size(1)  # it generated something
    for a, b in zip(got.scores, expected.scores, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_export_round_trip_loads_untied_with_its_card(tok, tmp_path):
    """`export_serving` of a saved LM: a safetensors folder that loads with plain
    `AutoModelForCausalLM` (no custom code) with its output layer untied, its `serving.json`
    naming the `<text>` token, and the same next-token logits as the trained model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = llama(tok, seed=13)
    src, dst = tmp_path / "lm", tmp_path / "served"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    card = export_serving(str(src), str(dst))
    assert card["text_token"] == "<text>" and card["text_token_id"] == _text_id(tok)
    assert json.loads((dst / SERVING_CARD).read_text()) == card == read_serving_card(str(dst))
    assert (dst / "model.safetensors").exists()
    assert AutoTokenizer.from_pretrained(dst).convert_tokens_to_ids("<text>") == _text_id(tok)
    served = AutoModelForCausalLM.from_pretrained(
        dst, use_safetensors=True, trust_remote_code=False
    )
    assert not served.config.tie_word_embeddings
    head, embed = served.get_output_embeddings().weight, served.get_input_embeddings().weight
    assert torch.equal(head, model.get_input_embeddings().weight)  # logits: the original E
    assert not torch.allclose(head, embed)  # inputs: E + E[<text>]
    ids, states, mask = prompts(tok)
    with torch.no_grad():
        expected = model(inputs_embeds=embed_with_states(model, ids, states), attention_mask=mask)
        got = served(inputs_embeds=prompt_embeds(served, ids, states, card["text_token_id"]),
                     attention_mask=mask)  # fmt: skip
    assert torch.allclose(got.logits[:, -1], expected.logits[:, -1], atol=1e-4)


def test_a_folder_that_is_not_an_export_is_named(tmp_path):
    with pytest.raises(storage.StorageError, match="not a serving export"):
        read_serving_card(str(tmp_path))


def test_prompt_embeds_need_nothing_but_the_export(tok):
    """E'[ids] + E'[states] - E'[<text>] is E[ids] + E[states] exactly, row by row."""
    model = gpt2(tok, seed=1)
    served = fold_text_state(model, _text_id(tok))
    ids, states, _ = prompts(tok)
    assert torch.allclose(
        prompt_embeds(served, ids, states, _text_id(tok)),
        embed_with_states(model, ids, states),
        atol=1e-6,
    )
    assert lm.default_vocab(tok).text == _text_id(tok)
