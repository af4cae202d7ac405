"""librdkafka's log lines through `tokentrail.kafka_log`: sensible levels, rate-limited."""

import logging

from tokentrail.kafka_log import KafkaLogger

FORMAT = "%s [%s] %s"  # how confluent-kafka calls the logger


def test_an_unreachable_broker_is_info_once_per_period_with_the_count(caplog):
    caplog.set_level(logging.DEBUG, logger="test.kafka")
    log = KafkaLogger("test.kafka", rate_limit_s=60)
    for _ in range(200):
        log.log(
            logging.ERROR,
            FORMAT,
            "FAIL",
            "rdkafka#producer-1",
            "Connect to ipv4#127.0.0.1:1 failed: Connection refused",
        )
    assert [(r.levelno, r.getMessage()[:40]) for r in caplog.records] == [
        (logging.INFO, "Kafka not reachable or not ready yet, re")
    ]
    log.rate_limit_s = 0  # the period is over: the next line says how many were suppressed
    log.log(logging.ERROR, FORMAT, "FAIL", "rdkafka#producer-1", "Connection refused")
    assert "(199 similar lines suppressed" in caplog.records[-1].getMessage()


def test_a_starting_broker_is_debug_and_other_lines_keep_their_level(caplog):
    caplog.set_level(logging.DEBUG, logger="test.kafka2")
    log = KafkaLogger("test.kafka2")
    log.log(
        logging.WARNING,
        FORMAT,
        "GETPID",
        "rdkafka#producer-1",
        "Failed to acquire idempotence PID from broker: Coordinator load in progress: retrying",
    )
    log.log(
        logging.WARNING, FORMAT, "CONFWARN", "rdkafka#producer-1", "Configuration property x is a consumer property"
    )
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.WARNING]
