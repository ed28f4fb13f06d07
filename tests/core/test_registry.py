"""Registry: versions, the production pointer, the first version promoted, the history."""

from __future__ import annotations

import json

import pytest

from datatuner_core import registry, storage


def test_first_version_becomes_production_and_history_is_kept(tmp_path):
    root = str(tmp_path)
    assert registry.production(root, "lm") is None
    with pytest.raises(registry.RegistryError, match="no production lm under"):
        registry.production_uri(root, "lm")
    first = registry.register_first(root, "lm", "v1", {"val_ppl": 9.5})
    assert first["uri"] == f"{root}/models/lm/v1" and first["reason"] == "first trained version"
    assert registry.register_first(root, "lm", "v2", {"val_ppl": 8.0}) is None
    assert registry.production(root, "lm")["version"] == "v1"
    registry.promote(root, "lm", "v2", reason="better dev BLEU", metrics={"bleu": 30.1})
    assert registry.production_uri(root, "lm") == f"{root}/models/lm/v2"
    registry.record_decision(root, "lm", {"version": "v3", "promoted": False, "reason": "worse"})
    history = (tmp_path / "models" / "lm" / "history.jsonl").read_text().splitlines()
    assert [json.loads(h)["version"] for h in history] == ["v1", "v2", "v3"]
    assert registry.production(root, "classifier") is None


def test_versions_sort_by_time_and_kinds_are_checked():
    a, b = registry.new_version(), registry.new_version("x")
    assert len(a.split("-")) == 3 and b.endswith("-x")
    with pytest.raises(registry.RegistryError, match="unknown model kind 'tokenizer'"):
        registry.production("memory://r", "tokenizer")


def test_upload_and_download_dir(tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"\x00\x01")
    assert storage.upload_dir(str(src), "memory://models/m1") == ["config.json", "sub/w.bin"]
    out = storage.download_dir("memory://models/m1", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "sub" / "w.bin").read_bytes() == b"\x00\x01"
    assert storage.download_dir(str(src), "unused") == str(src)  # local: used in place
    assert out == str(tmp_path / "copy")
