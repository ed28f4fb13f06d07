"""The S3 path end to end against moto's server on 127.0.0.1, through s3fs (no patched calls)."""

from __future__ import annotations

import gzip
import json
import time

import fsspec

from datatuner_core import linearize, stage_lock, stage_reader, stage_writer, storage
from datatuner_core.ingest import ingest

from ..conftest import SAMPLE


def _upload_folder(local, uri):
    fs = fsspec.filesystem("s3", endpoint_url=_endpoint())
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(
                f"{uri.removeprefix('s3://')}/{path.relative_to(local)}", path.read_bytes()
            )


def _endpoint():
    import os

    return os.environ["AWS_ENDPOINT_URL"]


def test_ingest_and_linearize_on_s3(s3_env):
    _upload_folder(SAMPLE / "webnlg", f"{s3_env}/input/webnlg")
    records, lin = f"{s3_env}/runs/r1/records", f"{s3_env}/runs/r1/linearized"
    manifest = ingest("webnlg", f"{s3_env}/input/webnlg", records, shard_bytes=200_000)
    assert manifest["counts"]["read"] == manifest["counts"]["written"] == 737
    assert len(manifest["files"]) > 1
    rows = stage_reader.read_stage(records).to_pylist()
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert sum(r["split"] == "test" for r in rows) == 110
    assert rows[0]["id"].startswith("dev/1triples/Airport.xml#")  # relative to the S3 root

    assert ingest("webnlg", f"{s3_env}/input/webnlg", records)["skipped"] is True

    lmanifest = linearize.linearize(records, lin)
    assert lmanifest["counts"]["written"] == 737
    assert stage_reader.read_stage(lin).column("linearized")[0].as_py().startswith("<subject> ")
    # Credentials come from the environment and never reach a manifest.
    fs = fsspec.filesystem("s3", endpoint_url=_endpoint())
    text = fs.cat_file(f"{records.removeprefix('s3://')}/_manifest.json").decode()
    assert "testing-secret-key" not in text and "testing-key-id" not in text
    assert json.loads(text)["output"] == records


def test_compressed_jsonl_from_s3_with_bad_lines(s3_env):
    body = b'{"triples": [["A", "p", "B"]]}\n\n{"slots": {"name": "X"}}\nnot json\n'
    fs = fsspec.filesystem("s3", endpoint_url=_endpoint())
    fs.pipe_file(f"{s3_env.removeprefix('s3://')}/in/data.jsonl.gz", gzip.compress(body))
    out = f"{s3_env}/out"
    manifest = ingest("jsonl", f"{s3_env}/in", out)
    assert (manifest["counts"]["read"], manifest["counts"]["written"]) == (3, 2)
    bad = stage_reader.read_stage(out, quarantine=True).to_pylist()
    assert [(b["location"], b["reason"].split(":")[0]) for b in bad] == [
        ("data.jsonl.gz:4", "malformed JSON")
    ]


# ----------------------------------------------------------------------------- stage safety


def _records(n: int, tag: str = "a") -> list[dict]:
    from datatuner_core.schema import make_record

    return [
        make_record(id=f"r{i:03d}", source=tag, split="train", raw=tag,
                    triples=[(f"S{i}", "p", "O")], references=[])
        for i in range(n)
    ]  # fmt: skip


def _write_stage(uri: str, n: int, *, bad: int = 0, fp: str = "fp", tag: str = "a") -> dict:
    from datatuner_core.schema import RECORDS, make_quarantine

    writer = stage_writer.StageWriter(uri, "ingest", RECORDS, shard_bytes=1_500)
    for row in _records(n, tag):
        writer.add_counted(row)
    for i in range(bad):
        writer.quarantine(make_quarantine("t", f"f:{i}", "bad: x", "raw"))
        writer.stats.read += 1
    return writer.commit(inputs=[], fingerprint=fp)


def test_missing_bucket_is_an_error_naming_it_and_is_not_created(s3_env, tmp_path):
    import boto3
    import pytest

    data = tmp_path / "in.jsonl"
    data.write_text('{"triples": [["A", "p", "B"]]}\n')
    with pytest.raises(storage.StorageError, match="the bucket 'nosuchbucket' does not exist"):
        ingest("jsonl", str(data), "s3://nosuchbucket/x")
    buckets = boto3.client("s3", endpoint_url=_endpoint()).list_buckets()["Buckets"]
    assert "nosuchbucket" not in {b["Name"] for b in buckets}


