"""The DataTuner LM (method §2–§3): a GPT-2-family causal LM over `<data> D <text> T <eos>`, where
every token also carries the embedding of its state (the most recent special token).

- Model: `scratch:tiny` (4 layers × 256) / `scratch:small` (6 × 384) GPT-2 configs, or any
  `AutoModelForCausalLM` base that `bases.resolve` knows: the packaged `smollm2-135m` (GGUF), any
  `*.gguf` file, a local / remote folder or a hub id (safetensors only, no remote code). Added
  special tokens get fresh embedding rows drawn by the model's own initializer (small: not the
  mean-of-vocabulary rows, which would shift every token once added as a state).
- State embedding (`state_lm.py`): every token's input is `E[token] + E[state]`, for any
  architecture (for GPT-2 this equals passing the states as `token_type_ids`). The batches keep
  the state ids under the key `token_type_ids` (the name GPT-2 gives them).
- Loss on the text and `<eos>` only (labels -100 elsewhere), computed on those positions alone.
- Truncation to `max_length`: the text is cut first (its `<eos>` kept); the data is cut only when
  it alone leaves less than `MIN_TEXT_TOKENS` for the text. Both are counted.
- Batches: length-bucketed with dynamic padding (`training_data.plan_batches`), or padded to a fixed
  length (`pad_to`, the original's pad-to-split-max, kept as the benchmark baseline).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import linearize as lin
from .config import LinearizeConfig, LMConfig
from .tokenizer import is_scratch, scratch_shape, special_token_ids
from .training import TrainTask

IGNORE = -100  # label value that the loss skips
MIN_TEXT_TOKENS = 8  # text tokens kept (at least) when the data part must be truncated
SCRATCH_SHAPES = {  # name → (layers, width, heads); positions 512
    "scratch:tiny": (4, 256, 4),
    "scratch:small": (6, 384, 6),
}
SCRATCH_POSITIONS = 512


# ----------------------------------------------------------------------------- model


def build_lm(base: str, tokenizer, *, shape: tuple[int, int, int] | None = None):
    """A causal LM for `tokenizer`: a scratch GPT-2 config, or pretrained weights resized to it.

    `shape` = (layers, width, heads) overrides the scratch size (tests use tiny ones)."""
    import transformers

    if is_scratch(base):
        n_layer, n_embd, n_head = scratch_shape(base, shape, SCRATCH_SHAPES)
        config = transformers.GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=SCRATCH_POSITIONS,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            bos_token_id=tokenizer.convert_tokens_to_ids(lin.DATA),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            # GPT-2's tanh GELU as one kernel (not `gelu_new`'s seven elementwise ops): the same
            # formula, a training step 1.12x faster at the tiny shape
            activation_function="gelu_pytorch_tanh",
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        from .bases import load_model

        model = load_model(transformers.AutoModelForCausalLM, base)
        if model.get_input_embeddings().num_embeddings != len(tokenizer):
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        model.config.eos_token_id = tokenizer.eos_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def forward_lm(model, batch: dict):
    """The output of a plain `transformers` LM with the batch's state embeddings added
    (`.loss` = mean NLL over labelled tokens, `.logits` [B, T, V])."""
    from .state_lm import embed_with_states

    return model(
        # [B, T, H]: E[input_ids] + E[state ids]
        inputs_embeds=embed_with_states(model, batch["input_ids"], batch["token_type_ids"]),
        attention_mask=batch["attention_mask"],  # [B, T] 1 = real token
        labels=batch["labels"],  # [B, T] -100 outside text + <eos>
    )


# ----------------------------------------------------------------------------- encoding


@dataclass
class Vocab:
    """The ids the encoder needs, resolved once from a tokenizer."""

    data: int
    text: int
    eos: int
    pad: int
    specials: frozenset[int]

    @classmethod
    def of(cls, tokenizer, special_tokens: list[str]) -> Vocab:
        ids = special_token_ids(tokenizer, special_tokens)
        get = tokenizer.convert_tokens_to_ids
        return cls(get(lin.DATA), get(lin.TEXT), get(lin.EOS), get(lin.PAD), frozenset(ids))


def assemble(
    vocab: Vocab, data_ids: list[int], text_ids: list[int], mode: str, max_length: int
) -> tuple[dict, str | None]:
    """`<data> D <text> T <eos>` with state ids and labels, truncated to `max_length`.
    Returns (example, what was truncated: None, "text" or "data")."""
    cut = None
    room = max_length - 3  # <data>, <text>, <eos>
    if len(data_ids) + len(text_ids) > room:
        keep_data = min(len(data_ids), room - min(len(text_ids), MIN_TEXT_TOKENS))
        cut = "data" if keep_data < len(data_ids) else "text"
        data_ids = data_ids[:keep_data]
        text_ids = text_ids[: room - keep_data]
    input_ids = [vocab.data, *data_ids, vocab.text, *text_ids, vocab.eos]
    n_prompt = len(data_ids) + 2
    labels = [IGNORE] * n_prompt + input_ids[n_prompt:]
    states = lin.state_ids(input_ids, vocab.specials, vocab.data, vocab.text, mode)
    return {"input_ids": input_ids, "token_type_ids": states, "labels": labels}, cut


def default_vocab(tokenizer) -> Vocab:
    """The `Vocab` of a tokenizer from `build_tokenizer`: its special tokens are the added
    tokens from `<data>` (added first) onwards."""
    first = tokenizer.convert_tokens_to_ids(lin.DATA)
    added = [t for t, i in sorted(tokenizer.added_tokens_encoder.items(), key=lambda x: x[1])]
    return Vocab.of(tokenizer, [t for t in added if tokenizer.convert_tokens_to_ids(t) >= first])


def encode_example(
    tokenizer, linearized: str, text: str, mode: str, max_length: int, vocab: Vocab | None = None
) -> dict:
    """One training example (`input_ids`, `token_type_ids`, `labels`) for (data, text)."""
    vocab = vocab or default_vocab(tokenizer)
    data_ids = tokenizer(linearized.strip(), add_special_tokens=False)["input_ids"]
    text_ids = tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
    return assemble(vocab, data_ids, text_ids, mode, max_length)[0]


def encode_prompt(
    tokenizer, linearized: str, mode: str, room: int, vocab: Vocab | None = None
) -> dict:
    """The generation input `<data> D <text>` (`input_ids`, `token_type_ids`), the data cut to
    its first `room` tokens (`truncated`: it was cut). The Generator builds every prompt here."""
    vocab = vocab or default_vocab(tokenizer)
    data_ids = tokenizer(linearized.strip(), add_special_tokens=False)["input_ids"]
    input_ids = [vocab.data, *data_ids[:room], vocab.text]
    states = lin.state_ids(input_ids, vocab.specials, vocab.data, vocab.text, mode)
    return {"input_ids": input_ids, "token_type_ids": states, "truncated": len(data_ids) > room}


def training_pairs(rows: Iterable[dict]) -> list[tuple[str, str]]:
    """One (linearized, text) pair per (record, non-empty reference), stripped."""
    return [
        (row["linearized"].strip(), ref.strip())
        for row in rows
        for ref in (row.get("references") or [])
        if ref and ref.strip()
    ]


def encode_rows(
    tokenizer, rows: Iterable[dict], special_tokens: list[str], mode: str, max_length: int
) -> tuple[list[dict], dict[str, int]]:
    """Examples for every (record, reference) of `rows`, and counts (`examples`,
    `truncated_text`, `truncated_data`)."""
    vocab = Vocab.of(tokenizer, special_tokens)
    pairs = training_pairs(rows)
    if not pairs:
        return [], {"examples": 0, "truncated_text": 0, "truncated_data": 0}
    data_ids = tokenizer([d for d, _ in pairs], add_special_tokens=False)["input_ids"]
    text_ids = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    examples, counts = [], {"examples": 0, "truncated_text": 0, "truncated_data": 0}
    for d, t in zip(data_ids, text_ids, strict=True):
        example, cut = assemble(vocab, d, t, mode, max_length)
        examples.append(example)
        counts["examples"] += 1
        if cut:
            counts[f"truncated_{cut}"] += 1
    return examples, counts


def collate_lm(examples: list[dict], pad_id: int, pad_to: int | None = None) -> dict:
    """Right-pad a batch to its longest example (or to `pad_to`) as tensors [B, T]."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is shorter than an example ({width} tokens)")
        width = pad_to

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in examples])

    return {
        "input_ids": pad("input_ids", pad_id),
        "token_type_ids": pad("token_type_ids", pad_id),
        "labels": pad("labels", IGNORE),
        "attention_mask": torch.tensor(
            [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples]
        ),
    }


