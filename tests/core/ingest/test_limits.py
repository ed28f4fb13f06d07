"""Limits on one input unit: bounded line reading, JSON depth, text checks on records."""

from __future__ import annotations

import gzip
import io
import re
import tracemalloc

import pytest

import datatuner_core.ingest as ingest_package
from datatuner_core.ingest import LongLine, limits, read_lines
from datatuner_core.schema import BadInput


def test_a_long_line_in_a_gz_is_read_in_bounded_memory(tmp_path, monkeypatch):
    """One line of zeros in a `.nt.gz` took 3.5 times its size in memory.
    Here 8 MB of zeros, with the limit and the block read patched to 64 KiB, take under 1 MB."""
    monkeypatch.setattr(limits, "MAX_UNIT_BYTES", 64 * 1024)
    monkeypatch.setattr(ingest_package, "READ_BLOCK", 64 * 1024)
    path = tmp_path / "dump.nt.gz"
    path.with_name("small.nt.gz").write_bytes(gzip.compress(b"x\n"))
    with gzip.open(path, "wb") as f:
        f.write(b"first\n")
        for _ in range(8):
            f.write(b"0" * 1_000_000)
        f.write(b"\nthird\nlast without newline")
    list(read_lines(str(path.with_name("small.nt.gz"))))  # imports done before measuring
    tracemalloc.start()
    try:
        lines = list(read_lines(str(path)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert [n for n, _ in lines] == [1, 2, 3, 4]
    assert lines[0][1] == b"first" and lines[2][1] == b"third"
    assert lines[3][1] == b"last without newline"
    long = lines[1][1]
    assert isinstance(long, LongLine) and long.length == 8_000_000
    assert long.reason() == "line longer than 65536 bytes (8000000)"
    assert long.startswith(b"0000") and len(long) < 64 * 1024


def test_a_line_of_exactly_the_limit_is_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_UNIT_BYTES", 10)
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"0123456789\n01234567890\n0123456789")
    lines = list(read_lines(str(path)))
    assert [type(line) for _, line in lines] == [bytes, LongLine, bytes]
    assert lines[1][1].length == 11


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 20])
def test_lines_across_blocks(monkeypatch, block):
    monkeypatch.setattr(ingest_package, "READ_BLOCK", block)
    data = b"ab\r\n\nabcdefghijkl\r\nxyz\n0123456789\r\n01234567890\nend"
    lines = list(ingest_package.split_lines(io.BytesIO(data).read, 10))
    assert [(n, bytes(line)) for n, line in lines] == [
        (1, b"ab"),
        (2, b""),
        (3, b"abcdefghij"),
        (4, b"xyz"),
        (5, b"0123456789"),  # a "\r" counts: 11 bytes
        (6, b"0123456789"),
        (7, b"end"),
    ]
    long = [(n, line.length) for n, line in lines if isinstance(line, LongLine)]
    assert long == [(3, 13), (5, 11), (6, 11)]


@pytest.mark.parametrize(
    "text, deeper",
    [
        (b"[" * 33 + b"]" * 33, True),
        (b"[" * 32 + b"]" * 32, False),
        (b'{"a": "' + b"[{" * 50 + b'"}', False),  # brackets in a string
        (b'{"a": "\\"' + b"[" * 50 + b'"}', False),  # after an escaped quote, still a string
        (b"[]" * 100, False),  # many brackets, never deep
    ],
)
def test_json_depth(text, deeper):
    assert limits.json_depth_over(text, 32) is deeper


def test_checked_record_names_the_field():
    base = {"id": "x", "source": "s", "split": "train", "raw": "r", "triples": [("A", "p", "B")]}
    assert limits.checked_record(**base)["id"] == "x"
    for change, reason in [
        ({"references": ["ok", "\udfff"]}, "invalid text: lone surrogate \\udfff in the reference"),
        ({"category": "c" * 10_001}, "category longer than 10000 characters (10001)"),
        ({"slots": [("n\ud800", "v")]}, "invalid text: lone surrogate \\ud800 in the slot name"),
        ({"raw": "\ud800"}, "invalid text: lone surrogate \\ud800 in the raw input"),
    ]:
        with pytest.raises(BadInput, match="^" + re.escape(reason)):
            limits.checked_record(**{**base, **change})
