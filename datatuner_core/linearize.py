"""Linearization (method §1–2): structured data → one string with special tokens, plus the
entities a faithful text must convey, the special-token vocabulary, and the state ids.

- Triple sets: `<subject> S <predicate> P <object> O`, triples sorted as strings, joined by ` ; `.
  Values: underscores, tabs and newlines become spaces; enclosing double quotes are dropped;
  predicates are split on lower→upper camelCase boundaries and lowercased
  (`birthPlace` → `birth place`).
- Slots without an act (E2E): `<name> name = [ The Eagle ] ; <eatType> eatType = [ coffee shop ]`.
- Slots with an act (ViGGO):
  `<inform> inform ( <name> name: [ X ], <release_year> release year: [ 2017 ] )`
  (the original's stray `>` before the closing parenthesis is not reproduced).
- `entities`: triple subjects and objects; slot values, list values (`PC, Xbox`) split into items;
  empty values and yes/no/true/false are left out (a text conveys them by paraphrase).

The special-token vocabulary is taken from the training split only (never from test), in a
deterministic order: the four base tokens, then the rest sorted.

Held-out categories (`dataset.holdout_categories`): the train and validation records of those
categories get the split `validation_unseen`, so no model trains on them and their special
tokens stay out of the vocabulary, as an unseen category's are at test time; checkpoint
selection validates on `validation` and `validation_unseen` together (`validation_splits`).
The test split is never changed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection, Iterable, Mapping

from . import fingerprints, stage_reader, stage_writer
from .config import LinearizeConfig
from .schema import LINEARIZED, make_quarantine

DATA, TEXT, EOS, PAD = "<data>", "<text>", "<eos>", "<pad>"
BASE_TOKENS = (DATA, TEXT, EOS, PAD)
SUBJECT, PREDICATE, OBJECT = "<subject>", "<predicate>", "<object>"
MODES = ("fine", "coarse")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_SPACE = re.compile(r"[\s_]+")
_BOOLEAN = {"yes", "no", "true", "false"}
UNSEEN_SPLIT = "validation_unseen"  # train/validation records of held-out categories
HELD_FROM = ("train", "validation")  # the splits whose held-out categories move to UNSEEN_SPLIT


def clean_value(value: str) -> str:
    """`"Aarhus, Denmark"` → `Aarhus, Denmark`; `Alan_Bean` → `Alan Bean`."""
    value = _SPACE.sub(" ", value).strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    return value


def clean_predicate(predicate: str) -> str:
    """`birthPlace` → `birth place`; `leader_name` → `leader name`."""
    return _SPACE.sub(" ", _CAMEL.sub(" ", predicate)).strip().lower()


def linearize_triples(triples: Iterable[dict]) -> tuple[str, list[str], list[str]]:
    """(linearized text, entities, special tokens used) of a triple set."""
    cleaned = [
        (clean_value(t["subject"]), clean_predicate(t["predicate"]), clean_value(t["object"]))
        for t in triples
    ]
    parts = sorted(f"{SUBJECT} {s} {PREDICATE} {p} {OBJECT} {o}" for s, p, o in cleaned)
    entities = _unique(v for s, _, o in sorted(cleaned) for v in (s, o))
    return " ; ".join(parts), entities, [SUBJECT, PREDICATE, OBJECT] if parts else []


def slot_token(name: str) -> str:
    """The special token of a slot or act name: `<customer rating>`, `<release_year>`."""
    return f"<{name.strip()}>"


def linearize_slots(act: str | None, slots: Iterable[dict]) -> tuple[str, list[str], list[str]]:
    """(linearized text, entities, special tokens used) of a meaning representation."""
    slots = [(s["slot"].strip(), s["value"].strip()) for s in slots]
    tokens = [slot_token(name) for name, _ in slots]
    entities = _unique(
        item.strip()
        for _, value in slots
        for item in value.split(", ")
        if item.strip() and item.strip().lower() not in _BOOLEAN
    )
    if act is None:
        text = " ; ".join(f"{slot_token(n)} {n} = {_bracket(v)}" for n, v in slots)
        return text, entities, tokens
    shown = ", ".join(f"{slot_token(n)} {n.replace('_', ' ')}: {_bracket(v)}" for n, v in slots)
    text = f"{slot_token(act)} {act.replace('_', ' ')} ( {shown} )"
    return text, entities, [slot_token(act), *tokens]


def _bracket(value: str) -> str:
    return f"[ {value} ]" if value else "[ ]"


def linearize_data(data: dict) -> tuple[str, list[str], list[str]]:
    """(linearized text, entities, special tokens used) of a record's `data` struct."""
    parts, entities, tokens = [], [], []
    if data.get("triples"):
        text, ents, toks = linearize_triples(data["triples"])
        parts.append(text), entities.extend(ents), tokens.extend(toks)
    if data.get("act") or data.get("slots"):
        text, ents, toks = linearize_slots(data.get("act"), data.get("slots") or [])
        parts.append(text), entities.extend(ents), tokens.extend(toks)
    if not parts:
        raise ValueError("empty record: no triples, act or slots")
    return " ; ".join(parts), _unique(entities), tokens


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def special_vocabulary(tokens: Iterable[str]) -> list[str]:
    """The base tokens, then every other special token once, sorted: one order on every run."""
    return [*BASE_TOKENS, *sorted(set(tokens) - set(BASE_TOKENS))]


