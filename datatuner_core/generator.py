"""The generator (method §4, §7): the LM and the optional fidelity classifier in one process,
turning linearized rows into `generations` rows. Beam search with a KV cache over batches of
similar length, every beam kept with its length-normalised score, the classifier scoring every
candidate in the same pass, the choice by label priority then combined score
(`candidate_choice.score_and_choose`).

A record that cannot be generated (empty linearization, a failing forward pass) gets a row with
`text = null` and its `error`; it never fails its batch.

With `coverage_decoding`, a logits processor (`coverage.CoverageLogitsProcessor`) keeps each
beam from ending while one of its record's entities is unmentioned (bounded by
`coverage_max_hold`), optionally favouring the missing entities' tokens (`coverage_bonus`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from . import storage
from .candidate_choice import score_and_choose
from .config import GenerateConfig
from .quantize import quantize_int8

# the section's keys a Generator reads, as attributes of the same name
_DECODING_KEYS = ("beams", "max_new_tokens", "batch_size", "batch_tokens", "rerank", "weight",
                  "coverage", "label_first", "length_penalty", "repetition_penalty",
                  "no_repeat_ngram", "coverage_decoding", "coverage_max_hold", "coverage_bonus",
                  "verdict", "max_new_tokens_ratio", "max_new_tokens_slack", "search")  # fmt: skip


def model_version(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


class Generator:
    """The LM and the optional classifier in one process; call it on batches of rows."""

    def __init__(
        self,
        lm_uri: str,
        classifier_uri: str | None = None,
        section: GenerateConfig | dict | None = None,
        *,
        storage_options: dict | None = None,
        threads: int | None = None,
        **overrides,
    ):
        """`section`: the `generate` config section (its defaults when None), read whole;
        `overrides`: keys of that section set here (a test, a benchmark), validated as the
        config validates them: an unknown key or a bad value fails, nothing is re-declared."""
        import torch

        cfg = section if isinstance(section, GenerateConfig) else GenerateConfig(**(section or {}))
        if overrides:
            cfg = GenerateConfig(**{**cfg.model_dump(), **overrides})
        self.cfg = cfg
        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._copies: list = []  # temporary local copies of remote models, kept while in use
        self._load_lm(lm_uri, cfg.int8, storage_options, cfg.dtype)
        self.engine_name, self.engine_why = resolve_engine(cfg, self.device == "cuda")
        self._engine = None  # a batch engine (vllm); None = hf `generate`
        if self.device == "cuda":  # on a CPU it is always hf: nothing to say
            import sys

            print(f"[generate] engine {self.engine_name} ({self.engine_why})", file=sys.stderr)
        if self.engine_name == "vllm":
            self._engine = self._start_vllm(lm_uri, storage_options)
        for key in _DECODING_KEYS:
            setattr(self, key, getattr(cfg, key))
        self.coverage_retry = cfg.coverage_retry and not cfg.coverage_decoding
        self.retried = 0  # records decoded again by coverage_retry
        self.scorer = None
        self.version = self._load_classifier(lm_uri, classifier_uri, storage_options)

    def _load_lm(
        self, lm_uri: str, int8: bool, storage_options: dict | None, dtype: str = "auto"
    ) -> None:
        """The tokenizer and the LM (in `resolve_dtype`'s dtype, or `int8` on a CPU), the
        linearization mode its training card records, its special tokens and its context."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .lm import default_vocab
        from .trained_models import CARD_FILE

        lm_dir = storage.local_dir(lm_uri, self._copies, storage_options)
        self.tokenizer = AutoTokenizer.from_pretrained(lm_dir, trust_remote_code=False)
        name, why = resolve_dtype(dtype, self.device == "cuda")
        if why:
            import sys

            print(f"[generate] LM in {name} ({why})", file=sys.stderr)
        self.lm_dtype = name  # the resolved dtype (cfg.dtype says what was asked)
        self.model = AutoModelForCausalLM.from_pretrained(
            lm_dir, use_safetensors=True, trust_remote_code=False, dtype=getattr(torch, name)
        ).to(self.device)
        self.model.eval()
        self.fused_gelu = fuse_tanh_gelu(self.model)
        self.int8 = bool(int8) and self.device == "cpu"
        if self.int8:
            self.model = quantize_int8(self.model)
        card = storage.read_json(storage.join_uri(lm_dir, CARD_FILE), missing_ok=True) or {}
        self.mode = card.get("task_config", {}).get("mode", "fine")  # a card-less model: fine
        self.vocab = default_vocab(self.tokenizer)
        self.context = getattr(self.model.config, "n_positions", None) or getattr(
            self.model.config, "max_position_embeddings", 1024
        )

    def _start_vllm(self, lm_uri: str, storage_options: dict | None):
        """A vLLM engine over the LM's serving export, written to a temporary folder."""
        import tempfile

        from .serving import export_serving
        from .vllm_engine import VLLMEngine

        tmp = tempfile.TemporaryDirectory(prefix="datatuner-served-")
        self._copies.append(tmp)
        export_serving(lm_uri, tmp.name, storage_options)
        return VLLMEngine(tmp.name, context=self.context)

    def _load_classifier(
        self, lm_uri: str, classifier_uri: str | None, storage_options: dict | None
    ) -> str:
        """The fidelity scorer, when a classifier is given; returns the rows' model version."""
        version = model_version(lm_uri)
        if classifier_uri is not None:
            from .classifier_scorer import FidelityScorer

            self.scorer = FidelityScorer(classifier_uri, storage_options=storage_options)
            version = f"{version}+{model_version(classifier_uri)}"
        return version

    # ------------------------------------------------------------------ prompts

    def _prompt(self, linearized: str) -> tuple[list[int], list[int], bool]:
        """(input_ids, state ids, truncated) of `<data> D <text>`, cut to leave room for text."""
        from .lm import encode_prompt

        room = max(1, self.context - self.max_new_tokens - 2)
        prompt = encode_prompt(self.tokenizer, linearized, self.mode, room, self.vocab)
        return prompt["input_ids"], prompt["token_type_ids"], prompt["truncated"]

    def new_token_cap(self, prompt_tokens: int) -> int:
        """The new-token budget of a record with a prompt of `prompt_tokens` tokens:
        `max_new_tokens`, or with `max_new_tokens_ratio` ratio × prompt + slack rounded up to a
        multiple of 8 (few distinct caps: batches stay full), never above `max_new_tokens`.
        A text that has not ended by then is a runaway (repeating itself): a 1-triple record
        would otherwise keep its whole batch decoding to the budget of the longest record."""
        if self.max_new_tokens_ratio is None:
            return self.max_new_tokens
        cap = math.ceil(self.max_new_tokens_ratio * prompt_tokens) + self.max_new_tokens_slack
        return max(1, min(self.max_new_tokens, -(-cap // 8) * 8))

    # ------------------------------------------------------------------ beam search

    def _beam_search(
        self,
        prompts: list[tuple[list[int], list[int]]],
        max_new_tokens: int | None = None,
        entities: list[list[str]] | None = None,
        coverage_decoding: bool | None = None,
    ) -> list[list[tuple]]:
        """Batched beam search with a KV cache; per prompt, `beams` (text, score) in beam order.
        The score is the sum of token log-probabilities divided by length ** `length_penalty`.
        `max_new_tokens`: this batch's budget (default: the generator's). `entities`: per prompt,
        the record's entities, for coverage-aware decoding (`coverage_decoding`; the argument,
        when given, overrides the generator's)."""
        import torch

        from .state_lm import generation_inputs, text_state

        pad = self.vocab.pad
        input_ids, types, mask = (t.to(self.device) for t in _left_pad(prompts, pad))
        prompt = generation_inputs(self.model, input_ids, types)  # E[ids] + E[states]
        coverage = self._coverage_processor(entities, len(prompts), coverage_decoding)
        if self._own_search_serves(coverage):
            return self._own_beam_search(prompt["inputs_embeds"], mask, max_new_tokens)
        with torch.inference_mode(), text_state(self.model, self.vocab.text):
            out = self.model.generate(
                **prompt,
                attention_mask=mask,
                num_beams=self.beams,
                num_return_sequences=self.beams,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                do_sample=False,
                early_stopping=self.beams > 1,
                length_penalty=self.length_penalty,
                repetition_penalty=self.repetition_penalty,
                no_repeat_ngram_size=self.no_repeat_ngram,
                eos_token_id=self.vocab.eos,
                pad_token_id=pad,
                output_scores=True,
                return_dict_in_generate=True,
                **coverage,
            )
        return self._beams_of(out, input_ids.size(1), len(prompts))

    def _own_search_serves(self, coverage: dict) -> bool:
        """Whether `beam_search.beam_search` runs this batch (`generate.search: own`, plain
        decoding: no logits processor, n-gram ban or repetition penalty)."""
        return (self.search == "own" and not coverage and not self.no_repeat_ngram
                and self.repetition_penalty == 1.0)  # fmt: skip

    def _own_beam_search(self, embeds, mask, max_new_tokens: int | None) -> list[list[tuple]]:
        """Per prompt, `beams` (text, score) from the shrinking-batch beam search."""
        import torch

        from .beam_search import beam_search

        embed = self.model.get_input_embeddings()
        with torch.inference_mode():
            text = embed(torch.tensor([self.vocab.text], device=self.device))[0]  # [H]

        def step_embed(ids):  # a generated token has the <text> state
            return (embed(ids) + text)[:, None]

        found = beam_search(
            self.model, embeds, mask, beams=self.beams,
            budget=max_new_tokens or self.max_new_tokens, eos=self.vocab.eos,
            length_penalty=self.length_penalty, step_embed=step_embed,
        )  # fmt: skip
        decode = self.tokenizer.decode
        return [
            [(decode(tokens, skip_special_tokens=True).strip(), score) for tokens, score in beams]
            for beams in found
        ]

    def _candidates(self, prompts, max_new_tokens: int, entities) -> list[list[tuple]]:
        """Per prompt, `beams` (text, score): from the engine (`generate.engine`)."""
        if self._engine is None:
            return self._beam_search(prompts, max_new_tokens, entities)
        return self._engine_candidates(prompts, max_new_tokens)

    def _engine_candidates(self, prompts, max_new_tokens: int) -> list[list[tuple]]:
        """vLLM's candidates: each prompt as its embeddings `E[ids] + E[states]` (unpadded),
        the same tensors the hf path gives `generate`."""
        import torch

        from .state_lm import embed_with_states

        embeds = []
        with torch.inference_mode():
            for ids, states in prompts:
                ids_t = torch.tensor([ids], device=self.device)
                states_t = torch.tensor([states], device=self.device)
                embeds.append(embed_with_states(self.model, ids_t, states_t)[0].cpu())
        found = self._engine.candidates(
            embeds, beams=self.beams, max_new_tokens=max_new_tokens, eos=self.vocab.eos,
            length_penalty=self.length_penalty,
        )  # fmt: skip
        decode = self.tokenizer.decode
        return [
            [(decode(tokens, skip_special_tokens=True).strip(), score) for tokens, score in beams]
            for beams in found
        ]

    def _beams_of(self, out, width: int, n: int) -> list[list[tuple]]:
        """`generate`'s output for `n` prompts of `width` tokens → per prompt, `beams` (text,
        score) pairs in beam order, each text cut at `<eos>`."""
        sequences = out.sequences[:, width:].tolist()  # [B * beams, new tokens]
        if getattr(out, "sequences_scores", None) is not None:
            scores = out.sequences_scores.tolist()  # [B * beams]
        else:  # greedy (beams = 1): the same length-normalised log-probability, from the steps
            scores = _greedy_scores(out, sequences, self.vocab.eos, self.length_penalty)
        results = []
        for i in range(n):
            beams = []
            for j in range(i * self.beams, (i + 1) * self.beams):
                tokens = sequences[j]
                if self.vocab.eos in tokens:
                    tokens = tokens[: tokens.index(self.vocab.eos)]
                text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                beams.append((text, float(scores[j])))
            results.append(beams)
        return results

    def _coverage_processor(
        self, entities: list[list[str]] | None, n: int, on: bool | None = None
    ) -> dict:
        """`generate` keywords for coverage-aware decoding (none when it is off)."""
        if not (self.coverage_decoding if on is None else on):
            return {}
        from transformers import LogitsProcessorList

        from .coverage import CoverageLogitsProcessor

        processor = CoverageLogitsProcessor(
            self.tokenizer, entities or [[] for _ in range(n)], self.vocab.eos,
            max_hold=self.coverage_max_hold, bonus=self.coverage_bonus,
        )  # fmt: skip
        return {"logits_processor": LogitsProcessorList([processor])}

    # ------------------------------------------------------------------ rows

    def generate_rows(self, rows: list[dict]) -> list[dict]:
        """Generations rows for linearized rows, in input order."""
        out: list[dict | None] = [None] * len(rows)
        todo = []
        for i, row in enumerate(rows):
            if not (row.get("linearized") or "").strip():
                out[i] = _generations_row(
                    row, None, self.version, truncated=False, error="empty linearization"
                )
                continue
            ids, states, truncated = self._prompt(row["linearized"])
            todo.append((len(ids), i, ids, states, truncated, row.get("entities") or []))
        todo.sort(key=lambda t: (t[0], t[1]))  # similar lengths together: little padding
        for chunk in self._chunks(todo):
            for (_, i, _, _, truncated, _), beams in zip(chunk, self._generate_chunk(chunk)):
                failed = isinstance(beams, str)
                out[i] = _generations_row(
                    rows[i],
                    None if failed else beams,
                    self.version,
                    truncated=truncated,
                    error=beams if failed else None,
                )
        self._score_and_choose(out)  # rows without candidates keep their error
        if self.cfg.trim_memory:
            release_freed_memory()
        return out

    def _chunks(self, todo: list[tuple]) -> Iterator[list[tuple]]:
        """Batches of up to `batch_size` length-sorted prompts that share one new-token cap, so
        that a record's budget is its own, whatever else is in the block, and that hold at most
        `batch_tokens` tokens (records x beams x (longest prompt + cap); at least one record)."""
        chunk: list[tuple] = []
        cap = None
        for item in todo:
            item_cap = self.new_token_cap(item[0])
            tokens = (len(chunk) + 1) * self.beams * (item[0] + item_cap)  # item: the longest
            full = len(chunk) == self.batch_size or (
                self.batch_tokens is not None and tokens > self.batch_tokens
            )
            if chunk and (full or item_cap != cap):
                yield chunk
                chunk = []
            chunk.append(item)
            cap = item_cap
        if chunk:
            yield chunk

    def _generate_chunk(self, chunk) -> list:
        """Beams per prompt of the chunk; a failing batch is retried one record at a time, and a
        record that still fails gets its error message instead of beams."""
        prompts = [(ids, states) for _, _, ids, states, _, _ in chunk]
        entities = [item[5] for item in chunk]
        cap = self.new_token_cap(chunk[0][0])
        try:
            results = self._candidates(prompts, cap, entities)
        except Exception:  # noqa: BLE001 - isolate the failing record below
            results = []
            for prompt, ents in zip(prompts, entities, strict=True):
                try:
                    results.append(self._candidates([prompt], cap, [ents])[0])
                except Exception as exc:  # noqa: BLE001 - recorded on the row
                    results.append(f"generation failed: {type(exc).__name__}: {exc}"[:500])
        if self.coverage_retry:
            self._retry_with_coverage(prompts, entities, results, cap)
        return results

    def _retry_with_coverage(self, prompts, entities, results: list, cap: int) -> None:
        """`coverage_retry`: the records whose every beam leaves one of their entities
        unmentioned are decoded again with coverage-aware decoding; the new beams that mention
        more of the record than the best plain beam join its candidates, after the plain ones (so
        the top beam stays the plain decoder's, and a retried beam is chosen only for coverage).
        A retry that fails leaves the plain beams as they are."""
        from .rerank import missing_entities

        todo = []
        for k, beams in enumerate(results):
            if isinstance(beams, str) or not entities[k]:
                continue
            best = min(missing_entities(text, entities[k]) for text, _ in beams)
            if best:
                todo.append((k, best))
        if not todo:
            return
        try:
            again = self._beam_search(
                [prompts[k] for k, _ in todo], cap, [entities[k] for k, _ in todo], True
            )
        except Exception:  # noqa: BLE001 - the plain beams stand
            return
        self.retried += len(todo)
        for (k, best), beams in zip(todo, again, strict=True):
            known = {text for text, _ in results[k]}
            results[k] = results[k] + [
                (text, score)
                for text, score in beams
                if text not in known and missing_entities(text, entities[k]) < best
            ]

    def _score_and_choose(self, rows: list[dict]) -> None:
        score_and_choose(
            rows, self.scorer, rerank=self.rerank, coverage=self.coverage, weight=self.weight,
            label_first=self.label_first, batch_size=max(self.batch_size, 32),
            verdict=self.verdict,
        )  # fmt: skip

    def __call__(self, batch):
        """Ray Data entry point: a pyarrow batch of linearized rows → a generations table."""
        import pyarrow as pa

        from .schema import GENERATIONS

        return pa.Table.from_pylist(self.generate_rows(batch.to_pylist()), schema=GENERATIONS)


def release_freed_memory() -> bool:
    """Return the heap memory freed so far to the OS (glibc `malloc_trim(0)`); False where the
    C library has no such call (macOS, musl). glibc keeps freed blocks in its arenas for reuse:
    after a batch of long records (large KV caches and logits) a generator's private memory
    stays at that batch's peak, so over a dump it climbs with the longest batch seen
    (docs/models.md, `benchmarks/results/trim-memory-dump-1e4.json`)."""
    import ctypes
    import ctypes.util

    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if not _MALLOC_TRIM:
        return False
    _MALLOC_TRIM(0)
    return True


_MALLOC_TRIM = None  # glibc's malloc_trim, looked up once; False where there is none


def fuse_tanh_gelu(model) -> int:
    """GPT-2's activation (`gelu_new`: the tanh approximation written as seven elementwise ops,
    each a pass over the [rows, tokens, 4 x hidden] activations) replaced by the same formula as
    one kernel (`torch.nn.functional.gelu(approximate="tanh")`, transformers' `gelu_pytorch_tanh`)
    for inference. On a dump's long prompts the tiny LM's decoding takes 1.33x less time
    (`benchmarks/decode_levers.py`); outputs equal to float rounding. Returns how many modules
    were replaced (0 for models without it: Llama's SiLU is one kernel already)."""
    from transformers.activations import NewGELUActivation, PytorchGELUTanh

    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, PytorchGELUTanh())
                swapped += 1
    return swapped


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles): elsewhere torch
    emulates it, slower than float32."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def resolve_dtype(dtype: str, cuda: bool, native_bf16: bool | None = None) -> tuple[str, str]:
    """(torch dtype name, why when it is not what was asked or not the obvious default) for
    `generate.dtype` on this hardware: auto = bfloat16 on a GPU and float32 on a CPU; bfloat16
    on a CPU only where it is native (`cpu_has_bf16`)."""
    if dtype == "auto":
        return ("bfloat16", "") if cuda else ("float32", "")
    if dtype == "bfloat16" and not cuda:
        if native_bf16 is None:
            native_bf16 = cpu_has_bf16()
        if not native_bf16:
            return "float32", "generate.dtype bfloat16 asked, but this CPU has no native bf16"
        return "bfloat16", "generate.dtype bfloat16, native on this CPU"
    return dtype, ""


def resolve_engine(cfg: GenerateConfig, cuda: bool) -> tuple[str, str]:
    """(`hf` or `vllm`, why) for `generate.engine` on this machine (`cuda`: a GPU is used)."""
    from .vllm_engine import available

    if cfg.engine == "hf":
        return "hf", "generate.engine: hf"
    if cfg.engine == "vllm":
        if not cuda:
            raise RuntimeError("generate.engine: vllm needs a CUDA GPU; set generate.engine: hf")
        return "vllm", "generate.engine: vllm"
    if not cuda:
        return "hf", "auto: no GPU"
    if cfg.hf_only():
        return "hf", f"auto: {', '.join(cfg.hf_only())} need the hf engine"
    if not available():
        return "hf", "auto: vLLM is not installed (the [gpu] extra)"
    return "vllm", "auto: a GPU and vLLM"


def _left_pad(prompts: list[tuple[list[int], list[int]]], pad: int) -> tuple:
    """(input ids, state ids, attention mask) of (ids, states) prompts, left-padded with `pad`
    to the longest: three [B, T] tensors (the mask 1 on real tokens)."""
    import torch

    width = max(len(ids) for ids, _ in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)  # [B, T]
    types = torch.full((len(prompts), width), pad, dtype=torch.long)  # [B, T] state ids
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # [B, T] 1 = real token
    for row, (ids, states) in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        types[row, width - len(ids) :] = torch.tensor(states)
        mask[row, width - len(ids) :] = 1
    return input_ids, types, mask


def _greedy_scores(out, sequences: list[list[int]], eos: int, length_penalty: float) -> list[float]:
    """Sum of the chosen tokens' log-probabilities up to and including `eos`, divided by that
    length ** `length_penalty` (what beam search reports as `sequences_scores`)."""
    import torch

    steps = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # [B, new, V]
    chosen = torch.tensor(sequences, device=steps.device)[:, : steps.size(1)]
    token_lp = steps.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()  # [B, new]
    scores = []
    for tokens, lps in zip(sequences, token_lp, strict=True):
        n = tokens.index(eos) + 1 if eos in tokens else len(lps)
        scores.append(sum(lps[:n]) / max(n, 1) ** length_penalty)
    return scores


def _generations_row(row: dict, beams, version: str, *, truncated: bool, error: str | None) -> dict:
    """The generations row of a linearized row: its candidates (text, LM score; not yet
    classified) and the fields it carries over; the text is chosen later."""
    candidates = [
        {"text": t, "lm_score": s, "fidelity_label": None, "fidelity_score": None}
        for t, s in (beams or [])
    ]
    return {
        "id": row["id"],
        "linearized": row.get("linearized"),
        "text": None,
        "fidelity_label": None,
        "fidelity_score": None,
        "lm_score": None,
        "candidates": candidates,
        "model_version": version,
        "references": row.get("references") or [],
        "entities": row.get("entities") or [],
        "category": row.get("category"),
        "source": row.get("source"),
        "split": row.get("split"),
        "data": row.get("data"),
        "truncated": truncated,
        "error": error,
    }
