"""Ray set-up: `ensure_ray` connects the driver (a local instance of its own, or the cluster at
`RAY_ADDRESS`); `setup_worker` runs in every worker process of the job it starts (Ray's
`worker_process_setup_hook`, named by module path). Standard library only at the top: every
worker pays for this module's imports at start-up.

Ray Train 2.60's placement-group cleaner asks the State API every second whether the training
controller is alive. Where the State API does not answer (`ray[data,train]` installs only the
minimal dashboard; on this project's machines every question failed), the cleaner logs the same
warning once a second for the whole training run, burying the progress lines. The filter below
lets the first one through and drops its repeats; every other record passes.
"""

from __future__ import annotations

import logging
import os
import sys
import time

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


LOCAL_START_TRIES = 3  # a local Ray start that times out on a busy machine is tried again
LOCAL_START_BACKOFF_S = 5.0


class RayStartError(RuntimeError):
    """Ray could not be started or reached; the message says what was tried."""


def ensure_ray(**init_kwargs) -> None:
    """`ray.init()` unless already connected; `RAY_ADDRESS` selects a cluster. A local instance
    runs its workers at normal priority (Ray's default niceness 15 starves training on a busy
    machine; `RAY_worker_niceness` set by the user wins). Every worker process of the job runs
    `setup_worker` first (it quiets a warning Ray Train repeats once a second, and
    pins `RAY_ADDRESS` to this job's cluster so that nothing in a worker goes looking for "a"
    cluster and finds another local instance). Ray Train's print patch is off unless the user
    sets `RAY_TRAIN_ENABLE_PRINT_PATCH`: with it, a training worker's `print` goes both to its
    stdout and through the root logger to stderr, so every progress line reached the driver
    twice. A local start that fails (on a loaded machine Ray's node can time out during start-up)
    is tried `LOCAL_START_TRIES` times; then one clear error. In quiet mode (`console`), Ray's
    own output goes to the log file."""
    import ray

    from . import console

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None:
        os.environ.setdefault("RAY_worker_niceness", "0")
    runtime_env = dict(init_kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("worker_process_setup_hook", "datatuner_core.ray_setup.setup_worker")
    if not console.verbose():
        init_kwargs.setdefault("logging_level", "WARNING")
    tries = 1 if address else LOCAL_START_TRIES
    for attempt in range(1, tries + 1):
        try:
            # "local": a new instance of this job's own, never "a" cluster that happens to run
            # on this machine (a bare `ray.init()` joins one started by `ray start`)
            ray.init(address=address or "local", runtime_env=runtime_env, **init_kwargs)
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises plain exceptions on start-up
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if ray.is_initialized():
                ray.shutdown()
            if attempt == tries:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise RayStartError(
                    f"could not start or reach {where} ({tries} tries): {first}"
                ) from exc
            console.write_log(f"ray.init attempt {attempt} failed: {exc!r}")
            print(f"[datatuner] Ray start-up failed ({first}); trying again "
                  f"({attempt + 1}/{tries})", file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(LOCAL_START_BACKOFF_S * attempt)
    console.quiet_ray_driver()
