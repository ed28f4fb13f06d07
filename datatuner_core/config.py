"""Pipeline configuration: YAML validated by pydantic, every knob documented where it is declared.

Unknown keys and wrong types are errors that name the key. `--set dotted.key=value` overrides any
key (values parsed as YAML scalars: `--set lm.epochs=1 --set dataset.max_records.train=500`).
The resolved config is saved beside a run's outputs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .ingest import FORMATS
from .paths import absolute


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Splits(_Strict):
    """Input file/folder per split; a local path is relative to the current directory and is
    made absolute here, before it reaches a task or a Ray worker."""

    train: str | None = Field(None, description="train split: file or folder URI")
    validation: str | None = Field(None, description="validation split: file or folder URI")
    test: str | None = Field(None, description="test split: file or folder URI")

    @field_validator("train", "validation", "test")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return absolute(value)


class SplitCaps(_Strict):
    train: int | None = Field(None, ge=1, description="most records read from the split")
    validation: int | None = Field(None, ge=1, description="most records read from the split")
    test: int | None = Field(None, ge=1, description="most records read from the split")


class DatasetConfig(_Strict):
    format: Literal["webnlg", "e2e", "viggo", "jsonl", "ntriples"] = Field(
        "webnlg", description="input format of every split (see docs/cli.md, input formats)"
    )
    paths: Splits = Field(default_factory=Splits, description="input file/folder URI per split")
    max_records: SplitCaps = Field(default_factory=SplitCaps, description="caps, for quick runs")
    max_triples: int = Field(7, ge=1, description="ntriples: most triples per record")
    ingest_memory: str = Field(
        "1GB",
        pattern=r"^[0-9]+(\.[0-9]+)? ?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="ntriples: memory DuckDB may hold while it groups the dump by subject, "
        "e.g. 512MB (beyond it, it spills to a temporary folder): the ingest's peak memory "
        "stops growing with the dump at this size",
    )
    holdout_categories: list[str] = Field(
        default_factory=list,
        description="categories whose train and validation records become split "
        "validation_unseen: never trained on, validated on beside validation (model selection "
        "on categories the models never saw); the test split is never changed",
    )


def reader_options(
    fmt: str, max_triples: int | None = None, ingest_memory: str | None = None
) -> dict:
    """The reader keywords of format `fmt` (only N-Triples takes any: its records' triple cap
    and DuckDB's memory limit, the `dataset` defaults where None)."""
    if fmt != "ntriples":
        return {}
    fields = DatasetConfig.model_fields
    return {
        "max_triples": max_triples or fields["max_triples"].default,
        "memory_limit": ingest_memory or fields["ingest_memory"].default,
    }


class LinearizeConfig(_Strict):
    mode: Literal["fine", "coarse"] = Field(
        "fine", description="state ids: most recent special token (fine) or <data>/<text> only"
    )


class CorruptConfig(_Strict):
    per_example: int = Field(5, ge=0, description="corruptions drawn per (record, reference)")
    seed: int = Field(13, description="seed of the corruption draws")
    balance: Literal["none", "upsample"] = Field("upsample", description="train-split balancing")


class TrainerConfig(_Strict):
    """The trainer's knobs, shared by the `lm` and `classifier` sections (`training.train_with_ray`
    reads a section whole). The defaults are the LM's; `ClassifierConfig` sets its own epochs and
    learning rate."""

    workers: int = Field(2, ge=1, description="Ray Train workers (DDP), one process each")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs (torch threads) per worker")
    epochs: int = Field(3, ge=1, description="passes over the training split")
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many optimizer steps (the LR decays to 0 there)"
    )
    batch_size: int = Field(32, ge=1, description="examples per worker per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(5.0e-4, gt=0, description="AdamW learning rate after warm-up")
    warmup_steps: int = Field(
        100, ge=0, description="optimizer steps of linear warm-up; then linear decay to 0"
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not biases, norms)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradients clipped to this global norm")
    patience: int = Field(
        2,
        ge=1,
        description="epochs without improvement of the validation metric (LM: val_ppl, "
        "classifier: macro-F1) before training stops",
    )
    eval_every: int | None = Field(
        None,
        ge=1,
        description="optimizer steps between validations (each one a checkpoint; the best is "
        "kept): the curve, per validation split, is in the training card's `evaluations`; "
        "null = once an epoch",
    )
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        description="optimizer steps between checkpoints without a validation: a crashed run "
        "resumes from the latest and loses at most this many steps; null = at validations only",
    )
    seed: int = Field(42, description="initial weights, dropout and batch order")
    reuse: bool = Field(
        True,
        description="take the model an identical training job made before (same data content, "
        "settings, tokenizer, workers and code version; e.g. the coarse-state run's classifier, "
        "whose corruption pairs equal the fine run's) instead of training again: copied into "
        "this run's version folder, its card marked reused_from; false = always train",
    )


