"""The `datatuner` command: help, bad arguments, the JSON summary line, clear one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import SAMPLE, free_port

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        env=env or ENV,
        timeout=timeout,
    )


def summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_lists_commands():
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("ingest", "linearize"):
        assert command in proc.stdout
    ingest_help = run("ingest", "--help")
    assert "--format {webnlg,e2e,viggo,jsonl,ntriples}" in ingest_help.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "datatuner: error: a command is required"),
        (["ingest", "--format", "csv", "--input", "x", "--output", "y"], "invalid choice: 'csv'"),
        (["ingest", "--format", "webnlg", "--output", "y"], "the following arguments are required"),
        (["ingest", "--format", "ntriples", "--input", "x", "--output", "y", "--max-triples", "0"],
         "must be at least 1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "--set", "lm.epochs=[1"], "--set lm.epochs: the value is not valid YAML"),
        (["verbalize", "--input", "x.jsonl", "--output", "o", "--lm", "a", "--classifier", "b"],
         "--format is required"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_one_line(args, message):
    proc = run(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_missing_input_is_one_clear_line(tmp_path):
    proc = run("ingest", "--format", "webnlg", "--input", str(tmp_path / "nope"), "--output", "o")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"datatuner: error: input not found: {tmp_path / 'nope'}"


def test_unreachable_bucket_is_one_clear_line(tmp_path):
    env = {
        **ENV,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    proc = run(
        "ingest", "--format", "jsonl", "--input", "s3://no-such-bucket/x.jsonl", "--output",
        str(tmp_path / "o"), env=env, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "datatuner: error: cannot reach s3://no-such-bucket/x.jsonl"
    ), proc.stderr


def test_ingest_and_linearize_the_sample(tmp_path):
    records, lin = str(tmp_path / "records"), str(tmp_path / "lin")
    first = summary(
        run("ingest", "--format", "webnlg", "--input", str(SAMPLE / "webnlg"), "--output", records)
    )
    assert first["output"] == records
    assert (first["read"], first["written"], first["quarantined"]) == (737, 737, 0)
    assert first["skipped"] is False
    again = summary(
        run("ingest", "--format", "webnlg", "--input", str(SAMPLE / "webnlg"), "--output", records)
    )
    assert again["skipped"] is True and again["read"] == 737
    second = summary(run("linearize", "--input", records, "--output", lin))
    assert (second["read"], second["written"], second["special_tokens"]) == (737, 737, 7)


def test_quarantine_counts_reach_the_summary(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"triples": [["A", "p", "B"]]}\n{broken\n{"triples": []}\n')
    out = summary(
        run("ingest", "--format", "jsonl", "--input", str(path), "--output", str(tmp_path / "o"))
    )
    assert (out["read"], out["written"], out["quarantined"]) == (3, 1, 2)
    assert out["quarantined_by_reason"] == {"empty record": 1, "malformed JSON": 1}


def test_evaluate_summary_bleu_equals_sacrebleu(tmp_path):
    import sacrebleu

    from datatuner_core import stage_writer
    from datatuner_core.schema import GENERATIONS

    texts = ["Alan Bean was born in Wheeler, Texas.", "The Eagle is a pub.", None]
    refs = [
        ["Alan Bean was born in Wheeler, Texas.", "Wheeler, Texas is where Alan Bean was born."],
        ["The Eagle is a coffee shop."],
        ["Aarhus Airport serves Aarhus."],
    ]
    writer = stage_writer.StageWriter(str(tmp_path / "generations"), "generate", GENERATIONS)
    for i, (text, ref) in enumerate(zip(texts, refs)):
        cand = {"text": text, "lm_score": -1.0, "fidelity_label": "accurate", "fidelity_score": 0.9}
        writer.add({
            "id": str(i), "linearized": "<subject> x", "text": text, "references": ref,
            "fidelity_label": "accurate" if text else None, "fidelity_score": 0.9 if text else None,
            "lm_score": -1.0, "candidates": [cand] if text else [], "model_version": "v1",
            "entities": [], "category": None, "source": "t", "split": "test", "data": None,
            "truncated": False, "error": None if text else "generation failed: test",
        })  # fmt: skip
        writer.stats.read += 1
        writer.stats.written += 1
    writer.commit(inputs=[], fingerprint="x")
    out = summary(run("evaluate", "--predictions", str(tmp_path / "generations")))
    expected = sacrebleu.corpus_bleu(
        ["Alan Bean was born in Wheeler, Texas.", "The Eagle is a pub.", ""],
        [
            [r[0] for r in refs],
            [refs[0][1], None, None],
        ],
    ).score
    assert out["metrics"]["bleu"] == pytest.approx(expected)
    assert out["metrics"]["n"] == 3 and out["metrics"]["n_failed"] == 1
    assert out["output"] == str(tmp_path / "report")
    assert (tmp_path / "report" / "metrics.json").exists()
    assert (tmp_path / "report" / "report.md").exists()
    # the E2E metric set, equal to the library functions on the same texts, printed and written
    from datatuner_core import metrics

    standard = metrics.standard_metrics(texts, refs)
    for key in ("nist", "rouge_l", "cider"):
        assert out["metrics"][key] == pytest.approx(standard[key]) and standard[key] > 0
    proc = run("evaluate", "--predictions", str(tmp_path / "generations"))
    assert f"NIST {standard['nist']:.2f}, ROUGE-L {standard['rouge_l']:.2f}" in proc.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| CIDEr | {standard['cider']:.2f} |" in report and "METEOR: not computed" in report


def test_export_serving_writes_the_folded_lm_and_names_a_folder_that_is_no_lm(tmp_path):
    """`datatuner export-serving` with a relative output (as a user types it): the summary names
    the `<text>` state folded in; the folder holds safetensors, the tokenizer and serving.json.
    A folder without a model is one clear line, exit 1."""
    from datatuner_core.tokenizer import build_tokenizer

    from .core.test_state_lm import DATA, SPECIALS, TEXT, llama

    tok = build_tokenizer("scratch:tiny", [DATA, TEXT] * 5, SPECIALS, vocab_size=400)
    llama(tok, seed=2).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    cli = [sys.executable, "-m", "flows.cli", "export-serving", "--lm", "lm", "--output", "served"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**ENV, "PYTHONPATH": root}
    proc = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    result = summary(proc)
    assert result["output"] == str(tmp_path / "served")
    assert result["serving"]["text_token"] == "<text>" and result["written"] == 1
    names = sorted(p.name for p in (tmp_path / "served").iterdir())
    assert {"model.safetensors", "serving.json", "config.json", "tokenizer.json"} <= set(names)
    (tmp_path / "empty").mkdir()
    bad = run("export-serving", "--lm", str(tmp_path / "empty"), "--output", str(tmp_path / "x"))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        f"datatuner: error: {tmp_path / 'empty'}: not a trained LM (no config.json there)"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["run", "configs/webnlg-tiny.yaml"],
        ["verbalize", "--input", "x.jsonl", "--format", "jsonl", "--output", "o", "--lm", "a",
         "--classifier", "b"],
    ],
)  # fmt: skip
def test_an_engine_that_cannot_run_here_fails_before_anything_starts(args):
    """`generate.engine: vllm` without the [gpu] extra (or a GPU): one line, exit 1, at once —
    not after the training. An engine that does not exist is a config error (exit 2)."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed: the [gpu] extra is there")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args, "--set", "generate.engine=vllm"],
        cwd=root, capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "datatuner: error: generate.engine: vllm needs the [gpu] extra: pip install -e '.[gpu]' "
        "(or set generate.engine: auto)"
    ]
    bad = run(*args, "--set", "generate.engine=gpu")
    assert bad.returncode == 2 and "generate.engine" in bad.stderr
