"""The enrich dataflow: raw records -> verified -> identity joined -> priced -> events + rows.

    python -m bytewax.run "flows.enrich:get_flow()"      (settings from TOKENTRAIL_*)
    tokentrail flows                                      (the same, plus migrations, the
                                                           query server and /metrics)

Per-item engine overhead is avoided by moving *groups* of records through the engine: the
verify step turns each Kafka poll batch into one group of calls per join bucket (a stable
hash of the key id), so keyed exchange, stateful join, pricing and the sinks handle a few
dozen items per poll instead of thousands. The join state of a bucket is the identity table
of the key ids hashing to it.

Effectively-once (invariant 5): sources snapshot their Kafka offsets, and both sinks flush
in `snapshot()`, which Bytewax calls before committing an epoch; so a committed offset never
runs ahead of rows and events that are not durable. After a crash the flow resumes from the
last epoch, replays at most one epoch, and the ClickHouse sink drops rows storage already
holds (events on Kafka are at-least-once; consumers dedupe on event_id).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSource, _list_parts
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, Source, StatelessSourcePartition
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import FixedPartitionedSink, Sink, StatefulSinkPartition
from confluent_kafka.admin import AdminClient

from flows import metrics
from flows.events import call_outputs, event_row
from flows.identity import IdentityEntry, IdentityTable, attribute, decode_identity
from flows.pricing import Pricer
from flows.records import RecordReader, Rejected, dead_letter
from flows.settings import FlowSettings
from flows.sink import BatchingSink, Retry, RowStore, Writer
from tokentrail import topics
from tokentrail.control.records import RecordError
from tokentrail.kafka_log import kafka_logger
from tokentrail.settings import CoreSettings, load

log = logging.getLogger(__name__)

JOIN_BUCKETS = 64
"""Join state partitions. Fixed: recovery state is keyed by bucket, so changing it needs a
fresh recovery directory."""
SINK_PARTITIONS = 4
"""Partitions of each sink, spread over workers (`-w`/`-p`). Fixed for the same reason."""

Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
"""A Kafka record to produce: (topic, key, value, headers)."""


class CallBatch(NamedTuple):
    calls: list[dict[str, Any]]


class IdentityBatch(NamedTuple):
    updates: list[tuple[str, IdentityEntry | None]]


class Outputs(NamedTuple):
    """What reaches the sinks: Kafka records (events, dead letters) and ClickHouse rows."""

    messages: list[Message]
    llm_calls: list[dict[str, Any]]
    events: list[dict[str, Any]]


class TopicNames(NamedTuple):
    raw: str
    identities: str
    events: str
    dlq: str

    @classmethod
    def of(cls, core: CoreSettings) -> TopicNames:
        return cls(
            core.topic(topics.CALLS_RAW),
            core.topic(topics.IDENTITIES),
            core.topic(topics.EVENTS),
            core.topic(topics.DLQ),
        )


def bucket_of(key_id: str) -> str:
    """Stable across processes (unlike `hash`), so every worker keys a key id the same way."""
    return str(zlib.crc32(key_id.encode()) % JOIN_BUCKETS)


# ---- steps: plain functions over groups, the engine only moves them -----------------------


def _dead_letter_message(rejected: Rejected, message: Any, dlq_topic: str) -> Message:
    metrics.REJECTED.labels(metrics.reason_label(rejected.reason)).inc()
    headers = [*(message.headers or []), ("tokentrail-reason", rejected.reason[:512].encode())]
    return dlq_topic, rejected.key, dead_letter(rejected, message.topic, message.partition, message.offset), headers


def verify_records(reader: RecordReader, names: TopicNames) -> Callable[[list[Any]], list[tuple[str, Any]]]:
    """Kafka messages -> one CallBatch per join bucket, and Outputs for gateway events and
    dead letters (bucketed by the record's key so they spread over sink partitions)."""

    def verify(messages: list[Any]) -> list[tuple[str, Any]]:
        metrics.RECORDS_IN.labels("raw").inc(len(messages))
        groups: dict[str, list[dict[str, Any]]] = {}
        passthrough = Outputs([], [], [])
        read = reader.read
        for message in messages:
            record = read(message.value, message.key)
            if type(record) is dict:
                if record["kind"] == "call":
                    bucket = bucket_of(record["key_id"])
                    group = groups.get(bucket)
                    if group is None:
                        group = groups[bucket] = []
                    group.append(record)
                else:
                    event = record["event"]
                    passthrough.messages.append((names.events, event["tenant_id"].encode(), orjson.dumps(event), []))
                    passthrough.events.append(event_row(event))
            else:
                passthrough.messages.append(_dead_letter_message(record, message, names.dlq))
        items: list[tuple[str, Any]] = [(bucket, CallBatch(calls)) for bucket, calls in groups.items()]
        if passthrough.messages:
            items.append(("0", passthrough))  # rare records: one partition is plenty
        return items

    return verify


def decode_identities(names: TopicNames) -> Callable[[list[Any]], list[tuple[str, Any]]]:
    """Identities-topic messages -> one IdentityBatch per join bucket (bad ones: dead letters)."""

    def decode(messages: list[Any]) -> list[tuple[str, Any]]:
        metrics.RECORDS_IN.labels("identities").inc(len(messages))
        groups: dict[str, list[tuple[str, IdentityEntry | None]]] = {}
        rejected = Outputs([], [], [])
        for message in messages:
            try:
                key_id, entry = decode_identity(message.key, message.value)
            except RecordError as exc:
                bad = Rejected(str(exc), message.value, message.key)
                rejected.messages.append(_dead_letter_message(bad, message, names.dlq))
                continue
            groups.setdefault(bucket_of(key_id), []).append((key_id, entry))
        items: list[tuple[str, Any]] = [(bucket, IdentityBatch(updates)) for bucket, updates in groups.items()]
        if rejected.messages:
            items.append(("0", rejected))
        return items

    return decode


class JoinIdentity(StatefulBatchLogic):
    """State of one join bucket: the identity table of its key ids. Emits (call, Attribution)
    lists; identity updates change state and emit nothing."""

    def __init__(self, resume: dict[str, IdentityEntry] | None) -> None:
        self.table = IdentityTable(resume)
        self._snapshot = dict(self.table.entries)
        self._changed = False
        metrics.IDENTITIES.inc(len(self.table))

    def on_batch(self, values: list[CallBatch | IdentityBatch]) -> tuple[list[list[tuple]], bool]:
        joined: list[tuple] = []
        for value in values:
            if type(value) is IdentityBatch:
                before = len(self.table)
                for key_id, entry in value.updates:
                    self.table.apply(key_id, entry)
                metrics.IDENTITIES.inc(len(self.table) - before)
                self._changed = True
            else:
                get = self.table.get
                joined.extend((call, attribute(call, get(call["key_id"]))) for call in value.calls)
        return ([joined] if joined else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, IdentityEntry]:
        """A copy only when identities changed since the last one; calls never change state."""
        if self._changed:
            self._snapshot = dict(self.table.entries)
            self._changed = False
        return self._snapshot


def price_calls(pricer: Pricer) -> Callable[[list[tuple]], list[tuple]]:
    def price(joined: list[tuple]) -> list[tuple]:
        priced = []
        for call, who in joined:
            at = datetime.fromisoformat(call["received_at"])
            cost = pricer.price(
                call["provider"],
                call["api_flavor"],
                call.get("served_model") or call.get("requested_model"),
                call.get("usage"),
                at,
                failed=call["status"] >= 400,
            )
            priced.append((call, who, cost))
        return priced

    return price


def build_events(names: TopicNames) -> Callable[[list[tuple]], Outputs]:
    def build(priced: list[tuple]) -> Outputs:
        out = Outputs([], [], [])
        for call, who, cost in priced:
            event, row, erow = call_outputs(call, who, cost)
            out.messages.append((names.events, who.tenant_id.encode(), orjson.dumps(event), []))
            out.llm_calls.append(row)
            out.events.append(erow)
        return out

    return build


# ---- sinks ------------------------------------------------------------------------------


def _part_names() -> list[str]:
    return [f"part-{index:02d}" for index in range(SINK_PARTITIONS)]


class _NumberedParts:
    """Items are keyed by a number (join bucket or tick); a key's partition is that number,
    wrapped by the engine over the sorted partition list."""

    def list_parts(self) -> list[str]:
        return _part_names()

    def part_fn(self, item_key: str) -> int:
        return int(item_key)


class _ClickHousePartition(StatefulSinkPartition):
    def __init__(self, sink: BatchingSink) -> None:
        self.sink = sink

    def write_batch(self, values: list[Outputs | None]) -> None:
        for value in values:
            if value is not None:  # None: a tick, so the age flush happens when input is idle
                self.sink.add("llm_calls", value.llm_calls)
                self.sink.add("events", value.events)
        self.sink.maybe_flush()

    def snapshot(self) -> dict[str, Any]:
        return self.sink.snapshot()  # flushes before the epoch (and its Kafka offsets) is committed

    def close(self) -> None:
        self.sink.flush()


class ClickHouseSink(_NumberedParts, FixedPartitionedSink):
    """Rows to ClickHouse through a BatchingSink per partition, journaled under
    `journal/<partition>` (None: no journal, for tests that never crash), all written by one
    Writer thread per process."""

    def __init__(self, store: Callable[[], RowStore], settings: FlowSettings, journal: Path | None = None) -> None:
        self._store = store
        self._settings = settings
        self._journal = journal
        self._writer: Writer | None = None
        self._lock = threading.Lock()

    def build_part(self, step_id: str, for_part: str, resume_state: dict[str, Any] | None) -> _ClickHousePartition:
        store = self._store()
        retry = Retry(on_failure=metrics.record_flush_failure)
        with self._lock:
            if self._writer is None:
                self._writer = Writer(store, retry, on_flush=metrics.record_flush)
        sink = BatchingSink(
            store,
            self._settings.flows_batch_rows,
            self._settings.flows_flush_ms / 1000,
            writer=self._writer,
            retry=retry,
            journal=self._journal / for_part if self._journal else None,
        )
        sink.resume(resume_state)
        return _ClickHousePartition(sink)


class _KafkaPartition(StatefulSinkPartition):
    def __init__(self, producer: Any, failures: list[str]) -> None:
        self.producer = producer
        self.failures = failures

    def write_batch(self, values: list[Outputs]) -> None:
        produce = self.producer.produce
        for value in values:
            for topic, key, payload, headers in value.messages:
                while True:
                    try:
                        produce(topic, payload, key, headers=headers or None)
                        break
                    except BufferError:  # local queue full: let the producer drain, then retry
                        self.producer.poll(0.05)
        self.producer.poll(0)

    def snapshot(self) -> None:
        self._flush()
        return None

    def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        while self.producer.flush(10.0):
            log.warning("Kafka producer still has undelivered records; waiting")
        if self.failures:
            raise RuntimeError(f"Kafka delivery failed: {self.failures[0]}")  # the epoch is not committed


class KafkaOutSink(_NumberedParts, FixedPartitionedSink):
    """Events and dead letters to Kafka: produced asynchronously, flushed before each epoch
    commits (at-least-once). One producer per process, shared by its partitions."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._lock = threading.Lock()
        self._producer = None
        self._failures: list[str] = []

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KafkaPartition:
        from confluent_kafka import Producer

        with self._lock:
            if self._producer is None:
                self._producer = Producer(
                    {
                        "bootstrap.servers": self._bootstrap,
                        "linger.ms": 5,
                        "compression.type": "lz4",
                        "enable.idempotence": True,
                        "queue.buffering.max.messages": 500_000,
                        "queue.buffering.max.kbytes": 65_536,  # back-pressure (BufferError) past 64 MB
                        "on_delivery": self._delivered,
                        "logger": kafka_logger("flows.librdkafka"),
                    }
                )
        return _KafkaPartition(self._producer, self._failures)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}: {error}")


class _TickPartition(StatelessSourcePartition):
    def __init__(self, interval: timedelta, active: bool) -> None:
        self._interval = interval
        self._active = active
        self._next = datetime.now(UTC)

    def next_batch(self) -> list[tuple[str, None]]:
        self._next = datetime.now(UTC) + self._interval
        return [(str(index), None) for index in range(SINK_PARTITIONS)] if self._active else []

    def next_awake(self) -> datetime:
        return self._next if self._active else datetime.now(UTC) + timedelta(days=1)


class SinkTicks(DynamicSource):
    """One tick per sink partition every `interval` (from worker 0 only), so a partition's
    age-based flush runs even when no new records arrive."""

    def __init__(self, interval: timedelta) -> None:
        self._interval = interval

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TickPartition:
        return _TickPartition(self._interval, worker_index == 0)


# ---- the flow ---------------------------------------------------------------------------


def build_flow(
    *,
    raw: Source,
    identities: Source,
    kafka_out: Sink,
    clickhouse_out: Sink,
    signing_key: bytes,
    names: TopicNames,
    settings: FlowSettings,
    ticks: Source | None,
    flow_id: str = "tokentrail_enrich",
) -> Dataflow:
    """The dataflow over any sources and sinks (tests pass TestingSource/TestingSink).
    `ticks` yields (sink partition number, None) items that wake idle sink partitions."""
    flow = Dataflow(flow_id)
    raw_messages = op.input("read_raw", flow, raw)  # KafkaSourceMessage
    verified = op.flat_map_batch("verify_records", raw_messages, verify_records(RecordReader(signing_key), names))
    # (bucket, CallBatch | Outputs)
    split = op.branch("split_calls", verified, lambda item: type(item[1]) is CallBatch)
    # trues: (bucket, CallBatch); falses: (bucket, Outputs) of gateway events and dead letters
    identity_messages = op.input("read_identities", flow, identities)  # KafkaSourceMessage
    decoded = op.flat_map_batch("decode_identities", identity_messages, decode_identities(names))
    # (bucket, IdentityBatch | Outputs)
    identity_split = op.branch("split_identities", decoded, lambda item: type(item[1]) is IdentityBatch)
    # trues: (bucket, IdentityBatch); falses: (bucket, Outputs) of dead letters
    join_inputs = op.merge("merge_join_inputs", identity_split.trues, split.trues)
    # (bucket, IdentityBatch | CallBatch)
    joined = op.stateful_batch("join_identity", join_inputs, JoinIdentity)
    # (bucket, [(call, Attribution)])
    priced = op.map_value("price_calls", joined, price_calls(Pricer.from_file(settings.price_overrides)))
    # (bucket, [(call, Attribution, PricedUsage)])
    built = op.map_value("build_events", priced, build_events(names))
    # (bucket, Outputs)
    outputs = op.merge("merge_outputs", built, split.falses, identity_split.falses)
    # (bucket, Outputs)
    op.output("write_kafka", outputs, kafka_out)
    if ticks is not None:
        ticking = op.input("sink_ticks", flow, ticks)  # (partition number, None)
        outputs = op.merge("merge_sink_ticks", outputs, ticking)  # (bucket, Outputs | None)
    op.output("write_clickhouse", outputs, clickhouse_out)
    return flow


class _LockedStore:
    """Serializes a store shared by the workers of one process (`-w N`)."""

    def __init__(self, store: RowStore) -> None:
        self._store = store
        self._lock = threading.Lock()

    def insert_json_lines(self, table: str, body: bytes, dedup_token: str | None = None) -> None:
        with self._lock:
            self._store.insert_json_lines(table, body, dedup_token)

    def existing_ids(self, table: str, column: str, ids: list[str]) -> set[str]:
        with self._lock:
            return self._store.existing_ids(table, column, ids)

    def query(self, sql: str, parameters: dict | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return self._store.query(sql, parameters)


_process_store: _LockedStore | None = None
_process_store_lock = threading.Lock()


def use_store(store: RowStore) -> None:
    """Make the flows of this process write through `store` (the CLI shares its store with
    the query server this way)."""
    global _process_store
    _process_store = _LockedStore(store)


def process_store() -> RowStore:
    """The store of this process, opened (and migrated) on first use."""
    global _process_store
    with _process_store_lock:
        if _process_store is None:
            from tokentrail.storage import migrate, open_store

            store = open_store()
            migrate(store)
            _process_store = _LockedStore(store)
        return _process_store


def kafka_source(bootstrap: str, topic: str, start: int, batch_size: int) -> Source:
    """A KafkaSource of one topic whose Kafka clients log through `tokentrail.kafka_log` and
    whose partition listing gets no consumer-only properties (see `QuietKafkaSource`)."""
    # librdkafka prefetches up to 64 MB per partition by default; 8 MB keeps a 2,000-record
    # poll fed at ~100k records/s while bounding memory (RSS target: 600 MB with the engine).
    consumer: dict[str, Any] = {
        "fetch.wait.max.ms": "50",
        "queued.min.messages": "20000",
        "queued.max.messages.kbytes": "8192",
        "logger": kafka_logger("flows.librdkafka"),
    }
    return QuietKafkaSource([bootstrap], [topic], starting_offset=start, batch_size=batch_size, add_config=consumer)


class QuietKafkaSource(KafkaSource):
    """bytewax 0.21.1's KafkaSource hands its consumer settings to the AdminClient that lists
    partitions too, and librdkafka warns once per consumer-only property there (six CONFWARN
    lines at every start). Listing partitions needs only the connection. (bytewax is pinned;
    this overrides its `list_parts` with the same body minus those settings.)"""

    def list_parts(self) -> list[str]:
        config = {"bootstrap.servers": ",".join(self._brokers), "logger": kafka_logger("flows.librdkafka")}
        return list(_list_parts(AdminClient(config), self._topics))


def get_flow(settings: FlowSettings | None = None, core: CoreSettings | None = None) -> Dataflow:
    """The enrich flow on Kafka and ClickHouse; with no arguments, settings come from the
    environment (`python -m bytewax.run "flows.enrich:get_flow()"`)."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    settings = settings or load(FlowSettings)
    core = core or load(CoreSettings)
    signing_key = core.require_signing_key()
    bootstrap = core.bootstrap()
    names = TopicNames.of(core)
    start = OFFSET_BEGINNING if settings.flows_start_at == "beginning" else OFFSET_END
    return build_flow(
        raw=kafka_source(bootstrap, names.raw, start, settings.flows_kafka_batch),
        # identities: always the whole compacted topic, so every key is known
        identities=kafka_source(bootstrap, names.identities, OFFSET_BEGINNING, settings.flows_kafka_batch),
        kafka_out=KafkaOutSink(bootstrap),
        clickhouse_out=ClickHouseSink(process_store, settings, settings.journal_dir(core)),
        signing_key=signing_key,
        names=names,
        settings=settings,
        ticks=SinkTicks(timedelta(milliseconds=settings.flows_flush_ms / 2)),
    )
