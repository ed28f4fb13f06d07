"""The classifier's model and its training task (method §6): a 5-label sequence-pair classifier
over (linearized data, text), trained through `training.train_with_ray`.

- Model: `AutoModelForSequenceClassification`. `scratch:tiny` (4 layers × 256, 4 heads, FFN 1024)
  / `scratch:small` (6 × 384) are BERT-architecture encoders built from a config — the same
  post-LN transformer encoder as RoBERTa, with absolute positions 0..511 and `type_vocab_size=2`.
  (A `RobertaConfig` derives position ids from `pad_token_id` — positions start at pad id + 1 —
  and the scratch tokenizer's `<pad>` sits after the BPE vocabulary, at id ≈ 8k, so RoBERTa would
  need ≈ 8.7k position rows; BERT's absolute positions avoid that.) Any other `base` is a hub id or
  a local / S3 directory loaded with `from_pretrained` (safetensors only, no remote code).
- Training: cross entropy; validation sums a 5×5 confusion matrix and the loss over ranks, and,
  where the pairs carry the corruption `rule` that made them, each rule's predictions (`by_rule`);
  the monitor is `neg_macro_f1` (see `ClassifierTask.monitor`).
- Saved: `config.json`, `model.safetensors`, tokenizer files and `classifier.json` (lowercase,
  max_length, labels, base, segments).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .classifier_metrics import (
    by_rule_from_sums,
    confusion_from_sums,
    metrics_from_confusion,
    rule_sums,
)
from .classifier_pairs import (
    ID2LABEL,
    LABEL2ID,
    PairEncoder,
    collate_pairs,
    label_ids,
    pad_id_of,
    rule_ids,
)
from .config import ClassifierConfig
from .corrupt import LABELS
from .tokenizer import is_scratch, scratch_shape
from .training import TrainTask

SETTINGS_FILE = "classifier.json"
SCRATCH_SHAPES = {  # name → (layers, width, heads); FFN = 4 × width
    "scratch:tiny": (4, 256, 4),
    "scratch:small": (6, 384, 6),
}
SCRATCH_POSITIONS = 512
_SECTION = ClassifierConfig()  # the defaults of the settings a task shares with its section


def build_classifier(
    base: str,
    tokenizer,
    *,
    shape: tuple[int, int, int] | None = None,
    dropout: float = 0.1,
):
    """A 5-label sequence classifier for `tokenizer`: a scratch BERT config, or pretrained weights
    (embeddings resized when the tokenizer gained markers)."""
    import transformers

    if is_scratch(base):
        layers, width, heads = scratch_shape(base, shape, SCRATCH_SHAPES)
        config = transformers.BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * width,
            max_position_embeddings=SCRATCH_POSITIONS,
            type_vocab_size=2,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=len(LABELS),
            id2label=dict(ID2LABEL),
            label2id=dict(LABEL2ID),
        )
        return transformers.BertForSequenceClassification(config)
    from .bases import load_model

    model = load_model(
        transformers.AutoModelForSequenceClassification,
        base,
        num_labels=len(LABELS),
        id2label=dict(ID2LABEL),
        label2id=dict(LABEL2ID),
        ignore_mismatched_sizes=True,  # a base with another head (e.g. MNLI's 3 labels)
    )
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return model


def freeze_bottom(model, layers: int) -> dict:
    """Freeze the embeddings and the bottom `layers` encoder layers (nothing when 0). Nothing
    below the first trainable layer needs a gradient, so the backward pass stops there: with 3 of
    MiniLM's 6 layers frozen a step does the forward of 6 layers and the backward of 3. The new
    marker rows keep their initial (mean-resized) values. Returns parameter counts."""
    from .state_lm import freeze_bottom_layers, parameter_counts

    if layers:
        freeze_bottom_layers(model, layers)
        model.base_model.embeddings.requires_grad_(False)
    return parameter_counts(model)


def has_segments(base: str) -> bool:
    """Whether the architecture has segment embeddings (`type_vocab_size >= 2`)."""
    if is_scratch(base):
        return True
    from .bases import load_config

    return int(getattr(load_config(base), "type_vocab_size", 0) or 0) >= 2


def check_labels(config) -> None:
    got = [config.id2label[i] for i in range(len(config.id2label))]
    if got != list(LABELS):
        raise ValueError(f"the classifier's labels are {got}, expected {list(LABELS)}")


def forward_logits(model, batch: dict):
    """Logits [B, 5] of a batch (labels are not passed to the model)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    return model(**inputs).logits


# ----------------------------------------------------------------------------- training task


