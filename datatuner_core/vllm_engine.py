"""`generate.engine: vllm`: the LM's candidates from vLLM (paged KV cache, continuous batching)
instead of HF `generate`; the classifier scoring, the coverage retry and the choice stay the
Generator's.

vLLM serves the serving export (`serving.py`): the `<text>` state folded into the input
embeddings, so the tokens it generates are embedded exactly as the state LM embeds them, and each
prompt goes in as its embeddings `E[ids] + E[states]` (computed by the Generator's own HF model,
the same tensors its HF path feeds `generate`).

Candidates: the greedy text first (the top candidate, what `beams: 1` gives on the HF path),
then `beams - 1` sampled texts (`SAMPLE_TEMPERATURE`, `SAMPLE_TOP_P`, seeded per request):
vLLM's beam search does not take prompt embeddings. Each candidate's score is its summed token
log-probability divided by its length ** `length_penalty`, as on the HF path. Installed with the
`[gpu]` extra (`pip install -e '.[gpu]'`), never by `make setup`; `benchmarks/gpu_engine.py`
checks it against the HF path on a GPU.
"""

from __future__ import annotations

SAMPLE_TEMPERATURE = 0.7  # not tuned: no GPU has run this path yet (docs/models.md)
SAMPLE_TOP_P = 0.95
SEED = 0


def available() -> bool:
    """vLLM importable and a CUDA device present."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def check_usable(engine: str) -> None:
    """Fail early, with one line, when `generate.engine: vllm` cannot run: before any stage
    starts, not after hours of training. vLLM must import here (the workers run the same
    environment), and without a Ray cluster (`RAY_ADDRESS`) this machine needs a CUDA GPU."""
    import importlib.util
    import os

    if engine != "vllm":
        return
    if importlib.util.find_spec("vllm") is None:
        raise ValueError(
            "generate.engine: vllm needs the [gpu] extra: pip install -e '.[gpu]' "
            "(or set generate.engine: auto)"
        )
    import torch

    if not os.environ.get("RAY_ADDRESS") and not torch.cuda.is_available():
        raise ValueError(
            "generate.engine: vllm needs a CUDA GPU and this machine has none (and no "
            "RAY_ADDRESS names a cluster with one); set generate.engine: auto"
        )


class VLLMEngine:
    """A vLLM `LLM` over the serving export of one trained LM."""

    def __init__(self, served_dir: str, *, context: int, gpu_memory_utilization: float = 0.5):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise RuntimeError(
                "generate.engine: vllm needs the [gpu] extra: pip install -e '.[gpu]' "
                f"({type(exc).__name__}: {exc})"
            ) from None
        self.llm = LLM(
            model=served_dir,
            enable_prompt_embeds=True,
            trust_remote_code=False,
            dtype="bfloat16",
            max_model_len=context,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=SEED,
        )

    def candidates(
        self, embeds: list, *, beams: int, max_new_tokens: int, eos: int, length_penalty: float
    ) -> list[list[tuple[list[int], float]]]:
        """Per prompt (an unpadded [T, H] embedding tensor): `beams` (token ids cut at `eos`,
        length-normalised score) pairs, the greedy one first."""
        from vllm import SamplingParams

        common = dict(max_tokens=max_new_tokens, stop_token_ids=[eos], logprobs=0,
                      detokenize=False, skip_special_tokens=False)  # fmt: skip
        requests = [{"prompt_embeds": e} for e in embeds]
        greedy = self.llm.generate(
            requests, SamplingParams(n=1, temperature=0.0, **common), use_tqdm=False
        )
        sampled = None
        if beams > 1:
            sampled = self.llm.generate(
                requests,
                [
                    SamplingParams(
                        n=beams - 1,
                        temperature=SAMPLE_TEMPERATURE,
                        top_p=SAMPLE_TOP_P,
                        seed=SEED + i,
                        **common,
                    )
                    for i in range(len(requests))
                ],
                use_tqdm=False,
            )
        out = []
        for i, request in enumerate(greedy):
            outputs = list(request.outputs) + (list(sampled[i].outputs) if sampled else [])
            out.append([_candidate(o, eos, length_penalty) for o in outputs])
        return out


def _candidate(output, eos: int, length_penalty: float) -> tuple[list[int], float]:
    """(token ids before `eos`, summed log-probability / length ** length_penalty)."""
    tokens = list(output.token_ids)
    n = tokens.index(eos) + 1 if eos in tokens else len(tokens)
    logprob = output.cumulative_logprob
    if logprob is None and output.logprobs:  # per step: {token: Logprob}
        logprob = sum(step[t].logprob for step, t in zip(output.logprobs, tokens, strict=False))
    return tokens[: n - 1] if eos in tokens else tokens, float(logprob or 0.0) / max(n, 1) ** (
        length_penalty
    )
