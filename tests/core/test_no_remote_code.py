"""Nothing in a model or checkpoint folder runs as code. A model folder whose `config.json` and
`tokenizer_config.json` carry an `auto_map` to a python file is loaded through every loader the
product uses, in a fresh process with `y` on stdin (what `transformers` asks before running a
folder's code): the file never runs, and the load either goes on without it or fails naming
`trust_remote_code`. A pickle planted in a checkpoint folder is refused on resume, unpickled
never."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datatuner_core import checkpoints, classifier_model, classifier_pairs, lm
from datatuner_core.tokenizer import build_tokenizer

from .test_state_lm import DATA, SPECIALS, TEXT

REPO = Path(__file__).resolve().parents[2]
TINY = (1, 32, 2)  # layers, width, heads
# the planted module: importing it is running it (it leaves a marker beside itself)
PLANTED_CODE = """from pathlib import Path

Path(__file__).parent.joinpath("{marker}").write_text("the folder's code ran")


class Planted:
    pass
"""
MARKER = "code-ran"  # inside each planted folder (and beside transformers' copy of the module)
AUTO_CLASSES = [
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForSequenceClassification",
]
# each loader as the product calls it, on the LM folder or the classifier folder
LOADERS = {
    "generator": (
        "lm",
        "from datatuner_core.generator import Generator\nGenerator(folder, rerank=False)",
    ),
    "fidelity_scorer": (
        "classifier",
        "from datatuner_core.classifier_scorer import FidelityScorer\nFidelityScorer(folder)",
    ),
    "bases_load_model_lm": (
        "lm",
        "import transformers\nfrom datatuner_core.bases import load_model\n"
        "load_model(transformers.AutoModelForCausalLM, folder)",
    ),
    "bases_load_model_classifier": (
        "classifier",
        "import transformers\nfrom datatuner_core.bases import load_model\n"
        "load_model(transformers.AutoModelForSequenceClassification, folder, num_labels=5)",
    ),
    "bases_load_config": (
        "classifier",
        "from datatuner_core.classifier_model import has_segments\nhas_segments(folder)",
    ),
    "load_pretrained_tokenizer": (
        "lm",
        "from datatuner_core.tokenizer import load_pretrained_tokenizer\n"
        "load_pretrained_tokenizer(folder)",
    ),
    "load_tokenizer": (
        "lm",
        "from datatuner_core.tokenizer import load_tokenizer\nload_tokenizer(folder)",
    ),
}
# one process per loader (argv: its code, then the folders; each folder's module is its own)
RUNNER = """import json, sys
results = {}
for folder in sys.argv[2:]:
    try:
        exec(sys.argv[1], {"folder": folder})
        results[folder] = "loaded"
    except Exception as e:
        results[folder] = f"{type(e).__name__}: {e}"
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A tiny LM and a tiny classifier saved as the trainer saves them (`task.save`)."""
    root = tmp_path_factory.mktemp("saved")
    corpus = [DATA, TEXT, "Aarhus is in Denmark.", "The airport serves the city of Aarhus."] * 5
    tok = build_tokenizer("scratch:tiny", corpus, SPECIALS, vocab_size=400)
    task = lm.LMTask(tokenizer=tok, special_tokens=SPECIALS, max_length=64, shape=TINY)
    task.save(task.build_model(), str(root / "lm"))
    pairs = [(DATA, TEXT), (DATA, "Aarhus is in Denmark.")] * 5
    ctok = classifier_pairs.build_classifier_tokenizer("scratch:tiny", pairs, SPECIALS, 400)
    ctask = classifier_model.ClassifierTask(tokenizer=ctok, shape=TINY, max_length=64)
    ctask.save(ctask.build_model(), str(root / "classifier"))
    return {"lm": root / "lm", "classifier": root / "classifier"}


def plant(source: Path, target: Path, known: bool) -> Path:
    """A copy of a saved model whose configs point every auto class at a planted module. `known`:
    the model type and tokenizer class stay ones `transformers` has (it can load without the
    code); else they are names only the planted code defines (a load needs the code)."""
    shutil.copytree(source, target)
    (target / "planted.py").write_text(PLANTED_CODE.format(marker=MARKER))
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {name: "planted.Planted" for name in AUTO_CLASSES}
    tok_config = json.loads((target / "tokenizer_config.json").read_text())
    tok_config["auto_map"] = {"AutoTokenizer": ["planted.Planted", "planted.Planted"]}
    if not known:
        config["model_type"] = "planted"
        tok_config["tokenizer_class"] = "PlantedTokenizer"
    (target / "config.json").write_text(json.dumps(config))
    (target / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return target


def code_ran(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob(MARKER))


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_planted_auto_map_never_runs_even_when_stdin_says_yes(saved_models, tmp_path, loader):
    kind, code = LOADERS[loader]
    known = plant(saved_models[kind], tmp_path / "known", known=True)
    unknown = plant(saved_models[kind], tmp_path / "unknown", known=False)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HOME": str(tmp_path / "hf"),  # transformers copies a folder's modules under here
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, code, str(known), str(unknown)],
        input="y\n" * 20,  # every "Do you wish to run the custom code? [y/N]" answered yes
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert code_ran(tmp_path) == [], f"{loader} ran a model folder's code"
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULTS ")]
    results = json.loads(line[len("RESULTS ") :])
    assert results[str(known)] == "loaded"  # the folder's own classes load without its code
    refused = results[str(unknown)]  # only the planted code could load it: a clear refusal
    assert refused.startswith("ValueError") and "trust_remote_code" in refused, refused
    assert "custom code" in refused and str(unknown) in refused, refused


# ----------------------------------------------------------------------------- checkpoints


class Planted:
    """Unpickling this opens (creates) the file `path`: what a planted pickle could do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def checkpoint_folder(path: Path, plain: bool, marker: Path):
    """A Ray checkpoint folder whose `state.pt` unpickles a `Planted`; `plain`: with the
    `state.json` of the current format beside it (else: the older one-pickle layout)."""
    import numpy as np
    import ray.train
    import torch

    path.mkdir()
    payload = {"model": Planted(str(marker)), "optimizer": {}, "scheduler": {}, "rng": [{}]}
    if not plain:  # the old layout: one pickle with everything, numpy arrays included
        payload.update(progress={}, config={}, counts={}, world_size=1)
        payload["rng"] = [{"numpy": np.random.get_state()}]
    torch.save(payload, path / checkpoints.STATE_FILE)
    if plain:
        plain_state = {"progress": {}, "config": {}, "counts": {}, "world_size": 1, "rng": [{}]}
        (path / "state.json").write_text(json.dumps(plain_state))
    return ray.train.Checkpoint.from_directory(str(path))


def load_planted(tmp_path: Path, plain: bool) -> str:
    """Resume from a planted checkpoint; the marker must not exist; returns the refusal."""
    marker = tmp_path / "pickle-ran"
    checkpoint = checkpoint_folder(tmp_path / "step-0000002", plain=plain, marker=marker)
    try:
        checkpoints.load_state(checkpoint)
        refusal = "(loaded)"
    except ValueError as e:
        refusal = str(e)
    assert not marker.exists(), "resuming unpickled the planted object"
    assert "step-0000002" in refusal, refusal
    return refusal


def test_resume_refuses_a_planted_pickle_in_a_checkpoint(tmp_path):
    refusal = load_planted(tmp_path, plain=True)
    assert "state.pt holds more than tensors" in refusal and "io.open" in refusal, refusal


def test_resume_refuses_an_old_single_pickle_checkpoint_without_unpickling_it(tmp_path):
    refusal = load_planted(tmp_path, plain=False)
    assert "has no state.json" in refusal and "train from scratch" in refusal, refusal
