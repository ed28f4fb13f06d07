"""A quiet, useful console: progress and stage counts on stderr, everything else in a log file.

By default (the CLI without `--verbose`) a command shows only
- the Prefect flow's stage lines (counts per stage: read / written / quarantined),
- the pipeline's own progress lines (training steps, records generated, with rate and ETA),
- warnings and errors,
while Ray's own output — its start-up chatter, Ray Data's progress bars and the logs of every Ray
worker and actor — goes to the log file named by `DATATUNER_LOG_FILE` (its path is printed at the
start and in the last error line). `--verbose` (or `DATATUNER_VERBOSE=1`) shows everything.

The settings travel as environment variables, so that Ray workers started by the driver inherit
them (`datatuner_core.ray_setup`). Standard library only.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

VERBOSE_ENV = "DATATUNER_VERBOSE"
LOG_ENV = "DATATUNER_LOG_FILE"
# Worker lines that start with one of these reach the console in quiet mode (the rest: the log).
PROGRESS_PREFIXES = ("[lm]", "[classifier]", "[generate]", "[datatuner]")
# Driver loggers of Ray whose INFO chatter goes to the log file in quiet mode.
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.air")

_lock = threading.Lock()


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def log_file() -> str | None:
    return os.environ.get(LOG_ENV) or None


def configure(log_path: str | None, *, be_verbose: bool) -> None:
    """Set up the console for one CLI command (environment first: Ray reads it at import)."""
    if be_verbose:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' "Writing model shards" bars
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # load reports, init notes
    if log_path:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        os.environ[LOG_ENV] = log_path
        # Not on the root logger: Prefect sets up its console logging only where none exists.


def write_log(text: str) -> None:
    """Append raw lines to the log file (when there is one)."""
    path = log_file()
    if not path:
        return
    with _lock, open(path, "a", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")


def _file_handler() -> logging.Handler | None:
    """One handler on the log file, shared by the loggers sent there (None without a file)."""
    global _handler
    path = log_file()
    if not path:
        return None
    if _handler is None or _handler.baseFilename != os.path.abspath(path):
        _handler = logging.FileHandler(path, encoding="utf-8")
        _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return _handler


_handler: logging.FileHandler | None = None


def quiet_ray_driver() -> None:
    """After `ray.init` in the driver: Ray's loggers write to the log file, not the console
    (warnings still show), and worker output goes to the log file except progress lines."""
    if verbose():
        return
    import ray.data  # noqa: F401 - Ray Data sets up its loggers on import: adjust them after

    handler = _file_handler()
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                # Ray Data's warnings are about its own knobs (progress bars, filters): the log
                h.setLevel(logging.ERROR if name == "ray.data" else logging.WARNING)
        if handler is not None and handler not in logger.handlers:
            logger.addHandler(handler)
    _ray_warnings_to_log()
    try:  # Ray's log monitor hands worker lines to this dispatcher (ray._private.worker)
        from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("ray_print_logs", _worker_lines)
    except Exception as exc:  # noqa: BLE001 - a Ray without this hook prints as before
        write_log(f"console: cannot filter Ray worker output ({exc!r})")


def _ray_warnings_to_log() -> None:
    """Python warnings raised inside Ray's own code (its tuning hints) go to the log file."""
    import warnings

    shown = warnings.showwarning
    if getattr(shown, "_datatuner", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if f"{os.sep}ray{os.sep}" in str(filename) and log_file():
            write_log(f"{filename}:{lineno}: {category.__name__}: {message}")
        else:
            shown(message, category, filename, lineno, file, line)

    showwarning._datatuner = True
    warnings.showwarning = showwarning


def _worker_lines(data: dict) -> None:
    """One batch of a Ray worker's stdout/stderr: all to the log, progress to the console."""
    who = data.get("actor_name") or data.get("task_name") or "worker"
    pid = data.get("pid")
    lines = [str(line) for line in data.get("lines") or []]
    write_log("".join(f"({who} pid={pid}) {line}\n" for line in lines))
    shown = [line for line in lines if line.lstrip().startswith(PROGRESS_PREFIXES)]
    if shown:
        with _lock:
            sys.stderr.write("".join(line.rstrip("\n") + "\n" for line in shown))
            sys.stderr.flush()


class Progress:
    """`label done / total unit (rate/s, ETA m:ss)` on stderr, at most every `every` seconds."""

    def __init__(self, label: str, total: int | None, unit: str = "records", every: float = 10.0,
                 start: int = 0):  # fmt: skip
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.start = start  # done before this run (kept from an earlier one): not in the rate
        self.started = time.monotonic()
        self.last = 0.0

    def line(self, done: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (done - self.start) / elapsed
        total = f" / {self.total:,}" if self.total else ""
        eta = ""
        if self.total and rate > 0 and done < self.total:
            left = int((self.total - done) / rate)
            eta = f", ETA {left // 60}:{left % 60:02d}"
        return f"{self.label} {done:,}{total} {self.unit} ({rate:.1f}/s{eta})"

    def __call__(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= self.every:
            self.last = now
            print(self.line(done), file=sys.stderr, flush=True)
