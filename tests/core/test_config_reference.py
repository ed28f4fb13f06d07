"""docs/config.md is a view of config.py: every key declared once, there, with a description."""

from __future__ import annotations

from pathlib import Path

from datatuner_core.config_reference import fields, reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_every_config_key_has_a_description():
    keys = dict(fields())
    assert {"lm.lr", "generate.beams", "dataset.paths.train", "classifier.patience"} <= set(keys)
    assert [key for key, field in keys.items() if not (field.description or "").strip()] == []


def test_the_config_page_is_the_generated_reference():
    page = DOC.read_text(encoding="utf-8")
    assert page == reference(), "docs/config.md is stale: run `make docs`"
    for key, _ in fields():
        assert page.count(f"| `{key}` |") == 1, key
