"""Process helpers: the memory releaser runs on schedule, stops, and can be turned off."""

import threading
import time

from tokentrail.processes import MemoryReleaser, glibc_malloc_trim, release_freed_memory


def test_releaser_calls_release_on_schedule_until_stopped():
    calls = []
    third = threading.Event()

    def release():
        calls.append(1)
        if len(calls) == 3:
            third.set()

    releaser = MemoryReleaser(0.01, release).start()
    assert third.wait(5)
    releaser.stop()
    after_stop = len(calls)
    time.sleep(0.05)
    assert len(calls) == after_stop and not releaser.running


def test_zero_interval_starts_nothing():
    assert release_freed_memory(0) is None


def test_glibc_trim_is_found_and_runs_here():
    trim = glibc_malloc_trim()
    assert trim is not None  # these machines run Debian's glibc
    assert trim(0) in (0, 1)
    releaser = release_freed_memory(0.01)
    assert releaser is not None and releaser.running
    releaser.stop()
    assert not releaser.running
