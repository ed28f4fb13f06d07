"""benchmarks.decode_levers runs its three settings in fresh processes on the same records: the
`before` child computes full logits with GPT-2's elementwise GELU, `now` fuses it, all give the
same texts (a random GPT-2, so the texts are nonsense but deterministic)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.decode_levers import SETTINGS, main

from .core.test_state_lm import DATA, gpt2_gelu_new, tok  # noqa: F401 - tok: a fixture


def test_the_three_settings_run_side_by_side_with_the_same_texts(tok, tmp_path):  # noqa: F811
    lm_dir = tmp_path / "lm"
    model = gpt2_gelu_new(tok, seed=4)  # a model built before the fused GELU
    model.save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    stage = tmp_path / "linearized"
    stage.mkdir()
    rows = [{"id": f"r{i}", "linearized": DATA + f" <object> Value {i}", "entities": []}
            for i in range(24)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), stage / "part-00000.parquet")
    result = main(["--lm", str(lm_dir), "--input", str(stage), "--records", "24", "--repeats", "1",
                   "--block", "8", "--threads", "1", "--set", "generate.max_new_tokens=5",
                   "--json", str(tmp_path / "out.json")])  # fmt: skip
    settings = result["settings"]
    assert set(settings) == set(SETTINGS)
    assert settings["before"]["fused_gelu_modules"] == 0
    assert settings["last_logits"]["fused_gelu_modules"] == 0
    assert settings["fused_gelu"]["fused_gelu_modules"] == model.config.n_layer
    assert settings["now"]["fused_gelu_modules"] == model.config.n_layer
    assert all(s["texts_equal_to_now"] == 24 for s in settings.values())
    assert all(s["peak_rss_mib"][0] > 50 for s in settings.values())
    assert "speedup_over_before" in settings["now"] and (tmp_path / "out.json").exists()
