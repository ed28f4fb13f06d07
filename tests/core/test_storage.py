"""Storage: URIs, shards of a target size, the manifest written last, skips, stale shards."""

from __future__ import annotations

import json

import pytest

from datatuner_core import fingerprints, input_files, stage_reader, stage_writer, storage
from datatuner_core.schema import RECORDS, make_quarantine, make_record


def _rows(n: int, split: str = "train") -> list[dict]:
    return [
        make_record(
            id=f"r{i}",
            source="t",
            split=split,
            raw="x" * 200,
            triples=[(f"S{i}", "p", f"O{i} " + "y" * 100)],
            references=[f"text {i} " * 10],
        )
        for i in range(n)
    ]


def _write(uri: str, rows: list[dict], shard_bytes: int, bad: int = 0, fp: str = "f1") -> dict:
    writer = stage_writer.StageWriter(uri, "ingest", RECORDS, shard_bytes=shard_bytes)
    for row in rows:
        writer.add_counted(row)
    for i in range(bad):
        writer.quarantine(make_quarantine("t", f"f:{i}", "malformed thing: detail", "raw"))
        writer.stats.read += 1
    return writer.commit(inputs=[{"uri": "in"}], fingerprint=fp, config={"k": 1})


@pytest.mark.parametrize("scheme", ["path", "file", "memory"])
def test_stage_roundtrip_shards_and_manifest(tmp_path, scheme):
    uri = {
        "path": str(tmp_path / "stage"),
        "file": f"file://{tmp_path}/stage",
        "memory": f"memory://stage-{tmp_path.name}",
    }[scheme]
    rows = _rows(5000)
    manifest = _write(uri, rows, shard_bytes=300_000, bad=3)
    assert len(manifest["files"]) > 3  # a small target size gives several shards
    assert sum(f["rows"] for f in manifest["files"]) == 5000
    assert manifest["counts"]["read"] == 5003 and manifest["counts"]["quarantined"] == 3
    assert manifest["counts"]["written"] == 5000 and manifest["counts"]["records"] == 5000
    assert manifest["counts"]["quarantined_by_reason"] == {"malformed thing": 3}
    attempt = manifest["attempt"]  # shard names are unique per attempt, in order within it
    assert [f["path"] for f in manifest["files"]][:2] == [
        f"part-{attempt}-00000.parquet",
        f"part-{attempt}-00001.parquet",
    ]
    assert manifest["quarantine_files"][0]["path"] == f"_quarantine/part-{attempt}-00000.parquet"
    assert stage_reader.read_manifest(uri) == manifest
    table = stage_reader.read_stage(uri)
    assert table.schema == RECORDS
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    assert stage_reader.read_stage(uri, quarantine=True).num_rows == 3
    streamed = sum(b.num_rows for b in stage_reader.iter_stage_batches(uri, batch_size=700))
    assert streamed == 5000


def test_empty_stage_keeps_its_schema(tmp_path):
    uri = str(tmp_path / "empty")
    manifest = _write(uri, [], shard_bytes=1000)
    assert manifest["files"][0]["rows"] == 0
    assert stage_reader.read_stage(uri).schema == RECORDS


def test_folder_without_manifest_is_not_a_stage(tmp_path):
    uri = str(tmp_path / "unfinished")
    writer = stage_writer.StageWriter(uri, "ingest", RECORDS, shard_bytes=10_000)
    for row in _rows(500):
        writer.add(row)
    writer.out.flush()  # shards on disk, but the stage was never committed
    assert list((tmp_path / "unfinished").glob("part-*.parquet"))
    with pytest.raises(stage_reader.StageNotFound, match="_manifest.json is missing"):
        stage_reader.read_stage(uri)


def test_rewrite_keeps_the_old_stage_until_its_commit_then_removes_its_shards(tmp_path):
    uri = str(tmp_path / "stage")
    first = _write(uri, _rows(3000), shard_bytes=100_000)
    assert len(first["files"]) > 2
    writer = stage_writer.StageWriter(uri, "ingest", RECORDS, shard_bytes=100_000)
    for row in _rows(10):
        writer.add_counted(row)
    writer.out.flush()
    # while rewriting, readers by manifest still see the whole old stage, not a mix
    assert stage_reader.read_manifest(uri) == first
    assert stage_reader.read_stage(uri).num_rows == 3000
    second = writer.commit(inputs=[], fingerprint="f2")
    listed = sorted(f["path"] for f in second["files"])
    assert sorted(p.name for p in (tmp_path / "stage").glob("part-*")) == listed
    assert stage_reader.read_stage(uri).num_rows == 10
    assert not (tmp_path / "stage" / "_lock").exists()  # released at commit


def test_conservation_is_checked_before_commit(tmp_path):
    writer = stage_writer.StageWriter(str(tmp_path / "s"), "ingest", RECORDS)
    writer.stats.read = 3
    writer.stats.written = 1
    with pytest.raises(AssertionError, match="conservation broken: read 3 != written 1"):
        writer.commit(inputs=[], fingerprint="x")
    assert not (tmp_path / "s" / "_manifest.json").exists()


