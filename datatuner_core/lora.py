"""Low-rank adapters (LoRA) for the LM's decoder blocks, without `peft` (issue 22, item 2).

Fine-tuning every weight of a pretrained LM on 6,000 WebNLG records teaches it the seen categories
and costs it some of what it knew of the world; the unseen categories are where that shows. LoRA
keeps every pretrained weight as it is and learns, beside each linear layer `W` of the decoder
blocks, a low-rank update `(alpha / rank) · B A` (`A`: rank × in, `B`: out × rank, `B` starting at
zero, so the adapted model starts as the pretrained one).

- `add_adapters(model, rank, alpha, skip_layers)`: freezes every parameter of the base model
  (embeddings, blocks, norms, a tied output layer) except an output layer that `state_lm.freeze`
  untied beforehand, and wraps every `nn.Linear` / GPT-2 `Conv1D` of the blocks above the bottom
  `skip_layers` (whose backward pass is then skipped, as with `lm.freeze_layers`).
- `merge_adapters(model)`: folds each update into its layer's weight and puts the plain layer
  back: the saved model is a plain `transformers` checkpoint (safetensors) that loads and
  generates with no adapter code; the logits are the adapted model's (tests/core/test_lora.py).
"""

from __future__ import annotations

import math

import torch

from .state_lm import decoder_layers


def _is_conv1d(module) -> bool:
    """GPT-2's `Conv1D`: a linear layer whose weight is stored [in, out]."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _adaptable(module) -> bool:
    return isinstance(module, torch.nn.Linear) or _is_conv1d(module)


class LoRALinear(torch.nn.Module):
    """`base(x) + (alpha / rank) · x Aᵀ Bᵀ`, `base` frozen."""

    def __init__(self, base: torch.nn.Module, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        weight = base.weight
        in_features, out_features = (
            (weight.shape[0], weight.shape[1])
            if _is_conv1d(base)
            else (weight.shape[1], weight.shape[0])
        )
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        factory = {"dtype": weight.dtype, "device": weight.device}
        self.lora_a = torch.nn.Parameter(torch.empty(rank, in_features, **factory))
        self.lora_b = torch.nn.Parameter(torch.zeros(out_features, rank, **factory))
        torch.nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (x.to(self.lora_a.dtype) @ self.lora_a.t()) @ self.lora_b.t()
        return self.base(x) + (update * self.scale).to(x.dtype)

    def delta(self) -> torch.Tensor:
        """The update in the base weight's own layout ([out, in] Linear, [in, out] Conv1D)."""
        delta = (self.lora_b @ self.lora_a) * self.scale
        return delta.t() if _is_conv1d(self.base) else delta

    def merged(self) -> torch.nn.Module:
        """The base layer with the update folded into its weight."""
        with torch.no_grad():
            weight = self.base.weight
            weight.add_(self.delta().to(weight.dtype))
        return self.base


def add_adapters(model, rank: int, alpha: float, skip_layers: int = 0) -> int:
    """Freeze the base model and wrap the linear layers of its decoder blocks above the bottom
    `skip_layers` in `LoRALinear`s; an untied output layer (`state_lm.freeze` with embeddings
    frozen) keeps training. Returns the number of adapted layers."""
    stack = decoder_layers(model)
    if stack is None:
        raise ValueError(f"{type(model).__name__}: cannot find its decoder blocks for LoRA")
    if skip_layers >= len(stack):
        raise ValueError(
            f"lm.lora_rank with freeze_layers={skip_layers}: the model has {len(stack)} blocks, "
            "none would have adapters"
        )
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    untied_head = head is not None and head.weight is not embed.weight and head.weight.requires_grad
    model.requires_grad_(False)
    if untied_head:
        head.requires_grad_(True)
    adapted = 0
    for block in stack[skip_layers:]:
        targets = [(n, m) for n, m in block.named_modules() if n and _adaptable(m)]
        for name, module in targets:
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name) if parent_name else block
            setattr(parent, child, LoRALinear(module, rank, alpha))
            adapted += 1
    return adapted


def merge_adapters(model) -> int:
    """Fold every `LoRALinear` of `model` back into a plain layer; returns how many."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, module in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.merged())
    return len(wrapped)
