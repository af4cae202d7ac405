"""`tokentrail alerts deliver`: the thin process between `tokentrail.alerts` and the receivers.

Detection publishes every alert state change to `tokentrail.alerts` (keyed by fingerprint);
this relay consumes it in a consumer group and hands each state to `AlertDelivery`, so a dead
or slow receiver never touches the detect flow. Offsets are committed only when every receiver
has taken everything read so far: a relay killed while a receiver is down reads those states
again on restart (at-least-once; receivers see the same fingerprint and revision twice at
worst). A record that is not an Alert is logged, counted and skipped.

Known limit: after a restart, a firing alert whose last state was delivered before it is not
re-posted to Alertmanager until detection publishes its next state; Alertmanager resolves it
`4 x TOKENTRAIL_ALERT_RESEND_SECONDS` after the last post meanwhile.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, KafkaError, KafkaException
from prometheus_client import Counter

from alerting.delivery import AlertDelivery
from schemas import wire
from schemas.models import Alert
from tokentrail.kafka_log import kafka_logger

log = logging.getLogger("tokentrail.alerting.relay")

BAD_RECORDS = Counter("tokentrail_alerts_bad_records_total", "Records on the alerts topic that are not an Alert")
GROUP = "tokentrail-alert-delivery"


def relay(
    kafka: dict[str, str], topic: str, delivery: AlertDelivery, stop: threading.Event, group: str = GROUP
) -> None:
    """Consume `topic` into `delivery` until `stop` is set. The caller starts and closes `delivery`.
    `kafka`: bootstrap and security (`CoreSettings.kafka_client_config()`)."""
    consumer = Consumer(
        {
            **kafka,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": kafka_logger("tokentrail.alerting.librdkafka"),
        }
    )
    consumer.subscribe([topic])
    uncommitted = False
    try:
        while not stop.is_set():
            for message in consumer.consume(num_messages=500, timeout=0.2):
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("alerts topic: %s", error.str())
                    continue
                uncommitted = True
                try:
                    alert = wire.loads(Alert, message.value() or b"")
                except wire.SchemaError as exc:
                    BAD_RECORDS.inc()
                    log.warning("skipped a record on %s that is not an Alert: %s", topic, exc)
                    continue
                delivery.submit(alert)
            if uncommitted and delivery.pending() == 0:
                try:
                    consumer.commit(asynchronous=False)
                    uncommitted = False
                except KafkaException as exc:
                    log.warning("could not commit alert offsets (will retry): %s", exc)
    finally:
        consumer.close()