@dataclass
class ClassifierTask(TrainTask):
    """The fidelity classifier as a `training.TrainTask` (rows = corruption pairs:
    `linearized`, `text`, `label`)."""

    tokenizer: object = None
    base: str = _SECTION.base
    max_length: int = _SECTION.max_length
    lowercase: bool = False
    segments: bool | None = None  # None: from the architecture (type_vocab_size >= 2)
    shape: tuple[int, int, int] | None = None  # scratch (layers, width, heads) override
    special_tokens: list[str] = field(default_factory=list)
    freeze_layers: int = _SECTION.freeze_layers  # bottom encoder layers frozen, with embeddings
    name: str = "classifier"
    # Best checkpoint / early stopping on macro-F1 (negated: the trainer minimises). Training is
    # class-balanced but the held-out split is not, so the validation loss mostly measures the
    # prior shift on the majority class; macro-F1 weighs the five error types equally, as the
    # reranker's label decisions do, and is the figure reported and gated on.
    monitor: str = "neg_macro_f1"

    def __post_init__(self):
        if self.segments is None:
            self.segments = has_segments(self.base)
        if self.max_length > SCRATCH_POSITIONS and is_scratch(self.base):
            raise ValueError(f"max_length {self.max_length} > {SCRATCH_POSITIONS} positions")
        self._encoder = None

    @property
    def encoder(self) -> PairEncoder:
        if getattr(self, "_encoder", None) is None:
            self._encoder = PairEncoder(
                self.tokenizer, self.max_length, self.segments, self.lowercase
            )
        return self._encoder

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_encoder"] = None  # rebuilt on the worker
        return state

    def build_model(self):
        model = build_classifier(self.base, self.tokenizer, shape=self.shape)
        check_labels(model.config)
        self.parameter_counts = freeze_bottom(model, self.freeze_layers)
        return model

    def encode(self, rows: list[dict]) -> list[dict]:
        labels = label_ids(rows)
        examples, truncated = self.encoder.encode([(r["linearized"], r["text"]) for r in rows])
        for example, label in zip(examples, labels, strict=True):
            example["label"] = label
        if (rules := rule_ids(rows)) is not None:
            for example, rule in zip(examples, rules, strict=True):
                example["rule"] = rule
        by_label = {label: 0 for label in LABELS}
        for label in labels:
            by_label[LABELS[label]] += 1
        self.counts = {"examples": len(examples), "truncated": truncated, **by_label}
        return examples

    def collate(self, examples: list[dict]) -> dict:
        return collate_pairs(examples, pad_id_of(self.tokenizer))

    def loss(self, model, batch: dict):
        import torch

        return torch.nn.functional.cross_entropy(
            forward_logits(model, batch).float(), batch["labels"]
        )

    def eval_sums(self, model, batch: dict) -> dict[str, float]:
        """Summed loss, count and the confusion cells `cm_{gold}_{pred}` of a batch."""
        import torch

        logits = forward_logits(model, batch).float()
        gold = batch["labels"]
        loss = torch.nn.functional.cross_entropy(logits, gold, reduction="sum")
        pred = logits.argmax(-1)
        n = len(LABELS)
        cells = torch.bincount(gold * n + pred, minlength=n * n).tolist()
        sums = {f"cm_{i // n}_{i % n}": float(c) for i, c in enumerate(cells)}
        if "rules" in batch:
            sums.update(rule_sums(batch["rules"], pred))
        return {**sums, "loss": loss.item(), "n": float(gold.numel())}

    def eval_metrics(self, sums: dict[str, float]) -> dict:
        m = metrics_from_confusion(confusion_from_sums(sums))
        out = {
            "val_loss": sums["loss"] / max(sums["n"], 1.0),
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "neg_macro_f1": -m["macro_f1"],
            "majority_baseline": m["majority_baseline"],
            "confusion": m["confusion"],
        }
        out.update({f"f1_{label}": m["per_class"][label]["f1"] for label in LABELS})
        if any(key.startswith("rule_") for key in sums):
            out["by_rule"] = by_rule_from_sums(sums)
        return out

    def settings(self) -> dict:
        return {
            "labels": list(LABELS),
            "base": self.base,
            "max_length": self.max_length,
            "lowercase": self.lowercase,
            "segments": bool(self.segments),
            "template": "tokenizer pair template; segments 0 = data, 1 = text",
        }

    def save(self, model, directory: str) -> None:
        model.save_pretrained(directory)  # safetensors (transformers 5 writes nothing else)
        self.tokenizer.save_pretrained(directory)
        Path(directory, SETTINGS_FILE).write_text(json.dumps(self.settings(), indent=2))
