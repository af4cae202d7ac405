"""`tokentrail calls show CALL_ID`: one call as recorded, with its captured (redacted) bodies.

The call's row comes from ClickHouse (`llm_calls`). Bodies are captured only for tenants with
capture on (`tokentrail capture --tenant T`); the gateway redacts them before signing and they
travel in the call's signed RawCall on the raw topic (`tokentrail.calls.raw`, kept 7 days), not
in ClickHouse. So the command looks the record up on the raw topic, from just before the call's
time (Kafka's time index), and stops at the end of each partition as of now.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson

from tokentrail.errors import CliError

LOOK_BACK = timedelta(seconds=30)
"""How far before the call's time the raw topic is read (the gateway's clock vs the broker's)."""
KAFKA_WAIT_S = 3.0
CALL_COLUMNS = (
    "call_id, timestamp, completed_at, tenant_id, key_id, actor_type, actor_id, chain_actors, provider, "
    "endpoint, requested_model, model, stream, status, error_type, error_code, input_tokens, output_tokens, "
    "cost_usd, unpriced, latency_ms, request_id, trace_id"
)


def register(subparsers: Any) -> None:
    calls = subparsers.add_parser("calls", help="look at single calls")
    actions = calls.add_subparsers(dest="calls_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="one call with its captured (redacted) bodies, when capture was on",
        description=__doc__.split("\n\n")[1],
    )
    show.add_argument(
        "call_id", metavar="CALL_ID", help="the call's id (llm_calls.call_id, payload.call_id of its event)"
    )
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from tokentrail.storage.cli import opened_store, storage_errors

    with opened_store() as (store, _), storage_errors():
        rows = store.query(
            f"SELECT {CALL_COLUMNS} FROM llm_calls WHERE call_id = {{id:String}} LIMIT 1", {"id": args.call_id}
        )
    if not rows:
        raise CliError(f"no call {args.call_id} in llm_calls (the flows write a call within seconds of it)")
    row = rows[0]
    raw = _raw_call(args.call_id, row["timestamp"])
    bodies = {
        "request_body": raw.get("request_body") if raw else None,
        "response_body": raw.get("response_body") if raw else None,
    }
    if args.json:
        record = {key: _plain(value) for key, value in row.items()}
        sys.stdout.write(orjson.dumps({**record, **bodies, "raw_record_found": raw is not None}).decode() + "\n")
        return 0
    for key, value in row.items():
        print(f"{key:16} {_plain(value)}")
    if raw is None:
        print("bodies           not found: the raw record is no longer on the raw topic (kept 7 days)")
    elif bodies["request_body"] is None and bodies["response_body"] is None:
        print(
            f"bodies           not captured: capture was off for tenant {row['tenant_id']} "
            f"(`tokentrail capture --tenant {row['tenant_id']}` turns it on for later calls)"
        )
    else:
        for name, body in bodies.items():
            print(f"\n{name.replace('_', ' ')} (redacted):")
            print(body if body is not None else "(none)")
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return " -> ".join(map(str, value))
    return f"{value:f}" if hasattr(value, "quantize") else value


def _raw_call(call_id: str, at: datetime) -> dict[str, Any] | None:
    """The RawCall of `call_id` on the raw topic, read from LOOK_BACK before `at`."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from tokentrail.kafka_log import kafka_logger
    from tokentrail.kafka_reach import require_kafka
    from tokentrail.settings import CoreSettings, load
    from tokentrail.topics import CALLS_RAW

    core = load(CoreSettings)
    bootstrap, topic = core.bootstrap(), core.topic(CALLS_RAW)
    require_kafka(bootstrap, core.home, KAFKA_WAIT_S)  # the captured bodies are on its raw topic
    consumer = Consumer(
        {
            **core.kafka_client_config(),
            "group.id": f"tokentrail-calls-{uuid.uuid4().hex}",  # assign() only: never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "logger": kafka_logger("tokentrail.calls.librdkafka"),
        }
    )
    needle = orjson.dumps(call_id)
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        since_ms = int((at - LOOK_BACK).timestamp() * 1000)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in metadata.partitions], timeout=10
        )
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in metadata.partitions}
        pending = {tp.partition for tp in starts if tp.offset >= 0 and tp.offset < ends[tp.partition]}
        consumer.assign([tp for tp in starts if tp.partition in pending])
        while pending:
            for message in consumer.consume(1000, timeout=1.0):
                if message.error() is not None:
                    pending.discard(message.partition())
                    continue
                value = message.value() or b""
                if needle in value:
                    record: dict[str, Any] = orjson.loads(value)
                    if record.get("kind") == "call" and record.get("call_id") == call_id:
                        return record
                partition, offset = message.partition(), message.offset()
                if partition is not None and offset is not None and offset + 1 >= ends[partition]:
                    pending.discard(partition)
        return None
    except KafkaException as exc:
        raise CliError(f"reading {topic} at {bootstrap} failed: {exc}") from None
    finally:
        consumer.close()
