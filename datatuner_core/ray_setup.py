"""Set-up run in every Ray worker process of a job `ensure_ray` starts (Ray's
`worker_process_setup_hook`, named by module path). Standard library only: every worker pays
for its imports at start-up.

Ray Train 2.60's placement-group cleaner asks the State API every second whether the training
controller is alive. Where the State API does not answer (`ray[data,train]` installs only the
minimal dashboard; on this project's machines every question failed), the cleaner logs the same
warning once a second for the whole training run, burying the progress lines. The filter below
lets the first one through and drops its repeats; every other record passes.
"""

from __future__ import annotations

import logging

CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


class Once(logging.Filter):
    """Pass each distinct message starting with `prefix` once; pass every other record."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix, self.seen = prefix, set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.prefix):
            return True
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def setup_worker() -> None:
    logging.getLogger(CLEANER_LOGGER).addFilter(Once("Failed to query Ray Train Controller"))
    pin_address()


def pin_address() -> None:
    """Point `RAY_ADDRESS` in this worker at the cluster it belongs to. Ray's own components in
    a worker (the State API client of Ray Train's placement-group cleaner, for one) otherwise
    look for "a" local cluster and fail with "Found multiple active Ray instances" when another,
    unrelated Ray instance runs on the same machine."""
    import os

    try:
        import ray
        from ray._private.worker import WORKER_MODE, global_worker

        if not ray.is_initialized() or global_worker.mode != WORKER_MODE:
            return  # a driver: its own RAY_ADDRESS (or none) is the user's choice
        address = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - not connected: nothing to pin
        return
    if address:
        os.environ["RAY_ADDRESS"] = address