def state_ids(
    input_ids: list[int],
    special_ids: Collection[int],
    data_id: int,
    text_id: int,
    mode: str = "fine",
) -> list[int]:
    """The state of every token: the id of the most recent special token (`fine`) or of the most
    recent `<data>` / `<text>` marker only (`coarse`). A marker takes its own id as its state.
    After `<text>` the state stays `<text>` (specials in or generated after the text do not change
    it), so training and generation agree. Tokens before any marker take the `<data>` state.

    >>> state_ids([1, 5, 9, 6, 9, 2, 9, 3], special_ids={5, 6}, data_id=1, text_id=2)
    [1, 5, 5, 6, 6, 2, 2, 2]
    """
    if mode not in MODES:
        raise ValueError(f"unknown linearize mode {mode!r}; choose one of {', '.join(MODES)}")
    fine = mode == "fine"
    state, in_text, out = data_id, False, []
    for token in input_ids:
        if token == text_id:
            state, in_text = text_id, True
        elif token == data_id:
            state, in_text = data_id, False
        elif fine and not in_text and token in special_ids:
            state = token
        out.append(state)
    return out


def holdout_split(record: dict, holdout: Collection[str]) -> str:
    """The record's split: `validation_unseen` for a train or validation record of a held-out
    category, else its own."""
    split = record.get("split")
    if holdout and split in HELD_FROM and record.get("category") in holdout:
        return UNSEEN_SPLIT
    return split


def validation_splits(splits: Mapping[str, int] | Iterable[str]) -> str | tuple[str, ...]:
    """The splits that select checkpoints, given a stage's splits (names, or counts by name):
    `validation`, and `validation_unseen` beside it when the stage has rows of it. A plain
    `"validation"` otherwise, so a stage without held-out categories trains as before."""
    counts = splits if isinstance(splits, Mapping) else dict.fromkeys(splits, 1)
    return ("validation", UNSEEN_SPLIT) if counts.get(UNSEEN_SPLIT) else "validation"


def linearize_record(record: dict) -> tuple[dict, list[str]]:
    """A `linearized` row from a `records` row, and the special tokens it uses."""
    text, entities, tokens = linearize_data(record["data"])
    return {**record, "linearized": text, "entities": entities}, tokens


