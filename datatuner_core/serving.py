"""The serving export: a trained state-embedding LM as a plain causal LM that a batch engine
(vLLM, or anything that takes prompt embeddings) serves exactly.

The LM's input at every position is `E[token] + E[state]` (`state_lm`). A plain engine embeds the
tokens it generates with the model's own input-embedding matrix and knows nothing of states, but
every generated token has the same state, `<text>`. So the export:

- unties a tied output layer (the output projection keeps `E`: the logits are unchanged);
- writes `E' = E + E[<text>]` (the `<text>` row added to every row) into the input-embedding
  matrix: a generated token `t` is embedded as `E'[t] = E[t] + E[<text>]`, exactly what the
  generator's `text_state` hook adds;
- the prompt goes in as embeddings. They follow from the exported matrix alone: with
  `v = E[<text>]`, every row of `E'` is `E + v` and `E'[<text>] = 2v`, so
  `E[ids] + E[states] = E'[ids] + E'[states] - E'[<text>]` (`prompt_embeds`).

`tests/core/test_serving.py` shows on CPU, with plain `transformers`, that the export's logits
and greedy and beam-search outputs equal the state-embedding LM's; `benchmarks/gpu_engine.py`
checks on a GPU that vLLM's greedy texts equal the HF path's.

The export is a `transformers` folder (safetensors, tokenizer) plus `serving.json`, which names
the `<text>` token and the formula above; it must not be trained further (its input matrix is
shifted), and it never needs custom code (`trust_remote_code` stays off).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

from . import storage

SERVING_CARD = "serving.json"
FORMAT = "datatuner-serving/1"


def untie_output(model) -> None:
    """Give a tied output layer its own copy of the input-embedding matrix (logits unchanged)."""
    import torch

    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and head.weight is embed.weight:
        head.weight = torch.nn.Parameter(embed.weight.detach().clone())
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False


def fold_text_state(model, text_id: int):
    """A copy of `model` whose input embeddings carry the `<text>` state (see the module
    docstring); the original is left as it is."""
    import torch

    served = copy.deepcopy(model)
    untie_output(served)
    weight = served.get_input_embeddings().weight
    with torch.no_grad():
        weight.add_(weight[text_id].clone())  # every row, the <text> row itself included
    return served


def prompt_embeds(served, input_ids, states, text_id: int):
    """`E[ids] + E[states]` [B, T, H] of a prompt batch, through the exported model's own
    input-embedding module: `E'[ids] + E'[states] - E'[<text>]`."""
    import torch

    embed = served.get_input_embeddings()
    with torch.no_grad():
        text = embed(torch.tensor([text_id], device=input_ids.device))[0]
        return embed(input_ids) + embed(states) - text


def export_serving(lm_uri: str, output_uri: str, storage_options: dict | None = None) -> dict:
    """Write the serving export of the trained LM at `lm_uri` to `output_uri` (local or remote):
    the folded model, its tokenizer and `serving.json` (written last); returns that card."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .lm import default_vocab

    keep: list = []
    lm_dir = storage.local_dir(lm_uri, keep, storage_options)
    if not os.path.exists(os.path.join(lm_dir, "config.json")):
        raise storage.StorageError(f"{lm_uri}: not a trained LM (no config.json there)")
    tokenizer = AutoTokenizer.from_pretrained(lm_dir, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        lm_dir, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
    )
    vocab = default_vocab(tokenizer)
    served = fold_text_state(model, vocab.text)
    card = {
        "format": FORMAT,
        "source": str(lm_uri),
        "text_token": tokenizer.convert_ids_to_tokens(vocab.text),
        "text_token_id": vocab.text,
        "eos_token_id": vocab.eos,
        "pad_token_id": vocab.pad,
        "architecture": type(served).__name__,
        "prompt_embeds": "E'[input_ids] + E'[state_ids] - E'[text_token_id], E' = the exported "
        "input-embedding module; generated tokens need nothing (their state is folded in)",
    }
    with tempfile.TemporaryDirectory(prefix="datatuner-serving-") as tmp:
        served.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card_path = os.path.join(tmp, SERVING_CARD)
        with open(card_path, "w", encoding="utf-8") as f:
            json.dump(card, f, indent=2)
        storage.upload_dir(tmp, output_uri, storage_options, skip=[SERVING_CARD])
        storage.write_json(storage.join_uri(output_uri, SERVING_CARD), card, storage_options)
    return card


def read_serving_card(uri: str, storage_options: dict | None = None) -> dict:
    """The `serving.json` of an export (a clear error when `uri` is not one)."""
    card = storage.read_json(storage.join_uri(uri, SERVING_CARD), storage_options, missing_ok=True)
    if not card or card.get("format") != FORMAT:
        raise storage.StorageError(f"{uri}: not a serving export (no {SERVING_CARD} of {FORMAT})")
    return card
