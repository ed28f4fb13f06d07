"""Coverage-aware decoding: a text does not end while the record's entities are unmentioned.

`CoverageLogitsProcessor` is a transformers logits processor for `model.generate` (beam search,
greedy and sampling alike: it works on whatever rows `generate` scores, `prompts x rows_per_prompt`
of them, prompt-major). At every step, for every unfinished hypothesis:

- *Mentioned* means what the report's coverage check means (`coverage_check.entity_present`,
  also used by the reranker's `missing_entities`): the decoded text, normalised (case, accents,
  punctuation, `1,000` = 1000, `26th` = 26), contains the entity or an accepted paraphrase of it
  — `2776.0` as `2776`, an ISO date `1945-04-26` as `26 April 1945` / `April 26 1945`,
  `English language` as `English`, `United States` as `US`/`America`, `Abilene, Texas` as both
  parts anywhere in the text; a parenthesised qualifier (`Asterix (comicsCharacter)`) is optional.
  Yes/no/true/false values are never entities (linearize leaves them out: a text conveys them by
  paraphrase), so nothing holds a text back for them. Decoder and metric agree by construction.
- **Hold**: while an entity is missing, `<eos>` is forbidden. The hold is bounded: once the
  hypothesis *wants* to end (`<eos>` is its most probable next token) it may run on for at most
  `max_hold` more tokens, then `<eos>` is allowed again even with entities missing; the
  generation's own `max_new_tokens` bounds it too. A hypothesis inherits that moment from the
  prefix it grew from, so beams that reorder between steps keep their own count.
- **Bonus** (optional, `bonus > 0`): while an entity is missing, its first token (with and
  without a leading space) gets `bonus` added to its log-probability, and when the text ends in
  the first k tokens of a missing entity, its (k+1)-th token gets it: a started entity is
  finished. With beam search the bonus is part of the beams' scores (like any processor).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .coverage_check import _PARENS, entity_present, normalize


def entity_surface(entity: str) -> str:
    """The form a text would write an entity in: parenthesised qualifiers and quotes dropped."""
    bare = " ".join(_PARENS.sub(" ", entity).split()) or entity.strip()
    return bare.strip('"').strip() or bare


def missing_list(text: str, entities) -> list[str]:
    """The record's entities that `text` does not mention (the coverage check)."""
    normalized = normalize(text or "")
    return [e for e in entities or [] if not entity_present(e, normalized)]


class CoverageLogitsProcessor(LogitsProcessor):
    """Hold `<eos>` (bounded) and optionally favour missing entities; one instance per
    `generate` call. `entities[p]`: the entities of prompt p."""

    def __init__(self, tokenizer, entities: list[list[str]], eos_id: int, *,
                 max_hold: int = 16, bonus: float = 0.0):  # fmt: skip
        self.tokenizer, self.eos_id = tokenizer, eos_id
        self.entities = [list(e or []) for e in entities]
        self.max_hold, self.bonus = max_hold, bonus
        self.pieces = {e: self._pieces(e) for es in self.entities for e in es} if bonus else {}
        self.start: int | None = None  # prompt width: the first call's sequence length
        self.wanted: dict[tuple, int | None] = {}  # (prompt, *tokens) → step it wanted to end
        self._missing: dict[tuple[int, str], list[str]] = {}  # (prompt, text) → missing

    def _pieces(self, entity: str) -> list[list[int]]:
        """Token sequences of the entity mid-text (leading space) and at the text's start."""
        surface = entity_surface(entity)
        seqs = [self.tokenizer(f" {surface}", add_special_tokens=False)["input_ids"],
                self.tokenizer(surface, add_special_tokens=False)["input_ids"]]  # fmt: skip
        return [s for s in dict.fromkeys(map(tuple, seqs)) if s]

    def missing(self, prompt: int, tokens: list[int]) -> list[str]:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        key = (prompt, text)
        if key not in self._missing:
            self._missing[key] = missing_list(text, self.entities[prompt])
        return self._missing[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        if self.start is None:
            self.start = input_ids.shape[1]
        rows = input_ids.shape[0]  # [prompts x rows_per_prompt]
        per_prompt = max(1, rows // max(1, len(self.entities)))
        top = scores.argmax(-1).tolist()  # before this processor changes anything
        generated = input_ids[:, self.start :].tolist()
        wanted: dict[tuple, int | None] = {}
        held, favoured = [], []  # rows whose <eos> is held; (row, token) pairs given the bonus
        for row, tokens in enumerate(generated):
            if self.eos_id in tokens:
                continue  # a finished greedy/sampled row: generate pads it
            prompt = min(row // per_prompt, len(self.entities) - 1)
            gone = self.missing(prompt, tokens)
            key = (prompt, *tokens)
            since = self.wanted.get(key[:-1]) if tokens else None
            if gone and since is None and top[row] == self.eos_id:
                since = len(tokens)
            if key in wanted and wanted[key] is not None:  # a twin row (beams start alike)
                since = wanted[key] if since is None else min(since, wanted[key])
            wanted[key] = since
            if not gone:
                continue
            if since is None or len(tokens) - since < self.max_hold:
                held.append(row)
            if self.bonus:
                favoured += [(row, token) for token in self._favoured(tokens, gone)]
        self.wanted = wanted
        if held:
            scores[held, self.eos_id] = -float("inf")
        if favoured:
            rows_, tokens_ = zip(*favoured, strict=True)
            scores[list(rows_), list(tokens_)] += self.bonus
        return scores

    def _favoured(self, tokens: list[int], gone: list[str]) -> set[int]:
        """The next token of a missing entity the text has started, else their first tokens."""
        started, first = set(), set()
        for entity in gone:
            for piece in self.pieces[entity]:
                first.add(piece[0])
                for k in range(min(len(piece) - 1, len(tokens)), 0, -1):
                    if tuple(tokens[-k:]) == piece[:k]:
                        started.add(piece[k])
                        break
        return started or first
