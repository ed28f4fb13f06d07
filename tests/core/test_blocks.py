"""Resumable stages: finished blocks survive a killed writer, torn blocks are done again, and the
commit lists the kept parts as they are and cleans the journal."""

from __future__ import annotations

import json

import pytest

from datatuner_core import stage_reader, stage_writer, storage
from datatuner_core.blocks import BLOCKS_DIR, BlockBuffer, BlockJournal
from datatuner_core.schema import RECORDS, make_record


def _rows(ids) -> list[dict]:
    return [
        make_record(
            id=f"r{i}",
            source="t",
            split="test",
            raw="x",
            triples=[(f"S{i}", "p", "O")],
            references=[f"text {i}"],
        )  # fmt: skip
        for i in ids
    ]


def _uri(scheme: str, tmp_path, request) -> str:
    if scheme == "s3":
        return f"{request.getfixturevalue('s3_env')}/stage"
    return {"path": str(tmp_path / "stage"), "memory": f"memory://blocks-{tmp_path.name}"}[scheme]


def _files(uri: str) -> list[str]:
    loc = storage.locate(uri)
    loc.fs.invalidate_cache()
    base = loc.path.rstrip("/")
    return sorted(p[len(base) + 1 :] for p in loc.fs.find(base))


def _attempt(uri: str, fp: str, ids_per_block: list[range], *, die: bool) -> dict | None:
    """One writer: blocks of the ids not yet kept; `die`: the writer is abandoned uncommitted
    (its lock released as a killed process's would be) after writing the blocks."""
    writer = stage_writer.StageWriter(uri, "generate", RECORDS)
    journal = BlockJournal(uri, fp)
    kept = journal.finished()
    for entry in kept:
        writer.adopt(entry)
    done = {i for e in kept for i in e["ids"]}
    buffer = BlockBuffer(journal, RECORDS, every_s=0.0, on_block=writer.adopt)
    for ids in ids_per_block:
        for row in _rows(ids):
            if row["id"] not in done:
                buffer.add(row, ("seen",))
        buffer.flush()
    if die:
        writer.abort()  # what a SIGKILL leaves: blocks written, no manifest
        return None
    return writer.commit(inputs=[], fingerprint=fp, extra={"kept": len(kept)})


@pytest.mark.parametrize("scheme", ["path", "memory", "s3"])
def test_killed_writer_keeps_finished_blocks_and_the_rerun_does_only_the_rest(
    scheme, tmp_path, request
):
    uri = _uri(scheme, tmp_path, request)
    _attempt(uri, "fp-a", [range(0, 10), range(10, 20)], die=True)
    with pytest.raises(stage_reader.StageNotFound):
        stage_reader.read_manifest(uri)  # nothing half-done is visible
    journal = BlockJournal(uri, "fp-a")
    first = journal.finished()
    assert [e["rows"] for e in first] == [10, 10]
    assert [e["ids"] for e in first] == [[f"r{i}" for i in range(10)],
                                         [f"r{i}" for i in range(10, 20)]]  # fmt: skip

    # a torn third block: its part written, its journal entry never
    storage.write_bytes(storage.join_uri(uri, f"{journal.prefix}torn.parquet"), b"partial")
    # another fingerprint's blocks are never used
    BlockJournal(uri, "fp-b").write(_rows(range(0, 30)), RECORDS)

    manifest = _attempt(uri, "fp-a", [range(0, 30)], die=False)
    assert manifest["extra"] == {"kept": 2}
    paths = [f["path"] for f in manifest["files"]]
    assert paths[:2] == [e["path"] for e in first]  # listed as they are: no copy
    assert [f["sha256"] for f in manifest["files"][:2]] == [e["sha256"] for e in first]
    assert manifest["counts"]["read"] == manifest["counts"]["written"] == 30
    assert manifest["counts"]["notes"] == {"seen": 30}
    ids = stage_reader.read_stage(uri).column("id").to_pylist()
    assert sorted(ids) == sorted(f"r{i}" for i in range(30)) and len(ids) == 30
    assert stage_reader.verify_stage(uri) == []
    # the journal, the torn part and the other fingerprint's blocks are gone: the folder holds
    # exactly the listed parts, as any stage does
    assert all(p.startswith("part-b") for p in paths[:2])
    assert [p for p in _files(uri) if p != "_manifest.json"] == sorted(paths)
    assert not any(p.startswith(BLOCKS_DIR) for p in _files(uri))
    if scheme == "path":  # a tool that reads the folder (pyarrow, DuckDB) sees the same rows
        import pyarrow.parquet as pq

        assert sorted(pq.read_table(uri).column("id").to_pylist()) == sorted(ids)


def test_a_changed_part_is_not_kept(tmp_path, capsys):
    uri = str(tmp_path / "stage")
    _attempt(uri, "fp", [range(0, 5), range(5, 10)], die=True)
    journal = BlockJournal(uri, "fp")
    first, second = journal.finished()
    part = tmp_path / "stage" / second["path"]
    part.write_bytes(part.read_bytes()[:-1] + b"\0")  # same size, other bytes
    assert [e["part"] for e in journal.finished()] == [first["part"]]
    assert "name a missing or changed part" in capsys.readouterr().err
    key = first["part"].removeprefix(journal.prefix).removesuffix(".parquet")
    fp_folder = tmp_path / "stage" / BLOCKS_DIR / "fp"
    entry = json.loads((fp_folder / f"block-{key}.json").read_text())
    assert entry["rows"] == 5 and entry["ids"] == [f"r{i}" for i in range(5)]
    manifest = _attempt(uri, "fp", [range(0, 10)], die=False)
    ids = stage_reader.read_stage(uri).column("id").to_pylist()
    assert sorted(ids) == sorted(f"r{i}" for i in range(10))
    assert manifest["counts"]["written"] == 10


def test_clear_forgets_the_blocks(tmp_path):
    uri = str(tmp_path / "stage")
    _attempt(uri, "fp", [range(0, 5)], die=True)
    journal = BlockJournal(uri, "fp")
    assert len(journal.finished()) == 1
    journal.clear()
    assert journal.finished() == []
