"""One writer per stage folder: the lock file `_lock` that a `StageWriter` holds from its start to
its commit.

A second writer waits up to `lock_wait_s` (`DATATUNER_LOCK_WAIT_S`, default 0) and then fails with
one line naming the stage.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid
import weakref

from .storage import Location, StorageError, is_s3, protocols, short_error

LOCK = "_lock"
# On object storage the lock holder rewrites `_lock` this often (seconds) ...
LOCK_HEARTBEAT_S = 15.0
# ... and a lock whose heartbeat is older than this is taken over (its writer died elsewhere).
LOCK_STALE_S = 120.0


class StageLocked(StorageError):
    """Another writer holds the stage folder's lock (or took it over from this one)."""


def _pid_alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # someone else's process, or no pid recorded: assume alive
    return True


_HELD: dict[str, StageLock] = {}  # the locks this process holds, by lock file
_GUARD = threading.RLock()  # check-and-write of a lock is atomic within this process


class _Conflict(Exception):
    """A conditional write of `_lock` lost to another writer."""


class StageLock:
    """One writer per stage folder: the file `_lock` names its owner (host, pid, start time).

    Local disk: an `flock` on `_lock`, released by the kernel when the process dies, so a killed
    writer's lock is free at once. S3: `_lock` is created with `If-None-Match: *`, its heartbeat
    rewritten with `If-Match` every LOCK_HEARTBEAT_S, and a lock whose writer is gone (a dead
    pid on this host, or no heartbeat for LOCK_STALE_S) is taken over, again with `If-Match`,
    so two takers cannot both win. Other stores (memory://): the same protocol, atomic within
    one process only. Within one process, a lock whose writer was abandoned (its thread gone,
    or the thread now asking again: a retry after a failure) is taken over as well.
    """

    def __init__(self, loc: Location, stage: str):
        self.loc, self.file = loc, loc.child(LOCK)
        self.key = f"{protocols(loc.fs)[0]}://{self.file.path}"
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.owner = {"owner": uuid.uuid4().hex, "stage": stage, "host": socket.gethostname(),
                      "pid": os.getpid(), "started": started, "heartbeat": time.time()}  # fmt: skip
        self.thread = threading.get_ident()
        self.writer: weakref.ref | None = None  # the writer holding it, if any
        self.fd: int | None = None  # local: the flock'ed file
        self.token: str | None = None  # object stores: the ETag (or MD5) of our `_lock`
        self.lost = False
        self._stop = threading.Event()

    # -- acquire / check / release

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the lock, waiting up to `wait_s` seconds; StageLocked (naming the stage) if a
        live writer still holds it then."""
        deadline = time.monotonic() + max(0.0, wait_s)
        while not self._try_acquire():
            if time.monotonic() >= deadline:
                raise StageLocked(self._busy_message())
            time.sleep(min(0.2, max(0.01, deadline - time.monotonic())))
        if self.fd is None:
            threading.Thread(target=self._beat, daemon=True, name=f"lock {self.loc.uri}").start()

    def check(self) -> None:
        """Raise StageLocked unless this writer still holds the lock (before its commit)."""
        held = self.fd is not None or (self.token is not None and not self.lost)
        if held and self.fd is None:
            current, _ = self._read()
            held = bool(current) and current.get("owner") == self.owner["owner"]
        if not held:
            raise StageLocked(
                f"stage {self.loc.uri}: this writer lost its lock to another writer "
                f"({self.file.uri}); nothing was committed"
            )

    def release(self) -> None:
        """Give the lock up (and remove `_lock` if it is still ours)."""
        self._stop.set()
        with _GUARD:
            if _HELD.get(self.key) is self:
                del _HELD[self.key]
            if self.fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.file.path)
                os.close(self.fd)
                self.fd = None
            elif self.token is not None:
                self.token = None
                try:
                    current, _ = self._read()
                    if current and current.get("owner") == self.owner["owner"]:
                        self.loc.fs.rm(self.file.path)
                except Exception as exc:  # noqa: BLE001 - the lock goes stale on its own
                    print(f"[storage] could not remove {self.file.uri}: {short_error(exc)}",
                          file=sys.stderr)  # fmt: skip

    # -- the protocol

    def _try_acquire(self) -> bool:
        with _GUARD:
            holder = _HELD.get(self.key)
            if holder is not None and holder is not self and holder._abandoned():
                holder.lost = True
                holder.release()
            taken = self._try_local() if self.loc.is_local else self._try_object()
            if taken:
                _HELD[self.key] = self
            return taken

    def _abandoned(self) -> bool:
        if (self.writer is not None and self.writer() is None) or (
            self.thread == threading.get_ident()
        ):
            return True
        return not any(t.ident == self.thread for t in threading.enumerate())

    def _try_local(self) -> bool:
        import fcntl

        while True:
            fd = os.open(self.file.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed that file while we waited for it: try again
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.owner).encode(), 0)
        self.fd = fd
        return True

    def _try_object(self) -> bool:
        for _ in range(3):
            try:
                self.token = self._put(create=True)
                return True
            except _Conflict:
                pass
            current, token = self._read()
            if current is not None:
                break  # else it was released meanwhile: create it again
        else:
            return False
        if not self._stale(current):
            return False
        try:
            self.token = self._put(match=token)  # take over only the lock we judged stale
        except _Conflict:
            return False
        return True

    def _stale(self, held: dict) -> bool:
        if held.get("host") == self.owner["host"]:
            if held.get("pid") == os.getpid():
                return self.key not in _HELD  # ours, but no writer of this process holds it
            if not _pid_alive(held.get("pid")):
                return True
        try:
            return time.time() - float(held.get("heartbeat", 0)) > LOCK_STALE_S
        except (TypeError, ValueError):
            return True

    def _put(self, *, create: bool = False, match: str | None = None) -> str:
        """Write our `_lock`: only if there is none (`create`) or only over the version `match`;
        _Conflict if that condition does not hold. Returns the new version's token."""
        fs, path = self.loc.fs, self.file.path
        data = json.dumps(self.owner).encode()
        if is_s3(fs):
            condition = {"mode": "create"} if create else {"IfMatch": match} if match else {}
            try:
                out = fs.pipe_file(path, data, **condition)
            except FileExistsError:  # If-None-Match failed
                raise _Conflict from None
            except OSError as exc:
                if exc.errno == errno.EINVAL and "condition" in str(exc):  # If-Match failed
                    raise _Conflict from None
                raise
            fs.invalidate_cache(path)
            return str(out["ETag"])
        with _GUARD:
            if create and fs.exists(path):
                raise _Conflict
            if match is not None and self._read()[1] != match:
                raise _Conflict
            fs.pipe_file(path, data)
            return hashlib.md5(data).hexdigest()

    def _read(self) -> tuple[dict | None, str | None]:
        """The lock's content and version token (ETag on S3, else the MD5 of its bytes)."""
        fs, path = self.loc.fs, self.file.path
        try:
            fs.invalidate_cache(path)
            tag = fs.info(path).get("ETag") if is_s3(fs) else None
            data = fs.cat_file(path)
        except FileNotFoundError:
            return None, None
        try:
            content = json.loads(data)
        except ValueError:
            content = {}  # being written (local) or damaged: judged by its age
        return (content if isinstance(content, dict) else {}), tag or hashlib.md5(data).hexdigest()

    def _beat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            self.owner["heartbeat"] = time.time()
            try:
                self.token = self._put(match=self.token)
            except _Conflict:
                self.lost = True  # taken over: the commit will refuse
                return
            except Exception as exc:  # noqa: BLE001 - a missed beat; the next one retries
                print(f"[storage] heartbeat of {self.file.uri} failed: {short_error(exc)}",
                      file=sys.stderr)  # fmt: skip

    def _busy_message(self) -> str:
        current, _ = self._read()
        who = "another writer"
        if current:
            beat = current.get("heartbeat")
            age = f", last heartbeat {time.time() - float(beat):.0f} s ago" if beat else ""
            who = (f"{current.get('stage', 'a')} writer, pid {current.get('pid')} on "
                   f"{current.get('host')}, since {current.get('started')}{age}")  # fmt: skip
        return (
            f"stage {self.loc.uri} is being written by another writer ({who}); wait for it to "
            f"finish, or remove {self.file.uri} if that writer is gone"
        )


def release_later(lock: StageLock) -> None:
    """Release the lock of a writer that was dropped without commit or abort. The garbage
    collector may run this on any thread, the fsspec event loop's included, where a blocking
    store call (or waiting for `_GUARD`, held by a thread that waits on that loop) would
    deadlock: so it runs on a thread of its own (directly when the interpreter exits)."""
    if sys.is_finalizing():
        lock.release()
        return
    threading.Thread(target=lock.release, daemon=True, name=f"release {lock.loc.uri}").start()


def lock_wait_from_env() -> float:
    """How long a second writer waits for a stage's lock: `DATATUNER_LOCK_WAIT_S`, else 0 s."""
    try:
        return float(os.environ.get("DATATUNER_LOCK_WAIT_S", "0"))
    except ValueError:
        raise StorageError("DATATUNER_LOCK_WAIT_S must be a number of seconds") from None
