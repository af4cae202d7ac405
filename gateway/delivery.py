"""Get every record to Kafka exactly as written ahead, without ever blocking a request.

- `submit()` (event loop) appends the signed record to the write-ahead log (`gateway.spool`,
  a copy into the segment's shared mapping, no system call) and hands it to librdkafka
  (idempotent, lz4, batched by linger.ms) with its segment's delivery callback. A success
  report retires the record in its segment (the reports of one poll together, under one
  lock); a segment with nothing owed is deleted. So a SIGKILL loses nothing that was
  submitted: whatever Kafka had not acknowledged is still in the log.
- A failure report (timeout, purge) carries the record into the current drain segment (a
  new frame, always marked as a possible redelivery: a record purged from librdkafka's queue
  may have been sent before, since a retry goes back to that queue) and retires the old
  frame. A permanent error (the record can never be taken: too large, invalid) sends it to
  the quarantine file instead and counts it; it never blocks the records behind it.
- When librdkafka reports that no broker is reachable, records it has not sent yet are purged
  from its queue into the drain segment at once, and new records go there directly (the log
  is in spooling mode) until the drain, run by the delivery thread once Kafka answers a
  metadata request, has sent every drain segment in order.
- On start, every segment left on disk is replayed: its records are sent again with the
  Kafka header `tokentrail-redelivery: 1` (the flows look such ids up before writing;
  docs/architecture.md), and streams that had started but not finished are recorded from
  the record their `STARTED` frame carries.
- The log's group commit (`gateway.group_commit`, a thread off the GIL) fdatasyncs appended
  records within the spool's `fsync_interval_s`. The delivery thread rolls segments by age and
  closes the sealed ones.

With `write_ahead=False` records go to Kafka directly and reach the spool only on failure
(the behaviour before the write-ahead log, kept as the benchmark's baseline).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from gateway.spool import (
    ENDS_STREAM,
    FINISHED,
    MAYBE_SENT,
    RECORD,
    STARTED,
    Segment,
    Spool,
    drained_mark,
    encode,
    read_frames,
)
from tokentrail.kafka_log import kafka_logger

log = logging.getLogger("tokentrail.gateway.delivery")

DRAIN_BATCH = 5000
DRAIN_BATCH_BYTES = 16 << 20
"""Records / bytes produced between flushes (and drained marks) while draining the spool: what
librdkafka holds during a drain, whatever the spool's size."""
RETRY_DRAIN_AFTER_S = 1.0
SPOOL_HEADROOM = 16 * 1024 * 1024
"""Free bytes below which the spool counts as full (/readyz)."""
REDELIVERY_HEADER = "tokentrail-redelivery"
REDELIVERY: list[tuple[str, str | bytes | None]] = [(REDELIVERY_HEADER, b"1")]
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError._INVALID_ARG,
        KafkaError._BAD_MSG,
    }
)
"""Errors a retry cannot fix: the record goes to the quarantine file."""
POLL_S = 0.05
"""The delivery thread serves Kafka's reports this often, all that came at once. Waking on
each one (a blocking `poll`) cost the gateway a thread wake-up and a GIL hand-over per
acknowledged record: measured, 170-250 µs of CPU per request at one connection on our VMs,
and +0.1-0.3 ms p50. Records retire up to this much later; failures are carried as late."""


def producer_config(
    kafka: dict[str, Any], message_timeout_ms: int, linger_ms: int, write_ahead: bool = True
) -> dict[str, Any]:
    """`kafka`: bootstrap and security (`CoreSettings.kafka_client_config()`)."""
    return {
        **kafka,
        "enable.idempotence": True,  # retries never duplicate; acks=all
        "compression.type": "lz4",
        "linger.ms": linger_ms,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 256 * 1024,
        "message.timeout.ms": message_timeout_ms,
        "delivery.report.only.error": not write_ahead,  # the log retires records on success reports
        "reconnect.backoff.max.ms": 1000,
        "socket.keepalive.enable": True,
    }


def stream_started_value(call_id: str, fallback: bytes) -> bytes:
    """The value of a STARTED frame: the call id, a newline, the unsigned record to sign and
    send if the gateway dies before the stream ends."""
    return call_id.encode() + b"\n" + fallback