class LMConfig(TrainerConfig):
    base: str = Field(
        "scratch:tiny",
        description="scratch:tiny|small, smollm2-135m (packaged GGUF), a *.gguf file, a local/S3 "
        "folder or an HF id",
    )
    max_length: int = Field(256, ge=16, description="tokens per training sequence")
    freeze_layers: int = Field(0, ge=0, description="bottom decoder blocks kept frozen")
    freeze_embeddings: bool = Field(
        False, description="freeze the input embeddings (a tied output layer is untied)"
    )
    lora_rank: int = Field(
        0,
        ge=0,
        description="LoRA adapters of this rank on every linear layer of the decoder blocks above "
        "freeze_layers; every pretrained weight stays frozen (a tied output layer too; one that "
        "freeze_embeddings untied trains), the special tokens' rows train, and the saved model "
        "has the adapters folded in (a plain checkpoint); 0 = no adapters",
    )
    lora_alpha: float = Field(
        16.0, gt=0, description="LoRA scale numerator: each update is (lora_alpha / lora_rank) B A"
    )


class ClassifierConfig(TrainerConfig):
    base: str = Field(
        "scratch:tiny", description="scratch:tiny, minilm-l6 (packaged), a local/S3 folder, HF id"
    )
    epochs: int = Field(2, ge=1, description="passes over the training pairs")
    lr: float = Field(1.0e-4, gt=0, description="AdamW learning rate after warm-up")
    max_length: int = Field(256, ge=16, description="tokens per (data, text) pair")
    hard_negatives: int = Field(
        0,
        ge=0,
        description="`datatuner run`: train records (a seeded sample) whose LM beams, generated "
        "with the run's LM and generate settings and labelled by rules (a missing record entity "
        "= omission, another record's entity or an invented number = hallucination / "
        "value_error, a repeated sentence = repetition; see hard_negatives), join the synthetic "
        "pairs: the classifier learns the LM's own mistakes; 0 = synthetic pairs only",
    )
    freeze_layers: int = Field(
        0,
        ge=0,
        description="bottom encoder layers kept frozen, and the embeddings with them: the "
        "backward pass stops above them (0 = all train)",
    )