def test_nested_stage_keeps_its_shards_and_skip_check_uses_etags(s3_env):
    records, out = f"{s3_env}/v/_stages/records", f"{s3_env}/v"
    child = _write_stage(records, 120, bad=2, fp="rec")
    _write_stage(out, 200, fp="gen-1", tag="g")
    parent = _write_stage(out, 30, fp="gen-2", tag="g")
    assert stage_reader.read_stage(records, quarantine=True).num_rows == 2
    assert stage_reader.read_stage(records).num_rows == 120 and len(child["files"]) > 1
    assert stage_reader.verify_stage(records) == []
    fs = fsspec.filesystem("s3", endpoint_url=_endpoint())
    top = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(out.removeprefix("s3://"), refresh=True))
    assert [p for p in top if p.startswith("part-")] == sorted(f["path"] for f in parent["files"])
    # same size, other bytes: the ETag no longer matches the shard's MD5, so no skip
    shard = f"{records.removeprefix('s3://')}/{child['files'][0]['path']}"
    data = bytearray(fs.cat_file(shard))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(shard, bytes(data))
    assert stage_reader.current_manifest(records, "rec") is None
    child = _write_stage(records, 120, bad=2, fp="rec")
    assert stage_reader.current_manifest(records, "rec") == child
    fs.rm(f"{records.removeprefix('s3://')}/{child['quarantine_files'][0]['path']}")
    assert stage_reader.current_manifest(records, "rec") is None


def _foreign_lock(uri: str, **fields) -> None:
    fs = fsspec.filesystem("s3", endpoint_url=_endpoint())
    lock = {"owner": "other", "stage": "ingest", "host": "elsewhere", "pid": 1,
            "started": "2026-01-01T00:00:00Z", "heartbeat": time.time(), **fields}  # fmt: skip
    fs.pipe_file(f"{uri.removeprefix('s3://')}/_lock", json.dumps(lock).encode())


def test_s3_lock_refuses_a_live_writer_and_takes_over_a_stale_one(s3_env, monkeypatch):
    import pytest

    from datatuner_core.schema import RECORDS

    uri = f"{s3_env}/locked"
    _foreign_lock(uri)  # another host's writer, heartbeat fresh
    with pytest.raises(stage_lock.StageLocked) as info:
        stage_writer.StageWriter(uri, "ingest", RECORDS, lock_wait_s=0.5)
    message = str(info.value)
    assert f"stage {uri} is being written" in message and "pid 1 on elsewhere" in message
    assert "\n" not in message
    _foreign_lock(uri, heartbeat=time.time() - stage_lock.LOCK_STALE_S - 5)  # that writer died
    assert _write_stage(uri, 10)["counts"]["written"] == 10
    fs = fsspec.filesystem("s3", endpoint_url=_endpoint())
    assert not fs.exists(f"{uri.removeprefix('s3://')}/_lock")  # released at commit

    # the holder's heartbeat moves on; a writer whose lock was taken over cannot commit
    monkeypatch.setattr(stage_lock, "LOCK_HEARTBEAT_S", 0.1)
    writer = stage_writer.StageWriter(uri, "ingest", RECORDS)
    path = f"{uri.removeprefix('s3://')}/_lock"
    first = json.loads(fs.cat_file(path))["heartbeat"]
    time.sleep(0.6)
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(path))["heartbeat"] > first
    _foreign_lock(uri, heartbeat=time.time())
    for row in _records(3):
        writer.add_counted(row)
    with pytest.raises(stage_lock.StageLocked, match="lost its lock"):
        writer.commit(inputs=[], fingerprint="late")
    assert stage_reader.read_manifest(uri)["counts"]["written"] == 10  # the stage before stays


def test_two_writers_on_one_s3_stage_leave_one_whole_stage(s3_env, monkeypatch):
    """Two writers at once on one S3 folder: the lock (If-None-Match) makes the second wait;
    the manifest left names one writer's shards, each with the ETag its upload returned."""
    import threading

    monkeypatch.setenv("DATATUNER_LOCK_WAIT_S", "60")
    uri, errors = f"{s3_env}/both", []

    def write(tag: str) -> None:
        try:
            _write_stage(uri, 150, fp=f"fp-{tag}", tag=tag)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    manifest = stage_reader.read_manifest(uri)
    rows = stage_reader.read_stage(uri).to_pylist()
    assert len({r["source"] for r in rows}) == 1 and len({r["id"] for r in rows}) == 150
    assert stage_reader.verify_stage(uri) == [] and all(f.get("etag") for f in manifest["files"])
    fs = fsspec.filesystem("s3", endpoint_url=_endpoint())
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(uri.removeprefix("s3://"), refresh=True)]
    assert sorted(n for n in names if n.startswith("part-")) == sorted(
        f["path"] for f in manifest["files"]
    )
