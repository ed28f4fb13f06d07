"""`generate.engine`: which engine decodes on which machine, the keys only the hf engine serves,
a clear error where vLLM cannot run, and the Generator's engine path end to end on CPU with a
plain-`transformers` engine over the serving export (the interface vLLM fills on a GPU): the same
greedy texts and scores as the hf path."""

from __future__ import annotations

import importlib.util
import types

import pytest
import torch

from datatuner_core import vllm_engine
from datatuner_core.config import GenerateConfig
from datatuner_core.generator import Generator, resolve_engine
from datatuner_core.serving import export_serving, prompt_embeds

from .test_generate import ROWS
from .test_generate import llama_dir as llama_dir  # noqa: F401 - the module-scoped fixture


def test_auto_is_hf_without_a_gpu_and_where_hf_only_keys_are_set(monkeypatch):
    assert resolve_engine(GenerateConfig(), cuda=False) == ("hf", "auto: no GPU")
    assert resolve_engine(GenerateConfig(engine="hf"), cuda=True)[0] == "hf"
    engine, why = resolve_engine(GenerateConfig(coverage_decoding=True), cuda=True)
    assert engine == "hf" and "coverage_decoding" in why
    monkeypatch.setattr(vllm_engine, "available", lambda: False)
    assert resolve_engine(GenerateConfig(), cuda=True) == (
        "hf", "auto: vLLM is not installed (the [gpu] extra)",
    )  # fmt: skip
    monkeypatch.setattr(vllm_engine, "available", lambda: True)
    assert resolve_engine(GenerateConfig(coverage_retry=True, coverage=True), cuda=True)[0] == (
        "vllm"  # the retry decodes with hf beside it
    )


def test_vllm_refuses_what_it_cannot_serve_by_name():
    with pytest.raises(ValueError, match="does not serve coverage_decoding, no_repeat_ngram"):
        GenerateConfig(engine="vllm", coverage_decoding=True, no_repeat_ngram=3)
    with pytest.raises(ValueError, match="int8"):
        GenerateConfig(engine="vllm", int8=True)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        resolve_engine(GenerateConfig(engine="vllm"), cuda=False)
    assert "engine" not in GenerateConfig().decoding()  # auto: stages made before stay current
    assert GenerateConfig(engine="hf").decoding()["engine"] == "hf"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_without_the_gpu_extra_the_engine_names_it(tmp_path):
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[gpu\]'"):
        vllm_engine.VLLMEngine(str(tmp_path), context=64)


def test_candidate_scores_are_length_normalised_and_cut_at_eos():
    out = types.SimpleNamespace(token_ids=[5, 6, 2], cumulative_logprob=-3.0, logprobs=None)
    assert vllm_engine._candidate(out, eos=2, length_penalty=1.0) == ([5, 6], -1.0)
    capped = types.SimpleNamespace(token_ids=[5, 6, 7, 8], cumulative_logprob=-2.0, logprobs=None)
    assert vllm_engine._candidate(capped, eos=2, length_penalty=0.0) == ([5, 6, 7, 8], -2.0)
    steps = [{5: types.SimpleNamespace(logprob=-0.5)}, {2: types.SimpleNamespace(logprob=-1.5)}]
    per_step = types.SimpleNamespace(token_ids=[5, 2], cumulative_logprob=None, logprobs=steps)
    assert vllm_engine._candidate(per_step, eos=2, length_penalty=1.0) == ([5], -1.0)


class ExportEngine:
    """The engine interface (`VLLMEngine.candidates`) served by plain `transformers` over the
    serving export: greedy decoding of each unpadded prompt embedding, no state hook."""

    def __init__(self, served_dir: str):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(served_dir, use_safetensors=True).eval()
        self.calls = 0

    def candidates(self, embeds, *, beams, max_new_tokens, eos, length_penalty):
        from datatuner_core.generator import _greedy_scores

        self.calls += 1
        found = []
        for e in embeds:
            with torch.no_grad():
                out = self.model.generate(
                    inputs_embeds=e[None],
                    attention_mask=torch.ones(1, e.size(0), dtype=torch.long),
                    max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                    pad_token_id=eos, output_scores=True, return_dict_in_generate=True,
                )  # fmt: skip
            tokens = out.sequences[0].tolist()  # inputs_embeds alone: only the new tokens
            score = _greedy_scores(out, [tokens], eos, length_penalty)[0]
            found.append([(tokens[: tokens.index(eos)] if eos in tokens else tokens, score)])
        return found


def test_the_engine_path_gives_the_hf_paths_greedy_texts(llama_dir, tmp_path):  # noqa: F811
    """The Generator with an engine over the serving export (prompts as embeddings, generated
    tokens through the folded matrix) returns the hf path's greedy texts and scores."""
    hf = Generator(llama_dir, None, beams=1, max_new_tokens=8, rerank=False, threads=1)
    expected = hf.generate_rows(ROWS)
    served = tmp_path / "served"
    card = export_serving(llama_dir, str(served))
    via_engine = Generator(llama_dir, None, beams=1, max_new_tokens=8, rerank=False, threads=1)
    via_engine._engine = engine = ExportEngine(str(served))
    got = via_engine.generate_rows(ROWS)
    assert engine.calls >= 1
    assert [r["text"] for r in got] == [r["text"] for r in expected]
    assert [r["text"] is not None for r in got] == [True, True, False]
    for a, b in zip(got[:2], expected[:2], strict=True):
        assert a["lm_score"] == pytest.approx(b["lm_score"], abs=1e-4)
    # the engine's prompts are the export's own prompt embeddings
    ids = torch.tensor([[card["text_token_id"]]])
    assert torch.allclose(
        prompt_embeds(engine.model, ids, ids, card["text_token_id"]),
        hf.model.get_input_embeddings()(ids) * 2,
        atol=1e-6,
    )
