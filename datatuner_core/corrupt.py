"""Corruption stage: labelled (data, text) pairs for the semantic-fidelity classifier.

After the DataTuner method (reference notes §5), written from the description only. Every
(record, reference) yields the accurate pair plus up to `per_example` corruptions, each tagged
with one of five labels and the rule (`corruption_rules`) that made it: value_error, omission,
repetition, hallucination (`RULE_LABELS`).

The rules return every candidate they can make, in a fixed order; all randomness lives in
`corrupt_records`, seeded by `seed` and the record id, so a record's output does not depend on
the other records except through the pool of foreign sentences/entities (a bounded reservoir
over the records read so far, deterministic given the input order).
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

from .config import CorruptConfig
from .corruption_rules import (
    clause_drop,
    entity_cut,
    entity_swap,
    negation_removal,
    novel,
    sentence_drop,
    sentence_insert,
    sentence_repeat,
    sentence_substitute,
    yes_no_flip,
)
from .sentences import split_sentences

LABELS = ("accurate", "value_error", "omission", "repetition", "hallucination")

RULE_LABELS: dict[str, str] = {
    "original": "accurate",
    "entity_swap": "value_error",
    "entity_cut": "value_error",
    "negation_removal": "value_error",
    "yes_no_flip": "value_error",
    "sentence_drop": "omission",
    "clause_drop": "omission",
    "sentence_repeat": "repetition",
    "sentence_insert": "hallucination",
    "sentence_substitute": "hallucination",
}

BALANCE_MODES = ("none", "upsample")
MAX_UPSAMPLE = 4  # a minority label grows towards the majority count, at most 4x its own count

# ----------------------------------------------------------------------------------------------
# Pool of other records' sentences and entities


class _Reservoir:
    """A bounded, seeded reservoir sample of (record id, value) pairs."""

    def __init__(self, size: int, rng: random.Random):
        """An empty reservoir holding at most `size` items."""
        self.size, self.rng, self.seen, self.items = size, rng, 0, []

    def add(self, record_id: str, value: str) -> None:
        """Offer one item (standard reservoir sampling)."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append((record_id, value))
        else:
            j = self.rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = (record_id, value)

    def draw(self, rng: random.Random, k: int, exclude_id: str) -> list[str]:
        """Up to `k` values drawn with `rng`, none from record `exclude_id`."""
        order = rng.sample(range(len(self.items)), min(len(self.items), 4 * k + 4))
        values = [self.items[i][1] for i in order if self.items[i][0] != exclude_id]
        return list(dict.fromkeys(values))[:k]


def _references(row: dict, max_references: int) -> list[str]:
    """The record's first `max_references` non-empty references, whitespace-normalised."""
    refs = (" ".join(str(r).split()) for r in (row.get("references") or []))
    return list(islice((r for r in refs if r), max_references))


def _entities(row: dict) -> list[str]:
    """The record's entities, or, when absent, its subjects/objects or slot values."""
    if row.get("entities"):
        return [str(e) for e in row["entities"]]
    data = row.get("data") or {}
    values = [v for t in data.get("triples") or [] for v in (t["subject"], t["object"])]
    values += [s["value"] for s in data.get("slots") or []]
    return [v for v in dict.fromkeys(str(v).strip() for v in values) if v]


class _Pool:
    """Sentences and entities of the records read so far, for the rules that need other records."""

    def __init__(self, size: int, seed: int):
        """Empty sentence and entity reservoirs of `size` items each."""
        rng = random.Random(f"pool/{seed}")
        self.sentences, self.entities = _Reservoir(size, rng), _Reservoir(size, rng)

    def add(self, row: dict, max_references: int) -> None:
        """Offer one record's reference sentences and entities."""
        record_id = str(row["id"])
        for ref in _references(row, max_references):
            for sentence in split_sentences(ref):
                self.sentences.add(record_id, sentence)
        for entity in dict.fromkeys(_entities(row)):
            self.entities.add(record_id, entity)


# ----------------------------------------------------------------------------------------------
# Drawing corruptions per (record, reference)


