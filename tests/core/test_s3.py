"""The S3 path end to end against moto's server on 127.0.0.1, through s3fs (no patched calls)."""

from __future__ import annotations

import gzip
import json

import fsspec

from datatuner_core import linearize, storage
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
    rows = storage.read_stage(records).to_pylist()
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert sum(r["split"] == "test" for r in rows) == 110
    assert rows[0]["id"].startswith("dev/1triples/Airport.xml#")  # relative to the S3 root

    assert ingest("webnlg", f"{s3_env}/input/webnlg", records)["skipped"] is True

    lmanifest = linearize.linearize(records, lin)
    assert lmanifest["counts"]["written"] == 737
    assert storage.read_stage(lin).column("linearized")[0].as_py().startswith("<subject> ")
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
    bad = storage.read_stage(out, quarantine=True).to_pylist()
    assert [(b["location"], b["reason"].split(":")[0]) for b in bad] == [
        ("data.jsonl.gz:4", "malformed JSON")
    ]
