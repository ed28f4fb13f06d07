"""Batch generation with reranking (method §4, §7): beam search with a KV cache over batches of
similar length, every beam kept with its length-normalised score, the fidelity classifier scoring
every candidate in the same pass, the choice by label priority then combined score.

`Generator` holds the LM (and the classifier) and turns linearized rows into `generations` rows;
`generate_stage` runs it on Ray Data (`map_batches` over an actor pool) and writes the stage.
A record that cannot be generated (empty linearization, a failing forward pass) gets a row with
`text = null` and its `error`; it never fails its batch.

With `coverage_decoding`, a logits processor (`coverage.CoverageLogitsProcessor`) keeps each
beam from ending while one of its record's entities is unmentioned (bounded by
`coverage_max_hold`), optionally favouring the missing entities' tokens (`coverage_bonus`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator

from . import fingerprints, stage_reader, stage_writer, storage
from .config import GenerateConfig
from .rerank import fidelity_verdict, missing_entities, rerank_candidates


def model_version(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


# MLP output projections see activation outliers (Llama's SwiGLU product): quantizing their
# inputs per tensor cost SmolLM2 22 BLEU points on WebNLG dev, so they stay float.
INT8_KEEP_FLOAT = ("down_proj", "fc2", "dense_4h_to_h")


def quantize_int8(model):
    """Dynamic int8 quantization of the blocks' `nn.Linear` layers (weights int8, activations
    quantized per batch; CPU only, fbgemm/onednn kernels): the generation-time lever on CPUs
    without bf16. The output projection and the MLP output projections (`INT8_KEEP_FLOAT`) stay
    float. Measured with benchmarks/decoding.py on 120 WebNLG dev records, SmolLM2 fine-tuned,
    beams 3, 2 cores: every Linear 1.47x faster at top-beam BLEU 34.8 against 58.6; this choice
    1.18x faster at 56.8."""
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


class Generator:
    """The LM and the optional classifier in one process; call it on batches of rows."""

    def __init__(
        self,
        lm_uri: str,
        classifier_uri: str | None = None,
        *,
        beams: int = 5,
        max_new_tokens: int = 80,
        batch_size: int = 32,
        rerank: bool = True,
        weight: float = 1.0,
        length_penalty: float = 1.0,
        repetition_penalty: float = 1.0,
        no_repeat_ngram: int = 0,
        coverage: bool = False,
        label_first: bool = True,
        int8: bool = False,
        max_new_tokens_ratio: float | None = None,
        max_new_tokens_slack: int = 16,
        coverage_decoding: bool = False,
        coverage_max_hold: int = 16,
        coverage_bonus: float = 0.0,
        coverage_retry: bool = False,
        verdict: bool = GenerateConfig.model_fields["verdict"].default,
        storage_options: dict | None = None,
        threads: int | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .lm import default_vocab
        from .training import CARD_FILE

        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._copies: list = []  # temporary local copies of remote models, kept while in use
        lm_dir = storage.local_dir(lm_uri, self._copies, storage_options)
        self.tokenizer = AutoTokenizer.from_pretrained(lm_dir, trust_remote_code=False)
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(
            lm_dir, use_safetensors=True, trust_remote_code=False, dtype=dtype
        ).to(self.device)
        self.model.eval()
        self.int8 = bool(int8) and self.device == "cpu"
        if self.int8:
            self.model = quantize_int8(self.model)
        card = storage.read_json(storage.join_uri(lm_dir, CARD_FILE), missing_ok=True) or {}
        self.mode = card.get("task_config", {}).get("mode", "fine")  # a card-less model: fine
        self.vocab = default_vocab(self.tokenizer)
        self.context = getattr(self.model.config, "n_positions", None) or getattr(
            self.model.config, "max_position_embeddings", 1024
        )
        self.beams, self.max_new_tokens, self.batch_size = beams, max_new_tokens, batch_size
        self.rerank, self.weight, self.coverage = rerank, weight, coverage
        self.label_first = label_first
        self.length_penalty, self.repetition_penalty = length_penalty, repetition_penalty
        self.no_repeat_ngram = no_repeat_ngram
        self.coverage_decoding, self.coverage_max_hold = coverage_decoding, coverage_max_hold
        self.coverage_bonus, self.verdict = coverage_bonus, verdict
        self.coverage_retry = coverage_retry and not coverage_decoding
        self.retried = 0  # records decoded again by coverage_retry
        self.max_new_tokens_ratio, self.max_new_tokens_slack = (
            max_new_tokens_ratio,
            max_new_tokens_slack,
        )
        self.scorer = None
        version = model_version(lm_uri)
        if classifier_uri is not None:
            from .classifier import FidelityScorer

            self.scorer = FidelityScorer(classifier_uri, storage_options=storage_options)
            version = f"{version}+{model_version(classifier_uri)}"
        self.version = version

    # ------------------------------------------------------------------ prompts

    def _prompt(self, linearized: str) -> tuple[list[int], list[int], bool]:
        """(input_ids, state ids, truncated) of `<data> D <text>`, cut to leave room for text."""
        from . import linearize as lin

        data_ids = self.tokenizer(linearized.strip(), add_special_tokens=False)["input_ids"]
        room = max(1, self.context - self.max_new_tokens - 2)
        truncated = len(data_ids) > room
        ids = [self.vocab.data, *data_ids[:room], self.vocab.text]
        states = lin.state_ids(
            ids, self.vocab.specials, self.vocab.data, self.vocab.text, self.mode
        )
        return ids, states, truncated

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

        width = max(len(ids) for ids, _ in prompts)
        pad = self.vocab.pad
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)  # [B, T], left-padded
        types = torch.full((len(prompts), width), pad, dtype=torch.long)  # [B, T] state ids
        mask = torch.zeros((len(prompts), width), dtype=torch.long)  # [B, T] 1 = real token
        for row, (ids, states) in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            types[row, width - len(ids) :] = torch.tensor(states)
            mask[row, width - len(ids) :] = 1
        from .state_lm import generation_inputs, text_state

        input_ids, types, mask = (t.to(self.device) for t in (input_ids, types, mask))
        prompt = generation_inputs(self.model, input_ids, types)  # E[ids] + E[states]
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
                **self._coverage_processor(entities, len(prompts), coverage_decoding),
            )
        sequences = out.sequences[:, width:].tolist()  # [B * beams, new tokens]
        if getattr(out, "sequences_scores", None) is not None:
            scores = out.sequences_scores.tolist()  # [B * beams]
        else:  # greedy (beams = 1): the same length-normalised log-probability, from the steps
            scores = self._greedy_scores(out, sequences)
        results = []
        for i in range(len(prompts)):
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

    def _greedy_scores(self, out, sequences: list[list[int]]) -> list[float]:
        """Sum of the chosen tokens' log-probabilities up to and including `<eos>`, divided by
        that length ** `length_penalty` (what beam search reports as `sequences_scores`)."""
        import torch

        steps = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # [B, new, V]
        chosen = torch.tensor(sequences, device=steps.device)[:, : steps.size(1)]
        token_lp = steps.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()  # [B, new]
        scores = []
        for tokens, lps in zip(sequences, token_lp, strict=True):
            n = tokens.index(self.vocab.eos) + 1 if self.vocab.eos in tokens else len(lps)
            scores.append(sum(lps[:n]) / max(n, 1) ** self.length_penalty)
        return scores

    # ------------------------------------------------------------------ rows

    def generate_rows(self, rows: list[dict]) -> list[dict]:
        """Generations rows for linearized rows, in input order."""
        out: list[dict | None] = [None] * len(rows)
        todo = []
        for i, row in enumerate(rows):
            if not (row.get("linearized") or "").strip():
                out[i] = self._row(row, None, truncated=False, error="empty linearization")
                continue
            ids, states, truncated = self._prompt(row["linearized"])
            todo.append((len(ids), i, ids, states, truncated, row.get("entities") or []))
        todo.sort(key=lambda t: (t[0], t[1]))  # similar lengths together: little padding
        for chunk in self._chunks(todo):
            for (_, i, _, _, truncated, _), beams in zip(chunk, self._generate_chunk(chunk)):
                if isinstance(beams, str):
                    out[i] = self._row(rows[i], None, truncated=truncated, error=beams)
                else:
                    out[i] = self._row(rows[i], beams, truncated=truncated, error=None)
        self._score_and_choose(out)  # rows without candidates keep their error
        return out

    def _chunks(self, todo: list[tuple]) -> Iterator[list[tuple]]:
        """Batches of up to `batch_size` length-sorted prompts that share one new-token cap, so
        that a record's budget is its own, whatever else is in the block."""
        chunk: list[tuple] = []
        cap = None
        for item in todo:
            item_cap = self.new_token_cap(item[0])
            if chunk and (len(chunk) == self.batch_size or item_cap != cap):
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
            results = self._beam_search(prompts, cap, entities)
        except Exception:  # noqa: BLE001 - isolate the failing record below
            results = []
            for prompt, ents in zip(prompts, entities, strict=True):
                try:
                    results.append(self._beam_search([prompt], cap, [ents])[0])
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

    def _row(self, row: dict, beams, *, truncated: bool, error: str | None) -> dict:
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
            "model_version": self.version,
            "references": row.get("references") or [],
            "entities": row.get("entities") or [],
            "category": row.get("category"),
            "source": row.get("source"),
            "split": row.get("split"),
            "data": row.get("data"),
            "truncated": truncated,
            "error": error,
        }

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


