"""Stage folders under stress: stages nested in a stage, two writers at once, writers killed at
random points, shards deleted or altered behind the manifest, outputs that cannot be written.

The checks read the folder with plain fsspec/pyarrow, not with the code under test, so they
judge the stage as a stranger would. Run as a module, this file is the writer subprocess of the
kill tests: `python -m tests.core.test_stage_safety URI TAG ROWS DELAY`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from datatuner_core import stage_lock, stage_reader, stage_writer, storage
from datatuner_core.schema import RECORDS, make_quarantine, make_record

REPO = Path(__file__).resolve().parents[2]
ROWS_PER_SHARD = 5  # the subprocess writer cuts a shard this often


def _rows(n: int, tag: str = "a") -> list[dict]:
    return [
        make_record(id=f"r{i:04d}", source=tag, split="train", raw=tag,
                    triples=[(f"S{i}", "p", f"O{i}")], references=[f"{tag} text {i}"])
        for i in range(n)
    ]  # fmt: skip


def _write(uri: str, rows: list[dict], *, bad: int = 0, fp: str = "f1", **kwargs) -> dict:
    writer = stage_writer.StageWriter(uri, "ingest", RECORDS, shard_bytes=2_000, **kwargs)
    for row in rows:
        writer.add_counted(row)
    for i in range(bad):
        writer.quarantine(make_quarantine("t", f"f:{i}", "malformed thing: detail", "raw"))
        writer.stats.read += 1
    return writer.commit(inputs=[], fingerprint=fp)


def _damage(uri: str) -> list[str]:
    """What the manifest at `uri` lists that is missing or has other bytes (plain fsspec)."""
    fs, path = fsspec.core.url_to_fs(uri)
    manifest = json.loads(fs.cat_file(f"{path}/_manifest.json"))
    bad = []
    for f in manifest["files"] + manifest["quarantine_files"]:
        try:
            data = fs.cat_file(f"{path}/{f['path']}")
        except FileNotFoundError:
            bad.append(f"missing {f['path']}")
            continue
        if len(data) != f["bytes"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
            bad.append(f"changed {f['path']}")
    return bad


def _parquet_names(uri: str, sub: str = "") -> list[str]:
    fs, path = fsspec.core.url_to_fs(uri)
    folder = f"{path}/{sub}" if sub else path
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)] if fs.exists(folder) else []
    return sorted(n for n in names if n.startswith("part-"))


@pytest.fixture(params=["path", "memory"])
def root(request, tmp_path) -> str:
    return str(tmp_path / "out") if request.param == "path" else f"memory://safe-{uuid.uuid4().hex}"


# ----------------------------------------------------------------------------- ownership


def test_commit_never_touches_a_stage_nested_in_its_folder(root):
    """A stage written at a folder that holds other stages (the verbalize layout:
    `{output}/_stages/records`, with quarantine rows) leaves every one of their files."""
    records, other = f"{root}/_stages/records", f"{root}/sub"
    _write(records, _rows(40), bad=2, fp="rec")
    _write(other, _rows(30, "o"), fp="other")

    def names(uri):
        return _parquet_names(uri), _parquet_names(uri, "_quarantine")

    before = {uri: names(uri) for uri in (records, other)}
    _write(root, _rows(60, "g"), bad=1, fp="gen-1")
    parent = _write(root, _rows(20, "g"), fp="gen-2")  # fewer shards: the old ones go
    for uri in (records, other):
        assert names(uri) == before[uri]
        assert _damage(uri) == []
    assert len(stage_reader.read_stage(records, quarantine=True)) == 2
    assert stage_reader.read_stage(records).num_rows == 40
    # the parent's own folder holds exactly the shards its manifest lists, no quarantine left
    assert _parquet_names(root) == sorted(f["path"] for f in parent["files"])
    assert _parquet_names(root, "_quarantine") == []


# ----------------------------------------------------------------------------- two writers


def _slow_writer(uri: str, tag: str, errors: list, delay: float = 0.01, **kwargs) -> None:
    try:
        writer = stage_writer.StageWriter(uri, "ingest", RECORDS, shard_bytes=1, **kwargs)
        for i, row in enumerate(_rows(40, tag)):
            writer.add_counted(row)
            if i % ROWS_PER_SHARD == ROWS_PER_SHARD - 1:
                writer.out.flush()
                time.sleep(delay)
        writer.commit(inputs=[], fingerprint=f"fp-{tag}")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        errors.append(exc)


def test_two_writers_on_one_folder_leave_one_whole_stage(root, monkeypatch):
    """Two writers at once on one folder: the second waits for the first, and the manifest
    that stays names exactly one writer's shards, each present with its bytes."""
    monkeypatch.setenv("DATATUNER_LOCK_WAIT_S", "30")
    errors: list = []
    # a slow writer, then a fast one that overtakes it: without a lock they overwrite each
    # other's shards and the last manifest names bytes of the other writer
    threads = [
        threading.Thread(target=_slow_writer, args=(root, tag, errors, delay))
        for tag, delay in (("a", 0.04), ("b", 0.0))
    ]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert _damage(root) == []
    rows = stage_reader.read_stage(root).to_pylist()
    assert len({r["source"] for r in rows}) == 1  # one writer's rows, not a mix
    assert sorted(r["id"] for r in rows) == [f"r{i:04d}" for i in range(40)]
    manifest = stage_reader.read_manifest(root)
    assert _parquet_names(root) == sorted(f["path"] for f in manifest["files"])


