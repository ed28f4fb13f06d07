"""A saved fidelity classifier at work: `FidelityScorer` scores (data, text) pairs (the reranker's
judge), `evaluate_classifier` measures a saved classifier on labelled pairs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import storage
from .classifier_metrics import by_rule_from_sums, metrics_from_confusion, rule_sums
from .classifier_model import SETTINGS_FILE, check_labels, forward_logits
from .classifier_pairs import LABEL2ID, PairEncoder, collate_pairs, label_ids, pad_id_of, rule_ids
from .corrupt import LABELS


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
        check_labels(self.model.config)
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
