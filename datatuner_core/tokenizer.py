"""Tokenizers for the LM (method §2): a pretrained one by id or directory, or a byte-level BPE
trained offline on the training corpus (`scratch:*`), plus the special-token vocabulary.

Whitespace policy around special tokens (one rule for every base):
- every special token (`<data> <text> <eos> <pad>` and the dataset's markers such as `<subject>`)
  is an added token with `lstrip` and `rstrip`: it swallows the spaces on both sides, so
  `"<subject> Alan"`, `"<subject>Alan"` and `"<subject>  Alan"` tokenize the same;
- each stretch of text between two special tokens is encoded as if it followed a space (byte-level
  `add_prefix_space`), so the word after a marker takes its usual mid-sentence form (`ĠAlan`):
  an entity is the same token sequence in the data and in the text, which eases copying.
Special tokens are added in the given order (ids follow it), after the base vocabulary.
`pad_token` is `<pad>`, `eos_token` is `<eos>`; there is no BOS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .linearize import BASE_TOKENS, EOS, PAD

SCRATCH_PREFIX = "scratch:"
DEFAULT_VOCAB_SIZE = 8192
MIN_FREQUENCY = 2  # a BPE merge must occur at least this often in the corpus


def is_scratch(base: str) -> bool:
    return str(base).startswith(SCRATCH_PREFIX)


def scratch_shape(base: str, shape: tuple | None, shapes: dict) -> tuple[int, int, int]:
    """(layers, width, heads) of scratch model `base`: `shape` when given, else its named size."""
    if base not in shapes and shape is None:
        raise ValueError(f"unknown scratch model {base!r}; choose {', '.join(shapes)}")
    return tuple(shape or shapes[base])


def build_tokenizer(
    base: str,
    corpus: Iterable[str] | None,
    special_tokens: list[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
):
    """A `PreTrainedTokenizerFast` for `base` with `special_tokens` added (in that order).

    `scratch:*` trains a byte-level BPE on `corpus` (train-split linearized data and texts);
    anything else is a Hugging Face id or a local directory for `AutoTokenizer`."""
    missing = [t for t in BASE_TOKENS if t not in special_tokens]
    if missing:
        raise ValueError(f"special_tokens must contain the base tokens; missing {missing}")
    if is_scratch(base):
        if corpus is None:
            raise ValueError(f"{base}: a scratch tokenizer needs a training corpus")
        tokenizer = train_byte_level_bpe(corpus, special_tokens, vocab_size)
    else:
        tokenizer = load_pretrained_tokenizer(base)
    return add_special_vocabulary(tokenizer, special_tokens)


def train_byte_level_bpe(corpus: Iterable[str], special_tokens: list[str], vocab_size: int):
    """Train a byte-level BPE on `corpus` (special tokens removed first: no merge learns them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    strip = re.compile(
        "|".join(re.escape(t) for t in sorted(special_tokens, key=len, reverse=True))
    )
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=MIN_FREQUENCY,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    bpe.train_from_iterator((strip.sub(" ", text) for text in corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe)


def load_pretrained_tokenizer(base: str):
    """`AutoTokenizer` for a base (`bases.resolve`: packaged alias, GGUF file, folder, hub id; no
    remote code); byte-level pre-tokenizers are switched to `add_prefix_space` (the whitespace
    policy above)."""
    from transformers import AutoTokenizer

    from .bases import resolve

    b = resolve(base)
    tokenizer = AutoTokenizer.from_pretrained(b.path, **b.kwargs(weights=False))
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{base}: a fast (Rust) tokenizer is required")
    set_prefix_space(tokenizer.backend_tokenizer)
    return tokenizer


def set_prefix_space(backend) -> None:
    """Turn on `add_prefix_space` in a ByteLevel pre-tokenizer (alone or inside a Sequence)."""
    from tokenizers import pre_tokenizers

    pre = backend.pre_tokenizer
    if isinstance(pre, pre_tokenizers.ByteLevel):
        pre.add_prefix_space = True
    elif isinstance(pre, pre_tokenizers.Sequence):
        for i in range(len(pre)):
            if isinstance(pre[i], pre_tokenizers.ByteLevel):
                pre[i].add_prefix_space = True


def add_special_vocabulary(tokenizer, special_tokens: list[str]):
    """Add the special tokens (space-swallowing, never split) in order; set pad and eos."""
    from tokenizers import AddedToken

    added = [
        AddedToken(t, lstrip=True, rstrip=True, single_word=False, normalized=False, special=True)
        for t in special_tokens
        if t not in tokenizer.get_vocab()
    ]
    tokenizer.add_tokens(added, special_tokens=True)
    tokenizer.add_special_tokens({"eos_token": EOS, "pad_token": PAD})
    tokenizer.padding_side = "right"
    missing = [t for t in special_tokens if tokenizer.convert_tokens_to_ids(t) is None]
    if missing:
        raise ValueError(f"special tokens not in the vocabulary after adding them: {missing}")
    return tokenizer


def special_token_ids(tokenizer, special_tokens: list[str]) -> list[int]:
    """Ids of `special_tokens`, in order."""
    return [tokenizer.convert_tokens_to_ids(t) for t in special_tokens]


def save_tokenizer(tokenizer, directory: str) -> None:
    tokenizer.save_pretrained(directory)


def load_tokenizer(directory: str):
    """A tokenizer saved by `save_tokenizer` (plain `AutoTokenizer` works too)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