def test_a_second_writer_fails_with_one_line_naming_the_stage(root):
    holder = stage_writer.StageWriter(root, "ingest", RECORDS)
    errors: list = []
    loser = threading.Thread(
        target=_slow_writer, args=(root, "b", errors), kwargs={"lock_wait_s": 0.3}
    )
    loser.start()
    loser.join(timeout=30)
    (error,) = errors
    assert isinstance(error, stage_lock.StageLocked)
    message = str(error)
    assert "\n" not in message and f"stage {root} is being written by another writer" in message
    assert f"pid {os.getpid()}" in message and "_lock" in message
    for row in _rows(3):
        holder.add_counted(row)
    holder.commit(inputs=[], fingerprint="x")
    errors.clear()
    _slow_writer(root, "b", errors)  # the lock is free after the commit
    assert errors == [] and stage_reader.read_stage(root).num_rows == 40


def test_a_retry_in_the_same_thread_takes_over_its_failed_writer(root):
    """A stage that failed without `abort()` (its writer still referenced, as by a traceback)
    does not block the retry in the same thread; the failed writer can no longer commit."""
    _write(root, _rows(10, "old"), fp="old")
    failed = stage_writer.StageWriter(root, "ingest", RECORDS, shard_bytes=1)
    for row in _rows(12, "failed"):
        failed.add_counted(row)
    failed.out.flush()
    retry = _write(root, _rows(8, "new"), fp="new")
    assert retry["fingerprint"] == "new" and _damage(root) == []
    with pytest.raises(stage_lock.StageLocked, match="lost its lock"):
        failed.commit(inputs=[], fingerprint="failed")
    assert stage_reader.read_manifest(root)["fingerprint"] == "new"
    assert {r["source"] for r in stage_reader.read_stage(root).to_pylist()} == {"new"}


def test_with_block_gives_the_attempt_up_on_error(root):
    _write(root, _rows(10, "old"), fp="old")
    with (
        pytest.raises(RuntimeError),
        stage_writer.StageWriter(root, "x", RECORDS, shard_bytes=1) as w,
    ):
        for row in _rows(12, "failed"):
            w.add_counted(row)
        w.out.flush()
        raise RuntimeError("the stage failed")
    assert _parquet_names(root) == sorted(
        f["path"] for f in stage_reader.read_manifest(root)["files"]
    )
    _write(root, _rows(5, "next"), fp="next", lock_wait_s=0)  # the lock was released


# ----------------------------------------------------------------------------- killed writers