class GenerateConfig(_Strict):
    beams: int = Field(5, ge=1, description="beam width; every beam is a candidate")
    max_new_tokens: int = Field(80, ge=1, description="most new tokens of a text")
    max_new_tokens_ratio: float | None = Field(
        None,
        gt=0,
        description="cap each record's new tokens at this x its prompt tokens + "
        "max_new_tokens_slack (rounded up to 8), never above max_new_tokens: a record stops "
        "decoding where its text could plausibly end, not at the longest record's budget; "
        "null = max_new_tokens for every record",
    )
    max_new_tokens_slack: int = Field(
        16, ge=0, description="the tokens added to max_new_tokens_ratio x prompt tokens"
    )
    dev_records: int = Field(
        0,
        ge=0,
        description="`datatuner run`: also verbalize a seeded sample of this many records of "
        "each validation split (validation, validation_unseen) with the same settings; the "
        "report sets them beside test (metrics `bleu_validation`, `bleu_validation_unseen`); "
        "0 = test only",
    )
    batch_size: int = Field(32, ge=1, description="records per decoding batch")
    batch_tokens: int | None = Field(
        32768,
        ge=1,
        description="most tokens a decoding batch holds: records x beams x (prompt + new-token "
        "cap); a batch of long records is cut smaller (at least one record), so an actor's peak "
        "memory is bounded whatever the records' lengths (the KV cache grows with every token); "
        "null = batch_size alone",
    )
    actors: int = Field(1, ge=1, description="Ray Data actors holding the models")
    block_s: float = Field(
        30.0,
        ge=0,
        description="seconds between the finished blocks generation writes as texts come back "
        "(each a Parquet part and a journal entry in the output's `_blocks/`): a killed or "
        "stopped run loses at most this much finished work plus the batches in flight, and the "
        "same command again generates only the records no finished block holds",
    )
    in_process_max: int = Field(
        256,
        ge=0,
        description="a generation of at most this many records runs in the calling process, "
        "without starting Ray (a Ray start and an actor pool cost more than a few hundred "
        "records' beam search on a small machine: a nightly run's changed records); the same "
        "texts, blocks and manifest; 0 = always on Ray Data",
    )
    rerank: bool = Field(True, description="false gives the top beam (the paper's No_FC)")
    length_penalty: float = Field(1.0, description="beam score = log-prob / length ** this")
    repetition_penalty: float = Field(1.0, ge=1.0, description="1.0 = off")
    no_repeat_ngram: int = Field(0, ge=0, description="forbid repeating n-grams of this size")
    coverage: bool = Field(
        False, description="rerank: candidates missing fewer of the record's entities first"
    )
    weight: float = Field(1.0, ge=0, description="rerank: weight of log P(accurate)")
    label_first: bool = Field(
        True,
        description="rerank: order by the predicted label's severity before the score (the "
        "paper's FC); false: coverage check, then LM score + weight x log P(accurate)",
    )
    length_sort: bool = Field(
        True,
        description="sort records by linearization length before batching (less padding, "
        "fewer wasted decoding steps); the stage's rows come out in that order",
    )
    sort_window: int | None = Field(
        10_000,
        ge=1,
        description="length_sort within consecutive windows of this many records, streaming: the "
        "sort never holds more than a window, whatever the input's size (a knowledge-graph dump), "
        "and costs no shuffle (on 872 records the first texts come back 19 s sooner); "
        "null = the whole split at once (one Ray Data sort, a shuffle of every record)",
    )
    trim_memory: bool = Field(
        True,
        description="after each batch of records, hand the memory the batch freed back to the "
        "OS (glibc malloc_trim; elsewhere nothing): without it a generator's private memory "
        "swings with the longest batch it has decoded and stays there; the texts are the same",
    )
    engine: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="what decodes the LM's candidates: hf (transformers `generate`, beam search, "
        "every decoding key) or vllm (a GPU batch engine over the serving export: the greedy "
        "text then beams - 1 sampled ones; needs a CUDA GPU and the [gpu] extra, and no "
        "coverage_decoding, no_repeat_ngram, repetition_penalty, int8 or dtype float32); "
        "auto = vllm where those hold, else hf. The classifier, coverage_retry and the choice "
        "are the same",
    )
    int8: bool = Field(
        False,
        description="CPU: int8 dynamic quantization of the LM's linears (experimental: it "
        "degraded SmolLM2's texts in a first check; measure on dev first)",
    )
    search: Literal["own", "hf"] = Field(
        "own",
        description="who runs the beam search on the hf engine: own (datatuner_core/beam_search: "
        "a record leaves the batch and the KV cache the step its beams are complete, and its "
        "prompt runs once, not once per beam; the same search and scores as hf) or hf "
        "(transformers `generate`, which decodes every record of a batch until the last one "
        "ends). Coverage-aware decoding, no_repeat_ngram and repetition_penalty always use hf",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="the LM's weights and arithmetic while generating: auto = bfloat16 on a GPU, "
        "float32 on a CPU; bfloat16 on a CPU with native bf16 (AVX512-BF16 or AMX) is 1.7x "
        "faster for SmolLM2 at dev BLEU as good (docs/presets.md), and falls back to float32, "
        "said in the log, on a CPU without it (where emulated bf16 is slower); not with int8",
    )
    coverage_decoding: bool = Field(
        False,
        description="decoding holds back <eos> while one of the record's entities is unmentioned "
        "(the report's coverage check decides what is mentioned); beam search and greedy alike",
    )
    coverage_max_hold: int = Field(
        16,
        ge=0,
        description="coverage decoding: tokens a text may run on after it first wanted to end "
        "(<eos> its most probable token) before <eos> is allowed with entities still missing",
    )
    coverage_bonus: float = Field(
        0.0,
        ge=0,
        description="coverage decoding: log-probability added to the next token of a missing "
        "entity (its first token, or the next one of an entity the text has started); 0 = off",
    )
    coverage_retry: bool = Field(
        False,
        description="decode plainly, then decode again with coverage-aware decoding (with "
        "coverage_max_hold and coverage_bonus) the records whose every beam leaves a record "
        "entity unmentioned; the new beams that mention more of the record join the candidates "
        "after the plain ones (the top beam stays the plain one). Needs coverage: true; "
        "ignored when coverage_decoding decodes every record that way",
    )
    verdict: bool = Field(
        True,
        description="the reported label and score combine the classifier with the coverage "
        "check: a text missing a record entity is never `accurate` (see rerank.fidelity_verdict); "
        "false = the classifier's own label and P(accurate)",
    )

    def hf_only(self) -> list[str]:
        """The set keys only the hf engine serves (vLLM has no logits processor of ours, no
        n-gram ban, its own repetition penalty, and runs on a GPU)."""
        keys = {
            "coverage_decoding": self.coverage_decoding,
            "no_repeat_ngram": self.no_repeat_ngram,
            "repetition_penalty": self.repetition_penalty != 1.0,
            "int8": self.int8,
            "dtype": self.dtype == "float32",  # the engine serves bf16
        }
        return [k for k, on in keys.items() if on]

    @model_validator(mode="after")
    def _vllm_serves_its_keys(self):
        if self.engine == "vllm" and self.hf_only():
            raise ValueError(
                f"generate.engine: vllm does not serve {', '.join(self.hf_only())}: set "
                "generate.engine: hf (or auto), or leave those keys at their defaults"
            )
        return self

    @model_validator(mode="after")
    def _int8_is_float32(self):
        if self.int8 and self.dtype == "bfloat16":
            raise ValueError(
                "generate.int8 quantizes a float32 LM: set generate.dtype: float32 (or auto), "
                "or generate.int8: false"
            )
        return self

    @model_validator(mode="after")
    def _retry_needs_the_coverage_check(self):
        if self.coverage_retry and not self.coverage:
            raise ValueError(
                "generate.coverage_retry needs generate.coverage: true (the retried beams are "
                "chosen for the entities they mention)"
            )
        return self

    def decoding(self) -> dict:
        """The Generator keywords beyond beams / tokens / batch / rerank."""
        keys = ("length_penalty", "repetition_penalty", "no_repeat_ngram", "coverage", "weight",
                "label_first", "int8", "max_new_tokens_ratio", "max_new_tokens_slack")  # fmt: skip
        out = {k: getattr(self, k) for k in keys}
        # later knobs join only when set away from what a stage made before they existed did
        # (the dict is also the generate stage's fingerprint): such a stage stays current when
        # its texts and labels would be the same, and is made again when they would not
        out.update({k: getattr(self, k) for k, was in _BEFORE.items() if getattr(self, k) != was})
        return out