def linearize(
    records_uri: str,
    output_uri: str,
    section: LinearizeConfig | None = None,
    *,
    holdout_categories: Collection[str] = (),
    storage_options: dict | None = None,
    shard_bytes: int = stage_writer.DEFAULT_SHARD_BYTES,
    force: bool = False,
) -> dict:
    """Linearize a records stage into a linearized stage. Returns the manifest, whose `extra`
    holds the special-token vocabulary (from the train split, or every row if there is none)
    and the split counts. `holdout_categories`: train and validation records of these
    categories become split `validation_unseen` (`extra.held_out`: records moved, by category).
    `section`: the `linearize` config section (its defaults when None)."""
    mode = (section or LinearizeConfig()).mode
    holdout = sorted(set(holdout_categories))
    source = stage_reader.read_manifest(records_uri, storage_options)
    inputs = [{"uri": records_uri, "fingerprint": source["fingerprint"]}]
    config = {"mode": mode, **({"holdout_categories": holdout} if holdout else {})}
    fp = fingerprints.fingerprint("linearize", inputs, config, fingerprints.code_version())
    if not force and (done := stage_reader.current_manifest(output_uri, fp, storage_options)):
        return {**done, "skipped": True}

    writer = stage_writer.StageWriter(
        output_uri,
        "linearize",
        LINEARIZED,
        shard_bytes=shard_bytes,
        storage_options=storage_options,
    )
    train_tokens, all_tokens, splits = set(), set(), {}
    held_out = dict.fromkeys(holdout, 0)
    for batch in stage_reader.iter_stage_batches(records_uri, storage_options):
        for record in batch.to_pylist():
            writer.stats.read += 1
            if (split := holdout_split(record, holdout)) != record.get("split"):
                record = {**record, "split": split}
                held_out[record["category"]] += 1
            try:
                row, tokens = linearize_record(record)
            except (ValueError, KeyError, TypeError) as exc:
                raw = record.get("raw") or ""
                writer.quarantine(
                    make_quarantine(record.get("source") or "", record["id"], str(exc), raw)
                )
                continue
            writer.add(row)
            writer.stats.written += 1
            writer.stats.records += 1
            all_tokens.update(tokens)
            splits[row["split"]] = splits.get(row["split"], 0) + 1
            if row["split"] == "train":
                train_tokens.update(tokens)
    if holdout and not splits.get("train") and any(held_out.values()):
        raise ValueError(
            f"{records_uri}: holdout_categories {holdout} leave no train record to learn from"
        )
    if absent := [c for c, n in held_out.items() if not n]:
        print(f"[linearize] holdout_categories not found in the train or validation records: "
              f"{', '.join(absent)}", file=sys.stderr, flush=True)  # fmt: skip
    vocab_split = "train" if train_tokens else "all"
    extra = {
        "mode": mode,
        "special_tokens": special_vocabulary(train_tokens or all_tokens),
        "vocabulary_split": vocab_split,
        "splits": dict(sorted(splits.items())),
        **({"held_out": held_out} if holdout else {}),
    }
    return writer.commit(inputs=inputs, fingerprint=fp, config=config, extra=extra)


def sample_splits(
    linearized_uri: str,
    output_uri: str,
    per_split: int,
    splits: Iterable[str] | None = None,
    *,
    seed: int = 0,
    storage_options: dict | None = None,
    force: bool = False,
) -> dict:
    """A linearized stage of at most `per_split` records of each of `splits` (None: the
    validation splits, `validation` and `validation_unseen` when there is one), drawn with `seed`
    from the records ordered by id. The pipeline verbalizes the validation sample beside the test
    split, so that the report shows the splits settings are chosen on, and a train sample for the
    classifier's hard negatives (`classifier.hard_negatives`). Every record read is written (it
    is a selection, not a transformation); `extra.sampled_from` holds each split's size."""
    import random

    source = stage_reader.read_manifest(linearized_uri, storage_options)
    if splits is None:
        splits = validation_splits(source.get("extra", {}).get("splits") or {})
        splits = splits if isinstance(splits, tuple) else (splits,)
    splits = tuple(splits)
    inputs = [{"uri": linearized_uri, "fingerprint": source["fingerprint"]}]
    config = {"per_split": per_split, "seed": seed, "splits": list(splits)}
    fp = fingerprints.fingerprint("sample_splits", inputs, config, fingerprints.code_version())
    if not force and (done := stage_reader.current_manifest(output_uri, fp, storage_options)):
        return {**done, "skipped": True}
    rows: dict[str, list[dict]] = {split: [] for split in splits}
    for batch in stage_reader.iter_stage_batches(linearized_uri, storage_options):
        for row in batch.to_pylist():
            if row["split"] in rows:
                rows[row["split"]].append(row)
    writer = stage_writer.StageWriter(
        output_uri, "linearize", LINEARIZED, storage_options=storage_options
    )
    sizes = {}
    for split, group in rows.items():
        sizes[split] = len(group)
        group.sort(key=lambda r: str(r["id"]))
        random.Random(f"{seed}/{split}").shuffle(group)
        for row in group[:per_split]:
            writer.add_counted(row)
    extra = {**source.get("extra", {}), "sampled_from": sizes,
             "splits": {s: min(n, per_split) for s, n in sizes.items() if n}}  # fmt: skip
    return writer.commit(inputs=inputs, fingerprint=fp, config=config, extra=extra)
