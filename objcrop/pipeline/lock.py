"""One pipeline per output folder: OUT/.objcrop-pipeline.lock.

Two pipelines on one folder would start the same tasks side by side, each rewriting the other's
checkpoints and results. So `objcrop pipeline` (not a --dry-run) holds this lock for as long as it
runs. The lock file holds the holder's pid, host, start time and command line; it is written whole
under a temporary name and hard-linked to its own name, which fails when the name exists: creation
is atomic and exclusive, and no reader ever sees a half-written lock of this code.

* A lock held by a live process (or by another host, whose pids cannot be checked from here)
  refuses the second pipeline with one line naming the holder: PipelineLocked.
* A stale lock (its pid has ended on this host, or is now another process; or a file that is
  not a whole lock) is reported in one warning line and taken over.
* The lock is released (removed, if it is still ours) when the pipeline ends: normally, by an
  exception, by SIGINT, or by SIGTERM, which `held` turns into KeyboardInterrupt for that purpose.
  kill -9 leaves it behind, and the next run finds it stale.

SLURM (`--launcher slurm`): the lock is held by the process that plans and submits (on the login
node), for as long as it runs. With --wait that is until the last job ends; without it, until the
jobs are submitted: the jobs then run unlocked, and a rerun while they are queued would submit the
unfinished tasks again (wait for them, or use --wait).
"""
import contextlib
import errno
import json
import os
import signal
import socket
import tempfile
import time
import uuid
from typing import Iterator, Optional

from objcrop.io import proc_stat_fields, process_alive, temp_prefix
from objcrop.pipeline.presets import PipelineError

LOCK_NAME = ".objcrop-pipeline.lock"


class PipelineLocked(PipelineError):
    """Another pipeline (alive, or on another host) holds the output folder."""


class PipelineLock:
    """The lock of one output folder; `stale` says what was taken over (empty when nothing was)."""

    def __init__(self, out: str, command: str):
        self.path = os.path.join(os.path.abspath(out), LOCK_NAME)
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                       "pid_start": _process_start(os.getpid()), "command": command,
                       "token": uuid.uuid4().hex}
        self.stale = ""

    def acquire(self) -> "PipelineLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(5):  # each pass either creates the lock, refuses, or clears a stale one
            if _create_exclusive(self.path, _encode(self.holder)):
                return self
            seen = _read_bytes(self.path)
            if seen is None:  # released between the two calls
                continue
            why = _stale_reason(seen)
            if not why:
                raise PipelineLocked(_refusal(self.path, _decode(seen)))
            if _remove_if_unchanged(self.path, seen):
                self.stale = f"took over the stale lock {self.path}: {why}"
        raise PipelineLocked(f"{self.path}: could not take the lock (other pipelines starting at the same "
                             "moment?); rerun")

    def release(self) -> None:
        """Remove the lock file if it is still ours (never another pipeline's)."""
        seen = _read_bytes(self.path)
        if seen is not None and (_decode(seen) or {}).get("token") == self.holder["token"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)


@contextlib.contextmanager
def held(out: str, command: str) -> Iterator[PipelineLock]:
    """Hold OUT's lock for the block; released on return, exception, SIGINT and SIGTERM."""
    lock = PipelineLock(out, command).acquire()
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield lock
    finally:
        signal.signal(signal.SIGTERM, old)
        lock.release()


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # the `finally` blocks run, this lock's release among them


def _encode(holder: dict) -> bytes:
    return (json.dumps(holder, sort_keys=True) + "\n").encode("utf-8")


def _decode(data: bytes) -> Optional[dict]:
    try:
        holder = json.loads(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return None
    whole = isinstance(holder, dict) and isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str)
    return holder if whole else None


def _create_exclusive(path: str, data: bytes) -> bool:
    """Write `data` to `path` unless it exists (True), atomically: no reader sees part of it."""
    # named as objcrop.io names its temporary files, so that a kill -9 right here leaves nothing for good
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as e:  # a file system without hard links: O_EXCL, written at once
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            return _create_with_o_excl(path, data)
    finally:
        os.remove(tmp)


def _create_with_o_excl(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def _read_bytes(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _stale_reason(data: bytes) -> str:
    """Why a lock file's holder is gone ('' when it may be alive)."""
    holder = _decode(data)
    if holder is None:
        return f"the file is not a whole lock ({len(data)} bytes of {data[:40]!r})"
    if holder["host"] != socket.gethostname():
        return ""  # another machine's pid: cannot be checked from here
    pid = holder["pid"]
    if not process_alive(pid):
        return f"{_describe(holder)} has ended"
    started = holder.get("pid_start")
    if started is not None and _process_start(pid) not in (None, started):
        return f"{_describe(holder)} has ended (its pid now belongs to another process)"
    return ""


def _remove_if_unchanged(path: str, seen: bytes) -> bool:
    """Remove the stale lock `seen`, unless another pipeline replaced it meanwhile (then put theirs back)."""
    aside = os.path.join(os.path.dirname(path), temp_prefix(path) + "stale.tmp")
    try:
        os.rename(path, aside)  # one taker wins; the others find the name gone
    except FileNotFoundError:
        return False
    try:
        if _read_bytes(aside) == seen:
            return True
        with contextlib.suppress(FileExistsError):  # a live lock, moved by mistake: back in place
            os.link(aside, path)
        return False
    finally:
        os.remove(aside)


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("since", 0)))
    return f"pid {holder['pid']} on {holder['host']} (since {since}: {holder.get('command', '?')})"


def _refusal(path: str, holder: dict) -> str:
    out = os.path.dirname(path)
    return (f"{out} is in use by another pipeline: {_describe(holder)}; wait for it to end, or use another "
            f"--out (if that pipeline is gone, remove {path})")


def _process_start(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (/proc), which a reused pid does not share."""
    fields = proc_stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (IndexError, ValueError):
        return None
