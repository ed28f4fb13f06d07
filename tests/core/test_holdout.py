"""Held-out categories (`dataset.holdout_categories`): their train and validation records become
`validation_unseen`, never reach a trainer, stay out of the vocabulary, and join the validation
that chooses checkpoints."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from datatuner_core import classifier as clf
from datatuner_core import corrupt, lm, stage_reader, stage_writer, training
from datatuner_core import linearize as lin
from datatuner_core.config import CorruptConfig, load_config
from datatuner_core.schema import RECORDS, make_record

HELD = ["City", "Monument"]


def _record(rid, split, category, slots, text):
    return make_record(id=rid, source="t", split=split, raw=rid, slots=slots,
                       references=[text], category=category)  # fmt: skip


ROWS = [
    _record("a1", "train", "Airport", [("runway", "3000")], "The runway is 3000 metres long."),
    _record("a2", "train", "Airport", [("runway", "20"), ("city", "Aarhus")], "Aarhus: 20 m."),
    _record("c1", "train", "City", [("mayor", "Jane Doe")], "Jane Doe is the mayor."),
    _record("m1", "train", "Monument", [("sculptor", "Ann Lee")], "Ann Lee made the monument."),
    _record("v1", "validation", "Airport", [("runway", "1500")], "Its runway is 1500 metres."),
    _record("v2", "validation", "City", [("mayor", "John Roe")], "John Roe is the mayor."),
    _record("s1", "test", "City", [("mayor", "Bo Ek")], "Bo Ek is the mayor."),
]
# a train record of a held-out category that cannot be linearized: moved, then quarantined
BAD = {**ROWS[2], "id": "c2", "raw": "c2", "data": {"triples": [], "act": None, "slots": []}}


@pytest.fixture
def records(tmp_path) -> str:
    writer = stage_writer.StageWriter(str(tmp_path / "records"), "ingest", RECORDS)
    for row in [*ROWS, BAD]:
        writer.add_counted(row)
    writer.commit(inputs=[], fingerprint="records")
    return str(tmp_path / "records")


@pytest.fixture
def linearized(records, tmp_path) -> str:
    lin.linearize(records, str(tmp_path / "linearized"), holdout_categories=HELD)
    return str(tmp_path / "linearized")


def test_held_out_categories_move_to_validation_unseen_and_leave_the_vocabulary(linearized):
    manifest = stage_reader.read_manifest(linearized)
    counts = manifest["counts"]
    assert counts["read"] == counts["written"] + counts["quarantined"] == len(ROWS) + 1
    assert counts["quarantined"] == 1
    # train and validation records of City and Monument move; the test split never does
    splits = {r["id"]: r["split"] for r in stage_reader.read_stage(linearized).to_pylist()}
    assert splits == {
        "a1": "train",
        "a2": "train",
        "c1": lin.UNSEEN_SPLIT,
        "m1": lin.UNSEEN_SPLIT,
        "v1": "validation",
        "v2": lin.UNSEEN_SPLIT,
        "s1": "test",
    }
    extra = manifest["extra"]
    assert extra["splits"] == {"test": 1, "train": 2, "validation": 1, lin.UNSEEN_SPLIT: 3}
    assert extra["held_out"] == {"City": 3, "Monument": 1}  # the bad row was moved too
    # the vocabulary is the train split's: a held-out category's slots are unseen, as at test
    vocab = extra["special_tokens"]
    assert {"<runway>", "<city>"} <= set(vocab)
    assert not {"<mayor>", "<sculptor>"} & set(vocab)
    assert manifest["config"]["holdout_categories"] == HELD


def test_no_holdout_keeps_the_stage_and_its_fingerprint(records, tmp_path):
    plain = lin.linearize(records, str(tmp_path / "plain"))
    assert plain["config"] == {"mode": "fine"}  # as before the option existed
    assert "held_out" not in plain["extra"] and lin.UNSEEN_SPLIT not in plain["extra"]["splits"]
    assert "<mayor>" in plain["extra"]["special_tokens"]
    assert lin.validation_splits(plain["extra"]["splits"]) == "validation"
    other = lin.linearize(records, str(tmp_path / "plain"), holdout_categories=["City"])
    assert not other.get("skipped")  # another hold-out is another stage


def test_a_holdout_of_every_train_category_is_refused(records, tmp_path):
    with pytest.raises(ValueError, match="leave no train record"):
        lin.linearize(records, str(tmp_path / "x"), holdout_categories=["Airport", *HELD])


class _Captured(Exception):
    """Raised by the stand-in trainer once it has the rows it was given."""


def _capture(calls: list):
    def fake_train_with_ray(task, train_rows, val_rows, *args, **kwargs):
        calls.append((train_rows, val_rows))
        raise _Captured

    return fake_train_with_ray


def test_the_lm_never_trains_on_held_out_categories(linearized, monkeypatch):
    calls = []
    monkeypatch.setattr(training, "train_with_ray", _capture(calls))
    config = load_config(None, ["lm.base=scratch:tiny"])
    special = stage_reader.read_manifest(linearized)["extra"]["special_tokens"]
    with pytest.raises(_Captured):
        lm.train_lm(linearized, "memory://unused", config.lm, special_tokens=special)
    train, val = calls[0]
    assert {r["id"] for r in train.load()} == {"a1", "a2"}
    # checkpoints are chosen on validation and the held-out categories together
    assert val.split == ("validation", lin.UNSEEN_SPLIT)
    assert {r["id"] for r in val.load()} == {"v1", "c1", "m1", "v2"}
    assert train.fingerprint()["split"] == "train"


def test_the_classifier_never_trains_on_held_out_categories(linearized, tmp_path, monkeypatch):
    pairs = str(tmp_path / "corruptions")
    manifest = corrupt.corrupt(linearized, pairs, CorruptConfig(per_example=2, seed=1))
    assert list(manifest["config"]["splits"]) == ["train", "validation", lin.UNSEEN_SPLIT]
    assert (
        manifest["counts"]["read"]
        == manifest["counts"]["written"] + manifest["counts"]["quarantined"]
    )
    rows = stage_reader.read_stage(pairs).to_pylist()
    held = {"c1", "m1", "v2"}
    assert {r["record_id"] for r in rows if r["split"] == "train"} == {"a1", "a2"}
    assert {r["record_id"] for r in rows if r["split"] == lin.UNSEEN_SPLIT} == held
    calls = []
    monkeypatch.setattr(clf, "train_with_ray", _capture(calls))
    special = stage_reader.read_manifest(linearized)["extra"]["special_tokens"]
    with pytest.raises(_Captured):
        clf.train_classifier(pairs, str(tmp_path / "clf"), {"base": "scratch:tiny"}, special)
    train, val = calls[0]
    assert not held & {r["record_id"] for r in train.load()}
    assert {r["record_id"] for r in val.load()} == {"v1", *held}


def test_a_stage_without_held_out_records_corrupts_as_before(records, tmp_path):
    plain = lin.linearize(records, str(tmp_path / "plain"))["output"]
    manifest = corrupt.corrupt(plain, str(tmp_path / "pairs"), CorruptConfig(per_example=2, seed=1))
    assert list(manifest["config"]["splits"]) == ["train", "validation"]  # as before


def test_the_key_validates_and_the_smol_preset_follows_its_rule(shared_data):
    config = load_config(None, ["dataset.holdout_categories=[City, Monument]"])
    assert config.dataset.holdout_categories == HELD
    assert load_config(None).dataset.holdout_categories == []
    # configs/webnlg-smol.yaml's rule: the two train categories with the fewest entries
    entries = Counter(
        m for f in sorted((shared_data / "webnlg" / "train").rglob("*.xml"))
        for m in re.findall(r'<entry [^>]*category="([^"]+)"', f.read_text())
    )  # fmt: skip
    assert len(entries) == 10
    fewest = sorted(entries, key=lambda c: (entries[c], c))[:2]
    smol = (Path(__file__).resolve().parents[2] / "configs" / "webnlg-smol.yaml").read_text()
    shown = re.search(r"holdout_categories: \[([^\]]*)\]", smol)
    assert shown and sorted(c.strip() for c in shown.group(1).split(",")) == sorted(fewest)


def test_the_validation_sample_takes_each_validation_split_seeded(linearized, tmp_path):
    """`generate.dev_records`: at most N records of validation and of validation_unseen, the same
    ones on every call (seeded), never a train or test record; read == written."""
    out = str(tmp_path / "sample")
    manifest = lin.sample_splits(linearized, out, 1)
    rows = stage_reader.read_stage(out).to_pylist()
    assert sorted(r["split"] for r in rows) == ["validation", "validation_unseen"]
    assert manifest["counts"]["read"] == manifest["counts"]["written"] == 2
    assert manifest["extra"]["sampled_from"] == {"validation": 1, "validation_unseen": 3}
    unseen = next(r["id"] for r in rows if r["split"] == "validation_unseen")
    assert unseen in {"c1", "m1", "v2"}
    again = lin.sample_splits(linearized, str(tmp_path / "again"), 1)
    assert again["counts"]["written"] == 2
    assert [r["id"] for r in stage_reader.read_stage(str(tmp_path / "again")).to_pylist()] == [
        r["id"] for r in rows
    ]
    assert lin.sample_splits(linearized, out, 1)["skipped"] is True
    everything = lin.sample_splits(linearized, str(tmp_path / "all"), 10)
    assert everything["counts"]["written"] == 4
    train = lin.sample_splits(linearized, str(tmp_path / "train"), 1, ["train"])
    assert [r["split"] for r in stage_reader.read_stage(str(tmp_path / "train")).to_pylist()] == [
        "train"
    ]
    assert train["extra"]["sampled_from"] == {"train": 2}
