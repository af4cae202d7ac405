"""The detect flow: `tokentrail.events` -> detectors -> alerts, detection events and rows.

    tokentrail flows --flow enrich --flow detect      (embedded ClickHouse: one process)
    tokentrail flows --flow detect -p 4              (ClickHouse server: its own processes)

Call events are routed by tenant into `DETECT_BUCKETS` state buckets; each bucket's state is a
`detection.engine.Detector` over its tenants. Failures go on, keyed to one `system` state, to
`ProviderIncidents`, which sees every tenant. Both emit alert state changes and patterns, which
become: Alert records on `tokentrail.alerts` (key = fingerprint) for delivery
(`tokentrail alerts deliver`); `alert_fired` / `alert_resolved` / `pattern_detected` events on
`tokentrail.events`; and rows in the `events`, `alerts` and `failure_patterns` tables
(`tokentrail.storage.alert_rows`). Unreadable records go to the DLQ.

Rows reach ClickHouse through this flow's own sink, in the process that runs it: with the
embedded engine that is the process holding the store, so detect runs beside enrich
(docs/architecture.md, "Where detection writes").

A quiet state bucket gets no events, and event time stands still there: a wall-clock tick
every `IDLE_TICK_SECONDS` reaches every bucket and the system state, and one that had no
event since its previous tick re-evaluates its firing alerts at its newest event time plus
the quiet seconds (`Detector.idle`), so the page of a tenant that stopped calling resolves.

State (the detectors) is snapshotted with the Kafka offsets at every epoch, so a restart
resumes both; events replayed after a crash are recognized by their ids (`detection.dedup`).
SLO targets and budgets come from `tokentrail.controls`, followed live, not snapshotted.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from itertools import chain
from typing import Any, NamedTuple, cast

import orjson
from bytewax import operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from detection.calls import EventError, epoch_seconds
from detection.engine import Controls, DetectionConfig, Detector, ProviderFailure, ProviderIncidents, Result
from detection.outputs import alert_event, alert_record, pattern_event
from flows import metrics
from flows.clickhouse import Rows
from flows.connectors import Message, Record, Tick
from flows.context import FlowContext
from flows.records import Rejected, dead_letter, dead_letter_headers
from tokentrail import topics
from tokentrail.settings import CoreSettings
from tokentrail.storage.alert_rows import alert_row, pattern_row
from tokentrail.storage.event_rows import event_row

log = logging.getLogger(__name__)

DETECT_BUCKETS = 16
"""Tenant state buckets. Fixed: recovery state is keyed by bucket."""
SYSTEM_KEY = "system"
IDLE_TICK_SECONDS = 10.0
"""Wall-clock interval of the idle ticks (module docstring): a quiet tenant's alert resolves
`TOKENTRAIL_DETECT_CLEAR_SECONDS` plus at most two ticks after its last event."""
TABLES = {"events": "event_id", "alerts": "alert_id", "failure_patterns": "detection_id"}


class DetectTopics(NamedTuple):
    events: str
    alerts: str
    dlq: str


class EventBatch(NamedTuple):
    events: list[Record]
    """Records as read: routed by their key (the tenant, docs/architecture.md, Contracts) and
    parsed by the bucket, one at a time, so no batch of parsed events is held between steps."""


class FailureBatch(NamedTuple):
    failures: list[ProviderFailure]
    clocks: dict[int, float]
    """Input partition -> event time of the last record the bucket read from it in this batch."""


class DetectOutputs(NamedTuple):
    messages: list[Message]
    rows: Rows


class IdleTick(NamedTuple):
    wall: float
    """Wall-clock time of the tick, epoch seconds."""


class IdleTicks:
    """Sink ticks (several a second, from one worker) -> an `IdleTick` for every state once per
    `interval` of wall clock. Riding on the sink ticks rather than a slower source of its own:
    a source asleep between its ticks held the stateful steps behind it back (measured: alerts
    10 s late)."""

    def __init__(self, interval: float = IDLE_TICK_SECONDS) -> None:
        self.interval = interval
        self.due = time.monotonic() + interval

    def __call__(self, tick: Tick) -> list[tuple[str, IdleTick]]:
        if tick[0] != "0" or time.monotonic() < self.due:  # one sink tick per round is enough
            return []
        self.due = time.monotonic() + self.interval
        return broadcast_tick(time.time())


class QuietClock:
    """Wall-clock seconds a state has gone without events, counted from the first tick after
    its last event (so under-counted by at most one tick; never more than the real quiet)."""

    def __init__(self) -> None:
        self.since: float | None = None

    def quiet_for(self, values: list[Any]) -> float | None:
        """Seconds quiet after this batch of inputs; None while events come (or on the first quiet tick)."""
        ticks = [value.wall for value in values if type(value) is IdleTick]
        if len(ticks) < len(values) or not ticks:
            self.since = None
            return None
        if self.since is None:
            self.since = ticks[-1]
            return None
        return ticks[-1] - self.since


def broadcast_tick(wall: float) -> list[tuple[str, IdleTick]]:
    """One tick for every tenant bucket and for the system state."""
    tick = IdleTick(wall)
    return [(str(bucket), tick) for bucket in range(DETECT_BUCKETS)] + [(SYSTEM_KEY, tick)]


def bucket_of(tenant_id: str) -> str:
    """Stable across processes (unlike `hash`), so every worker routes a tenant the same way."""
    return str(zlib.crc32(tenant_id.encode()) % DETECT_BUCKETS)


class Buckets(dict[bytes, str]):
    """Record key (a tenant, UTF-8) -> its bucket, `bucket_of(tenant)`, computed once per key
    (forgotten past 100,000 keys)."""

    def __missing__(self, key: bytes) -> str:
        if len(self) >= 100_000:
            self.clear()
        bucket = self[key] = str(zlib.crc32(key) % DETECT_BUCKETS)
        return bucket


CALL_EVENTS = ("llm_call", "llm_call_failed")


def route_events(names: DetectTopics) -> Callable[[list[list[Record]]], list[tuple[str, EventBatch | DetectOutputs]]]:
    """Polls of Kafka records -> one EventBatch per bucket, by key (the tenant) without parsing;
    a record without a key is parsed for its tenant, and dead-lettered when it has none."""
    buckets = Buckets()
    records_in = metrics.RECORDS_IN.labels("events")

    def route(polls: list[list[Record]]) -> list[tuple[str, EventBatch | DetectOutputs]]:
        groups: dict[str, list[Record]] = {}
        rejected: list[Message] = []
        records_in.inc(sum(map(len, polls)))
        for message in chain.from_iterable(polls):
            key = message.key()
            if not key:
                try:
                    key = _tenant_of(message).encode()
                except (ValueError, KeyError) as exc:
                    rejected.append(_dead_letter(f"detect: {exc}", message, names.dlq))
                    continue
                if not key:
                    continue  # not a call: detection reads calls only
            bucket = buckets[key]
            group = groups.get(bucket)
            if group is None:
                group = groups[bucket] = []
            group.append(message)
        items: list[tuple[str, EventBatch | DetectOutputs]] = [(b, EventBatch(e)) for b, e in groups.items()]
        if rejected:
            items.append(("0", DetectOutputs(rejected, {})))
        return items

    return route


def _tenant_of(message: Record) -> str:
    """The tenant of a call event without a key ("" for other events); ValueError or KeyError
    when the record is not a JSON object with a string tenant_id."""
    event = _event_of(message)
    if event.get("event_type") not in CALL_EVENTS:
        return ""
    tenant_id = event["tenant_id"]
    if type(tenant_id) is not str:
        raise ValueError("tenant_id is not a string")
    return tenant_id


def _event_of(message: Record) -> dict[str, Any]:
    event = orjson.loads(message.value() or b"")
    if type(event) is not dict:
        raise ValueError("record is not a JSON object")
    return event


def _dead_letter(reason: str, message: Record, dlq: str) -> Message:
    key = message.key()
    rejected = Rejected(reason, message.value(), key)
    headers = dead_letter_headers(cast("list[tuple[str, bytes]] | None", message.headers()), reason)
    letter = dead_letter(rejected, message.topic() or "", message.partition(), message.offset())
    return dlq, key, letter, headers


def outputs_of(result: Result, names: DetectTopics) -> DetectOutputs:
    """Alert records, detection events, their `events` rows, and the `alerts` / `failure_patterns` rows of one result."""
    messages: list[Message] = []
    rows: list[dict[str, Any]] = []
    alert_rows = [alert_row(change.alert) for change in result.changes]
    pattern_rows = [pattern_row(pattern) for pattern in result.patterns]
    for change in result.changes:
        alert = change.alert
        messages.append((names.alerts, alert.fingerprint.encode(), alert_record(alert), []))
        event = alert_event(change)
        if event is not None:
            messages.append((names.events, alert.tenant_id.encode(), orjson.dumps(event), []))
            rows.append(event_row(event))
    for pattern in result.patterns:
        event = pattern_event(pattern)
        messages.append((names.events, pattern.tenant_id.encode(), orjson.dumps(event), []))
        rows.append(event_row(event))
    tables = {"events": rows, "alerts": alert_rows, "failure_patterns": pattern_rows}
    return DetectOutputs(messages, {table: batch for table, batch in tables.items() if batch})


class DetectTenants(StatefulBatchLogic[EventBatch | IdleTick, DetectOutputs | FailureBatch, Detector]):
    """One bucket of tenants: its Detector is the state."""

    def __init__(self, detector: Detector, names: DetectTopics) -> None:
        self.detector = detector
        self.names = names
        self.quiet = QuietClock()

    def on_batch(self, values: list[EventBatch | IdleTick]) -> tuple[list[DetectOutputs | FailureBatch], bool]:
        result = Result()
        rejected: list[Message] = []
        observe, dlq = self.detector.observe, self.names.dlq
        quiet = self.quiet.quiet_for(values)
        if quiet is not None:
            self.detector.idle(quiet, result)
        stamps: dict[int | None, Any] = {}  # partition -> the timestamp of its last record here
        for batch in values:
            if isinstance(batch, IdleTick):
                continue
            for message in batch.events:
                try:
                    event = _event_of(message)
                    stamps[message.partition()] = event.get("timestamp")
                    if event.get("event_type") not in CALL_EVENTS:
                        continue  # detection reads calls only (its own events come back here too)
                    tenant_id = event.get("tenant_id")
                    key = message.key()
                    if key and (type(tenant_id) is not str or tenant_id.encode() != key):
                        raise ValueError(
                            f"record key {key!r} is not its tenant_id {tenant_id!r} (tokentrail.events is keyed by tenant)"
                        )
                    observe(event, result)
                except EventError as exc:
                    rejected.append(_dead_letter(str(exc), message, dlq))
                except ValueError as exc:
                    rejected.append(_dead_letter(f"detect: {exc}", message, dlq))
        out: list[DetectOutputs | FailureBatch] = []
        outputs = outputs_of(result, self.names)
        if outputs.messages or rejected:
            out.append(DetectOutputs(outputs.messages + rejected, outputs.rows))
        clocks = _clocks(stamps)
        if result.provider_failures or clocks:
            out.append(FailureBatch(result.provider_failures, clocks))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> Detector:
        return self.detector


class DetectProviders(StatefulBatchLogic[FailureBatch | IdleTick, DetectOutputs, ProviderIncidents]):
    """Every tenant's failures: provider or model incidents."""

    def __init__(self, incidents: ProviderIncidents, names: DetectTopics) -> None:
        self.incidents = incidents
        self.names = names
        self.quiet = QuietClock()
        self.clocks = InputClocks()

    def on_batch(self, values: list[FailureBatch | IdleTick]) -> tuple[list[DetectOutputs], bool]:
        """The buckets' failures back in event-time order: each bucket sends its part of a
        batch on its own (in a replay or a backlog, a batch spans minutes of event time, and
        bucket after bucket would move the incidents' clock back and forth: an incident would
        resolve and fire again). No incident resolves past the slowest input partition's clock
        as known before this batch (`InputClocks`; a batch's own clocks count from the next,
        so failures of the same poll still on their way from another bucket are not passed
        over); those clocks also move the incidents' event time on when calls come without
        failures (`ProviderIncidents.advance`). A tick with no record since the last one lets
        firing incidents resolve (`QuietClock`)."""
        result = Result()
        quiet = self.quiet.quiet_for(values)
        if quiet is not None:
            self.incidents.idle(quiet, result)
        batches = [batch for batch in values if not isinstance(batch, IdleTick)]
        if batches:
            self.incidents.complete_until = self.clocks.slowest(time.monotonic())
        failures = [failure for batch in batches for failure in batch.failures]
        failures.sort(key=_event_time)
        for failure in failures:
            self.incidents.observe(failure, result)
        if batches:
            self.incidents.advance(result)
        now = time.monotonic()
        for batch in batches:
            self.clocks.update(batch.clocks, now)
        outputs = outputs_of(result, self.names)
        return ([outputs] if outputs.messages else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> ProviderIncidents:
        return self.incidents


class InputClocks:
    """The event time each input partition has been read up to; the slowest of those heard
    from in the last `stale_after` wall seconds is how far every failure has arrived (a
    partition with no records is not waited for longer). Not snapshotted: after a restart
    the partitions report again with their first records."""

    def __init__(self, stale_after: float = 3 * IDLE_TICK_SECONDS) -> None:
        self.stale_after = stale_after
        self.clocks: dict[int, tuple[float, float]] = {}
        """partition -> (event time, monotonic wall time of the report)"""

    def update(self, clocks: dict[int, float], now: float) -> None:
        for partition, at in clocks.items():
            known = self.clocks.get(partition)
            self.clocks[partition] = (at if known is None else max(at, known[0]), now)

    def slowest(self, now: float) -> float:
        """The lowest clock of the partitions heard from lately (+inf when none)."""
        live = [at for at, heard in self.clocks.values() if now - heard <= self.stale_after]
        return min(live, default=float("inf"))


def _clocks(stamps: dict[int | None, Any]) -> dict[int, float]:
    """Partition -> event time from the last records' timestamps (unreadable ones left out:
    their records went to the DLQ)."""
    clocks = {}
    for partition, stamp in stamps.items():
        if partition is None:  # a record read from Kafka always has one
            continue
        try:
            clocks[partition] = epoch_seconds(stamp)
        except (TypeError, ValueError):
            continue
    return clocks


def _event_time(failure: ProviderFailure) -> float:
    return failure.at


def _is_events(item: tuple[str, EventBatch | DetectOutputs]) -> bool:
    return type(item[1]) is EventBatch


def _is_failures(item: tuple[str, DetectOutputs | FailureBatch]) -> bool:
    return type(item[1]) is FailureBatch


def add_steps(
    flow: Dataflow,
    *,
    events: Source[list[Record]],
    kafka_out: Sink[tuple[str, list[Message]]],
    clickhouse_out: Sink[tuple[str, Rows | None]] | None,
    names: DetectTopics,
    config: DetectionConfig,
    controls: Controls,
    ticks: Source[Tick] | None = None,
) -> None:
    """The detect steps over any sources and sinks (tests pass TestingSource/TestingSink).
    `ticks`: the sink ticks, which also drive the idle ticks (None: neither)."""

    def tenants(resume: Detector | None) -> DetectTenants:
        detector = resume or Detector(config, controls)
        detector.controls = controls
        return DetectTenants(detector, names)

    def providers(resume: ProviderIncidents | None) -> DetectProviders:
        return DetectProviders(resume or ProviderIncidents(config), names)

    read = op.input("detect_read_events", flow, events)  # a poll of Records
    routed = op.flat_map_batch("detect_route", read, route_events(names))
    # (bucket, EventBatch | DetectOutputs of dead letters)
    split = op.branch("detect_split_routed", routed, _is_events)
    to_tenants: Any = split.trues
    sink_ticks = None if ticks is None else op.input("detect_sink_ticks", flow, ticks)
    idle_ticks: Any = None
    if sink_ticks is not None:
        idle_ticks = op.flat_map("detect_idle_ticks", sink_ticks, IdleTicks())
        tenant_ticks = op.filter("detect_tenant_ticks", idle_ticks, lambda item: item[0] != SYSTEM_KEY)
        to_tenants = op.merge("detect_merge_idle", to_tenants, tenant_ticks)
    detected = op.stateful_batch("detect_tenants", to_tenants, tenants)
    # (bucket, DetectOutputs | FailureBatch)
    by_kind = op.branch("detect_split_failures", detected, _is_failures)
    to_system = op.key_on(
        "detect_key_system", op.map("detect_unkey", by_kind.trues, lambda item: item[1]), lambda _: SYSTEM_KEY
    )
    if idle_ticks is not None:
        system_ticks = op.filter("detect_system_ticks", idle_ticks, lambda item: item[0] == SYSTEM_KEY)
        to_system = op.merge("detect_merge_system_idle", to_system, system_ticks)
    incidents = op.stateful_batch("detect_providers", cast(Any, to_system), providers)
    # ("system", DetectOutputs)
    rekeyed = op.map("detect_key_part", incidents, lambda item: ("0", item[1]))
    # (partition number, DetectOutputs): the branches' false sides hold only outputs
    outputs: Stream[tuple[str, DetectOutputs]] = cast(
        Any, op.merge("detect_merge_outputs", by_kind.falses, rekeyed, split.falses)
    )
    op.output("detect_write_kafka", op.map_value("detect_messages", outputs, lambda o: o.messages), kafka_out)
    if clickhouse_out is not None:
        rows: Any = op.map_value("detect_rows", outputs, lambda o: o.rows)
        if sink_ticks is not None:
            rows = op.merge("detect_merge_ticks", rows, sink_ticks)
        op.output("detect_write_clickhouse", rows, clickhouse_out)


def follow_controls(core: CoreSettings, topic: str) -> Controls:
    """SLO targets and budgets from the compacted controls topic, kept up to date by a daemon
    thread (`tokentrail.control.follower`); bad records (unsigned ones and tombstones included,
    `tokentrail.control.records`) are logged and skipped."""
    from schemas.signing import KeySet
    from tokentrail.control.follower import TopicFollower
    from tokentrail.control.records import decode_control

    controls = Controls()
    operator_keys = KeySet(*core.operator_keys())

    def apply(key: bytes | None, value: bytes | None) -> None:
        controls.apply(decode_control(key, value, operator_keys)[1])

    kafka = core.kafka_client_config()
    follower = TopicFollower(kafka["bootstrap.servers"], {topic: apply}, kafka_config=kafka)
    try:
        follower.catch_up(timeout=10.0)
    except Exception as exc:  # detection runs on defaults until the topic answers
        log.warning("controls not read yet (%s); SLOs and budgets apply once they are", exc)
    follower.start()
    return controls


def build(flow: Dataflow, context: FlowContext) -> None:
    """The detect flow on Kafka and ClickHouse (registered in `flows.registry`)."""
    from detection.settings import DetectSettings
    from tokentrail.settings import load

    settings = load(DetectSettings)
    names = DetectTopics(context.topic(topics.EVENTS), context.topic(topics.ALERTS), context.topic(topics.DLQ))
    add_steps(
        flow,
        events=context.kafka_polls(topics.EVENTS),
        kafka_out=context.kafka_sink(),
        clickhouse_out=context.clickhouse_sink("detect", TABLES),
        names=names,
        config=settings.config(),
        controls=follow_controls(context.core, context.topic(topics.CONTROLS)),
        ticks=context.sink_ticks(),
    )
