"""State embeddings for any causal LM (method §3), in training and in cached generation.

Every token's input is `E[token] + E[state]`, where `E` is the model's input-embedding module and
the state is the token's most recent special token (`linearize.state_ids`). GPT-2 does exactly this
when the state ids are passed as `token_type_ids` (it embeds them with `wte`); here the sum is
formed outside the model and passed as `inputs_embeds`, so the same holds for architectures without
token types (Llama/SmolLM2, Qwen, Mistral, ...). tests/core/test_state_lm.py shows both give the
same logits, and the same beams, on GPT-2.

- `StateLM` wraps the `transformers` model for training (what DDP wraps): its forward returns the
  loss over the labelled positions only, computing the output projection on those positions alone
  (about half of every sequence is data, whose logits the loss never reads: on a 49k vocabulary
  that projection is a large share of the work).
- `generation_inputs` + `text_state`: for `generate`, the prompt goes in as `inputs_embeds` (its
  states included) and, while `text_state` is active, every later token (one per step, through the
  embedding module) gets the `<text>` state added: generated tokens are text.
- `freeze`: freeze the bottom decoder layers and/or the embeddings (untying a tied output layer,
  which then trains on its own) to buy CPU speed. With the embeddings frozen, `StateLM(lm,
  trainable_ids=...)` still trains the rows of the special tokens (the markers and the states,
  which are new and start from the initializer) as a small separate parameter; `merged()` writes
  them back into the embedding matrix, so the saved model is a plain `transformers` checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

IGNORE = -100
# config attributes that change logits after the output projection: the sliced loss falls back to
# the model's own forward for such architectures
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def embed_with_states(model, input_ids: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """`E[input_ids] + E[states]` [B, T, H] through the model's own input-embedding module."""
    embed = model.get_input_embeddings()
    return embed(input_ids) + embed(states)


def sliceable(config) -> bool:
    """Whether logits are exactly `output_embeddings(last_hidden_state)`."""
    return all(getattr(config, name, None) in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS)


class StateLM(torch.nn.Module):
    """A causal LM with state embeddings; `forward` = the loss of the labelled tokens.

    `trainable_ids`: token ids whose input-embedding rows train even when the embedding matrix is
    frozen (`freeze(..., embeddings=True)`): the special tokens, whose rows are new."""

    def __init__(self, lm, trainable_ids: list[int] | None = None):
        super().__init__()
        self.lm = lm
        self.rows = None
        embed = lm.get_input_embeddings()
        ids = sorted(set(trainable_ids or ()))
        if ids and not embed.weight.requires_grad:
            weight = embed.weight.detach()
            self.rows = torch.nn.Parameter(weight[ids].clone())
            slot = torch.full((weight.shape[0],), -1, dtype=torch.long)
            slot[ids] = torch.arange(len(ids))
            self.register_buffer("slot", slot, persistent=False)
            self.register_buffer("row_ids", torch.tensor(ids), persistent=False)
        # an output layer tied to the frozen matrix (LoRA keeps it tied): the special tokens'
        # output rows are the trainable rows too, as they will be once `merged()` writes them
        head = lm.get_output_embeddings()
        self.tied_rows = (
            self.rows is not None
            and head is not None
            and head.weight is embed.weight
            and getattr(head, "bias", None) is None
        )

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """`E[ids]`, with the trainable rows in place of the frozen ones."""
        x = self.lm.get_input_embeddings()(ids)
        if self.rows is None:
            return x
        slot = self.slot[ids]
        own = self.rows[slot.clamp(min=0)].to(x.dtype)
        return torch.where((slot >= 0).unsqueeze(-1), own, x)

    def merged(self):
        """The plain LM with the trained rows written into its embedding matrix and any LoRA
        adapters folded into their layers (`lora.merge_adapters`)."""
        from .lora import merge_adapters

        merge_adapters(self.lm)
        if self.rows is not None:
            with torch.no_grad():
                weight = self.lm.get_input_embeddings().weight
                weight[self.row_ids] = self.rows.detach().to(weight.dtype)
        return self.lm

    def logits_and_targets(self, input_ids, token_type_ids, attention_mask, labels):
        """Logits [N, V] of the N labelled positions and their targets [N]."""
        x = self.embed(input_ids) + self.embed(token_type_ids)
        targets = labels[:, 1:]  # position t predicts token t + 1
        keep = targets != IGNORE
        if sliceable(self.lm.config):
            hidden = self.lm.base_model(inputs_embeds=x, attention_mask=attention_mask)[0]
            hidden = hidden[:, :-1][keep]
            logits = self.lm.get_output_embeddings()(hidden)
            if self.tied_rows:
                own = hidden @ self.rows.t().to(hidden.dtype)
                logits = logits.index_copy(-1, self.row_ids, own.to(logits.dtype))
        else:
            logits = self.lm(inputs_embeds=x, attention_mask=attention_mask).logits[:, :-1][keep]
        return logits, targets[keep]

    def forward(self, input_ids, token_type_ids, attention_mask, labels, reduction="mean"):
        logits, targets = self.logits_and_targets(input_ids, token_type_ids, attention_mask, labels)
        return F.cross_entropy(logits.float(), targets, reduction=reduction)


