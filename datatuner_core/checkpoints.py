"""Training checkpoints: what one holds, how it is written and read back, and where Ray keeps them.

A checkpoint folder (rank 0 writes it; Ray keeps the best by the task's monitor plus the latest)
holds `state.pt` (tensors only: model, optimizer, scheduler, every rank's torch RNG state; read
back with `weights_only=True`, so nothing in a checkpoint folder can run code) and `state.json`
(position: epoch, step, step in epoch; history; every rank's python and numpy RNG state; the
resolved config). Resuming from one continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

STATE_FILE = "state.pt"  # tensors and plain containers: loaded with weights_only=True
PLAIN_STATE_FILE = "state.json"  # the rest of a checkpoint (progress, config, RNG streams)
TENSOR_STATE = ("model", "optimizer", "scheduler")  # checkpoint keys kept in STATE_FILE
RNG_TENSORS = ("torch", "cuda")  # per-rank RNG states kept in STATE_FILE
UNVALIDATED = 1e30  # monitor value of checkpoints taken without a validation (never the best)


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch in this process."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's RNG streams: python and numpy as JSON-able lists, torch (and CUDA) as
    tensors."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back the RNG streams `rng_state` took."""
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(payload: dict, directory: str) -> None:
    """Write a checkpoint payload as `state.pt` (tensors: `TENSOR_STATE` and the torch RNG
    states) and `state.json` (everything else), so that loading it never unpickles code."""
    import torch

    tensors = {key: payload[key] for key in TENSOR_STATE}
    tensors["rng"] = [{k: v for k, v in r.items() if k in RNG_TENSORS} for r in payload["rng"]]
    plain = {key: v for key, v in payload.items() if key not in TENSOR_STATE}
    plain["rng"] = [{k: v for k, v in r.items() if k not in RNG_TENSORS} for r in payload["rng"]]
    torch.save(tensors, Path(directory) / STATE_FILE)
    Path(directory, PLAIN_STATE_FILE).write_text(json.dumps(plain))


def load_state(checkpoint) -> dict:
    """A Ray checkpoint written by `save_state`, as one payload; `state.pt` is read with
    `weights_only=True`. Anything else (a checkpoint of the older one-pickle format, a planted
    pickle) is refused, never unpickled."""
    with checkpoint.as_directory() as directory:
        return read_state(directory, name=str(checkpoint.path))


def read_state(directory: str, name: str | None = None) -> dict:
    """The payload of the checkpoint folder `directory` (`name`: how errors call it)."""
    import pickle
    import re

    import torch

    name = name or str(directory)
    if not Path(directory, PLAIN_STATE_FILE).exists():
        raise ValueError(
            f"checkpoint {name} has no {PLAIN_STATE_FILE}: it is not in this trainer's format "
            f"(an older checkpoint holds one pickle, which is never loaded); delete the run "
            f"folder to train from scratch"
        )
    try:
        tensors = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        names = f" (it names {found.group(1)})" if found else ""
        raise ValueError(
            f"checkpoint {name}: {STATE_FILE} holds more than tensors and plain containers{names}, "
            f"so it is not loaded: unpickling it could run code from the checkpoint folder"
        ) from None
    plain = json.loads(Path(directory, PLAIN_STATE_FILE).read_text())
    rng = [{**p, **t} for p, t in zip(plain.pop("rng"), tensors.pop("rng"), strict=True)]
    return {**plain, **tensors, "rng": rng}


def best_checkpoint(result, monitor: str):
    """The validated checkpoint of a Ray Train result with the lowest `monitor`, or None."""
    scored = [
        (metrics.get(monitor, UNVALIDATED), checkpoint)
        for checkpoint, metrics in (result.best_checkpoints or [])
    ]
    scored = [(value, c) for value, c in scored if value < UNVALIDATED]
    return min(scored, key=lambda vc: vc[0])[1] if scored else None


def latest_checkpoint_dir(run_uri: str, storage_options: dict | None = None) -> str | None:
    """The URI of the newest complete checkpoint folder (`step-NNNNNNN`) of a Ray Train run
    folder, or None. Complete: its `state.json` parses and its `state.pt` is a whole zip archive
    (torch's format; a file cut short by a crash has no central directory).

    Ray restores a re-run from its own index of the run's checkpoints
    (`checkpoint_manager_snapshot.json`), but a worker that fails right after a report can stop
    the run before that index names the checkpoint, which is on storage all the same: the
    workers start from this one when Ray gives them none (`training_loop.run_worker`), so a
    crash never costs more than the steps since the last checkpoint written."""
    import zipfile

    from . import storage

    loc = storage.locate(run_uri, storage_options)
    try:
        names = sorted(
            (p.rstrip("/").rsplit("/", 1)[-1] for p in loc.fs.ls(loc.path, detail=False)),
            reverse=True,
        )
    except FileNotFoundError:
        return None
    for name in names:
        if not name.startswith("step-"):
            continue
        folder = f"{loc.path.rstrip('/')}/{name}"
        try:
            json.loads(loc.fs.cat_file(f"{folder}/{PLAIN_STATE_FILE}"))
            with loc.fs.open(f"{folder}/{STATE_FILE}", "rb") as fh:
                whole = zipfile.is_zipfile(fh)
        except (FileNotFoundError, ValueError):
            continue
        if whole:
            return f"{str(run_uri).rstrip('/')}/{name}"
    return None


def split_output(output_uri: str) -> tuple[str, str]:
    """An output URI as (the folder it sits in, or ".", its own name)."""
    parent, _, base = str(output_uri).rstrip("/").rpartition("/")
    return parent or ".", base


def default_run_dir(output_uri: str) -> str:
    """Where Ray keeps checkpoints for an output: beside it under `_checkpoints/` (a temp folder
    for a memory:// output)."""
    if str(output_uri).startswith("memory://"):
        return str(Path(tempfile.gettempdir()) / "datatuner-checkpoints")
    parent, base = split_output(output_uri)
    local = "://" not in parent
    return (
        str(Path(parent).resolve() / "_checkpoints" / base)
        if local
        else f"{parent}/_checkpoints/{base}"
    )