def _candidates(text: str, linearized: str, row: dict, foreign: list[str], others: list[str]):
    """Every candidate per rule, as {rule: [(linearized, text), ...]}."""
    entities = _entities(row)
    slots = (row.get("data") or {}).get("slots") or []
    text_rules: dict[str, Callable[[], list[str]]] = {
        "entity_swap": lambda: entity_swap(text, entities, others),
        "entity_cut": lambda: entity_cut(text, entities),
        "negation_removal": lambda: negation_removal(text),
        "sentence_drop": lambda: sentence_drop(text),
        "clause_drop": lambda: clause_drop(text),
        "sentence_repeat": lambda: sentence_repeat(text),
        "sentence_insert": lambda: sentence_insert(text, foreign),
        "sentence_substitute": lambda: sentence_substitute(text, foreign),
    }
    found = {rule: [(linearized, t) for t in make()] for rule, make in text_rules.items()}
    found["yes_no_flip"] = [(d, text) for d in yes_no_flip(linearized, slots)]
    return found


def _round_robin(lists: list[list]) -> Iterator:
    """Items of `lists` interleaved: the first of each, then the second of each, and so on."""
    for depth in range(max((len(x) for x in lists), default=0)):
        yield from (x[depth] for x in lists if depth < len(x))


def _draw(candidates: dict[str, list], original: tuple[str, str], k: int, key: str):
    """Up to `k` distinct (rule, linearized, text) picks spread over labels, then over rules.

    Each rule shuffles with its own generator (seeded by `key` and the rule name), so the picks
    of one rule do not depend on how many candidates another rule (say, a pool-fed one) made.
    """
    by_label: dict[str, list[list]] = {}
    for rule in sorted(candidates):
        picks = [(rule, d, t) for d, t in candidates[rule]]
        random.Random(f"{key}/{rule}").shuffle(picks)
        by_label.setdefault(RULE_LABELS[rule], []).append(picks)
    rng = random.Random(f"{key}/labels")
    per_label = []
    for label in LABELS[1:]:
        rules = by_label.get(label, [])
        rng.shuffle(rules)
        per_label.append(_round_robin(rules))
    rng.shuffle(per_label)
    chosen, seen = [], {original}
    for rule, data, text in _round_robin([list(x) for x in per_label]):
        if len(chosen) >= k:
            break
        if (data, text) not in seen:
            seen.add((data, text))
            chosen.append((rule, data, text))
    return chosen


def _corrupt_row(row: dict, pool: _Pool, *, per_example: int, seed: int, max_references: int):
    """The output rows of one record: per reference, the accurate pair then its corruptions."""
    record_id, linearized = str(row["id"]), str(row.get("linearized") or "")
    for r, text in enumerate(_references(row, max_references)):
        key = f"{seed}/{record_id}/{r}"
        rng = random.Random(f"{key}/pool")
        known = " ".join([linearized, *map(str, row.get("references") or [])])
        foreign = [f for f in pool.sentences.draw(rng, 6, record_id) if novel(f, known)][:3]
        others = pool.entities.draw(rng, 3, record_id)
        candidates = _candidates(text, linearized, row, foreign, others)
        picks = _draw(candidates, (linearized, text), per_example, key)
        for k, (rule, data, corrupted) in enumerate([("original", linearized, text), *picks]):
            yield {
                "id": f"{record_id}/{r}/{k}",
                "record_id": record_id,
                "linearized": data,
                "text": corrupted,
                "label": RULE_LABELS[rule],
                "rule": rule,
            }


def _corrupt_stream(rows, *, per_example, seed, max_references, lookahead, pool_size):
    """Corrupt records in input order; records enter the pool `lookahead` rows ahead."""
    pool, window = _Pool(pool_size, seed), deque()
    options = {"per_example": per_example, "seed": seed, "max_references": max_references}
    for row in rows:
        pool.add(row, max_references)
        window.append(row)
        if len(window) > lookahead:
            yield from _corrupt_row(window.popleft(), pool, **options)
    while window:
        yield from _corrupt_row(window.popleft(), pool, **options)


def corrupt_records(
    rows: Iterable[dict],
    *,
    per_example: int = CorruptConfig().per_example,
    seed: int = CorruptConfig().seed,
    balance: str = "none",
    max_references: int = 3,
    lookahead: int = 64,
    pool_size: int = 2000,
) -> Iterator[dict]:
    """Labelled pairs for `linearized` rows: each accurate pair, then `per_example` corruptions."""
    if balance not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {BALANCE_MODES}, got {balance!r}")
    for name, value in (
        ("per_example", per_example),
        ("max_references", max_references),
        ("lookahead", lookahead),
        ("pool_size", pool_size),
    ):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    stream = _corrupt_stream(
        rows,
        per_example=per_example,
        seed=seed,
        max_references=max_references,
        lookahead=lookahead,
        pool_size=pool_size,
    )
    if balance == "upsample":
        return iter(balance_classes(list(stream), seed))
    return stream


