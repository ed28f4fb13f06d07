"""Finding the checkpoint a re-run resumes from, on storage, without Ray's index of the run."""

from __future__ import annotations

import json

from datatuner_core.checkpoints import PLAIN_STATE_FILE, STATE_FILE, latest_checkpoint_dir


def _checkpoint(folder, step: int, *, cut: bool = False, plain: bool = True):
    import torch

    where = folder / f"step-{step:07d}"
    where.mkdir(parents=True)
    torch.save({"model": {"w": torch.ones(64, 64)}}, where / STATE_FILE)
    if cut:  # a crash in the middle of writing it: no zip central directory
        data = (where / STATE_FILE).read_bytes()
        (where / STATE_FILE).write_bytes(data[: len(data) // 2])
    if plain:
        (where / PLAIN_STATE_FILE).write_text(json.dumps({"progress": {"step": step}}))


def test_the_newest_complete_checkpoint_is_found_and_broken_ones_are_passed_over(tmp_path):
    run = tmp_path / "lm-0123456789ab"
    assert latest_checkpoint_dir(str(run)) is None  # no run folder yet
    run.mkdir()
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    assert latest_checkpoint_dir(str(run)) is None  # a run folder without checkpoints
    _checkpoint(run, 2)
    _checkpoint(run, 10)
    _checkpoint(run, 12, cut=True)  # state.pt cut short
    _checkpoint(run, 14, plain=False)  # state.json never written
    (run / "step-0000016").mkdir()  # an empty folder
    assert latest_checkpoint_dir(str(run)) == f"{run}/step-0000010"
    (run / "step-0000010" / PLAIN_STATE_FILE).write_text('{"progress": ')  # cut JSON
    assert latest_checkpoint_dir(str(run)) == f"{run}/step-0000002"


def test_a_checkpoint_in_object_storage_is_found(s3_env):
    import io

    import torch

    from datatuner_core import storage

    run = f"{s3_env}/_checkpoints/model/lm-0123456789ab"
    fs = storage.locate(run).fs
    whole = io.BytesIO()
    torch.save({"model": {}}, whole)
    for step, state in ((2, whole.getvalue()), (4, whole.getvalue()[:40])):
        where = storage.locate(f"{run}/step-{step:07d}").path
        fs.pipe(f"{where}/{PLAIN_STATE_FILE}", b'{"progress": {}}')
        fs.pipe(f"{where}/{STATE_FILE}", state)
    assert latest_checkpoint_dir(run) == f"{run}/step-0000002"
