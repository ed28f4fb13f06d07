"""Config: the shipped presets validate; unknown keys and wrong types name the key."""

from __future__ import annotations

import pytest

from datatuner_core.config import ConfigError, load_config

from ..conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_validate(path):
    config = load_config(path)
    assert config.name == path.stem


def test_defaults_and_overrides():
    config = load_config(
        None, ["lm.epochs=1", "dataset.max_records.train=500", "generate.rerank=false"]
    )
    assert (config.lm.epochs, config.dataset.max_records.train, config.generate.rerank) == (
        1,
        500,
        False,
    )
    assert config.storage == "./artifacts" and config.lm.base == "scratch:tiny"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lm.epoch=1"], "config key 'lm.epoch': unknown key"),
        (["lm.epochs=many"], "config key 'lm.epochs': Input should be a valid integer"),
        (
            ["linearize.mode=medium"],
            "config key 'linearize.mode': Input should be 'fine' or 'coarse'",
        ),
        (["lm.lr=0"], "config key 'lm.lr': Input should be greater than 0"),
        (["lm.epochs"], "--set expects dotted.key=value"),
        (["name=a/b"], "config key 'name'"),
        (["dataset.ingest_memory=lots"], "config key 'dataset.ingest_memory'"),
    ],
)
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lm: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("name", ["webnlg-smol", "viggo-smol"])
def test_cpu_presets_checkpoint_both_trainings_within_200_steps(name):
    # their trainings run 45-115 minutes on 2 cores: a killed run resumes from the latest checkpoint
    # and loses at most 200 steps of either (the full webnlg-smol run of 2026-12-01 lost 64
    # minutes of classifier training to a kill because only the LM checkpointed)
    config = load_config(REPO / "configs" / f"{name}.yaml")
    for section in (config.lm, config.classifier):
        assert section.checkpoint_every is not None and 0 < section.checkpoint_every <= 200


def test_reader_options_carry_the_dataset_section():
    from datatuner_core.config import reader_options

    config = load_config(None, ["dataset.ingest_memory=512MB", "dataset.max_triples=5"])
    data = config.dataset
    assert reader_options("ntriples", data.max_triples, data.ingest_memory) == {
        "max_triples": 5, "memory_limit": "512MB",
    }  # fmt: skip
    assert reader_options("ntriples") == {"max_triples": 7, "memory_limit": "1GB"}
    assert reader_options("webnlg", 5, "512MB") == {}
