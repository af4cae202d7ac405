"""Processes: tie the life of the children the tools start (broker, mock provider, gateway,
flows) to ours and stop them gracefully; give memory freed by a long-running process back to
the system."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(None)
_prctl = _libc.prctl  # resolved before any fork: the child only makes the call
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for Popen: ask Linux to SIGTERM the child when its parent dies, so no
    broker or server outlives a killed test run."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(process: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM (let it flush), SIGKILL past `timeout`; safe to call twice. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim(pad)` (1 if it gave memory back), or None on another C library."""
    return getattr(_libc, "malloc_trim", None)


class MemoryReleaser:
    """Calls `release` every `interval` seconds on a daemon thread.

    Why: the flows process frees most of what it allocates within a batch (records, rows,
    INSERT bodies) on several threads (the Bytewax worker, the writer, librdkafka). glibc keeps
    such memory in per-thread arenas, so the process's RSS settles far above what it uses
    (measured on the flow benchmark: anonymous memory 630-780 MB without, 335-420 MB with
    `malloc_trim(0)` every 2 s). A trim there takes 7 ms (median; 34 ms at most), well under
    1% of a core every 2 s; the pages it returns are faulted back in by later batches, which
    may cost the flow a few percent of throughput (within the benchmark's noise).
    """

    def __init__(self, interval: float, release: Callable[[], object]) -> None:
        self._interval = interval
        self._release = release
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-releaser", daemon=True)

    def start(self) -> MemoryReleaser:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self._release()


def release_freed_memory(interval: float) -> MemoryReleaser | None:
    """Start giving freed heap memory back to the system every `interval` seconds (0: off).
    Does nothing, with a log line, where the C library has no `malloc_trim`."""
    if interval <= 0:
        return None
    trim = glibc_malloc_trim()
    if trim is None:
        log.info("no malloc_trim in this C library; freed memory stays with the allocator")
        return None
    return MemoryReleaser(interval, lambda: trim(0)).start()
