"""The Generator on an architecture without token types (a tiny Llama saved like a fine-tuned
SmolLM2): beams with the state path, in float32 and with int8 dynamic quantization."""

from __future__ import annotations

import pytest
import torch

from datatuner_core.generate import Generator

from .test_state_lm import DATA, llama


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from datatuner_core.tokenizer import build_tokenizer

    from .test_state_lm import SPECIALS, TEXT

    corpus = [DATA, TEXT, "Aarhus is in Denmark.", "The airport serves the city of Aarhus."] * 5
    tok = build_tokenizer("scratch:tiny", corpus, SPECIALS, vocab_size=400)
    path = tmp_path_factory.mktemp("llama")
    llama(tok, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


ROWS = [
    {"id": "a", "linearized": DATA, "entities": ["Aarhus Airport"]},
    {"id": "b", "linearized": "<subject> X <predicate> y <object> Z", "entities": ["X"]},
    {"id": "c", "linearized": "   ", "entities": []},
]


def test_llama_beams_float_and_int8(llama_dir):
    plain = Generator(llama_dir, None, beams=3, max_new_tokens=6, rerank=False, threads=1)
    rows = plain.generate_rows(ROWS)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert [len(r["candidates"]) for r in rows] == [3, 3, 0]
    assert rows[2]["error"] == "empty linearization" and rows[2]["text"] is None
    for r in rows[:2]:
        scores = [c["lm_score"] for c in r["candidates"]]
        assert scores == sorted(scores, reverse=True) and r["text"] == r["candidates"][0]["text"]
    quantized = Generator(llama_dir, None, beams=3, max_new_tokens=6, rerank=False, int8=True)
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    # 2 blocks x (q, k, v, o, gate, up) quantized; the MLP output projections (activation
    # outliers) and the output head stay float
    assert sum(isinstance(m, dynamic) for m in quantized.model.modules()) == 2 * 6
    kept = sorted(n for n, m in quantized.model.named_modules() if type(m) is torch.nn.Linear)
    assert kept == ["lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    rows8 = quantized.generate_rows(ROWS[:2])
    assert [len(r["candidates"]) for r in rows8] == [3, 3]
    assert all(r["error"] is None and r["text"] is not None for r in rows8)


def test_greedy_gives_one_candidate_with_its_normalised_score(llama_dir):
    import math

    greedy = Generator(llama_dir, None, beams=1, max_new_tokens=6, rerank=False, threads=1)
    rows = greedy.generate_rows(ROWS[:2])
    assert [len(r["candidates"]) for r in rows] == [1, 1]
    assert all(r["error"] is None and math.isfinite(r["lm_score"]) for r in rows)
    assert all(r["lm_score"] < 0 for r in rows)  # a mean log-probability