def score_and_choose(
    rows: list[dict], scorer=None, *, rerank: bool = True, coverage: bool = False,
    weight: float = 1.0, label_first: bool = True, batch_size: int = 32, verdict: bool = False,
    others=None,
) -> None:  # fmt: skip
    """Classify every candidate of `rows` (generations rows) in one batched pass with `scorer`
    (a `FidelityScorer`; candidates that carry a label already are not rescored), then set each
    row's text, scores and label from its chosen candidate: the top beam without `rerank`, else
    `rerank_candidates` (with the coverage check first when `coverage`, the label tiers when
    `label_first`). Rows are changed in place; a row without candidates (a failed generation)
    is left as it is. Clearing the candidates' `fidelity_label` first re-chooses with another
    classifier.

    `verdict`: the row's label and score are `rerank.fidelity_verdict` of the chosen candidate —
    the classifier's, overruled when the text leaves out a record entity (`omission`), states a
    number the record does not hold or (with `others`, an `evaluate.EntityIndex`) another
    record's entity, or repeats a sentence. The candidates keep the classifier's own label and
    P(accurate): the choice among them is not changed by the verdict."""
    if scorer is not None:
        todo = [(r, c) for r in rows for c in r["candidates"] if c["fidelity_label"] is None]
        pairs = [(r["linearized"], c["text"]) for r, c in todo]
        scored = scorer.score(pairs, batch_size=batch_size) if pairs else []
        for (_, c), s in zip(todo, scored, strict=True):
            c["fidelity_label"], c["fidelity_score"] = s["label"], s["p_accurate"]
    for r in rows:
        if not r["candidates"]:
            continue
        missing = None
        if rerank and coverage:
            missing = [missing_entities(c["text"], r["entities"]) for c in r["candidates"]]
        order = rerank_candidates(r["candidates"], weight, missing, label_first) if rerank else [0]
        chosen = r["candidates"][order[0]]
        r["text"], r["lm_score"] = chosen["text"], chosen["lm_score"]
        label, score = chosen["fidelity_label"], chosen["fidelity_score"]
        if verdict:
            label, score = fidelity_verdict(
                label, score, chosen["text"], r.get("entities"), r.get("linearized"), others
            )
        r["fidelity_label"], r["fidelity_score"] = label, score