def test_current_manifest_and_fingerprint(tmp_path):
    uri = str(tmp_path / "stage")
    _write(uri, _rows(3), shard_bytes=1000, fp="abc")
    assert stage_reader.current_manifest(uri, "abc")["fingerprint"] == "abc"
    assert stage_reader.current_manifest(uri, "other") is None
    assert stage_reader.current_manifest(str(tmp_path / "nothing"), "abc") is None
    assert fingerprints.fingerprint({"a": 1, "b": 2}) == fingerprints.fingerprint({"b": 2, "a": 1})


def test_content_hash_names_the_rows_not_the_lineage(tmp_path):
    """Equal rows written by two stages of different lineage (fingerprint, place, quarantine)
    give the same `content_sha256`, each shard its own sha256; one changed row changes it."""
    import hashlib

    from datatuner_core.training_data import StageRows

    a = _write(str(tmp_path / "a"), _rows(200), shard_bytes=20_000, fp="one")
    b = _write(str(tmp_path / "b"), _rows(200), shard_bytes=20_000, bad=2, fp="two")
    changed = _rows(200)
    changed[3]["references"] = ["another text"]
    c = _write(str(tmp_path / "c"), changed, shard_bytes=20_000, fp="one")
    assert len(a["files"]) > 1 and a["content_sha256"] == b["content_sha256"]
    assert c["content_sha256"] != a["content_sha256"]
    for f in a["files"]:
        assert f["sha256"] == hashlib.sha256((tmp_path / "a" / f["path"]).read_bytes()).hexdigest()
    fa = StageRows(str(tmp_path / "a"), "train").fingerprint()
    assert fa == StageRows(str(tmp_path / "b"), "train").fingerprint()
    assert fa == {"split": "train", "content_sha256": a["content_sha256"]}
    assert fa != StageRows(str(tmp_path / "a"), "validation").fingerprint()


def test_inputs_are_identified_by_content_not_by_modification_time(tmp_path):
    import hashlib
    import os

    from datatuner_core.ingest import ingest

    data = tmp_path / "in.jsonl"
    data.write_text('{"triples": [["A", "p", "B"]], "references": ["A p B."]}\n')
    (stamp,) = fingerprints.input_fingerprint([str(data)])
    assert stamp["size"] == data.stat().st_size
    assert stamp["stamp"] == "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    out = str(tmp_path / "records")
    assert not ingest("jsonl", str(data), out).get("skipped")
    # a re-copy of the same bytes (new modification time) keeps the cache key: skipped
    os.utime(data, (1_000_000_000, 1_000_000_000))
    assert fingerprints.input_fingerprint([str(data)]) == [stamp]
    assert ingest("jsonl", str(data), out)["skipped"] is True
    # new content of the same size, even with the old time back, re-runs the stage
    data.write_text('{"triples": [["A", "p", "C"]], "references": ["A p C."]}\n')
    os.utime(data, (1_000_000_000, 1_000_000_000))
    assert fingerprints.input_fingerprint([str(data)])[0]["stamp"] != stamp["stamp"]
    again = ingest("jsonl", str(data), out)
    assert not again.get("skipped")
    assert stage_reader.read_stage(out).to_pylist()[0]["data"]["triples"][0]["object"] == "C"


def test_manifest_is_valid_json_written_atomically(tmp_path):
    uri = str(tmp_path / "stage")
    _write(uri, _rows(3), shard_bytes=1000)
    text = (tmp_path / "stage" / "_manifest.json").read_text()
    manifest = json.loads(text)
    for key in ("stage", "inputs", "fingerprint", "config_hash", "counts", "files", "timings"):
        assert key in manifest
    assert manifest["code_version"].startswith("datatuner ")
    assert not list((tmp_path / "stage").glob("*.tmp-*"))


def test_list_inputs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ["d/a.xml", "d/sub/b.xml.gz", "d/sub/c.txt", "d/_skip.xml"]:
        (tmp_path / name).write_text("x")
    found = input_files.list_inputs(str(tmp_path / "d"), (".xml",))
    assert [input_files.relative_name(f, str(tmp_path / "d")) for f in found] == [
        "a.xml",
        "sub/b.xml.gz",
    ]
    with pytest.raises(storage.StorageError, match="input not found"):
        input_files.list_inputs(str(tmp_path / "missing"), (".xml",))
    with pytest.raises(storage.StorageError, match="no .csv files under"):
        input_files.list_inputs(str(tmp_path / "d"), (".csv",))


def test_copy_dir_between_stores_leaves_out_the_skipped(tmp_path):
    storage.write_bytes("memory://copy-src/m/a.bin", b"A")
    storage.write_bytes("memory://copy-src/m/sub/b.bin", b"B")
    storage.write_bytes("memory://copy-src/m/card.json", b"{}")
    names = storage.copy_dir("memory://copy-src/m", str(tmp_path / "m"), skip=["card.json"])
    assert names == ["a.bin", "sub/b.bin"]
    assert (tmp_path / "m" / "sub" / "b.bin").read_bytes() == b"B"
    assert not (tmp_path / "m" / "card.json").exists()
    assert storage.copy_dir(str(tmp_path / "m"), "memory://copy-dst/m") == names
    assert storage.read_bytes("memory://copy-dst/m/a.bin") == b"A"
    with pytest.raises(storage.StorageError, match="not found"):
        storage.copy_dir("memory://copy-src/none", str(tmp_path / "x"))
