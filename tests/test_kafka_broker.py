"""The local Kafka broker: real records through it, topics as docs/architecture.md, Contracts says, and the
`tokentrail kafka up|down|status` CLI run as a user runs it (a subprocess in a fresh home)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from tests.fixtures.kafka import consume_all, require_java_and_maven
from tokentrail.broker.admin import DEFAULT_PARTITIONS
from tokentrail.broker.jars import java_major_version
from tokentrail.broker.server import free_port, stop_broker
from tokentrail.settings import CoreSettings, broker_state_file
from tokentrail.topics import CALLS_RAW, EVENTS, SEVEN_DAYS_MS, TOPICS


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0, "records still unsent after 10 s"


# --- records and topics, on the session broker ---------------------------------------------


@pytest.mark.kafka
def test_a_produced_record_is_consumed_back(kafka_topics):
    topic = kafka_topics.name(EVENTS)
    produce(kafka_topics.bootstrap, topic, [(b"tenant-a", b'{"n": 1}'), (b"tenant-a", b'{"n": 2}')])

    messages = consume_all(kafka_topics.bootstrap, topic, expected=2)

    assert [(m.key(), m.value()) for m in messages] == [(b"tenant-a", b'{"n": 1}'), (b"tenant-a", b'{"n": 2}')]


@pytest.mark.kafka
def test_topics_carry_the_cleanup_policy_of_the_design(kafka_topics):
    admin = AdminClient({"bootstrap.servers": kafka_topics.bootstrap})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, kafka_topics.name(s.name)) for s in TOPICS]
    configs = {
        resource.name: {name: entry.value for name, entry in future.result().items()}
        for resource, future in admin.describe_configs(resources).items()
    }

    policy = {spec.name: configs[kafka_topics.name(spec.name)]["cleanup.policy"] for spec in TOPICS}
    assert policy == {
        "tokentrail.calls.raw": "delete",
        "tokentrail.events": "delete",
        "tokentrail.identities": "compact",
        "tokentrail.controls": "compact",
        "tokentrail.alerts": "delete",
        "tokentrail.dlq": "delete",
    }
    assert configs[kafka_topics.name(CALLS_RAW)]["retention.ms"] == str(SEVEN_DAYS_MS)
    metadata = admin.list_topics(timeout=10).topics
    assert {len(metadata[kafka_topics.name(s.name)].partitions) for s in TOPICS} == {DEFAULT_PARTITIONS}


@pytest.mark.kafka
def test_the_broker_compacts_a_compacted_topic_to_the_latest_record_per_key(kafka_broker):
    """The log cleaner really runs: old values of a key disappear, the latest stays. The topic
    rolls a segment every 100 ms (only closed segments are compacted)."""
    topic = f"compaction-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    config = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"}
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result()
    produce(kafka_broker.bootstrap, topic, [(b"key-1", f"old-{i}".encode()) for i in range(20)])
    produce(kafka_broker.bootstrap, topic, [(b"key-1", b"latest")])

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # Each write after 100 ms starts a new segment, closing the ones that hold key-1.
        produce(kafka_broker.bootstrap, topic, [(uuid.uuid4().bytes, b"filler")])
        values = [m.value() for m in consume_all(kafka_broker.bootstrap, topic) if m.key() == b"key-1"]
        if values == [b"latest"]:
            break
        time.sleep(0.2)
    assert values == [b"latest"]


# --- the CLI, as a user runs it --------------------------------------------------------------


def tokentrail(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("TOKENTRAIL_KAFKA_BOOTSTRAP", "TOKENTRAIL_TOPIC_PREFIX")}
    return subprocess.run(
        [str(Path(sys.executable).with_name("tokentrail")), *args],
        env={**base, "TOKENTRAIL_HOME": str(home), **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


def gone(pid: int) -> bool:
    """No such process, or only its zombie (exited; the parent that ran `up` is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def cli_home(tmp_path):
    """A fresh TOKENTRAIL_HOME; whatever broker a test started in it is stopped, pass or fail."""
    require_java_and_maven()
    yield tmp_path / "home"
    stop_broker(tmp_path / "home")


@pytest.mark.kafka
def test_cli_up_twice_status_and_down(cli_home):
    port = free_port()

    first = tokentrail(cli_home, "kafka", "up", "--port", str(port))
    assert first.returncode == 0, first.stderr
    state = orjson.loads(broker_state_file(cli_home).read_bytes())
    assert state["bootstrap"] == f"127.0.0.1:{port}" and state["port"] == port
    assert f"127.0.0.1:{port}" in first.stdout
    assert CoreSettings(home=cli_home).bootstrap() == f"127.0.0.1:{port}"
    topics = AdminClient({"bootstrap.servers": state["bootstrap"]}).list_topics(timeout=10).topics
    assert {spec.name for spec in TOPICS} <= set(topics)

    started = time.monotonic()
    second = tokentrail(cli_home, "kafka", "up")
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - started < 10
    assert "already running" in second.stdout
    assert orjson.loads(broker_state_file(cli_home).read_bytes())["pid"] == state["pid"]
    assert not gone(state["pid"])

    status = tokentrail(cli_home, "kafka", "status")
    assert status.returncode == 0 and str(state["pid"]) in status.stdout

    down = tokentrail(cli_home, "kafka", "down")
    assert down.returncode == 0, down.stderr
    assert gone(state["pid"])
    assert not broker_state_file(cli_home).exists()

    stopped = tokentrail(cli_home, "kafka", "status")
    assert stopped.returncode == 1 and "stopped" in stopped.stdout


@pytest.mark.kafka
def test_a_busy_port_is_one_line_naming_it(cli_home):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = tokentrail(cli_home, "kafka", "up", "--port", str(port))

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"port {port}" in result.stderr and "--port" in result.stderr
    assert not broker_state_file(cli_home).exists()


@pytest.mark.kafka
def test_a_damaged_data_directory_says_reset_and_reset_fixes_it(cli_home):
    data = cli_home / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_bytes(b"\xff\xfe not a properties file")

    unreadable = tokentrail(cli_home, "kafka", "up", "--port", str(free_port()))
    assert unreadable.returncode == 2
    assert unreadable.stderr.count("\n") == 1 and "--reset" in unreadable.stderr

    assert tokentrail(cli_home, "kafka", "up", "--port", str(free_port()), "--reset").returncode == 0
    assert tokentrail(cli_home, "kafka", "down").returncode == 0

    # Damage Kafka itself notices only when it starts: the metadata log directory is a file.
    metadata_log = data / "__cluster_metadata-0"
    subprocess.run(["rm", "-rf", str(metadata_log)], check=True)
    metadata_log.write_text("not a directory")
    died = tokentrail(cli_home, "kafka", "up", "--port", str(free_port()))
    assert died.returncode == 2
    assert "exited during start" in died.stderr and "--reset" in died.stderr
    assert "__cluster_metadata-0" in died.stderr  # the log's last lines are shown
    assert tokentrail(cli_home, "kafka", "status").returncode == 1

    fixed = tokentrail(cli_home, "kafka", "up", "--port", str(free_port()), "--reset")
    assert fixed.returncode == 0, fixed.stderr


@pytest.mark.kafka
def test_reset_never_wipes_a_directory_that_is_not_kafkas(cli_home, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")

    result = tokentrail(cli_home, "kafka", "up", "--port", str(free_port()), "--data", str(precious), "--reset")

    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "no Kafka meta.properties" in result.stderr and "empty or new directory" in result.stderr
    assert (precious / "notes.txt").read_text() == "keep me"


# --- missing or old tools: one line, before anything starts -----------------------------------


def fake_java(bin_dir: Path, banner: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    java.chmod(0o755)


@pytest.mark.parametrize(
    ("banner", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_402"', 8),
        ("something else", None),
    ],
)
def test_java_major_version(banner, major):
    assert java_major_version(banner) == major


def test_missing_java_is_one_line(tmp_path):
    result = tokentrail(tmp_path, "kafka", "up", env={"PATH": str(tmp_path / "empty"), "JAVA_HOME": ""})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "Java 17+" in result.stderr and "`java`" in result.stderr


def test_old_java_is_one_line(tmp_path):
    fake_java(tmp_path / "bin", 'java version "1.8.0_402"')
    result = tokentrail(tmp_path, "kafka", "up", env={"PATH": str(tmp_path / "bin"), "JAVA_HOME": ""})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "is Java 8" in result.stderr


def test_missing_maven_is_one_line_when_the_jars_are_not_cached(tmp_path):
    fake_java(tmp_path / "bin", 'openjdk version "17.0.15" 2025-04-15')
    env = {"PATH": str(tmp_path / "bin"), "JAVA_HOME": "", "TOKENTRAIL_KAFKA_CACHE": str(tmp_path / "cache")}
    result = tokentrail(tmp_path, "kafka", "up", "--port", str(free_port()), env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "Maven (`mvn`)" in result.stderr


def test_unknown_flag_is_refused_by_the_parser(tmp_path):
    result = tokentrail(tmp_path, "kafka", "up", "--prot", "1")
    assert result.returncode == 2 and "unrecognized arguments: --prot" in result.stderr