def generate_stage(
    linearized_uri: str,
    output_uri: str,
    *,
    lm_uri: str,
    classifier_uri: str | None = None,
    beams: int = 5,
    max_new_tokens: int = 80,
    batch_size: int = 32,
    actors: int = 1,
    rerank: bool = True,
    decoding: dict | None = None,
    split: str | None = "test",
    max_records: int | None = None,
    length_sort: bool = True,
    storage_options: dict | None = None,
    force: bool = False,
    block_s: float = 30.0,
    in_process_max: int = 0,
    on_progress=None,
) -> dict:
    """Generate for the rows of `split` (all rows if None) of a linearized stage on Ray Data and
    write the generations stage. `decoding`: more `Generator` keywords (length_penalty,
    repetition_penalty, no_repeat_ngram, coverage, weight, label_first, int8,
    max_new_tokens_ratio, max_new_tokens_slack, coverage_decoding, coverage_max_hold,
    coverage_bonus, verdict). Returns the manifest
    (`read == written + quarantined`: a record whose generation failed is written with its
    error, not dropped).

    `length_sort`: sort the records by the length of their linearization before batching (a Ray
    Data sort: one shuffle of the inputs before generation starts), so each beam search batches
    records of like length: less padding, and fewer decoding steps spent waiting for the
    longest text of a batch. The stage's rows come out in that order. Without it, each actor
    call sorts only its own block of `4 x batch_size` records.

    Resumable (`blocks.py`): the texts are written in blocks as they come back, one at least
    every `block_s` seconds, each a Parquet part and a journal entry. A run killed or stopped
    (Ctrl-C) keeps its finished blocks; the same call again generates only the records no
    finished block holds, and its manifest lists the kept parts beside the new ones (each id
    once). `force` forgets them. `on_progress(done, total)` is called after each block.

    `in_process_max`: when at most this many records are left, they are generated in this
    process with one `Generator` (no Ray start, no actor pool), in the same order and blocks."""
    from .blocks import BlockBuffer, BlockJournal
    from .console import Progress
    from .schema import GENERATIONS
    from .training import ensure_ray

    source = stage_reader.read_manifest(linearized_uri, storage_options)
    inputs = [
        {"uri": linearized_uri, "fingerprint": source["fingerprint"]},
        {"lm": lm_uri, "classifier": classifier_uri},
    ]
    config = {
        "beams": beams,
        "max_new_tokens": max_new_tokens,
        "split": split,
        "rerank": rerank,
        "max_records": max_records,
        "length_sort": length_sort,
        **(decoding or {}),
    }
    fp = fingerprints.fingerprint("generate", inputs, config, fingerprints.code_version())
    if not force and (done := stage_reader.current_manifest(output_uri, fp, storage_options)):
        return {**done, "skipped": True}
    if rerank and classifier_uri is None:
        raise ValueError("reranking needs a classifier: give classifier_uri or set rerank=false")

    # the lock first: an output that cannot be written fails before Ray starts; the finished
    # blocks of an earlier attempt with this fingerprint (killed, stopped) are kept
    writer = stage_writer.StageWriter(
        output_uri, "generate", GENERATIONS, storage_options=storage_options
    )
    with writer:
        journal = BlockJournal(output_uri, fp, storage_options)
        if force:
            journal.clear()
        kept = journal.finished()
        for entry in kept:
            writer.adopt(entry)
        done = [i for entry in kept for i in entry["ids"]]
        files = stage_reader.stage_files(linearized_uri, storage_options)
        todo = _count_rows(files, split, storage_options)
        todo = todo if max_records is None else min(todo, max_records)
        local = todo - len(done) <= in_process_max
        if kept:
            print(f"[generate] resuming: {len(done):,} of {todo:,} records kept from "
                  f"{len(kept)} finished blocks under {journal.loc.uri}",
                  file=sys.stderr, flush=True)  # fmt: skip
        batches = []
        kwargs = {
            "beams": beams,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "rerank": rerank,
            **(decoding or {}),
            "storage_options": storage_options,
        }
        if todo > len(done) and local:
            rows = _local_rows(files, split, max_records, done, length_sort, storage_options)
            batches = _local_batches(rows, lm_uri, classifier_uri, kwargs, batch_size * 4)
        elif todo > len(done):
            ensure_ray()
            ds = _dataset(files, split, max_records, done, length_sort, batch_size, todo,
                          storage_options)  # fmt: skip
            ds = _generation_actors(
                ds, lm_uri, classifier_uri, beams, max_new_tokens, batch_size, actors, rerank,
                decoding, storage_options,
            )  # fmt: skip
            batches = ds.iter_batches(batch_size=None, batch_format="pyarrow")
        progress = Progress("[generate]", todo, start=len(done))
        started, seen = time.time(), len(done)

        def on_block(entry: dict) -> None:
            writer.adopt(entry)
            if on_progress is not None:
                on_progress(seen, todo)

        buffer = BlockBuffer(journal, GENERATIONS, block_s, on_block)
        try:
            for batch in batches:
                for row in batch.to_pylist():
                    flags = (
                        ("generation_errors", row["error"]),
                        ("truncated_inputs", row["truncated"]),
                    )
                    buffer.add(row, tuple(name for name, on in flags if on))
                seen += batch.num_rows
                if buffer.due():
                    buffer.flush()
                progress(seen, final=seen >= todo)
            buffer.flush()
        except KeyboardInterrupt:
            buffer.flush()  # the texts already back are kept
            print(f"[generate] stopped: {writer.stats.written:,} of {todo:,} records are kept in "
                  f"finished blocks under {journal.loc.uri}; the same command again generates "
                  "only the others", file=sys.stderr, flush=True)  # fmt: skip
            raise
        new = seen - len(done)
        resumed = {"blocks_kept": len(kept), "records_kept": len(done), "records_generated": new}
        extra = {"records_per_s": round(new / max(time.time() - started, 1e-9), 2),
                 "write_s": round(buffer.write_s, 3), "resumed": resumed,
                 "engine": "in_process" if local else "ray_data"}  # fmt: skip
        return writer.commit(inputs=inputs, fingerprint=fp, config=config, extra=extra)


