"""The semantic-fidelity classifier (method §6): a sequence-pair classifier over (linearized data,
text) that tells an accurate text from one with a value error, omission, repetition or
hallucination. Trained through `training.train_with_ray`; used by the reranker (`FidelityScorer`).

- Labels: exactly `corrupt.LABELS` (accurate, value_error, omission, repetition, hallucination),
  index = position, in `config.id2label` / `config.label2id`.
- Model: `AutoModelForSequenceClassification`. `scratch:tiny` (4 layers × 256, 4 heads, FFN 1024)
  / `scratch:small` (6 × 384) are BERT-architecture encoders built from a config — the same
  post-LN transformer encoder as RoBERTa, with absolute positions 0..511 and `type_vocab_size=2`.
  (A `RobertaConfig` derives position ids from `pad_token_id` — positions start at pad id + 1 —
  and the scratch tokenizer's `<pad>` sits after the BPE vocabulary, at id ≈ 8k, so RoBERTa would
  need ≈ 8.7k position rows; BERT's absolute positions avoid that.) Any other `base` is a hub id or
  a local / S3 directory loaded with `from_pretrained` (safetensors only, no remote code).
- Tokenizer: `scratch:*` = `tokenizer.build_tokenizer` (byte-level BPE trained on the training
  pairs' data and texts, plus the dataset's special tokens), with a pair template
  `<data> D <text> T <eos>`: the LM's layout, so `<data>` plays CLS (the pooled position), `<text>`
  opens the text segment and `<eos>` closes it; `<pad>` pads. A pretrained base keeps its own
  template (RoBERTa: `<s> D </s></s> T </s>`) and gets the dataset's markers (`<subject>` …) as
  added tokens (embeddings resized) so the data side is not shredded into `<`, `sub`, `ject`, `>`.
- Segments: `token_type_ids` as the template gives them (scratch: 0 for `<data> D`, 1 for
  `<text> T <eos>`), passed only when the architecture has segment embeddings
  (`type_vocab_size >= 2`); RoBERTa (type_vocab_size 1) gets none, as in the paper.
- Encoding: data and text are tokenized separately (batched, fast tokenizer), cut longest-first
  to `max_length` minus the template's special tokens (counted: `truncated`), then assembled with
  the template learnt from the tokenizer itself (`PairTemplate.probe`), so `tokenizer(D, T)` from a
  plain `AutoTokenizer` gives the same ids for untruncated pairs. `lowercase` (off by default; the
  paper lower-cased) lower-cases everything but the special tokens.
- Training: cross entropy; validation sums a 5×5 confusion matrix and the loss over ranks, and,
  where the pairs carry the corruption `rule` that made them, each rule's predictions (`by_rule`:
  which kinds of error the classifier catches, e.g. cut entity names against swapped ones); the
  monitor is `neg_macro_f1` (see `ClassifierTask.monitor`).
- Saved folder (`{root}/models/classifier/{version}/`): `config.json`, `model.safetensors`,
  tokenizer files, `classifier.json` (lowercase, max_length, labels, base), `training_card.json`,
  then `eval.json` and `eval_report.md` from the held-out split.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import linearize as lin
from . import stage_reader, storage
from .corrupt import LABELS, RULE_LABELS
from .tokenizer import build_tokenizer, is_scratch, load_pretrained_tokenizer
from .training import StageRows, TrainTask, train_with_ray

LABEL2ID = {label: i for i, label in enumerate(LABELS)}
RULES = tuple(RULE_LABELS)  # the corruption rules ("original" = the accurate pair), in id order
RULE2ID = {rule: i for i, rule in enumerate(RULES)}
ID2LABEL = dict(enumerate(LABELS))
SETTINGS_FILE = "classifier.json"
EVAL_FILE = "eval.json"
REPORT_FILE = "eval_report.md"
SCRATCH_SHAPES = {  # name → (layers, width, heads); FFN = 4 × width
    "scratch:tiny": (4, 256, 4),
    "scratch:small": (6, 384, 6),
}
SCRATCH_POSITIONS = 512


# ----------------------------------------------------------------------------- tokenizer


def _specials_pattern(tokens) -> re.Pattern | None:
    tokens = sorted({t for t in tokens if t}, key=len, reverse=True)
    return re.compile("(" + "|".join(re.escape(t) for t in tokens) + ")") if tokens else None


def lower_keep_specials(text: str, pattern: re.Pattern | None) -> str:
    """Lower-case `text` except its special tokens (`<eatType>` must stay a token)."""
    if pattern is None:
        return text.lower()
    return "".join(p if i % 2 else p.lower() for i, p in enumerate(pattern.split(text)))


def set_pair_template(tokenizer) -> None:
    """Give a scratch tokenizer the pair template `<data> $A:0 <text>:1 $B:1 <eos>:1`
    (single: `<data> $A <eos>`), saved in tokenizer.json so plain `AutoTokenizer` applies it."""
    from tokenizers import processors

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (lin.DATA, lin.TEXT, lin.EOS)}
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{lin.DATA}:0 $A:0 {lin.EOS}:0",
        pair=f"{lin.DATA}:0 $A:0 {lin.TEXT}:1 $B:1 {lin.EOS}:1",
        special_tokens=list(ids.items()),
    )
    tokenizer._should_update_post_processor = False  # keep it (transformers 5 would rebuild it)


def add_markers(tokenizer, special_tokens: list[str]) -> int:
    """Add the dataset's markers (not the LM's `<data> <text> <eos> <pad>`) to a pretrained
    tokenizer as space-swallowing special tokens; returns how many were new."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    new = [
        AddedToken(t, lstrip=True, rstrip=True, single_word=False, normalized=False, special=True)
        for t in special_tokens
        if t not in lin.BASE_TOKENS and t not in vocab
    ]
    return tokenizer.add_tokens(new, special_tokens=True) if new else 0


