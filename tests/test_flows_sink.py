"""BatchingSink: batches by size and age, dedups against storage, retries and never drops."""

import pytest

from flows.sink import BatchingSink, dedup_token
from tests.fixtures.flows import FakeStore


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def calls(*ids):
    return [{"call_id": i} for i in ids]


def make_sink(store, clock, **kwargs):
    return BatchingSink(store, clock=clock, sleep=clock.sleep, **kwargs)


def test_flushes_on_size():
    store, clock = FakeStore(), Clock()
    sink = make_sink(store, clock, max_rows=3, max_age=60)
    sink.add("llm_calls", calls("a", "b"))
    assert not sink.maybe_flush()
    sink.add("llm_calls", calls("c"))
    assert sink.maybe_flush()
    assert sink.pending == 0
    sink.flush()  # waits for the writer thread
    assert store.inserts == [("llm_calls", 3, dedup_token("llm_calls", ["a", "b", "c"]))]
    assert sink.pending == 0


def test_flushes_on_age_of_the_oldest_row():
    store, clock = FakeStore(), Clock()
    sink = make_sink(store, clock, max_rows=1000, max_age=0.5)
    assert not sink.due()
    sink.add("events", [{"event_id": "e1"}])
    clock.now = 0.4
    assert not sink.maybe_flush()
    clock.now = 0.5
    assert sink.maybe_flush()
    sink.flush()
    assert list(store.tables["events"]) == ["e1"]


def test_rows_already_stored_are_dropped_so_a_replay_writes_nothing_twice():
    store, clock = FakeStore(), Clock()
    sink = make_sink(store, clock)
    sink.add("llm_calls", calls("a", "b"))
    sink.flush()
    sink.add("llm_calls", calls("b", "c", "c"))
    sink.flush()
    assert sorted(store.tables["llm_calls"]) == ["a", "b", "c"]
    assert [n for _, n, _ in store.inserts] == [2, 1]
    sink.add("llm_calls", calls("a", "c"))
    sink.flush()
    assert len(store.inserts) == 2  # nothing new: no INSERT at all


def test_a_failing_store_is_retried_with_backoff_and_nothing_is_dropped():
    store, clock = FakeStore(failures=4), Clock()
    failures = []
    sink = make_sink(store, clock, retry_initial=0.1, retry_max=0.3,
                     on_failure=lambda table, exc: failures.append(table))
    sink.add("llm_calls", calls("a", "b"))
    sink.add("events", [{"event_id": "a"}])
    sink.flush()
    assert sorted(store.tables["llm_calls"]) == ["a", "b"] and list(store.tables["events"]) == ["a"]
    assert clock.sleeps == [0.1, 0.2, 0.3, 0.3]
    assert len(failures) == 4


def test_a_table_written_before_a_failure_is_not_written_again():
    class FailsOnEvents(FakeStore):
        def insert_rows(self, table, rows, dedup_token=None):
            if table == "events" and self.failures:
                self.failures -= 1
                raise RuntimeError("events insert failed")
            super().insert_rows(table, rows, dedup_token)

    store, clock = FailsOnEvents(failures=2), Clock()
    sink = make_sink(store, clock)
    sink.add("llm_calls", calls("a"))
    sink.add("events", [{"event_id": "a"}])
    sink.flush()
    assert [table for table, _, _ in store.inserts] == ["llm_calls", "events"]


def test_flush_reports_rows_written_and_latency():
    store, clock = FakeStore(), Clock()
    reports = []
    sink = make_sink(store, clock, on_flush=lambda table, rows, seconds: reports.append((table, rows)))
    sink.add("llm_calls", calls("a", "b"))
    sink.flush()
    assert reports == [("llm_calls", 2)]


def test_dedup_token_depends_on_table_and_ids():
    assert dedup_token("llm_calls", ["a", "b"]) == dedup_token("llm_calls", ["a", "b"])
    assert dedup_token("llm_calls", ["a", "b"]) != dedup_token("events", ["a", "b"])
    assert dedup_token("llm_calls", ["ab"]) != dedup_token("llm_calls", ["a", "b"])


def test_unknown_table_is_a_programming_error():
    with pytest.raises(KeyError):
        make_sink(FakeStore(), Clock()).add("nope", [{"x": 1}])


class Crash(BaseException):
    """The process dying mid-INSERT (not an error the sink may catch and retry)."""


def test_a_batch_cut_short_by_a_crash_is_resent_exactly_from_the_journal(tmp_path):
    class CrashingStore(FakeStore):
        def insert_rows(self, table, rows, dedup_token=None):
            super().insert_rows(table, rows[:1], dedup_token)  # part of it landed, then the crash
            raise Crash

    crashing, clock = CrashingStore(), Clock()
    sink = make_sink(crashing, clock, journal=tmp_path)
    sink.add("llm_calls", calls("a", "b", "c"))
    with pytest.raises(Crash):
        sink.flush()
    token = crashing.inserts[0][2]

    store = FakeStore()
    store.tables = crashing.tables
    restarted = make_sink(store, clock, journal=tmp_path)
    assert restarted.recover() == 1
    # the same rows with the same token, without skipping the ids storage already holds
    assert store.inserts == [("llm_calls", 3, token)]
    assert sorted(store.tables["llm_calls"]) == ["a", "b", "c"]
    assert restarted.recover() == 0 and not list(tmp_path.iterdir())
