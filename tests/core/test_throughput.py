"""benchmarks.throughput's baseline is the original's decoder (one record at a time, no KV cache)
running the same beam search as the Generator: the same beams and scores, so the benchmark's
ratio compares the way of decoding, not two different searches."""

from __future__ import annotations

import pytest

from benchmarks.throughput import per_record_beam_search
from datatuner_core.generator import Generator

from .test_generate import ROWS
from .test_generate import llama_dir as llama_dir  # noqa: F401 - the module-scoped fixture


@pytest.mark.parametrize("beams", [1, 3])
def test_the_per_record_decoder_finds_the_generators_beams_without_a_cache(llama_dir, beams):  # noqa: F811
    gen = Generator(llama_dir, None, beams=beams, max_new_tokens=6, rerank=False, threads=1)
    for row in ROWS[:2]:
        (expected,) = gen.generate_rows([row])
        found = per_record_beam_search(gen, row["linearized"])
        assert [text for text, _ in found] == [c["text"] for c in expected["candidates"]]
        for (_, score), cand in zip(found, expected["candidates"], strict=True):
            assert score == pytest.approx(cand["lm_score"], abs=1e-4)


def test_the_per_record_decoder_re_encodes_the_whole_sequence_every_step(llama_dir, monkeypatch):  # noqa: F811
    """No cache: step k feeds the prompt plus k tokens, all of them, to the model."""
    gen = Generator(llama_dir, None, beams=2, max_new_tokens=5, rerank=False, threads=1)
    lengths = []
    forward = gen.model.forward

    def spy(*args, **kwargs):
        lengths.append(kwargs["inputs_embeds"].shape[1])
        assert not kwargs.get("past_key_values")
        return forward(*args, **kwargs)

    monkeypatch.setattr(gen.model, "forward", spy)
    prompt = len(gen._prompt(ROWS[0]["linearized"])[0])
    per_record_beam_search(gen, ROWS[0]["linearized"])
    assert lengths == [prompt + k for k in range(len(lengths))] and len(lengths) >= 2
