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