def _spawn(uri: str, tag: str, rows: int = 40, delay: float = 0.01) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.core.test_stage_safety", uri, tag, str(rows), str(delay)]
    env = {**os.environ, "DATATUNER_LOCK_WAIT_S": "60"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def _rerun(uri: str, tag: str) -> dict:
    """The re-run a user makes: skipped if the stage is whole, else written again."""
    return stage_reader.current_manifest(uri, f"fp-{tag}") or _write(
        uri, _rows(40, tag), fp=f"fp-{tag}"
    )


def _one_generation(uri: str) -> list[dict]:
    rows = stage_reader.read_stage(uri).to_pylist()
    assert len({r["source"] for r in rows}) == 1, "the manifest mixes two writers' rows"
    assert sorted(r["id"] for r in rows) == [f"r{i:04d}" for i in range(40)]
    return rows


def test_random_interleavings_of_two_writers_and_a_kill_never_corrupt_the_stage(tmp_path):
    """Property: two subprocess writers start on one folder at random offsets, and one is
    SIGKILLed at a random point of its progress (before its lock, while waiting for it, between
    shards, after its commit); the manifest left (if any) never names a missing or altered shard
    nor mixes writers, and a re-run always ends with every id exactly once."""
    rng = random.Random(21)
    for round_ in range(5):
        uri = str(tmp_path / f"round-{round_}")
        first = rng.choice("ab")
        second = "b" if first == "a" else "a"
        procs = {first: _spawn(uri, first, delay=rng.choice([0.0, 0.02]))}
        time.sleep(rng.uniform(0.0, 0.4))
        procs[second] = _spawn(uri, second, delay=rng.choice([0.0, 0.02]))
        victim = rng.choice("ab")
        # lines the victim prints before it dies: "locked", one per shard (8), "committed"
        for _ in range(rng.randint(0, 10)):
            if not procs[victim].stdout.readline():
                break
        procs[victim].send_signal(signal.SIGKILL)
        survivor = procs["b" if victim == "a" else "a"]
        assert survivor.wait(timeout=60) == 0, f"round {round_}: the surviving writer failed"
        procs[victim].wait(timeout=10)
        assert _damage(uri) == [], f"round {round_}"
        _one_generation(uri)
        _rerun(uri, victim)  # skipped if the victim had committed, else written again
        assert _damage(uri) == []
        assert {r["source"] for r in _one_generation(uri)} == {victim}


def test_a_killed_rewrite_keeps_the_old_stage_and_the_next_commit_leaves_one_generation(
    tmp_path,
):
    """A `--force` rewrite killed half way: the old stage stays whole for readers by manifest;
    after the next commit the folder read directly by pyarrow holds each id once."""
    uri = str(tmp_path / "stage")
    _write(uri, _rows(40, "old"), fp="fp-old")
    proc = _spawn(uri, "new", delay=0.05)
    shards = 0
    for line in proc.stdout:
        shards += line.startswith("shard")
        if shards == 3:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert stage_reader.read_manifest(uri)["fingerprint"] == "fp-old" and _damage(uri) == []
    assert {r["source"] for r in _one_generation(uri)} == {"old"}
    assert _rerun(uri, "new")["fingerprint"] == "fp-new"
    table = pq.read_table(uri)  # the folder itself, as a stranger would read it
    assert sorted(table.column("id").to_pylist()) == [f"r{i:04d}" for i in range(40)]
    assert set(table.column("source").to_pylist()) == {"new"}


# ----------------------------------------------------------------------------- skip check


def test_skip_check_rebuilds_when_a_listed_shard_is_deleted_or_altered(root):
    manifest = _write(root, _rows(40), bad=1, fp="fp")
    assert stage_reader.current_manifest(root, "fp") == manifest
    fs, path = fsspec.core.url_to_fs(root)
    shard = f"{path}/{manifest['files'][-1]['path']}"
    data = bytearray(fs.cat_file(shard))
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    fs.pipe_file(shard, bytes(data))
    assert stage_reader.current_manifest(root, "fp") is None
    manifest = _write(root, _rows(40), bad=1, fp="fp")
    fs.rm(f"{path}/{manifest['quarantine_files'][0]['path']}")
    assert stage_reader.current_manifest(root, "fp") is None


def test_ingest_is_not_skipped_when_its_stage_lost_a_shard(tmp_path):
    from datatuner_core.ingest import ingest

    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"triples": [["A{i}", "p", "B"]]}}\n' for i in range(200)))
    out = str(tmp_path / "records")
    first = ingest("jsonl", str(data), out, shard_bytes=2_000)
    assert len(first["files"]) > 1
    (tmp_path / "records" / first["files"][0]["path"]).unlink()
    again = ingest("jsonl", str(data), out, shard_bytes=2_000)
    assert not again.get("skipped")
    assert stage_reader.read_stage(out).num_rows == 200 and _damage(out) == []


# ----------------------------------------------------------------------------- unwritable outputs


@contextlib.contextmanager
def _read_only(folder: Path):
    """A folder nobody can write into, root included (chattr +i), restored afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    else:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder read-only as root here: {done.stderr!r}")
        undo = ["chattr", "-i", str(folder)]
    try:
        yield folder
    finally:
        subprocess.run(undo, check=True)


def test_read_only_output_fails_before_the_input_is_read(tmp_path, monkeypatch):
    from datatuner_core.ingest import ingest, jsonl

    data = tmp_path / "in.jsonl"
    data.write_text('{"triples": [["A", "p", "B"]]}\n')
    calls = []
    real_read = jsonl.read

    def counting_read(*args, **kwargs):
        calls.append(args)
        yield from real_read(*args, **kwargs)

    monkeypatch.setattr(jsonl, "read", counting_read)
    with _read_only(tmp_path / "out") as out:
        with pytest.raises(storage.StorageError, match=f"cannot write to {out}"):
            ingest("jsonl", str(data), str(out))
        with pytest.raises(storage.StorageError, match=f"cannot write to {out}"):
            stage_writer.StageWriter(str(out), "ingest", RECORDS)
    assert calls == []  # the input was never parsed


def test_store_errors_name_the_uri(tmp_path):
    from datatuner_core.ingest import ingest

    data = tmp_path / "in.jsonl"
    data.write_text('{"triples": [["A", "p", "B"]]}\n')
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = f"{blocker}/out"
    with pytest.raises(storage.StorageError, match=f"{out}"):
        ingest("jsonl", str(data), out)
    stage = str(tmp_path / "stage")
    manifest = _write(stage, _rows(20), fp="fp")
    missing = f"{stage}/{manifest['files'][0]['path']}"
    os.unlink(missing)
    with pytest.raises(storage.StorageError, match=f"shard {missing} is listed"):
        stage_reader.read_stage(stage)


# ----------------------------------------------------------------------------- the subprocess


def _writer_main(uri: str, tag: str, rows: int, delay: float) -> None:
    writer = stage_writer.StageWriter(uri, "ingest", RECORDS, shard_bytes=1)
    print("locked", flush=True)
    for i, row in enumerate(_rows(rows, tag)):
        writer.add_counted(row)
        if i % ROWS_PER_SHARD == ROWS_PER_SHARD - 1:
            writer.out.flush()
            print("shard", flush=True)
        time.sleep(delay)
    writer.commit(inputs=[], fingerprint=f"fp-{tag}")
    print("committed", flush=True)


if __name__ == "__main__":
    _writer_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
