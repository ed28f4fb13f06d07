"""benchmarks.finetune `cost`: the recipes run on the same batches, and each one's trainable
parameters are what it says (a scratch GPT-2 stands in for SmolLM2: LoRA of rank 16 on its four
blocks' four linear layers, plus the special tokens' rows)."""

from __future__ import annotations

from benchmarks.finetune import main


def test_cost_compares_lora_and_full_fine_tuning_on_the_same_batches(tmp_path):
    result = main(["cost", "--work", str(tmp_path), "--recipes", "lora16 full", "--base",
                   "scratch:tiny", "--entries", "60", "--rows", "60", "--steps", "1",
                   "--repeats", "1", "--out", str(tmp_path / "cost.json")])  # fmt: skip
    lora, full = result["recipes"]["lora16"], result["recipes"]["full"]
    assert full["trainable_parameters"] == full["parameters"]
    # scratch:tiny: 4 blocks x (c_attn 256->768, attn c_proj 256->256, c_fc 256->1024,
    # mlp c_proj 1024->256) x rank 16, and the 7 special tokens' rows of 256 (the tied head)
    adapters = 4 * 16 * ((256 + 768) + (256 + 256) + (256 + 1024) + (1024 + 256))
    assert lora["trainable_parameters"] == adapters + 7 * 256
    assert lora["parameters"] == full["parameters"] + adapters + 7 * 256
    assert all(r["seconds_per_step"] > 0 and len(r["all_seconds"]) == 1 for r in (lora, full))
    assert (tmp_path / "cost.json").exists()


def test_pipeline_dev_sample_is_the_one_datatuner_run_verbalizes(tmp_path):
    """`curve --dev-sample pipeline` judges a recipe on the very records a full run's report
    shows as dev (`sample_splits` with the pipeline's default splits), not on another draw."""
    from benchmarks.finetune import dev_rows, prepare
    from datatuner_core.linearize import sample_splits
    from datatuner_core.stage_reader import read_stage

    prepare(tmp_path, 300)
    ours = dev_rows(tmp_path, 7, "pipeline")
    sample_splits(str(tmp_path / "linearized"), str(tmp_path / "run_sample"), 7)
    theirs = read_stage(str(tmp_path / "run_sample")).to_pylist()
    for split in ("validation", "validation_unseen"):
        ids = [r["id"] for r in theirs if r["split"] == split]
        assert len(ids) == 7
        assert [r["id"] for r in ours[split]] == ids
    earlier = dev_rows(tmp_path, 7, "benchmark")
    assert {r["id"] for r in earlier["validation"]} != {r["id"] for r in ours["validation"]}


def test_test_reports_the_preset_decoding_of_a_chosen_lm_on_the_test_split(tmp_path, shared_data):
    """`test`: a trained LM (here a random tiny Llama) on the shortest WebNLG test records with the
    preset's decoding, in this process: every record in the rows file and the figures, with the
    seen / unseen split and the oracle a full run's report shows."""
    import json

    from datatuner_core.tokenizer import build_tokenizer

    from .core.test_state_lm import DATA, SPECIALS, TEXT, llama

    tok = build_tokenizer("scratch:tiny", [DATA, TEXT] * 10, SPECIALS, vocab_size=400)
    lm = tmp_path / "lm"
    llama(tok, seed=1).save_pretrained(lm)
    tok.save_pretrained(lm)
    rows_file, out = tmp_path / "test.jsonl", tmp_path / "test.json"
    result = main(["test", "--work", str(tmp_path), "--lm", str(lm), "--entries", "60",
                   "--records", "6", "--chunk", "4", "--generations", str(rows_file),
                   "--out", str(out)])  # fmt: skip
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert len(rows) == 6 == result["records"] and {r["split"] for r in rows} == {"test"}
    assert len({r["id"] for r in rows}) == 6
    # the preset's 3 beams, and up to 3 more (new texts) where its coverage retry decoded again
    assert all(3 <= len(r["candidates"]) <= 6 and r["references"] for r in rows)
    test = json.loads(out.read_text())["test"]
    assert test["n"] == 6 and test["n_failed"] == 0 and 0 <= test["bleu"] <= 100
    assert {"bleu_seen", "bleu_top_beam", "oracle_bleu", "coverage_error"} <= set(test)

    # stopped after 2 records, in the middle of the third's line: the rerun keeps the two and
    # generates the other four, each id once
    lines = rows_file.read_text().splitlines(keepends=True)
    rows_file.write_text("".join(lines[:2]) + lines[2][:40])
    again = main(["test", "--work", str(tmp_path), "--lm", str(lm), "--records", "6",
                  "--chunk", "4", "--generations", str(rows_file), "--out", str(out)])  # fmt: skip
    resumed = rows_file.read_text().splitlines(keepends=True)
    assert resumed[:2] == lines[:2] and len(resumed) == 6 == again["records"]
    assert again["resumed"] == 2 and {json.loads(x)["id"] for x in resumed} == {
        r["id"] for r in rows
    }
    assert json.loads(out.read_text())["test"]["n"] == 6


