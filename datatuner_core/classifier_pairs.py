"""The classifier's input: (linearized data, text) pairs as token ids, labels and rule ids.

- Labels: exactly `corrupt.LABELS` (accurate, value_error, omission, repetition, hallucination),
  index = position, in `config.id2label` / `config.label2id`.
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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import linearize as lin
from .corrupt import LABELS, RULE_LABELS
from .tokenizer import build_tokenizer, is_scratch, load_pretrained_tokenizer

LABEL2ID = {label: i for i, label in enumerate(LABELS)}
ID2LABEL = dict(enumerate(LABELS))
RULES = tuple(RULE_LABELS)  # the corruption rules ("original" = the accurate pair), in id order
RULE2ID = {rule: i for i, rule in enumerate(RULES)}


def pairs_of(rows: list[dict]) -> list[tuple[str, str]]:
    """The (linearized, text) pair of each row."""
    return [(r["linearized"], r["text"]) for r in rows]


def label_ids(rows: list[dict]) -> list[int]:
    """Each pair's label id; an unknown label is an error that names the row."""
    out = []
    for row in rows:
        if row["label"] not in LABEL2ID:
            raise ValueError(
                f"unknown label {row['label']!r} (row {row.get('id')}); expected {LABELS}"
            )
        out.append(LABEL2ID[row["label"]])
    return out


def rule_ids(rows: list[dict]) -> list[int] | None:
    """Each pair's corruption rule id (-1 for a rule this version does not know), or None when
    the rows carry no `rule` (pairs from elsewhere than the corruption stage)."""
    if not rows or any("rule" not in r for r in rows):
        return None
    return [RULE2ID.get(r["rule"], -1) for r in rows]


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


# ----------------------------------------------------------------------------- encoding


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


@dataclass
class PairEncoder:
    """(linearized, text) pairs → `input_ids` (+ `token_type_ids` when `segments`), truncated
    longest-first to `max_length`."""

    tokenizer: object
    max_length: int
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