def balance_classes(rows: Iterable[dict], seed: int = 13) -> list[dict]:
    """Oversample minority labels towards the majority count (at most 4x each), shuffled."""
    rows = list(rows)
    rng = random.Random(f"balance/{seed}")
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    majority = max((len(v) for v in by_label.values()), default=0)
    out = list(rows)
    for label in sorted(by_label):
        group = by_label[label]
        extra = min(majority - len(group), (MAX_UPSAMPLE - 1) * len(group))
        for n, row in enumerate(rng.choices(group, k=extra)):
            out.append({**row, "id": f"{row['id']}#up{n}"})
    rng.shuffle(out)
    return out


def corruption_stats(rows: Iterable[dict]) -> dict:
    """Counts of rows in total, by label (all five, zeros included) and by rule."""
    labels, rules, total = Counter(), Counter(), 0
    for row in rows:
        total += 1
        labels[row["label"]] += 1
        rules[row["rule"]] += 1
    return {
        "total": total,
        "by_label": {label: labels.get(label, 0) for label in LABELS},
        "by_rule": dict(sorted(rules.items())),
    }


def corrupt(
    linearized_uri: str,
    output_uri: str,
    section: CorruptConfig,
    *,
    splits: tuple[str, ...] = ("train", "validation", "validation_unseen"),
    storage_options: dict | None = None,
    force: bool = False,
) -> dict:
    """The corruption stage: labelled pairs for the records of `splits` of a linearized stage,
    with the `corrupt` config section's settings (read whole: per_example, seed, balance).

    The train split is balanced with `balance` (it is held in memory for that: one row per pair);
    the other splits stay as the rules give them, as the classifier's held-out set
    (`validation_unseen`: the records of held-out categories, see `linearize`). A record
    without a reference text cannot give a pair and is quarantined. Returns the manifest.
    """
    from . import fingerprints, stage_reader, stage_writer
    from .linearize import UNSEEN_SPLIT
    from .schema import CORRUPTIONS, make_quarantine

    per_example, seed, balance = section.per_example, section.seed, section.balance

    source = stage_reader.read_manifest(linearized_uri, storage_options)
    inputs = [{"uri": linearized_uri, "fingerprint": source["fingerprint"]}]
    # a split the linearized stage does not have is left out (and out of the fingerprint, so a
    # stage made before held-out categories existed stays current)
    present = (source.get("extra") or {}).get("splits") or {}
    splits = tuple(s for s in splits if s != UNSEEN_SPLIT or present.get(s))
    config = {"per_example": per_example, "seed": seed, "balance": balance, "splits": splits}
    fp = fingerprints.fingerprint("corrupt", inputs, config, fingerprints.code_version())
    if not force and (done := stage_reader.current_manifest(output_uri, fp, storage_options)):
        return {**done, "skipped": True}
    writer = stage_writer.StageWriter(
        output_uri, "corrupt", CORRUPTIONS, storage_options=storage_options
    )
    by_split: dict[str, list[dict]] = {split: [] for split in splits}
    for batch in stage_reader.iter_stage_batches(linearized_uri, storage_options):
        for row in batch.to_pylist():
            if row["split"] not in by_split:
                continue
            writer.stats.read += 1
            if not any((r or "").strip() for r in row["references"] or []):
                bad = make_quarantine(row["source"], row["id"], "no reference text to corrupt", "")
                writer.quarantine(bad)
                continue
            writer.stats.written += 1
            writer.stats.records += 1
            by_split[row["split"]].append(row)
    stats = {}
    for split, rows in by_split.items():
        mode = balance if split == "train" else "none"
        pairs = corrupt_records(rows, per_example=per_example, seed=seed, balance=mode)
        pairs = [{**pair, "split": split} for pair in pairs]
        for pair in pairs:
            writer.add(pair)
        stats[split] = corruption_stats(pairs)
    return writer.commit(inputs=inputs, fingerprint=fp, config=config, extra={"pairs": stats})
