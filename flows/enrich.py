"""The enrich dataflow: raw records -> verified -> identity joined -> priced -> events + rows.

    tokentrail flows [--flow enrich]        (migrations, the query server and /metrics too)

Per-item engine overhead is avoided by moving *groups* of records through the engine: the
verify step turns each Kafka poll batch into one group of calls per join bucket (a stable
hash of the key id), so keyed exchange, stateful join, pricing and the sinks handle a few
dozen items per poll instead of thousands. The join state of a bucket is the identity table
of the key ids hashing to it.

Effectively-once (docs/architecture.md, invariant 5): sources snapshot their Kafka offsets,
and both sinks flush in `snapshot()`, which Bytewax calls before committing an epoch; so a
committed offset never runs ahead of rows and events that are not durable. After a crash the
flow resumes from the last epoch, replays at most one epoch, and the ClickHouse sink drops rows
storage already holds (events on Kafka are at-least-once; consumers dedupe on event_id).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeGuard, TypeVar, cast

import orjson
from bytewax import operators as op
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.operators import KeyedStream, StatefulBatchLogic
from bytewax.outputs import Sink

from flows import metrics
from flows.clickhouse import Rows
from flows.connectors import KafkaMessage, Message, Tick
from flows.context import FlowContext
from flows.events import call_outputs
from flows.identity import Attribution, IdentityEntry, IdentityTable, attribute, decode_identity
from flows.pricing import PricedUsage, Pricer
from flows.records import RecordReader, Rejected, dead_letter, dead_letter_headers
from flows.settings import FlowSettings
from schemas.signing import KeySet
from tokentrail import topics
from tokentrail.control.records import RecordError
from tokentrail.settings import CoreSettings
from tokentrail.storage.event_rows import event_row

JOIN_BUCKETS = 64
"""Join state partitions. Fixed: recovery state is keyed by bucket, so changing it needs a
fresh recovery directory."""

TABLES = {"llm_calls": "call_id", "events": "event_id"}
"""The tables this flow writes, and the column that identifies a row of each."""

Call = dict[str, Any]
"""A verified RawCall record (`RecordReader.read`)."""
Joined = list[tuple[Call, Attribution]]
Priced = list[tuple[Call, Attribution, PricedUsage]]


class CallBatch(NamedTuple):
    calls: list[Call]


class IdentityBatch(NamedTuple):
    updates: list[tuple[str, IdentityEntry | None]]


class Outputs(NamedTuple):
    """What one group sends on: Kafka records (events, dead letters) and ClickHouse rows."""

    messages: list[Message]
    rows: Rows


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


def _outputs() -> Outputs:
    return Outputs([], {table: [] for table in TABLES})


# ---- steps: plain functions over groups, the engine only moves them -----------------------


def _dead_letter_message(rejected: Rejected, message: KafkaMessage, dlq_topic: str) -> Message:
    metrics.REJECTED.labels(metrics.reason_label(rejected.reason)).inc()
    headers = dead_letter_headers(message.headers, rejected.reason)
    source = message.topic or ""
    return dlq_topic, rejected.key, dead_letter(rejected, source, message.partition, message.offset), headers


def verify_records(
    reader: RecordReader, names: TopicNames
) -> Callable[[list[KafkaMessage]], list[tuple[str, CallBatch | Outputs]]]:
    """Kafka messages -> one CallBatch per join bucket, and Outputs for gateway events and
    dead letters (keyed "0": rare records, one sink partition is plenty)."""

    def verify(messages: list[KafkaMessage]) -> list[tuple[str, CallBatch | Outputs]]:
        metrics.RECORDS_IN.labels("raw").inc(len(messages))
        groups: dict[str, list[Call]] = {}
        passthrough = _outputs()
        event_rows = passthrough.rows["events"]
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
                    event_rows.append(event_row(event))
            else:
                passthrough.messages.append(_dead_letter_message(cast(Rejected, record), message, names.dlq))
        items: list[tuple[str, CallBatch | Outputs]] = [(bucket, CallBatch(calls)) for bucket, calls in groups.items()]
        if passthrough.messages:
            items.append(("0", passthrough))
        return items

    return verify


def decode_identities(
    names: TopicNames, operator_keys: KeySet
) -> Callable[[list[KafkaMessage]], list[tuple[str, IdentityBatch | Outputs]]]:
    """Identities-topic messages -> one IdentityBatch per join bucket (bad ones, unsigned or
    forged ones included: dead letters)."""

    def decode(messages: list[KafkaMessage]) -> list[tuple[str, IdentityBatch | Outputs]]:
        metrics.RECORDS_IN.labels("identities").inc(len(messages))
        groups: dict[str, list[tuple[str, IdentityEntry | None]]] = {}
        rejected = _outputs()
        for message in messages:
            try:
                key_id, entry = decode_identity(message.key, message.value, operator_keys)
            except RecordError as exc:
                bad = Rejected(str(exc), message.value, message.key)
                rejected.messages.append(_dead_letter_message(bad, message, names.dlq))
                continue
            groups.setdefault(bucket_of(key_id), []).append((key_id, entry))
        items: list[tuple[str, IdentityBatch | Outputs]] = [
            (bucket, IdentityBatch(updates)) for bucket, updates in groups.items()
        ]
        if rejected.messages:
            items.append(("0", rejected))
        return items

    return decode


class JoinIdentity(StatefulBatchLogic[CallBatch | IdentityBatch, Joined, dict[str, IdentityEntry]]):
    """State of one join bucket: the identity table of its key ids. Emits (call, Attribution)
    lists; identity updates change state and emit nothing."""

    def __init__(self, resume: dict[str, IdentityEntry] | None) -> None:
        self.table = IdentityTable(resume)
        self._snapshot = dict(self.table.entries)
        self._changed = False
        metrics.IDENTITIES.inc(len(self.table))

    def on_batch(self, values: list[CallBatch | IdentityBatch]) -> tuple[list[Joined], bool]:
        joined: Joined = []
        for value in values:
            if type(value) is IdentityBatch:
                before = len(self.table)
                for key_id, entry in value.updates:
                    self.table.apply(key_id, entry)
                metrics.IDENTITIES.inc(len(self.table) - before)
                self._changed = True
            else:
                get = self.table.get
                joined.extend((call, attribute(call, get(call["key_id"]))) for call in cast(CallBatch, value).calls)
        return ([joined] if joined else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, IdentityEntry]:
        """A copy only when identities changed since the last one; calls never change state."""
        if self._changed:
            self._snapshot = dict(self.table.entries)
            self._changed = False
        return self._snapshot


def price_calls(pricer: Pricer) -> Callable[[Joined], Priced]:
    def price(joined: Joined) -> Priced:
        priced: Priced = []
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


def build_events(names: TopicNames) -> Callable[[Priced], Outputs]:
    def build(priced: Priced) -> Outputs:
        out = _outputs()
        call_rows, event_rows = out.rows["llm_calls"], out.rows["events"]
        for call, who, cost in priced:
            event, row, erow = call_outputs(call, who, cost)
            out.messages.append((names.events, who.tenant_id.encode(), orjson.dumps(event), []))
            call_rows.append(row)
            event_rows.append(erow)
        return out

    return build


# ---- composite steps: typed streams in, typed streams out ----------------------------------


Group = TypeVar("Group", CallBatch, IdentityBatch)


@dataclass(frozen=True)
class Split(Generic[Group]):
    """Groups for the join, and the Outputs decided without it (dead letters, gateway events)."""

    joinable: KeyedStream[Group]
    outputs: KeyedStream[Outputs]


def _is_call_batch(item: tuple[str, CallBatch | Outputs]) -> TypeGuard[tuple[str, CallBatch]]:
    return type(item[1]) is CallBatch


def _is_identity_batch(item: tuple[str, IdentityBatch | Outputs]) -> TypeGuard[tuple[str, IdentityBatch]]:
    return type(item[1]) is IdentityBatch


@operator
def verify_calls(step_id: str, up: Stream[KafkaMessage], reader: RecordReader, names: TopicNames) -> Split[CallBatch]:
    """Raw records -> CallBatches per join bucket; gateway events and dead letters as Outputs."""
    verified = op.flat_map_batch("verify_records", up, verify_records(reader, names))
    split = op.branch("split_calls", verified, _is_call_batch)
    return Split(split.trues, cast("KeyedStream[Outputs]", split.falses))


@operator
def read_identities(
    step_id: str, up: Stream[KafkaMessage], names: TopicNames, operator_keys: KeySet
) -> Split[IdentityBatch]:
    """Identity records -> IdentityBatches per join bucket; bad records (a missing or wrong
    operator signature included) as dead-letter Outputs."""
    decoded = op.flat_map_batch("decode_identities", up, decode_identities(names, operator_keys))
    split = op.branch("split_identities", decoded, _is_identity_batch)
    return Split(split.trues, cast("KeyedStream[Outputs]", split.falses))


@operator
def price_and_build(step_id: str, up: KeyedStream[Joined], pricer: Pricer, names: TopicNames) -> KeyedStream[Outputs]:
    """Joined calls -> priced -> their events (Kafka) and rows (ClickHouse)."""
    priced = op.map_value("price_calls", up, price_calls(pricer))
    return op.map_value("build_events", priced, build_events(names))


def _messages(outputs: Outputs) -> list[Message]:
    return outputs.messages


def _rows(outputs: Outputs) -> Rows:
    return outputs.rows


# ---- the flow ---------------------------------------------------------------------------


def add_steps(
    flow: Dataflow,
    *,
    raw: Source[KafkaMessage],
    identities: Source[KafkaMessage],
    kafka_out: Sink[tuple[str, list[Message]]],
    clickhouse_out: Sink[tuple[str, Rows | None]],
    signing_key: KeySet | bytes,
    operator_keys: KeySet,
    names: TopicNames,
    settings: FlowSettings,
    ticks: Source[Tick] | None,
) -> None:
    """The steps over any sources and sinks (tests pass TestingSource/TestingSink). `ticks`
    yields (sink partition number, None) items that wake idle sink partitions. `signing_key`
    verifies RawCalls (a key set: rotation), `operator_keys` identity records."""
    calls = verify_calls("verify", op.input("read_raw", flow, raw), RecordReader(signing_key), names)
    known = read_identities("identities", op.input("read_identities", flow, identities), names, operator_keys)
    join_inputs: KeyedStream[CallBatch | IdentityBatch] = op.merge("merge_join_inputs", known.joinable, calls.joinable)
    joined = op.stateful_batch("join_identity", join_inputs, JoinIdentity)
    built = price_and_build("enrich", joined, Pricer.from_file(settings.price_overrides), names)
    outputs = op.merge("merge_outputs", built, calls.outputs, known.outputs)
    op.output("write_kafka", op.map_value("messages", outputs, _messages), kafka_out)
    rows: KeyedStream[Rows | None] = op.map_value("rows", outputs, _rows)
    if ticks is not None:
        rows = op.merge("merge_sink_ticks", rows, op.input("sink_ticks", flow, ticks))
    op.output("write_clickhouse", rows, clickhouse_out)


def build_flow(flow_id: str = "tokentrail_enrich", **parts: Any) -> Dataflow:
    """A dataflow of this flow alone over the given parts (see `add_steps`)."""
    flow = Dataflow(flow_id)
    add_steps(flow, **parts)
    return flow


def build(flow: Dataflow, context: FlowContext) -> None:
    """The enrich flow on Kafka and ClickHouse (registered in `flows.registry`)."""
    add_steps(
        flow,
        raw=context.kafka_source(topics.CALLS_RAW),
        # identities: always the whole compacted topic, so every key is known
        identities=context.kafka_source(topics.IDENTITIES, from_beginning=True),
        kafka_out=context.kafka_sink(),
        clickhouse_out=context.clickhouse_sink("enrich", TABLES),
        signing_key=KeySet(*context.core.signing_keys()),
        operator_keys=KeySet(*context.core.operator_keys()),
        names=TopicNames.of(context.core),
        settings=context.settings,
        ticks=context.sink_ticks(),
    )
