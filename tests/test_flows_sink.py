"""BatchingSink: batches by size and age, dedups against storage, retries and never drops."""

import threading

import pytest

from flows.enrich import TABLES
from flows.replay import KEEP_GENERATIONS
from flows.sink import BatchingSink, Retry, Writer, dedup_token
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


def make_sink(store, clock, *, retry_initial=0.1, retry_max=5.0, on_failure=None, on_flush=None, **kwargs):
    retry = Retry(sleep=clock.sleep, initial=retry_initial, maximum=retry_max, on_failure=on_failure)
    writer = Writer(store, TABLES, retry, clock=clock, on_flush=on_flush)
    return BatchingSink(store, TABLES, clock=clock, retry=retry, writer=writer, **kwargs)


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


def test_without_a_committed_snapshot_rows_storage_holds_are_dropped():
    """No snapshot state (recovery off or wiped) and storage holds rows: every batch is looked up."""
    store, clock = FakeStore(), Clock()
    store.tables["llm_calls"]["a"] = {"call_id": "a"}
    sink = make_sink(store, clock)
    sink.resume(None)
    sink.add("llm_calls", calls("a", "b"))
    sink.flush()
    sink.add("llm_calls", calls("b", "c", "c"))
    sink.flush()
    assert sorted(store.tables["llm_calls"]) == ["a", "b", "c"]
    assert [n for _, n, _ in store.inserts] == [1, 1]
    sink.add("llm_calls", calls("a", "c"))
    sink.flush()
    assert len(store.inserts) == 2  # nothing new: no INSERT at all
    assert sink.snapshot()["check_all"]  # and it stays so with this recovery state


class AskingStore(FakeStore):
    """Records which ids the sink asks storage about."""

    def __init__(self, tables=None):
        super().__init__()
        self.asked: list[str] = []
        if tables is not None:
            self.tables = tables

    def existing_ids(self, table, column, ids):
        self.asked += ids
        return super().existing_ids(table, column, ids)


def inserted(store):
    return sum(n for _, n, _ in store.inserts)


def test_a_first_start_on_empty_storage_asks_storage_nothing(tmp_path):
    store, clock = AskingStore(), Clock()
    sink = make_sink(store, clock, journal=tmp_path)
    sink.resume(None)
    sink.add("llm_calls", calls("a", "b", "b"))
    sink.flush()
    assert store.asked == [] and inserted(store) == 2  # a repeat inside a batch still goes


def test_a_replay_looks_up_only_rows_written_after_the_committed_snapshot(tmp_path):
    first, clock = AskingStore(), Clock()
    sink = make_sink(first, clock, journal=tmp_path)
    sink.resume(None)
    sink.add("llm_calls", calls("a", "b"))
    committed = sink.snapshot()  # Bytewax keeps this with the epoch's offsets
    sink.add("llm_calls", calls("c", "d"))
    sink.add("events", [{"event_id": "c"}])
    sink.flush()  # written, then kill -9 before the next snapshot

    # restart: Kafka replays from the committed offsets (c, d, then new input e)
    store = AskingStore(first.tables)
    restarted = make_sink(store, clock, journal=tmp_path)
    restarted.resume(committed)
    restarted.add("llm_calls", calls("c", "d", "e"))
    restarted.add("events", [{"event_id": "c"}, {"event_id": "e"}])
    restarted.flush()
    assert sorted(store.asked) == ["c", "c", "d"]  # never a, b (committed) or e (new)
    assert inserted(store) == 2  # e and its event
    restarted.add("llm_calls", calls("f"))
    restarted.flush()
    assert sorted(store.asked) == ["c", "c", "d"]  # the replay has passed: no more lookups


def test_suspects_outlive_a_second_crash_before_the_replay_reaches_them(tmp_path):
    first, clock = AskingStore(), Clock()
    sink = make_sink(first, clock, journal=tmp_path)
    sink.resume(None)
    committed = sink.snapshot()
    sink.add("llm_calls", calls("a", "b", "c"))
    sink.flush()  # crash

    second = AskingStore(first.tables)
    sink = make_sink(second, clock, journal=tmp_path)
    sink.resume(committed)
    sink.add("llm_calls", calls("a"))  # the replay is slow: only a before the next snapshot
    committed = sink.snapshot()
    sink.add("llm_calls", calls("b"))
    sink.flush()  # crash again

    third = AskingStore(first.tables)
    sink = make_sink(third, clock, journal=tmp_path)
    sink.resume(committed)
    sink.add("llm_calls", calls("b", "c", "d"))
    sink.flush()  # and this run dies too, before any snapshot
    assert sorted(third.asked) == ["b", "c"] and third.inserts[-1][1] == 1  # d only

    fourth = AskingStore(first.tables)
    sink = make_sink(fourth, clock, journal=tmp_path)
    sink.resume(committed)
    sink.add("llm_calls", calls("b", "c", "d"))
    sink.flush()
    assert sorted(fourth.asked) == ["b", "c", "d"] and fourth.inserts == []
    assert sorted(first.tables["llm_calls"]) == ["a", "b", "c", "d"]