def call_id_of(record: bytes) -> bytes | None:
    """The call id of a logged record (read at start-up only, for records that end a stream)."""
    try:
        call_id = orjson.loads(record).get("call_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return call_id.encode() if isinstance(call_id, str) else None


class Delivery:
    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        spool: Spool,
        metrics: Any,
        write_ahead: bool = True,
        *,
        sign_fallback: Callable[[bytes], bytes],
    ) -> None:
        """`sign_fallback`: a STARTED frame's unsigned record -> the value to send (signing at
        admission cost every stream a signature; only a cut stream needs one)."""
        self.topic = topic
        self.spool = spool
        self.metrics = metrics
        self.write_ahead = write_ahead
        self.sign_fallback = sign_fallback
        self._acknowledged: list[Segment] = []
        """Segments of the records acknowledged since the last `_retire_acknowledged` (one entry
        per record; appended by the delivery callbacks, which run on the delivery thread)."""
        self._replay_pending = bool(spool.segments)
        spool.spooling = bool(spool.segments)  # a restart with a log left sends it first, in order
        spool.bind = self._bind
        for segment in spool.segments:
            segment.on_delivery = self._bind(segment)
        self._config = {
            **config,
            "on_delivery": self._delivered_unlogged,  # records not in the log (or no log)
            "error_cb": self._on_error,
            "logger": kafka_logger("tokentrail.gateway.librdkafka"),
        }
        self.producer = Producer(self._config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drain_failed = False
        self._fatal: KafkaError | None = None
        self._brokers_down = False
        self.quarantine = spool.directory / "quarantine" / f"quarantine{time.strftime('%Y%m%d')}.frames"

    @property
    def spooling(self) -> bool:
        return self.spool.spooling

    # --- event loop side

    def submit(self, key: bytes, value: bytes) -> None:
        """`log` the record, then `send` it."""
        self.send(key, value, self.log(key, value))

    def log(self, key: bytes, value: bytes, ends_stream: bool = False) -> Segment | None:
        """Write a record to the log (with the log on, or while spooling): its segment, None
        if not written. `ends_stream`: the record of a stream logged by `stream_started` (a
        restart then knows the stream ended). The caller `send`s it next."""
        if not self.write_ahead and not self.spool.spooling:
            return None
        return self.spool.append(key, value, RECORD, ENDS_STREAM if ends_stream else 0)

    def send(self, key: bytes, value: bytes, segment: Segment | None) -> None:
        """Hand a record `log` wrote (or did not: `segment` None) to Kafka; one written to a
        drain segment waits for the drain instead."""
        if segment is not None and segment.drain:
            self.metrics.records_spooled.inc()
            return
        self._produce(key, value, segment)

    def stream_started(self, key: bytes, call_id: str, fallback: bytes) -> Segment | None:
        """A stream's answer has begun: log the (unsigned) record to send should the gateway die
        before it ends. Returns the segment to pass to `stream_finished` (None: not logged)."""
        return self.spool.append(key, stream_started_value(call_id, fallback), STARTED)

    def stream_finished(self, started: Segment | None) -> None:
        """The stream's own record has been submitted (`ends_stream`): its STARTED frame is no
        longer needed."""
        if started is not None:
            self.spool.retire(started, record=False)

    def _produce(self, key: bytes | None, value: bytes, segment: Segment | None) -> None:
        try:
            if segment is None:
                self.producer.produce(self.topic, value, key)
            else:
                self.producer.produce(self.topic, value, key, on_delivery=segment.on_delivery)
            return
        except BufferError:
            self._carry(key, value, 0, "the producer queue is full")
        except KafkaException as exc:
            error = _error_of(exc)
            if error is not None and error.code() in PERMANENT_ERRORS:
                self._quarantine(key, value, error)
            else:
                self._carry(key, value, 0, f"the producer refused the record: {exc}")
        if segment is not None:
            self.spool.retire(segment)

    def spool_writable(self) -> bool:
        """Whether records could go to the spool now: its directory is writable and its disk
        has room for a segment's worth of records."""
        try:
            return (
                os.access(self.spool.directory, os.W_OK)
                and shutil.disk_usage(self.spool.directory).free > SPOOL_HEADROOM
            )
        except OSError:
            return False

    # --- delivery thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tokentrail-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued within `timeout`. What Kafka did not acknowledge stays in the
        log (the next start sends it again); without the write-ahead log it goes to the spool."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.producer.flush(timeout) > 0 and not self.write_ahead:
            self.producer.purge(in_queue=True, in_flight=False)
            self.producer.flush(0)  # serves the purge reports: they spool the records
            self.producer.poll(0)
        self._retire_acknowledged()
        self.spool.close()

    def _run(self) -> None:
        next_drain = time.monotonic()
        while not self._stop.wait(POLL_S):
            try:
                self.producer.poll(0)
                self._retire_acknowledged()
                now = time.monotonic()
                self.spool.roll_if_old()
                self.spool.close_sealed()
                if self._fatal is not None:
                    self._replace_producer()
                if self._brokers_down:
                    self._brokers_down = False
                    self._spool_queued("no Kafka broker is reachable")
                if self.spool.spooling and now >= next_drain:
                    if not self._drain():
                        next_drain = time.monotonic() + RETRY_DRAIN_AFTER_S
            except Exception:  # noqa: BLE001 - the delivery thread must outlive any one failure
                log.exception("delivery thread step failed; retrying")
                time.sleep(0.5)

    def _bind(self, segment: Segment) -> Callable[[KafkaError | None, Message], None]:
        acknowledged = self._acknowledged

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is None:
                acknowledged.append(segment)
                return
            self._failed(error, message)
            self.spool.retire(segment)  # after the record is safe elsewhere

        return delivered

    def _retire_acknowledged(self) -> None:
        """Retire what the last reports acknowledged: one lock for all of them (a lock per
        report contended with the event loop's appends)."""
        if self._acknowledged:
            acknowledged = self._acknowledged[:]
            del self._acknowledged[: len(acknowledged)]
            self.spool.retire_all(acknowledged)

    def _delivered_unlogged(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed(error, message)

    def _failed(self, error: KafkaError, message: Message) -> None:
        key, value = message.key(), message.value() or b""
        if error.code() in PERMANENT_ERRORS:
            self._quarantine(key, value, error)
            return
        self.metrics.kafka_delivery_failures.inc()
        self._drain_failed = True
        self._carry(key, value, MAYBE_SENT, f"Kafka did not take a record: {error.str()}")

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("fatal Kafka producer error, replacing the producer: %s", error.str())
            self._fatal = error
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down = True
        else:
            log.debug("Kafka producer: %s", error.str())

    def _spool_queued(self, reason: str) -> None:
        """Kafka is gone: new records go to the drain segment at once, and so do the ones
        librdkafka has not sent yet (purged from its queue, they come back through their
        reports). Records already in flight wait for their acknowledgement or timeout."""
        self._enter_spooling(reason)
        self.producer.purge(in_queue=True, in_flight=False)
        self.producer.poll(0)

    def _enter_spooling(self, reason: str) -> None:
        if not self.spool.spooling:
            self.spool.set_spooling(True)
            log.warning("spooling records to %s: %s", self.spool.directory, reason)

    def _carry(self, key: bytes | None, value: bytes, flags: int, reason: str) -> None:
        """Put a record Kafka did not take into the drain segment."""
        self._enter_spooling(reason)
        if self.spool.append(key, value, RECORD, flags) is None:
            self.metrics.records_lost.inc()
            log.error("a record Kafka did not take could not be spooled either: it is lost (%s)", reason)
        else:
            self.metrics.records_spooled.inc()

    def _quarantine(self, key: bytes | None, value: bytes, error: KafkaError) -> None:
        """Kafka will never take this record: keep it aside (same frame format) and move on."""
        self.metrics.records_quarantined.inc()
        log.error("Kafka refused a record for good (%s): kept in %s", error.str(), self.quarantine)
        try:
            self.quarantine.parent.mkdir(parents=True, exist_ok=True)
            with open(self.quarantine, "ab") as file:
                file.write(encode(RECORD, 0, key, value))
        except OSError as exc:
            log.error("could not write the quarantine file: %s", exc)

    def _drain(self) -> bool:
        """Send the drain segments to Kafka in order. False if Kafka is not there (later)."""
        if not self._kafka_answers():
            return False
        if self._replay_pending:
            self._recover_streams()
            self._replay_pending = False
        while True:
            for segment in self.spool.to_drain():
                if not self._drain_segment(segment):
                    return False
            if self.spool.set_spooling(False):
                log.warning("spool drained: records go to Kafka again")
                return True

    def _recover_streams(self) -> None:
        """Start-up: count what the log holds; a stream that started and never finished is
        recorded from its STARTED frame (Kafka may hold its own record: same call id, and the
        flows keep the first)."""
        open_streams: dict[bytes, tuple[bytes | None, bytes]] = {}
        records = 0
        for segment in self.spool.to_drain():
            if not segment.replayed:
                continue
            mark = drained_mark(segment.path)
            for frame in read_frames(segment.path, 0, self.spool.corrupt):  # STARTED frames may precede the mark
                if frame.kind == RECORD:
                    records += frame.end > mark
                    if frame.flags & ENDS_STREAM:
                        open_streams.pop(call_id_of(frame.value) or b"", None)
                elif frame.kind == STARTED:
                    call_id, _, fallback = frame.value.partition(b"\n")
                    open_streams[call_id] = (frame.key, fallback)
                elif frame.kind == FINISHED:  # a log written before ENDS_STREAM
                    open_streams.pop(frame.value, None)
        self.spool.counted(records)
        for key, fallback in open_streams.values():
            self._carry(key, self.sign_fallback(fallback), MAYBE_SENT, "a stream was cut by the gateway's end")
        if open_streams:
            log.warning("%d streams were cut by the gateway's end: recorded without usage", len(open_streams))

    def _drain_segment(self, segment: Segment) -> bool:
        self._drain_failed = False
        batch = batch_bytes = 0
        offset = None
        for frame in self.spool.frames(segment):
            offset = frame.end
            if frame.kind != RECORD:
                continue
            redelivery = segment.replayed or frame.flags & MAYBE_SENT
            self.spool.owe(segment)
            self._produce_waiting(segment, frame.key, frame.value, bool(redelivery))
            batch += 1
            batch_bytes += len(frame.value)
            if batch == DRAIN_BATCH or batch_bytes >= DRAIN_BATCH_BYTES:
                self._finish_batch(segment, offset, batch)
                batch = batch_bytes = 0
                if self._drain_failed:
                    return False
        if offset is not None:
            self._finish_batch(segment, offset, batch)
        if self._drain_failed:
            return False
        self.spool.drained(segment)
        return True

    def _finish_batch(self, segment: Segment, offset: int, count: int) -> None:
        # Every record of the batch is now either acknowledged or carried into the drain
        # segment by its failure report (flush waits for both): the mark may pass them all.
        self.producer.flush()
        self._retire_acknowledged()
        self.spool.mark_drained(segment, offset)
        self.metrics.records_drained.inc(count)

    def _produce_waiting(self, segment: Segment, key: bytes | None, value: bytes, redelivery: bool) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic, value, key, headers=REDELIVERY if redelivery else None, on_delivery=segment.on_delivery
                )
                if redelivery:
                    self.metrics.records_redelivered.inc()
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:
                error = _error_of(exc)
                if error is not None and error.code() in PERMANENT_ERRORS:
                    self._quarantine(key, value, error)
                    self.spool.retire(segment)
                    return
                raise

    def _kafka_answers(self) -> bool:
        try:
            metadata = self.producer.list_topics(self.topic, timeout=1.0)
        except KafkaException:
            return False
        topic = metadata.topics.get(self.topic)
        return bool(metadata.brokers) and topic is not None and topic.error is None

    def _replace_producer(self) -> None:
        old, self._fatal = self.producer, None
        self._enter_spooling("the Kafka producer failed fatally")
        self.producer = Producer(self._config)
        old.purge(in_queue=True, in_flight=True)
        old.flush(0)
        self._retire_acknowledged()


def _error_of(exc: KafkaException) -> KafkaError | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
