"""The write-ahead log's group commit (gateway/group_commit.py): the compiled thread off the GIL
and its Python fallback behave alike."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway import group_commit as module
from gateway.group_commit import GroupCommit, ThreadedGroupCommit, group_commit

try:
    from gateway._group_commit import GroupCommit as CompiledGroupCommit
except ImportError:  # the fallback is still tested; the test below fails to say it was not built
    CompiledGroupCommit = None

IMPLEMENTATIONS: list[Callable[[float], GroupCommit]] = [ThreadedGroupCommit]
if CompiledGroupCommit is not None:
    IMPLEMENTATIONS.append(CompiledGroupCommit)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_the_gateway_runs_the_compiled_group_commit():
    """`make install` builds gateway/_group_commit.c; without it the Python thread costs the
    event loop 1.5-2.5% more CPU per request at 64 connections (bench/gateway/RESULTS.md)."""
    assert CompiledGroupCommit is not None, "gateway/_group_commit.c was not built"
    assert type(group_commit(0.02)) is CompiledGroupCommit


def test_without_the_extension_the_python_group_commit_runs_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(module, "_compiled", None)
    assert type(group_commit(0.02)) is ThreadedGroupCommit
    assert "was not built" in caplog.text


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda implementation: implementation.__module__)
def make(request) -> Callable[[float], GroupCommit]:
    return request.param


def test_appends_within_one_interval_share_one_sync_and_an_idle_log_wakes_nobody(make, tmp_path):
    segment = tmp_path / "1.wal"
    segment.write_bytes(b"frames")
    commit = make(0.05)
    commit.follow(str(segment))
    time.sleep(0.2)
    assert commit.counts() == (0, 0, 0)  # nothing appended: no sync
    started = time.monotonic()
    for _ in range(100):
        commit.dirty()
    assert wait_for(lambda: commit.counts()[0] == 1)
    assert time.monotonic() - started >= 0.05  # waited one interval for more appends
    time.sleep(0.2)
    assert commit.counts() == (1, 0, 0)  # one sync for all of them, then idle again
    commit.dirty()
    assert wait_for(lambda: commit.counts()[0] == 2)
    commit.stop()


def test_stop_syncs_what_is_owed_at_once_and_a_later_append_starts_again(make, tmp_path):
    segment = tmp_path / "1.wal"
    segment.write_bytes(b"frames")
    commit = make(30.0)  # the interval never ends in this test: stop must not wait for it
    commit.follow(str(segment))
    commit.dirty()
    started = time.monotonic()
    commit.stop()
    assert time.monotonic() - started < 5 and commit.counts() == (1, 0, 0)
    commit.stop()  # stopping an idle one is harmless
    commit.dirty()
    commit.stop()
    assert commit.counts() == (2, 0, 0)


def test_a_segment_deleted_before_its_sync_owes_nothing_and_an_unsyncable_one_is_counted(make, tmp_path):
    commit = make(0.01)
    commit.follow(str(tmp_path / "retired.wal"))  # acknowledged and deleted meanwhile
    commit.dirty()
    commit.stop()
    assert commit.counts() == (1, 0, 0)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    commit.follow(str(not_a_directory / "1.wal"))
    commit.dirty()
    commit.stop()
    assert commit.counts() == (1, 1, errno.ENOTDIR)
    commit.follow(None)  # no active segment: an append owes no file
    commit.dirty()
    commit.stop()
    assert commit.counts() == (1, 1, errno.ENOTDIR)


@pytest.mark.timeout(60)
def test_appends_from_many_threads_while_it_stops_and_restarts_are_all_synced(make, tmp_path):
    """The last append before each check is followed by a sync: none is left owed whatever
    interleaving of dirty(), stop() and the thread's own end."""
    segment = tmp_path / "1.wal"
    segment.write_bytes(b"frames")
    commit = make(0.001)
    commit.follow(str(segment))
    done = threading.Event()

    def append() -> None:
        while not done.is_set():
            commit.dirty()
            time.sleep(0)  # hand the GIL on: a stop waits on lock handoffs, not on 5 ms switches

    # Daemons, and told to end whatever happens: a stop that never returns fails this test by its
    # timeout and must not leave three threads spinning on the GIL for the rest of the suite.
    writers = [threading.Thread(target=append, daemon=True) for _ in range(3)]
    for writer in writers:
        writer.start()
    try:
        for _ in range(50):
            commit.stop()
    finally:
        done.set()
    for writer in writers:
        writer.join()
    before = commit.counts()[0]
    commit.dirty()
    assert wait_for(lambda: commit.counts()[0] > before)
    commit.stop()
    assert commit.counts()[1] == 0


def test_a_stop_returns_while_appends_keep_coming_during_every_sync(monkeypatch, tmp_path):
    """An append arrives during every sync (a slow disk under load): the thread is never owed
    nothing, and a stop that waited for that would never return (it hung CI, stop 23). A stop ends
    the thread after one more sync and syncs the rest itself. Only the Python implementation lets
    the sync be replaced; the compiled one runs the same cycle."""
    appending = threading.Event()
    appending.set()

    def sync_while_appending(path: str) -> int:
        if appending.is_set():
            commit.dirty()
        return 0

    monkeypatch.setattr(module, "sync_path", sync_while_appending)
    commit = ThreadedGroupCommit(0.001)
    commit.follow(str(tmp_path / "1.wal"))
    commit.dirty()
    stopper = threading.Thread(target=commit.stop, daemon=True)
    try:
        stopper.start()
        stopper.join(1)  # one more sync, and the one owed after it in stop() itself
        assert not stopper.is_alive(), "stop() did not return while appends kept coming"
    finally:
        appending.clear()
        stopper.join()
    commit.stop()  # ends the cycle the last append started
    assert commit.counts()[1] == 0


def test_an_interval_that_is_not_positive_is_refused(make):
    with pytest.raises(ValueError, match="positive"):
        make(0.0)


class Recorder:
    """Records what the spool tells its group commit."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def dirty(self) -> None:
        self.calls.append(("dirty", None))

    def follow(self, path: str | None) -> None:
        self.calls.append(("follow", path))

    def stop(self) -> None:
        self.calls.append(("stop", None))

    def counts(self) -> tuple[int, int, int]:
        return 0, 0, 0


def test_the_spool_follows_its_active_segment_and_marks_every_append(tmp_path: Path):
    from gateway.spool import Spool

    spool = Spool(tmp_path, segment_bytes=100)
    recorder = spool.group_commit = Recorder()
    first = spool.append(b"k", b"v" * 150)  # fills the first segment: sealed at once
    second = spool.append(b"k", b"v")
    spool.close()
    assert first is not None and second is not None and first.path != second.path
    assert recorder.calls == [
        ("follow", str(first.path)),
        ("dirty", None),
        ("follow", None),  # sealed: synced by close_sealed(), not by the group commit
        ("follow", str(second.path)),
        ("dirty", None),
        ("follow", None),
        ("stop", None),
    ]