def _local_rows(files, split, max_records, done, length_sort, storage_options):
    """The rows `_dataset` gives, read in this process: the split's first `max_records` rows
    in shard order, less `done`, sorted by linearization length (a stable sort)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables, total = [], 0
    for uri in files:
        if max_records is not None and total >= max_records:
            break
        loc = storage.locate(uri, storage_options)
        with loc.fs.open(loc.path, "rb") as fh:
            table = pq.read_table(fh)
        if split is not None:
            table = table.filter(pc.equal(table["split"], split))
        if max_records is not None:
            table = table.slice(0, max_records - total)
        tables.append(table)
        total += table.num_rows
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        return None
    if done:
        table = table.filter(pc.invert(pc.is_in(table["id"], pa.array(list(done)))))
    if length_sort:
        order = pc.sort_indices(_linearized_length(table), sort_keys=[("", "ascending")])
        table = table.take(order)
    return table


def _local_batches(table, lm_uri, classifier_uri, kwargs, block_rows):
    """Generations tables of `table`'s rows, `block_rows` at a time, by one Generator here."""
    if table is None:
        return
    generator = Generator(lm_uri, classifier_uri, **kwargs)
    for start in range(0, table.num_rows, block_rows):
        yield generator(table.slice(start, block_rows))


def _dataset(files, split, max_records, done, length_sort, batch_size, todo, storage_options):
    """The Ray dataset of the records to generate: `split`'s rows (all if None), the first
    `max_records`, less the ids in `done` (kept from an earlier attempt), sorted by length."""
    from ray.data.expressions import col

    ds = _read_parquet(files, storage_options)
    if split is not None:
        ds = ds.filter(expr=col("split") == split)  # a predicate Ray Data pushes down
    if max_records is not None:
        ds = ds.limit(max_records)
    if done:
        ds = ds.filter(expr=col("id").not_in(done))
    if length_sort:
        ds = ds.add_column("_length", _linearized_length, batch_format="pyarrow")
        ds = ds.sort("_length").drop_columns(["_length"])
    # Blocks of a few batches: results stream back (progress, bounded memory) instead of one
    # output block per input file.
    return ds.repartition(max(1, min(10_000, -(-(todo - len(done)) // (batch_size * 4)))))


def _generation_actors(ds, lm_uri, classifier_uri, beams, max_new_tokens, batch_size, actors,
                       rerank, decoding, storage_options):  # fmt: skip
    import ray

    resources = ray.cluster_resources()
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    plan = actor_plan(
        actors, resources.get("CPU", 1), resources.get("GPU", 0), node_cpus=node_cpus or None
    )
    if plan["actors"] != actors:
        print(f"[generate] {actors} actors asked, {plan['actors']} started: {plan['why']}",
              file=sys.stderr, flush=True)  # fmt: skip
    return ds.map_batches(
        Generator,
        fn_constructor_args=(lm_uri, classifier_uri),
        fn_constructor_kwargs={
            "beams": beams,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "rerank": rerank,
            **(decoding or {}),
            "storage_options": storage_options,
            "threads": plan["threads"],
        },
        batch_size=batch_size * 4,  # a block per call: the actor sorts it by length
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
        num_gpus=plan["num_gpus"],
        num_cpus=plan["num_cpus"],
        # Ray Data places actors with its default strategy, SPREAD: one per node before a second
        # on any, so a node's loss costs the fewest actors
    )


def actor_plan(actors: int, cpus: float, gpus: float, node_cpus: float | None = None) -> dict:
    """How `generate.actors` generation actors share the cluster. With GPUs: one GPU per actor,
    at most as many actors as GPUs (more would wait forever for a GPU), torch's own threads.
    On CPUs: the actors together leave one CPU for the read/repartition tasks (which would
    otherwise starve behind them) and each runs torch on its share of the cores (2 cores,
    2 actors: one thread each; benchmarks/actors.py measures which is faster).
    On a cluster (`node_cpus`: the largest node's CPUs) an actor never asks for more than a
    node less one CPU: when a node is lost, its actors restart beside the survivors' and a
    read task still fits (two 2-CPU nodes, 2 actors of 1.5 CPUs: after one node's loss the
    restarted actor and the read tasks waited for each other forever)."""
    actors = max(1, int(actors))
    node_cpus = float(node_cpus or cpus)
    cap = max(0.25, node_cpus - 1.0)
    if gpus >= 1:
        n = min(actors, int(gpus))
        why = f"one GPU per actor, {int(gpus)} GPU(s)" if n < actors else ""
        return {"actors": n, "threads": None, "num_gpus": 1,
                "num_cpus": max(0.25, min(cap, (float(cpus) - 1.0) / n)), "why": why}  # fmt: skip
    return {
        "actors": actors,
        "threads": max(1, int(min(float(cpus) // actors, node_cpus))),
        "num_gpus": 0,
        "num_cpus": max(0.25, min(cap, (float(cpus) - 1.0) / actors)),
        "why": "",
    }


def _linearized_length(table):
    """Characters of each row's linearization (0 for a missing one): the sort key of batching."""
    import pyarrow.compute as pc

    return pc.utf8_length(pc.fill_null(table["linearized"], ""))


def _count_rows(files: list[str], split: str | None, storage_options: dict | None) -> int:
    """How many rows of the shards belong to `split` (all if None): the `split` column only."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = 0
    for uri in files:
        loc = storage.locate(uri, storage_options)
        with loc.fs.open(loc.path, "rb") as fh:
            if split is None:
                total += pq.ParquetFile(fh).metadata.num_rows
            else:
                column = pq.read_table(fh, columns=["split"])["split"]
                total += pc.sum(pc.equal(column, split)).as_py() or 0
    return total


def _read_parquet(files: list[str], storage_options: dict | None):
    """A Ray dataset over the stage's shards, through the same fsspec filesystem."""
    import ray
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    loc = storage.locate(files[0], storage_options)
    if "memory" in storage.protocols(loc.fs):
        raise storage.StorageError("Ray workers cannot read memory:// stages; use a path or s3://")
    paths = [storage.locate(f, storage_options).path for f in files]
    filesystem = PyFileSystem(FSSpecHandler(loc.fs))
    return ray.data.read_parquet(paths, filesystem=filesystem)