def decode_text(tokenizer, ids: list[int]) -> str:
    """Generated ids → text (special tokens dropped, the policy's leading space stripped)."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


# ----------------------------------------------------------------------------- training task


_SECTION = LMConfig()  # the defaults of the settings a task shares with its config section


@dataclass
class LMTask(TrainTask):
    """The LM as a `training.TrainTask` (rows = linearized records with `references`)."""

    tokenizer: object = None
    special_tokens: list[str] = field(default_factory=list)
    base: str = _SECTION.base
    mode: str = LinearizeConfig().mode
    max_length: int = _SECTION.max_length
    pad_to: int | None = None  # None: dynamic padding; an int: pad every batch to it (baseline)
    shape: tuple[int, int, int] | None = None  # scratch (layers, width, heads) override
    freeze_layers: int = _SECTION.freeze_layers  # bottom decoder blocks kept frozen
    freeze_embeddings: bool = _SECTION.freeze_embeddings  # input embeddings frozen (tied: untied)
    lora_rank: int = _SECTION.lora_rank  # LoRA adapters above freeze_layers; 0 = none
    lora_alpha: float = _SECTION.lora_alpha
    name: str = "lm"
    monitor: str = "val_ppl"  # lower is better

    def build_model(self):
        """A `state_lm.StateLM` (what the trainer and DDP see; `.lm` is the plain model)."""
        from .state_lm import StateLM, freeze, parameter_counts

        model = build_lm(self.base, self.tokenizer, shape=self.shape)
        freeze(model, self.freeze_layers, self.freeze_embeddings)
        if self.lora_rank:
            from .lora import add_adapters

            add_adapters(model, self.lora_rank, self.lora_alpha, self.freeze_layers)
        # the special tokens' rows are new: they train even when the embeddings are frozen
        lm = StateLM(model, special_token_ids(self.tokenizer, self.special_tokens))
        self.parameter_counts = parameter_counts(lm)
        return lm

    def encode(self, rows: list[dict]) -> list[dict]:
        examples, self.counts = encode_rows(
            self.tokenizer, rows, self.special_tokens, self.mode, self.max_length
        )
        return examples

    def collate(self, examples: list[dict]) -> dict:
        return collate_lm(examples, self.tokenizer.pad_token_id, self.pad_to)

    def loss(self, model, batch: dict):
        return model(**batch)  # StateLM (or DDP around it): mean NLL of the labelled tokens

    def eval_sums(self, model, batch: dict) -> dict[str, float]:
        """Summed token NLL and labelled-token count of a batch."""
        nll = model(**batch, reduction="sum")
        return {"nll": float(nll), "tokens": float((batch["labels"][:, 1:] != IGNORE).sum())}

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        import math

        mean = sums["nll"] / max(sums["tokens"], 1.0)
        return {"val_nll": mean, "val_ppl": math.exp(min(mean, 50.0))}

    def save(self, model, directory: str) -> None:
        plain = model.merged() if hasattr(model, "merged") else model
        plain.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


# ----------------------------------------------------------------------------- stage


def train_lm(
    linearized_uri: str,
    output_uri: str,
    section: LMConfig,
    *,
    special_tokens: list[str],
    mode: str = LinearizeConfig().mode,
) -> dict:
    """The LM stage: build the tokenizer (a scratch BPE on the train split's data and texts),
    train through Ray Train on the train split, validate on the validation split (and
    `validation_unseen`, the held-out categories, when there is one), and write the
    best model + training card to `output_uri`. `section`: the `lm` config section, read whole;
    `mode`: the linearization's state mode. Returns the card."""
    from . import stage_reader
    from .tokenizer import build_tokenizer
    from .training import train_with_ray
    from .training_data import StageRows

    train = StageRows(linearized_uri, "train")
    corpus = None
    if is_scratch(section.base):
        corpus = [text for pair in training_pairs(train.load()) for text in pair]
    task = LMTask(
        tokenizer=build_tokenizer(section.base, corpus, special_tokens),
        special_tokens=special_tokens,
        base=section.base,
        mode=mode,
        max_length=section.max_length,
        freeze_layers=section.freeze_layers,
        freeze_embeddings=section.freeze_embeddings,
        lora_rank=section.lora_rank,
        lora_alpha=section.lora_alpha,
    )
    # checkpoints are chosen on the validation split and the held-out categories' records
    splits = stage_reader.read_manifest(linearized_uri).get("extra", {}).get("splits") or {}
    validation = StageRows(linearized_uri, lin.validation_splits(splits))
    return train_with_ray(task, train, validation, section, output_uri)
