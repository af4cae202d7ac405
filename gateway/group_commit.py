"""The write-ahead log's group commit: bytes appended to the active segment are fdatasynced at
most `interval_s` later (the log's power-loss window; a SIGKILL loses nothing either way, the
bytes are in the page cache), and an idle log wakes nobody.

The spool calls `dirty()` after each append and `follow(path)` when its active segment changes;
sealed segments are synced by the spool itself when it closes them. The compiled version
(`gateway/_group_commit.c`) runs the cycle on a thread that never takes the GIL: the same cycle
on a Python thread took the GIL back three times per sync and, on the gateway's one core,
preempted the event loop each time (bench/gateway/RESULTS.md, "The group commit off the GIL").
Without a C compiler at install `ThreadedGroupCommit` runs it in Python: the same guarantee,
slower under load (logged once).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import Protocol

log = logging.getLogger("tokentrail.gateway.group_commit")

try:
    from gateway import _group_commit as _compiled
except ImportError:  # built by `pip install` when a C compiler is there (setup.py)
    _compiled = None  # type: ignore[assignment]


class GroupCommit(Protocol):
    def dirty(self) -> None:
        """Bytes were appended to the followed segment: sync them within the interval."""

    def follow(self, path: str | None) -> None:
        """The segment later syncs are for (None: no active segment)."""

    def stop(self) -> None:
        """Sync what is owed now and end the thread (the next `dirty()` starts one)."""

    def counts(self) -> tuple[int, int, int]:
        """(syncs, failures, errno of the last failure)."""


def group_commit(interval_s: float) -> GroupCommit:
    """The compiled group commit, or the Python one when the extension was not built."""
    if _compiled is None:
        log.warning(
            "gateway/_group_commit.c was not built (no C compiler at install): the write-ahead log "
            "is synced by a Python thread, which costs the event loop more under load"
        )
        return ThreadedGroupCommit(interval_s)
    return _compiled.GroupCommit(interval_s)


def sync_path(path: str) -> int:
    """fdatasync the file at `path`: 0, or the errno of the failure (a file deleted meanwhile
    owes nothing: 0). Opening by path, the syncing thread never holds a descriptor the spool
    may close."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        return exc.errno or errno.EIO
    try:
        os.fdatasync(handle)
        return 0
    except OSError as exc:
        return exc.errno or errno.EIO
    finally:
        os.close(handle)


class ThreadedGroupCommit:
    """`GroupCommit` on a Python thread (the fallback; same cycle as the compiled one)."""

    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._wake = threading.Condition()
        self._pending = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._path: str | None = None
        self._syncs = self._failures = self._errno = 0

    def dirty(self) -> None:
        if self._pending:
            return
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tokentrail-wal-sync", daemon=True)
                self._thread.start()
            self._pending = True
            self._wake.notify()

    def follow(self, path: str | None) -> None:
        with self._wake:
            self._path = path

    def stop(self) -> None:
        """End the thread, then sync what was appended during its last sync: under a steady
        stream of appends the thread alone would never find itself owing nothing."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
            while self._thread is not None:
                self._wake.wait()
            self._stopping = False
            owed, self._pending = self._pending, False
            path = self._path
        if owed and path is not None:
            self._record(sync_path(path))

    def counts(self) -> tuple[int, int, int]:
        with self._wake:
            return self._syncs, self._failures, self._errno

    def _record(self, failed: int) -> None:
        with self._wake:
            if failed:
                self._failures += 1
                self._errno = failed
            else:
                self._syncs += 1

    def _run(self) -> None:
        with self._wake:
            while True:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                if not self._pending:
                    break
                if not self._stopping:
                    self._wake.wait(self.interval_s)  # what is appended meanwhile shares this sync
                last = self._stopping  # one sync after a stop request, then end
                self._pending = False
                path = self._path
                if path is not None:
                    self._wake.release()
                    try:
                        self._record(sync_path(path))
                    finally:
                        self._wake.acquire()
                if last:
                    break
            self._thread = None
            self._wake.notify_all()