def test_dev_compares_trained_lms_on_the_same_larger_dev_sample(tmp_path, shared_data):
    """`dev`: trained LMs (random tiny Llamas; the first two the same weights) verbalize the same
    seeded sample of each dev split (the pipeline's: a smaller sample is its prefix); every row is
    kept per LM and split, each LM is compared with the first by paired bootstrap, identical LMs
    differ by exactly 0, and a rerun generates nothing."""
    import json

    from datatuner_core.linearize import sample_splits
    from datatuner_core.stage_reader import read_stage
    from datatuner_core.tokenizer import build_tokenizer

    from .core.test_state_lm import DATA, SPECIALS, TEXT, llama

    tok = build_tokenizer("scratch:tiny", [DATA, TEXT] * 10, SPECIALS, vocab_size=400)
    lms = [tmp_path / name for name in ("a", "b", "c")]
    for lm, seed in zip(lms, (1, 1, 2)):
        llama(tok, seed=seed).save_pretrained(lm)
        tok.save_pretrained(lm)
    rows_dir, out = tmp_path / "rows", tmp_path / "dev.json"
    args = ["dev", "--work", str(tmp_path), "--lms", " ".join(map(str, lms)), "--entries", "300",
            "--records", "4", "--unseen-records", "3", "--samples", "50",
            "--generations", str(rows_dir), "--out", str(out)]  # fmt: skip
    result = main(args)
    assert result["records"] == {"validation_unseen": 3, "validation": 4}
    sample_splits(str(tmp_path / "linearized"), str(tmp_path / "run_sample"), 7)
    theirs = read_stage(str(tmp_path / "run_sample")).to_pylist()
    for split, n in result["records"].items():
        prefix = [r["id"] for r in theirs if r["split"] == split][:n]
        for lm in lms:
            rows = [json.loads(x) for x in (rows_dir / f"{lm.name}.{split}.jsonl").open()]
            assert sorted(r["id"] for r in rows) == sorted(prefix)
            assert {r["split"] for r in rows} == {split} and all(r["references"] for r in rows)
            figures = result["lms"][str(lm)][split]
            assert figures["n"] == n and figures["resumed"] == 0 and "bleu_top_beam" in figures
    same, other = (result["against_first"][str(lm)] for lm in lms[1:])
    assert set(same) == set(other) == {"validation_unseen", "validation", "mean"}
    for part in same.values():
        assert (part["delta"], part["low"], part["high"], part["above_zero"]) == (0, 0, 0, 0)
    assert all(p["low"] <= p["delta"] <= p["high"] and p["samples"] == 50 for p in other.values())

    again = main(args)  # every row kept: nothing generated again, the same figures
    for lm in lms:
        for split, n in result["records"].items():
            assert again["lms"][str(lm)][split]["resumed"] == n
            assert again["lms"][str(lm)][split]["bleu"] == result["lms"][str(lm)][split]["bleu"]
    assert again["against_first"] == result["against_first"]


def test_paired_compares_two_test_rows_files_by_category_group(tmp_path):
    """`paired`: rows of the same test records by two LMs, grouped into WebNLG's unseen
    categories, the preset's held-out ones and the trained ones; B better where its texts are the
    references; files of different records are refused with a clear error."""
    import json

    import pytest

    refs = {"Artist": "Alan Bean was born in Wheeler, Texas.",
            "City": "Aarhus is a city in Denmark.",
            "Airport": "Aarhus Airport is in Tirstrup."}  # fmt: skip
    rows = [{"id": f"{c}{i}", "category": c, "references": [ref]}
            for c, ref in refs.items() for i in range(4)]  # fmt: skip
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({**r, "text": "Something else ."}) + "\n" for r in rows))
    b.write_text("".join(json.dumps({**r, "text": r["references"][0] if r["category"] != "City"
                                     else "Something else ."}) + "\n" for r in rows))  # fmt: skip
    result = main(["paired", "--rows", str(a), str(b), "--samples", "50"])
    groups = result["groups"]
    assert result["held_out"] == ["City", "Monument"]
    assert {k: g["records"] for k, g in groups.items()} == {
        "webnlg_unseen": 4, "held_out": 4, "trained": 4}  # fmt: skip
    assert groups["webnlg_unseen"]["bleu_b"] == 100 and groups["webnlg_unseen"]["bleu_a"] < 10
    assert groups["trained"]["b_minus_a"]["above_zero"] == 1.0
    assert groups["held_out"]["b_minus_a"]["delta"] == 0 == groups["held_out"]["b_minus_a"]["low"]
    a.write_text("".join(json.dumps({**r, "text": "x"}) + "\n" for r in rows[:-1]))
    with pytest.raises(SystemExit, match="different records"):
        main(["paired", "--rows", str(a), str(b)])
