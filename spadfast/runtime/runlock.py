"""A lock on a run folder while one process trains in it: two runs never write one checkpoint or one log.

The lock is a file ``RUN/.spadfast.lock`` created atomically (``O_CREAT | O_EXCL``) and holding JSON
``{"host", "pid", "pid_start", "started"}``; it is removed when the holder leaves :func:`hold_run_lock`. A lock that
a crashed run left behind is recognised on the same host (its process is gone, or the pid now belongs to a process
started at another time), reported with a warning and taken over. A lock from another host cannot be checked from
here, so it is refused, naming that host. Re-entrant within one process (the CLI holds the lock around ``fit`` and
``save``, which take it too).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".spadfast.lock"
# a lock file that exists but holds no complete record is being written by its creator for this long at most
_WRITE_GRACE_S = 10.0
_HELD: dict[Path, int] = {}  # lock files this process holds -> nesting depth


class RunBusyError(ValueError):
    """The run folder is locked by another live (or unverifiable) process."""


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the command name in (...) may hold spaces


def _alive(pid: int, pid_start: str | None) -> bool:
    """Process ``pid`` of this host exists and, where start times are known, is the one that wrote the lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = _process_start(pid)
    return pid_start is None or now is None or now == pid_start


def _record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _read(lock: Path) -> dict | None:
    """The lock's record; None when the file is empty or partial (its creator is still writing it, or crashed)."""
    try:
        record = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"host", "pid"} <= set(record) else None


def _create(lock: Path) -> bool:
    """Create ``lock`` holding this process's record; False when it already exists."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps(_record()).encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        lock.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


def _describe(record: dict) -> str:
    return f"pid {record.get('pid')} on host {record.get('host')!r}, started {record.get('started', '?')}"


def _stale_reason(lock: Path, record: dict | None, folder: Path, name: str) -> str:
    """Why the existing ``lock`` may be taken over; raises :class:`RunBusyError` when it may not."""
    if record is None:
        if time.time() - lock.stat().st_mtime < _WRITE_GRACE_S:
            raise RunBusyError(f"{name} {str(folder)!r} is in use: another spadfast process is locking it right now")
        return "an empty or damaged lock file"
    if record["host"] != socket.gethostname():
        raise RunBusyError(
            f"{name} {str(folder)!r} is in use by a spadfast run ({_describe(record)}); this host cannot check that "
            f"process: wait for it, choose another folder, or, if that run is gone, delete {str(lock)!r}"
        )
    if _alive(int(record["pid"]), record.get("pid_start")):
        raise RunBusyError(
            f"{name} {str(folder)!r} is in use by a running spadfast process ({_describe(record)}): wait for it "
            f"to finish or choose another folder"
        )
    return f"a lock left by a process that no longer runs ({_describe(record)})"


def _take_over(lock: Path, record: dict | None) -> None:
    """Move a stale ``lock`` aside, unless another process replaced it since it was read (then it stays)."""
    aside = lock.with_name(f"{LOCK_NAME}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another process took it over first; the next create decides
    if _read(aside) != record:  # a fresh lock was created in between: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
    aside.unlink(missing_ok=True)


def acquire(folder: str | os.PathLike, name: str = "run folder") -> Path:
    """Lock ``folder`` (created if missing) for this process; returns the lock file. Pair with :func:`release`.

    Raises:
        RunBusyError: another live process on this host, or any process on another host, holds the lock; the
            message names ``name``, the folder, the holder's pid and host.
    """
    folder = Path(folder).expanduser().resolve()
    lock = folder / LOCK_NAME
    if lock in _HELD:
        _HELD[lock] += 1
        return lock
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        if _create(lock):
            _HELD[lock] = 1
            return lock
        record = _read(lock)
        try:
            reason = _stale_reason(lock, record, folder, name)
        except FileNotFoundError:
            continue  # released while we looked
        warnings.warn(f"{name} {str(folder)!r}: taking over {reason}", UserWarning, stacklevel=3)
        _take_over(lock, record)
    raise RunBusyError(f"{name} {str(folder)!r} is in use: other processes keep locking it")


def release(lock: Path) -> None:
    """Undo one :func:`acquire`; the file goes with the outermost one (and only in the process that made it)."""
    depth = _HELD.get(lock, 0) - 1
    if depth > 0:
        _HELD[lock] = depth
        return
    _HELD.pop(lock, None)
    record = _read(lock)
    if record is not None and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def hold_run_lock(folder: str | os.PathLike | None, name: str = "run folder") -> Iterator[Path | None]:
    """``with hold_run_lock(RUN):`` the body runs with ``RUN`` locked; ``folder=None`` locks nothing (a rank that
    does not write the run, or a trainer without ``out_dir``). A folder created for the lock and still empty at the
    end (the body failed before writing anything) is removed again."""
    if folder is None:
        yield None
        return
    created = not Path(folder).exists()
    lock = acquire(folder, name)
    try:
        yield lock
    finally:
        release(lock)
        if created and lock not in _HELD:
            with contextlib.suppress(OSError):
                lock.parent.rmdir()  # only succeeds when empty
