"""What a training job leaves at its output, and how an identical job finds it again.

- The output folder (local, s3://, memory://): the best checkpoint's model via `task.save`
  (`save_pretrained`, safetensors, plus tokenizer), then `training_card.json`, written last.
- The job: the task's settings and vocabulary, the trainer knobs, the data's content, the workers
  and the code version, hashed. A model made by the same job is not trained again
  (`reuse_trained`): the output's own model, or a sibling's found through
  `{parent of output}/_jobs/{job}.json`, copied.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile

from . import fingerprints, storage
from .checkpoints import split_output

CARD_FILE = "training_card.json"
JOBS_DIR = "_jobs"  # beside the models: {job fingerprint}.json → the output it trained


def read_card(output_uri: str, storage_options: dict | None = None, *, missing_ok=False):
    """The training card of a saved model (None when `missing_ok` and it has none)."""
    uri = storage.join_uri(output_uri, CARD_FILE)
    return storage.read_json(uri, storage_options, missing_ok=missing_ok)


def export_model(task, state_dict, card: dict, output_uri: str, storage_options=None) -> None:
    """Build the model, load `state_dict`, `task.save` it locally, upload; the card goes last."""
    model = task.build_model()
    model.load_state_dict(state_dict)
    counts = getattr(task, "parameter_counts", None)
    if counts:  # total / trainable parameters as trained (freezing leaves most of a base fixed)
        card["parameters"] = counts  # the caller's card: what it returns is what is written
    with tempfile.TemporaryDirectory(prefix="datatuner-export-") as tmp:
        task.save(model, tmp)
        put_directory(tmp, output_uri, storage_options)
    storage.write_json(storage.join_uri(output_uri, CARD_FILE), card, storage_options)


def put_directory(local_dir: str, uri: str, storage_options: dict | None = None) -> list[str]:
    """Copy every file under `local_dir` to `uri` (`storage.upload_dir`); returns the URIs."""
    names = storage.upload_dir(local_dir, uri, storage_options)
    return [storage.join_uri(uri, name) for name in names]


def task_description(task) -> dict:
    """The task's plain settings (no tokenizer objects) for the card."""
    if not dataclasses.is_dataclass(task):
        return {"name": task.name}
    out = {}
    for f in dataclasses.fields(task):
        value = getattr(task, f.name)
        if isinstance(value, str | int | float | bool | type(None) | list | tuple | dict):
            out[f.name] = value
    return json.loads(json.dumps(out, default=str))


def task_identity(task) -> dict:
    """What defines the model apart from the data and the trainer knobs: the task's plain
    settings (base, shape, lengths, states, frozen layers, special tokens) and its tokenizer's
    vocabulary (a scratch tokenizer is trained on the data, a packaged one is fixed)."""
    identity = {"task": task.name, **task_description(task)}
    if not identity.get("lora_rank"):  # no adapters: the identity of the jobs made before the key
        identity.pop("lora_rank", None)
        identity.pop("lora_alpha", None)
    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "get_vocab"):
        identity["vocab_sha256"] = fingerprints.fingerprint(sorted(tokenizer.get_vocab().items()))
    return identity


def job_index_uri(output_uri: str, job: str) -> str:
    """Where the model trained by `job` is recorded: `{parent of output}/_jobs/{job}.json` (the
    sibling versions of one registry kind share the index)."""
    return storage.join_uri(split_output(output_uri)[0], JOBS_DIR, f"{job}.json")


def index_job(job: str, output_uri: str, storage_options: dict | None = None) -> None:
    """Record that `job` made the model at `output_uri`."""
    payload = {"job": job, "output": output_uri}
    storage.write_json(job_index_uri(output_uri, job), payload, storage_options)


def reuse_trained(job: str, output_uri: str, storage_options: dict | None = None) -> dict | None:
    """The card of a model made by `job`, now at `output_uri`, or None (train it). The model
    at `output_uri` itself when its card names this job; else the indexed one, copied here
    (every file, the card last, with `reused_from`). A missing, deleted or retrained source
    (its card names another job) is None."""
    own = read_card(output_uri, storage_options, missing_ok=True)
    if own and own.get("job") == job:
        return {**own, "skipped": True}
    index = storage.read_json(job_index_uri(output_uri, job), storage_options, missing_ok=True)
    source = (index or {}).get("output")
    if not source or source.rstrip("/") == str(output_uri).rstrip("/"):
        return None
    card = read_card(source, storage_options, missing_ok=True)
    if not card or card.get("job") != job:
        return None
    copied = storage.copy_dir(source, output_uri, storage_options, skip=[CARD_FILE])
    card = {**card, "output": output_uri, "reused_from": source, "files_copied": len(copied)}
    storage.write_json(storage.join_uri(output_uri, CARD_FILE), card, storage_options)
    return card