def build_classifier_tokenizer(
    base: str,
    pairs: list[tuple[str, str]] | None,
    special_tokens: list[str],
    vocab_size: int = 8192,
):
    """The classifier's tokenizer: scratch → byte-level BPE on the pairs' data and texts (each
    distinct string once) with the pair template; pretrained → its own, plus the markers."""
    if is_scratch(base):
        if not pairs:
            raise ValueError(f"{base}: a scratch tokenizer needs training pairs")
        corpus = list(dict.fromkeys(s for pair in pairs for s in pair))
        tok = build_tokenizer(base, corpus, list(special_tokens), vocab_size=vocab_size)
        set_pair_template(tok)
        return tok
    tok = load_pretrained_tokenizer(base)
    add_markers(tok, special_tokens)
    return tok


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a pair, and the segment id of each part:
    `prefix A middle B suffix` (RoBERTa: `<s>` A `</s></s>` B `</s>`)."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    types: tuple[tuple[int, ...], int, tuple[int, ...], int, tuple[int, ...]]

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def probe(cls, tokenizer) -> PairTemplate:
        """Learn the template by encoding a known pair with and without special tokens."""
        a = tokenizer("alpha", add_special_tokens=False)["input_ids"]
        b = tokenizer("beta", add_special_tokens=False)["input_ids"]
        full = tokenizer("alpha", "beta", return_token_type_ids=True)
        ids, types = full["input_ids"], full.get("token_type_ids") or [0] * len(full["input_ids"])
        for i in range(len(ids) - len(a) + 1):
            if ids[i : i + len(a)] != a:
                continue
            for j in range(i + len(a), len(ids) - len(b) + 1):
                if ids[j : j + len(b)] == b:
                    k = j + len(b)
                    return cls(
                        tuple(ids[:i]),
                        tuple(ids[i + len(a) : j]),
                        tuple(ids[k:]),
                        (
                            tuple(types[:i]),
                            types[i],
                            tuple(types[i + len(a) : j]),
                            types[j],
                            tuple(types[k:]),
                        ),
                    )
        raise ValueError(f"cannot find the pair template of {type(tokenizer).__name__}: {ids}")

    def assemble(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        tp, ta, tm, tb, ts = self.types
        ids = [*self.prefix, *a, *self.middle, *b, *self.suffix]
        types = [*tp, *[ta] * len(a), *tm, *[tb] * len(b), *ts]
        return ids, types


def longest_first(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths kept when the longer side loses one token at a time until both fit `budget`
    (on a tie the text loses first, so the data keeps the odd token)."""
    excess = la + lb - budget
    if excess <= 0:
        return la, lb
    if la > lb:
        cut = min(la - lb, excess)
        la, excess = la - cut, excess - cut
    elif lb > la:
        cut = min(lb - la, excess)
        lb, excess = lb - cut, excess - cut
    return la - excess // 2, lb - (excess + 1) // 2


# ----------------------------------------------------------------------------- model


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
        if base not in SCRATCH_SHAPES and shape is None:
            raise ValueError(f"unknown scratch model {base!r}; choose {', '.join(SCRATCH_SHAPES)}")
        layers, width, heads = shape or SCRATCH_SHAPES[base]
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


def _check_labels(config) -> None:
    got = [config.id2label[i] for i in range(len(config.id2label))]
    if got != list(LABELS):
        raise ValueError(f"the classifier's labels are {got}, expected {list(LABELS)}")


# ----------------------------------------------------------------------------- encoding


@dataclass
class PairEncoder:
    """(linearized, text) pairs → `input_ids` (+ `token_type_ids` when `segments`), truncated
    longest-first to `max_length`."""

    tokenizer: object
    max_length: int = 256
    segments: bool = True
    lowercase: bool = False

    def __post_init__(self):
        self.template = PairTemplate.probe(self.tokenizer)
        if self.max_length <= self.template.n_special + 2:
            raise ValueError(f"max_length={self.max_length} leaves no room for a pair")
        specials = list(getattr(self.tokenizer, "all_special_tokens", []))
        specials += list(getattr(self.tokenizer, "added_tokens_encoder", {}))
        self._specials = _specials_pattern(specials)

    def _prepare(self, strings: list[str]) -> list[str]:
        strings = [(s or "").strip() for s in strings]
        if self.lowercase:
            strings = [lower_keep_specials(s, self._specials) for s in strings]
        return strings

    def encode(self, pairs: list[tuple[str, str]]) -> tuple[list[dict], int]:
        """Examples and the number of truncated pairs."""
        if not pairs:
            return [], 0
        tok = self.tokenizer
        data = tok(self._prepare([d for d, _ in pairs]), add_special_tokens=False)["input_ids"]
        text = tok(self._prepare([t for _, t in pairs]), add_special_tokens=False)["input_ids"]
        budget = self.max_length - self.template.n_special
        examples, truncated = [], 0
        for a, b in zip(data, text, strict=True):
            ka, kb = longest_first(len(a), len(b), budget)
            truncated += (ka, kb) != (len(a), len(b))
            ids, types = self.template.assemble(a[:ka], b[:kb])
            example = {"input_ids": ids}
            if self.segments:
                example["token_type_ids"] = types
            examples.append(example)
        return examples, truncated


def pad_id_of(tokenizer) -> int:
    """The tokenizer's pad id (0 when it has none: padding is masked out anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def collate_pairs(examples: list[dict], pad_id: int) -> dict:
    """Right-pad to the batch's longest example: tensors [B, T] (+ `labels` [B] when given)."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)

    def pad(key: str, value: int):
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in examples])

    batch = {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": torch.tensor(
            [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples]
        ),
    }
    if "token_type_ids" in examples[0]:
        batch["token_type_ids"] = pad("token_type_ids", 0)
    if "label" in examples[0]:
        batch["labels"] = torch.tensor([e["label"] for e in examples])
    if "rule" in examples[0]:
        batch["rules"] = torch.tensor([e["rule"] for e in examples])
    return batch


def forward_logits(model, batch: dict):
    """Logits [B, 5] of a batch (labels are not passed to the model)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    return model(**inputs).logits


def label_ids(rows: list[dict]) -> list[int]:
    out = []
    for row in rows:
        if row["label"] not in LABEL2ID:
            raise ValueError(
                f"unknown label {row['label']!r} (row {row.get('id')}); expected {LABELS}"
            )
        out.append(LABEL2ID[row["label"]])
    return out


# ----------------------------------------------------------------------------- metrics


def rule_ids(rows: list[dict]) -> list[int] | None:
    """Each pair's corruption rule id (-1 for a rule this version does not know), or None when
    the rows carry no `rule` (pairs from elsewhere than the corruption stage)."""
    if not rows or any("rule" not in r for r in rows):
        return None
    return [RULE2ID.get(r["rule"], -1) for r in rows]


def rule_sums(rules, pred) -> dict[str, float]:
    """`rule_{r}_pred_{p}`: how many pairs of rule r were predicted as label p (tensors [B]; rules
    of id -1 are left out)."""
    import torch

    known = rules >= 0
    n = len(LABELS)
    cells = torch.bincount(rules[known] * n + pred[known], minlength=len(RULES) * n).tolist()
    return {f"rule_{i // n}_pred_{i % n}": float(c) for i, c in enumerate(cells) if c}


def by_rule_from_sums(sums: dict[str, float]) -> dict[str, dict]:
    """Per rule with any pair: its label, the pairs, the share predicted as that label (`caught`;
    for `original`, the accurate pairs kept as accurate), and the predicted-label counts."""
    out = {}
    for r, rule in enumerate(RULES):
        predicted = {
            label: int(round(sums.get(f"rule_{r}_pred_{p}", 0.0))) for p, label in enumerate(LABELS)
        }
        pairs = sum(predicted.values())
        if pairs:
            label = RULE_LABELS[rule]
            out[rule] = {
                "label": label,
                "pairs": pairs,
                "caught": predicted[label] / pairs,
                "predicted": predicted,
            }
    return out


def confusion_from_sums(sums: dict[str, float]) -> list[list[int]]:
    n = len(LABELS)
    return [[int(round(sums.get(f"cm_{g}_{p}", 0.0))) for p in range(n)] for g in range(n)]


def metrics_from_confusion(cm: list[list[int]]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, the majority-class baseline.
    `cm[gold][predicted]`, in `LABELS` order. A class with no prediction has precision 0; macro-F1
    averages over the classes present in gold or predictions."""
    n = len(LABELS)
    total = sum(map(sum, cm))
    correct = sum(cm[k][k] for k in range(n))
    per_class, f1s = {}, []
    for k, label in enumerate(LABELS):
        support = sum(cm[k])
        predicted = sum(cm[g][k] for g in range(n))
        precision = cm[k][k] / predicted if predicted else 0.0
        recall = cm[k][k] / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }
        if support or predicted:
            f1s.append(f1)
    supports = [sum(cm[k]) for k in range(n)]
    majority = max(range(n), key=lambda k: supports[k]) if total else 0
    return {
        "n": total,
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "per_class": per_class,
        "confusion": cm,
        "labels": list(LABELS),
        "majority_label": LABELS[majority],
        "majority_baseline": supports[majority] / total if total else 0.0,
    }


def format_report(metrics: dict) -> str:
    """A Markdown report: per-class table, averages, the baseline and the confusion matrix."""
    lines = [
        "| label | precision | recall | F1 | support | predicted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in LABELS:
        c = metrics["per_class"][label]
        lines.append(
            f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} "
            f"| {c['support']} | {c['predicted']} |"
        )
    lines += [
        "",
        f"- pairs: {metrics['n']}",
        f"- accuracy: {metrics['accuracy']:.4f}",
        f"- macro-F1: {metrics['macro_f1']:.4f}",
        f"- majority-class baseline ({metrics['majority_label']}): "
        f"{metrics['majority_baseline']:.4f}",
    ]
    if "val_loss" in metrics:
        lines.append(f"- loss: {metrics['val_loss']:.4f}")
    lines += [
        "",
        "Confusion matrix (rows = gold, columns = predicted):",
        "",
        "| gold \\ predicted | " + " | ".join(LABELS) + " |",
        "|---|" + "---:|" * len(LABELS),
    ]
    for label, row in zip(LABELS, metrics["confusion"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    if metrics.get("by_rule"):
        lines += [
            "",
            "By corruption rule (`caught`: predicted as the rule's label; `original` = the "
            "accurate pairs):",
            "",
            "| rule | label | pairs | caught | " + " | ".join(LABELS) + " |",
            "|---|---|---:|---:|" + "---:|" * len(LABELS),
        ]
        for rule, r in metrics["by_rule"].items():
            counts = " | ".join(str(r["predicted"][label]) for label in LABELS)
            lines.append(f"| {rule} | {r['label']} | {r['pairs']} | {r['caught']:.3f} | {counts} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- training task


@dataclass
class ClassifierTask(TrainTask):
    """The fidelity classifier as a `training.TrainTask` (rows = corruption pairs:
    `linearized`, `text`, `label`)."""

    tokenizer: object = None
    base: str = "scratch:tiny"
    max_length: int = 256
    lowercase: bool = False
    segments: bool | None = None  # None: from the architecture (type_vocab_size >= 2)
    shape: tuple[int, int, int] | None = None  # scratch (layers, width, heads) override
    special_tokens: list[str] = field(default_factory=list)
    freeze_layers: int = 0  # bottom encoder layers frozen, with the embeddings
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
        _check_labels(model.config)
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


# ----------------------------------------------------------------------------- inference


class FidelityScorer:
    """A saved classifier for scoring (data, text) pairs: batched, sorted by length, inference
    mode; results in input order. Loads a local folder or an s3:// / memory:// URI."""

    def __init__(
        self,
        model_dir_or_uri: str,
        *,
        device: str | None = None,
        batch_size: int = 64,
        storage_options: dict | None = None,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        keep: list = []
        local = storage.local_dir(str(model_dir_or_uri), keep, storage_options)
        settings_path = Path(local, SETTINGS_FILE)
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            local, use_safetensors=True, trust_remote_code=False
        ).to(self.device)
        self.model.eval()
        _check_labels(self.model.config)
        self.tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=False)
        segments = settings.get("segments")
        if segments is None:
            segments = int(getattr(self.model.config, "type_vocab_size", 0) or 0) >= 2
        self.encoder = PairEncoder(
            self.tokenizer,
            int(settings.get("max_length", 256)),
            bool(segments),
            bool(settings.get("lowercase", False)),
        )
        self.batch_size = batch_size
        self.settings = settings
        self.source = str(model_dir_or_uri)
        for tmp in keep:  # everything is in memory now
            tmp.cleanup()

    def probabilities(self, pairs: list[tuple[str, str]], batch_size: int | None = None):
        """Softmax probabilities [N, 5] (a float tensor, input order)."""
        import torch

        size = batch_size or self.batch_size
        examples, _ = self.encoder.encode([(d, t) for d, t in pairs])
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
        out = torch.zeros(len(examples), len(LABELS))
        with torch.inference_mode():
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                batch = collate_pairs([examples[i] for i in idx], pad_id_of(self.tokenizer))
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out[idx] = torch.softmax(forward_logits(self.model, batch).float(), -1).cpu()
        return out

    def score(self, pairs: list[tuple[str, str]], batch_size: int | None = None) -> list[dict]:
        """One `{label, probs: {label: p}, p_accurate}` per pair, in input order."""
        probs = self.probabilities(pairs, batch_size)
        results = []
        for row in probs.tolist():
            best = max(range(len(LABELS)), key=row.__getitem__)
            results.append(
                {
                    "label": LABELS[best],
                    "probs": dict(zip(LABELS, row, strict=True)),
                    "p_accurate": row[LABEL2ID["accurate"]],
                }
            )
        return results


def evaluate_classifier(
    model_dir_or_uri,
    rows: list[dict],
    *,
    batch_size: int = 64,
    storage_options: dict | None = None,
) -> dict:
    """Metrics of a saved classifier (or a `FidelityScorer`) on labelled pairs: accuracy, macro-F1,
    per-class precision/recall/F1/support, the 5×5 confusion matrix (rows = gold, columns =
    predicted, `LABELS` order), the majority-class baseline, mean loss, and timing."""
    import torch

    started = time.perf_counter()
    scorer = (
        model_dir_or_uri
        if isinstance(model_dir_or_uri, FidelityScorer)
        else FidelityScorer(
            model_dir_or_uri, batch_size=batch_size, storage_options=storage_options
        )
    )
    gold = label_ids(rows)
    probs = scorer.probabilities([(r["linearized"], r["text"]) for r in rows], batch_size)
    n = len(LABELS)
    cm = [[0] * n for _ in range(n)]
    for g, p in zip(gold, probs.argmax(-1).tolist(), strict=True):
        cm[g][p] += 1
    metrics = metrics_from_confusion(cm)
    rules = rule_ids(rows)
    if rules is not None:
        sums = rule_sums(torch.tensor(rules), probs.argmax(-1))
        metrics["by_rule"] = by_rule_from_sums(sums)
    if gold:
        nll = -torch.log(probs[torch.arange(len(gold)), torch.tensor(gold)].clamp_min(1e-12))
        metrics["val_loss"] = float(nll.mean())
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    metrics["model"] = scorer.source
    return metrics


# ----------------------------------------------------------------------------- the stage


def _best_evaluation(card: dict) -> dict | None:
    """The held-out metrics of the exported (best) checkpoint, from the trainer's own evaluation
    over every validation pair (summed over ranks): a second pass over the split is not needed."""
    best_step = card["metrics"]["best"]["step"]
    for evaluation in reversed(card["metrics"]["evaluations"]):
        if evaluation.get("step") == best_step and "confusion" in evaluation:
            metrics = metrics_from_confusion(evaluation["confusion"])
            metrics["val_loss"] = evaluation.get("val_loss")
            metrics["step"] = best_step
            if evaluation.get("by_rule"):
                metrics["by_rule"] = evaluation["by_rule"]
            return metrics
    return None


def _pairs_of(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["linearized"], r["text"]) for r in rows]


def train_classifier(
    corruptions_uri: str,
    output_uri: str,
    config,
    special_tokens: list[str],
    num_workers: int | None = None,
    *,
    lowercase: bool = False,
    shape: tuple[int, int, int] | None = None,
    vocab_size: int = 8192,
    train_split: str = "train",
    eval_split: str | tuple[str, ...] | None = None,
    storage_options: dict | None = None,
    run_dir: str | None = None,
    max_failures: int = 0,
    use_gpu: bool | None = None,
    train_overrides: dict | None = None,
) -> dict:
    """Train the classifier on the `train_split` of a corruption stage (validating on
    `eval_split`) through Ray Train, then evaluate the saved model on `eval_split` and write
    `eval.json` + `eval_report.md` beside it. `output_uri` is a version folder
    (`registry.version_uri(root, "classifier", version)`). `config`: a `ClassifierConfig`
    (or dict). Returns the training card with `eval` (the held-out metrics) added.
    `eval_split` None: `validation`, with `validation_unseen` beside it when the stage has pairs
    of held-out categories (`linearize.validation_splits`)."""
    started = time.time()
    if eval_split is None:
        stats = stage_reader.read_manifest(corruptions_uri, storage_options).get("extra") or {}
        totals = {k: v.get("total", 0) for k, v in (stats.get("pairs") or {}).items()}
        eval_split = lin.validation_splits(totals)
    options = config.model_dump() if hasattr(config, "model_dump") else dict(config or {})
    base = options.get("base", "scratch:tiny")
    max_length = int(options.get("max_length", 256))
    train_source = StageRows(corruptions_uri, train_split, storage_options)
    val_source = StageRows(corruptions_uri, eval_split, storage_options)
    pairs = _pairs_of(train_source.load()) if is_scratch(base) else None
    if is_scratch(base) and not pairs:
        raise ValueError(f"{corruptions_uri}: no {train_split!r} pairs to train on")
    tok_started = time.perf_counter()
    tokenizer = build_classifier_tokenizer(base, pairs, special_tokens, vocab_size)
    tokenizer_seconds = round(time.perf_counter() - tok_started, 3)
    del pairs
    task = ClassifierTask(
        tokenizer=tokenizer,
        base=base,
        max_length=max_length,
        lowercase=lowercase,
        shape=shape,
        special_tokens=list(special_tokens),
        freeze_layers=int(options.get("freeze_layers") or 0),
    )
    train_config = {**options, **(train_overrides or {})}
    card = train_with_ray(
        task,
        train_source,
        val_source,
        train_config,
        output_uri,
        num_workers or options.get("workers"),
        run_dir=run_dir,
        max_failures=max_failures,
        use_gpu=use_gpu,
        storage_options=storage_options,
        card_extra={"tokenizer_seconds": tokenizer_seconds, "vocab_size": len(tokenizer)},
    )
    metrics = _best_evaluation(card)
    if metrics is None:  # no complete evaluation recorded: score the exported model here
        metrics = evaluate_classifier(
            output_uri, val_source.load(), storage_options=storage_options
        )
    metrics["split"] = eval_split if isinstance(eval_split, str) else "+".join(eval_split)
    storage.write_json(storage.join_uri(output_uri, EVAL_FILE), metrics, storage_options)
    title = f"# Fidelity classifier — held-out `{metrics['split']}` split"
    report = f"{title}\n\n{format_report(metrics)}"
    storage.write_bytes(storage.join_uri(output_uri, REPORT_FILE), report.encode(), storage_options)
    return {**card, "eval": metrics, "total_seconds": round(time.time() - started, 3)}


__all__ = [
    "LABELS",
    "ClassifierTask",
    "FidelityScorer",
    "PairEncoder",
    "PairTemplate",
    "build_classifier",
    "build_classifier_tokenizer",
    "evaluate_classifier",
    "format_report",
    "metrics_from_confusion",
    "train_classifier",
]
