"""Dynamic int8 quantization of a causal LM for generation on CPUs without bf16."""

from __future__ import annotations

# MLP output projections see activation outliers (Llama's SwiGLU product): quantizing their
# inputs per tensor ruins the texts (docs/presets.md), so they stay float.
INT8_KEEP_FLOAT = ("down_proj", "fc2", "dense_4h_to_h")


def quantize_int8(model):
    """Dynamic int8 quantization of the blocks' `nn.Linear` layers (weights int8, activations
    quantized per batch; CPU only, fbgemm/onednn kernels): the generation-time lever on CPUs
    without bf16. The output projection and the MLP output projections (`INT8_KEEP_FLOAT`) stay
    float: docs/presets.md gives the speed and BLEU of this choice against quantizing every
    Linear."""
    import warnings

    import torch

    head = model.get_output_embeddings()
    names = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and module is not head
        and name.rsplit(".", 1)[-1] not in INT8_KEEP_FLOAT
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks the quantized tensor API as deprecated
        return torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8)