def test_a_failing_store_is_retried_with_backoff_and_nothing_is_dropped():
    store, clock = FakeStore(failures=4), Clock()
    failures = []
    sink = make_sink(
        store, clock, retry_initial=0.1, retry_max=0.3, on_failure=lambda table, exc: failures.append(table)
    )
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
    with pytest.raises(ValueError, match="rows for table 'nope', which this sink does not write"):
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
    assert restarted.resume(None) == 1
    # the same rows with the same token, without skipping the ids storage already holds
    assert store.inserts == [("llm_calls", 3, token)]
    assert sorted(store.tables["llm_calls"]) == ["a", "b", "c"]
    assert restarted.resume(None) == 0 and not list(tmp_path.glob("*.insert"))


def test_a_crash_before_the_first_snapshot_looks_up_only_what_that_run_wrote(tmp_path):
    first, clock = AskingStore(), Clock()
    sink = make_sink(first, clock, journal=tmp_path)
    sink.resume(None)  # empty storage: the journal's files will hold every id written
    sink.add("llm_calls", calls("a", "b"))
    sink.flush()  # crash: no snapshot was ever committed

    store = AskingStore(first.tables)
    sink = make_sink(store, clock, journal=tmp_path)
    sink.resume(None)
    sink.add("llm_calls", calls("a", "b", "c"))
    sink.flush()
    sink.add("llm_calls", calls("d"))
    sink.flush()
    assert sorted(store.asked) == ["a", "b"] and inserted(store) == 2


def test_once_files_are_pruned_a_start_without_snapshot_looks_up_everything(tmp_path):
    first, clock = AskingStore(), Clock()
    sink = make_sink(first, clock, journal=tmp_path)
    sink.resume(None)
    sink.add("llm_calls", calls("a"))
    for _ in range(KEEP_GENERATIONS + 2):  # recovery off: snapshots are never resumed from
        sink.snapshot()

    store = AskingStore(first.tables)
    sink = make_sink(store, clock, journal=tmp_path)
    sink.resume(None)
    sink.add("llm_calls", calls("a", "b"))
    sink.flush()
    assert store.asked == ["a", "b"] and inserted(store) == 1


def test_batches_waiting_for_a_running_insert_go_out_together_journaled_in_each_partition(tmp_path):
    entered, release = threading.Event(), threading.Event()
    journals_at_insert = []

    class SlowStore(FakeStore):
        def insert_rows(self, table, rows, dedup_token=None):
            journals_at_insert.append(sorted(p.parent.name for p in tmp_path.glob("*/llm_calls.insert")))
            entered.set()
            assert release.wait(5)
            super().insert_rows(table, rows, dedup_token)

    store, clock = SlowStore(), Clock()
    writer = Writer(store, TABLES, Retry(sleep=clock.sleep), clock=clock)
    one, two, three = (
        BatchingSink(store, TABLES, 1, 60, writer=writer, clock=clock, journal=tmp_path / name)
        for name in ("one", "two", "three")
    )
    one.add("llm_calls", calls("a"))
    assert one.maybe_flush()
    assert entered.wait(5)  # the writer is inside the first INSERT
    two.add("llm_calls", calls("b"))
    three.add("llm_calls", calls("c"))
    assert two.maybe_flush() and three.maybe_flush()
    release.set()
    for sink in (one, two, three):
        sink.flush()
    assert store.inserts == [
        ("llm_calls", 1, dedup_token("llm_calls", ["a"])),
        ("llm_calls", 2, dedup_token("llm_calls", ["b", "c"])),
    ]
    assert journals_at_insert == [["one"], ["three", "two"]]
    assert not list(tmp_path.glob("*/*.insert"))
