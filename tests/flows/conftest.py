"""Flow fixtures: a Prefect test server for the session, and one small trained run."""

from __future__ import annotations

import pytest

from ..conftest import SAMPLE

# A run small enough for CI: capped splits, a few training steps, short beams.
TINY = [
    f"dataset.paths.train={SAMPLE}/webnlg/train",
    f"dataset.paths.validation={SAMPLE}/webnlg/dev",
    f"dataset.paths.test={SAMPLE}/webnlg/test",
    "dataset.max_records.train=300",
    "dataset.max_records.validation=40",
    "dataset.max_records.test=30",
    "corrupt.per_example=3",
    "lm.max_steps=12",
    "lm.batch_size=16",
    "lm.warmup_steps=2",
    "classifier.max_steps=12",
    "classifier.batch_size=16",
    "classifier.warmup_steps=2",
    "generate.beams=3",
    "generate.max_new_tokens=16",
    "generate.batch_size=16",
    "generate.dev_records=5",  # 5 validation records verbalized beside test, for the report
    "lm.eval_every=6",  # the LM validation curve: steps 6 and 12
    "classifier.hard_negatives=4",  # the LM's beams on 4 train records join the classifier's pairs
]


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def trained_run(prefect_server, tmp_path_factory):
    """The `pipeline` flow run once on the sample: (storage root, summary)."""
    from flows.pipeline import pipeline

    root = tmp_path_factory.mktemp("root")
    summary = pipeline(None, [f"storage={root}", *TINY], "run1")
    return root, summary
