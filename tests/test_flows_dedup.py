"""Counted once, always (flows/seen.py): a call id storage holds is never written again, by
whatever route it comes back, and ids the filter has never seen are not looked up."""

from __future__ import annotations

from flows.enrich import TABLES
from flows.seen import BloomFilter, SeenIds
from flows.sink import BatchingSink, Retry, Writer
from tests.fixtures.clickhouse import call_row
from tests.fixtures.flows import FakeStore


class CountingStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def existing_ids(self, table, column, ids):
        self.asked += ids
        return super().existing_ids(table, column, ids)


def rows(*ids: str, timestamp: str = "2026-11-28 12:00:00.000") -> list[dict]:
    return [{"call_id": i, "timestamp": timestamp} for i in ids]


def sink(store: FakeStore, seen: SeenIds) -> BatchingSink:
    retry = Retry(sleep=lambda s: None)
    sink = BatchingSink(store, TABLES, retry=retry, writer=Writer(store, TABLES, retry), seen=seen)
    sink.resume(None)
    return sink


def test_bloom_filter_has_no_false_negatives_and_about_its_error_rate():
    bloom = BloomFilter(10_000, 0.01)
    added = [hash(("llm_calls", f"in-{i}")) for i in range(10_000)]
    for start in range(0, 10_000, 1_000):  # in batches, as the sink adds
        bloom.add(added[start : start + 1_000])
    assert bloom.contains(added) == [True] * 10_000
    false_positives = sum(bloom.contains([hash(("llm_calls", f"out-{i}")) for i in range(20_000)]))
    assert false_positives < 20_000 * 0.02
    assert len(bloom._array) <= 10_000 * 10 // 8 + 8  # ~9.6 bits an id
    assert bloom.contains([]) == [] and bloom.count == 10_000


def test_a_batch_answers_each_row_as_it_would_alone():
    seen = SeenIds(capacity=1_000, since="2026-11-28 00:00:00.000")
    seen.add("llm_calls", [f"c{i}" for i in range(0, 100, 2)])
    rows = [(f"c{i}", "2026-11-28 12:00:00.000") for i in range(100)] + [("c1", ""), ("c3", "2026-11-27 00:00:00.000")]
    batch = seen.suspects("llm_calls", rows)
    assert batch == [seen.suspects("llm_calls", [row])[0] for row in rows]
    assert all(batch[0:100:2]) and batch[-2:] == [True, True]  # added; no timestamp and before `since`
    assert sum(batch[1:100:2]) < 10  # never added: only false positives
    assert not any(SeenIds(capacity=1_000).suspects("alerts_other", rows[:100]))  # another filter: nothing seen


def test_a_call_written_before_is_dropped_whenever_it_comes_back_and_new_ids_are_not_looked_up():
    store = CountingStore()
    seen = SeenIds(capacity=10_000)
    first = sink(store, seen)
    first.add("llm_calls", rows(*(f"c{i}" for i in range(1000))))
    first.flush()
    assert store.asked == [] and len(store.tables["llm_calls"]) == 1000  # storage was empty: nothing asked
    first.add("llm_calls", rows("c7", "new-1", "c7"))  # a redelivery, long after any replay window
    first.flush()
    assert set(store.tables["llm_calls"]) == {f"c{i}" for i in range(1000)} | {"new-1"}
    assert "c7" in store.asked and len(store.asked) < 20  # c7 plus the odd false positive
    second = sink(store, seen)  # another sink partition of the process shares the filter
    second.add("llm_calls", rows("c500", "new-2"))
    second.flush()
    assert len(store.tables["llm_calls"]) == 1002
    assert store.inserts[-1][1] == 1


def test_rows_older_than_the_filter_are_always_looked_up():
    store = CountingStore()
    seen = SeenIds(capacity=100, since="2026-11-28 00:00:00.000")
    store.tables["llm_calls"]["old"] = {"call_id": "old"}
    s = sink(store, seen)
    s.add("llm_calls", rows("old", timestamp="2026-11-27 23:00:00.000"))
    s.flush()
    assert store.asked == ["old"] and store.inserts == []


def test_the_filter_is_loaded_from_storage_within_the_window(store):
    old = call_row(call_id="old", timestamp="2026-11-20 12:00:00.000")
    recent = [call_row(call_id=f"r{i}", timestamp="2026-11-28 12:00:00.000") for i in range(5)]
    store.insert_rows("llm_calls", [old, *recent])
    seen = SeenIds.load(store, TABLES, capacity=1000, window_hours=24)
    assert seen.since.startswith("2026-11-27 12:00:00")
    assert all(seen.suspects("llm_calls", [(f"r{i}", "2026-11-28 12:00:00.000") for i in range(5)]))
    assert seen.suspects("llm_calls", [("old", "2026-11-20 12:00:00.000")]) == [True]  # before `since`: looked up
    assert sum(seen.suspects("llm_calls", [(f"x{i}", "2026-11-28 12:00:00.000") for i in range(200)])) < 10


def test_tables_without_a_timestamp_load_and_their_rows_are_always_looked_up(store):
    """The detect flow's sink also writes `alerts` and `failure_patterns`, which have no `timestamp`."""
    store.insert_rows("llm_calls", [call_row(call_id="r0", timestamp="2026-11-28 12:00:00.000")])
    seen = SeenIds.load(store, {**TABLES, "alerts": "alert_id"}, capacity=1000, window_hours=24)
    assert seen.suspects("llm_calls", [("r0", "2026-11-28 12:00:00.000")]) == [True]
    assert seen.suspects("alerts", [("never-seen", "")]) == [True]
