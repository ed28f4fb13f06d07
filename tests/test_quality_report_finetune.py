"""The quality report's dev-beside-test table of webnlg-smol's LM recipes (`--finetune`)."""

import json

import pytest

from benchmarks import quality


def curve(path, recipe="lora16-lr1e3", recipes=1):
    entry = {
        "settings": {"lr": 1e-3, "lora_rank": 16}, "train_minutes": 59.0, "tokens_per_s": 137.2,
        "curve": [{"step": 150, "val_ppl@validation": 2.4, "val_ppl@validation_unseen": 3.3},
                  {"step": 300, "val_ppl@validation": 2.175, "val_ppl@validation_unseen": 2.972}],
        "dev": {"validation": {"bleu": 54.45, "bleu_top_beam": 53.78, "oracle_bleu": 59.83},
                "validation_unseen": {"bleu": 51.58, "bleu_top_beam": 49.98, "oracle_bleu": 57.52}},
    }  # fmt: skip
    recipes = {recipe if i == 0 else f"{recipe}-{i}": entry for i in range(recipes)}
    path.write_text(json.dumps({"max_steps": 300, "recipes": recipes}))
    return str(path)


def figures(path, bleu=50.29, unseen=44.14, cov=0.0195, top=49.61):
    path.write_text(
        json.dumps(
            {
                "minutes": 49.7,
                "test": {
                    "bleu": bleu,
                    "bleu_seen": 55.25,
                    "bleu_unseen": unseen,
                    "bleu_top_beam": top,
                    "oracle_bleu": 56.02,
                    "coverage_error": cov,
                    "coverage_error_top_beam": 0.1396,
                },
            }
        )
    )
    return str(path)


def test_dev_sits_beside_test_with_each_target_met_or_missed_by_its_gap(tmp_path, capsys):
    (tmp_path / "s" / "runs").mkdir(parents=True)
    out = tmp_path / "out"
    quality.main(["report", "--storage", str(tmp_path / "s"), "--out", str(out),
                  "--finetune", curve(tmp_path / "c.json"), figures(tmp_path / "t.json"),
                  "--finetune", curve(tmp_path / "c2.json", recipe="lora16"),
                  figures(tmp_path / "t2.json", bleu=48.0, unseen=46.5, cov=0.091, top=48.5),
                  ])  # fmt: skip
    md = (out / "quality.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| lora16-lr1e3 | 0.001"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:9] == ["2.17 / 2.97", "54.45 (53.78, 59.83)", "51.58 (49.98, 57.52)",
                          "50.29", "55.25"]  # fmt: skip
    assert (
        "| lora16-lr1e3 | met (50.29) | missed by 0.86 (44.14) | met (1.9 %) | met (50.29) |" in md
    )
    assert ("| lora16 | missed by 2.00 (48.00) | met (46.50) | missed by 1.10 points (9.1 %) | "
            "missed by 0.50 (48.00) |") in md  # fmt: skip
    # the unseen-dev curve: every validation of every recipe
    assert "| lora16-lr1e3 | 150 | 2.40 | 3.30 |" in md and "| lora16 | 300 | 2.17 | 2.97 |" in md
    # kept by a later report that is not given --finetune
    again = tmp_path / "again"
    quality.main(["report", "--storage", str(tmp_path / "s"), "--out", str(again),
                  "--keep", str(out / "quality.json")])  # fmt: skip
    assert (again / "quality.md").read_text() == md


def test_a_curve_of_several_recipes_or_a_file_without_test_figures_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    base = ["report", "--storage", str(tmp_path), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="one recipe"):
        quality.main([*base, "--finetune", curve(tmp_path / "c.json", recipes=2),
                      figures(tmp_path / "t.json")])  # fmt: skip
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(SystemExit, match="no test figures"):
        quality.main(
            [*base, "--finetune", curve(tmp_path / "c1.json"), str(tmp_path / "empty.json")]
        )