# the later decoding knobs, as the generate stage behaved before each existed
_BEFORE = {"coverage_decoding": False, "coverage_max_hold": 16, "coverage_bonus": 0.0,
           "verdict": False, "coverage_retry": False, "engine": "auto",
           "dtype": "auto", "search": "hf"}  # fmt: skip


class PipelineConfig(_Strict):
    name: str = Field(
        "webnlg-tiny",
        description="the config's name: run ids, snapshots and the report title use it",
    )
    storage: str = Field("./artifacts", description="root URI: path, file://, s3://, memory://")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    linearize: LinearizeConfig = Field(default_factory=LinearizeConfig)
    corrupt: CorruptConfig = Field(default_factory=CorruptConfig)
    lm: LMConfig = Field(default_factory=LMConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)

    @field_validator("storage")
    @classmethod
    def _absolute_storage(cls, value: str) -> str:
        return absolute(value)

    @field_validator("name")
    @classmethod
    def _name_is_a_path_part(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError("must be a non-empty name without '/'")
        return value


assert set(DatasetConfig.model_fields["format"].annotation.__args__) == set(FORMATS)


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `dotted.key=value` to the raw config dict (value parsed as a YAML scalar)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects dotted.key=value, got {assignment!r}")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set has an empty key part: {key!r}")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--set {key}: the value is not valid YAML ({problem})") from None


def load_config(
    path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None
) -> PipelineConfig:
    """Read a YAML config (or the embedded defaults when `path` is None) and apply overrides.
    `base`: raw keys under the file's (e.g. the generation settings a registry recorded)."""
    raw: dict = copy.deepcopy(base or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw.update(loaded)
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        problem = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"config key {key!r}: {problem}{more}") from None