def generation_inputs(model, input_ids: torch.Tensor, states: torch.Tensor) -> dict:
    """`generate` kwargs for a (left-padded) prompt batch: ids (kept in the output) + embeddings."""
    with torch.no_grad():
        embeds = embed_with_states(model, input_ids, states)
    return {"input_ids": input_ids, "inputs_embeds": embeds}


@contextmanager
def text_state(model, text_id: int):
    """While active, every output of the input-embedding module gets `E[<text>]` added (the
    generated tokens' state). The prompt itself goes in as `inputs_embeds` and bypasses it: build
    those (`generation_inputs`) before entering, or they would get `<text>` added too."""
    embed = model.get_input_embeddings()
    device = embed.weight.device
    with torch.no_grad():
        vector = embed(torch.tensor([text_id], device=device))[0]  # [H]

    def add_state(_module, _inputs, output):
        return output + vector.to(output.dtype)

    handle = embed.register_forward_hook(add_state)
    try:
        yield
    finally:
        handle.remove()


def decoder_layers(model) -> torch.nn.ModuleList | None:
    """The model's stack of decoder blocks (the first ModuleList as long as the layer count)."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    return None


def freeze_bottom_layers(model, layers: int) -> None:
    """Freeze the bottom `layers` blocks of the model's layer stack (decoder or encoder)."""
    if not layers:
        return
    stack = decoder_layers(model)
    if stack is None:
        raise ValueError(f"{type(model).__name__}: cannot find its layers to freeze")
    if layers > len(stack):
        raise ValueError(f"freeze_layers={layers} but the model has {len(stack)} layers")
    for block in stack[:layers]:
        block.requires_grad_(False)


def parameter_counts(model) -> dict:
    """All and trainable parameter counts (the training card records both)."""
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def freeze(model, layers: int = 0, embeddings: bool = False) -> dict:
    """Freeze the bottom `layers` decoder blocks and, if `embeddings`, the input embeddings (and
    positions); a tied output layer is untied first so that it still trains. Returns counts."""
    freeze_bottom_layers(model, layers)
    if embeddings:
        embed, head = model.get_input_embeddings(), model.get_output_embeddings()
        if head is not None and head.weight is embed.weight:
            head.weight = torch.nn.Parameter(embed.weight.detach().clone())
            model.config.tie_word_embeddings = False
            if hasattr(model.config, "get_text_config"):
                model.config.get_text_config().tie_word_embeddings = False
        embed.requires_grad_(False)
        for name in ("wpe", "embed_positions"):
            positions = getattr(model.base_model, name, None)
            if positions is not None:
                positions.requires_grad_(False)
    return parameter_counts(model)
