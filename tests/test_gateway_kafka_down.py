"""Invariant 4 (docs/architecture.md) with a real broker of the test's own: Kafka stopped
mid-load, every request still succeeds; once Kafka is back the spool drains and every call is
on the topic exactly once. Also: a SIGKILL of the gateway under load loses no answered call (the write-ahead log)
and the flows make each exactly one row; a full disk never reaches a client; a 2 GB log left by
a crash drains in bounded memory."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from gateway.delivery import REDELIVERY_HEADER
from gateway.spool import RECORD, STARTED, SUFFIX, encode, read_frames
from schemas.models import Actor
from tests.fixtures.gateway import OPERATOR_KEY, SIGNING_KEY, gateway_env, spawn_gateway, wait_for_key
from tests.fixtures.kafka import KafkaTopics, consume_all, require_java_and_maven
from tokentrail.broker.server import free_port, running_broker, stop_broker, up
from tokentrail.control.plane import ControlPlane
from tokentrail.settings import CoreSettings
from tokentrail.topics import CALLS_RAW

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def own_broker(tmp_path):
    """A broker only this test stops and starts (the session broker is shared)."""
    require_java_and_maven()
    home, port = tmp_path / "kafka-home", free_port()
    prefix = f"t{uuid.uuid4().hex[:8]}."
    handle, _, _ = up(home, port=port, topic_prefix=prefix, die_with_parent=True)
    topics = KafkaTopics(handle.bootstrap, prefix)
    yield home, port, topics
    stop_broker(home)


class Load:
    """Worker threads sending requests over kept-alive connections until stopped."""

    def __init__(self, url: str, key: str, workers: int = 4, pause: float = 0.005) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port, self.key, self.pause = int(port), key, pause
        self.statuses: Counter = Counter()
        self.answered: list[str] = []
        """Request ids of the requests that got a whole answer."""
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _work(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        while not self.stop.is_set():
            request_id = uuid.uuid4().hex
            try:
                connection.request(
                    "POST",
                    "/v1/chat/completions",
                    body=BODY,
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {self.key}",
                        "x-request-id": request_id,
                    },
                )
                response = connection.getresponse()
                response.read()
                self.statuses[response.status] += 1
                if response.status == 200:
                    self.answered.append(request_id)
            except (OSError, http.client.HTTPException) as exc:
                self.statuses[type(exc).__name__] += 1
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
            time.sleep(self.pause)
        connection.close()


def mint(topics: KafkaTopics) -> str:
    plane = ControlPlane(
        CoreSettings(kafka_bootstrap=topics.bootstrap, topic_prefix=topics.prefix, operator_key=OPERATOR_KEY)
    )
    return plane.create_key("acme", Actor(type="system", id="load"))[1]


def calls_on_topic(topics: KafkaTopics, expected: int | None = None, timeout: float = 30.0) -> Counter:
    messages = consume_all(topics.bootstrap, topics.name(CALLS_RAW), expected, timeout)
    return Counter(orjson.loads(m.value())["call_id"] for m in messages if orjson.loads(m.value())["kind"] == "call")


def raw_calls(topics: KafkaTopics, timeout: float = 60.0) -> list[tuple[dict, bool]]:
    """(call record, carries the redelivery header) for each call on the raw topic up to its
    end as of now (the gateway has drained: every record is acknowledged), in order."""
    messages = consume_all(topics.bootstrap, topics.name(CALLS_RAW), None, timeout)
    out = []
    for message in messages:
        record = orjson.loads(message.value())
        if record["kind"] == "call":
            out.append((record, (REDELIVERY_HEADER, b"1") in (message.headers() or [])))
    return out


def wait_delivering(gateway, key: str, topics: KafkaTopics) -> None:
    """The key works and the gateway's first record is on the topic: a fresh broker's
    transaction coordinator has loaded and the idempotent producer has its id, so what
    follows measures steady state, not broker start-up."""
    wait_for_key(gateway, key)
    assert sum(calls_on_topic(topics, expected=1).values()) >= 1, "the gateway delivered nothing"


def wait_drained(gateway, timeout: float = 60.0) -> None:
    """Not spooling, and every record written ahead acknowledged by Kafka."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = gateway.metrics()
        with urllib.request.urlopen(gateway.url + "/readyz", timeout=5) as response:
            spooling = orjson.loads(response.read())["spooling"]
        if metrics["tokentrail_gateway_spool_records"] == 0 and not spooling:
            return
        time.sleep(0.2)
    raise AssertionError(f"spool not drained within {timeout}s: {gateway.logs()[-2000:]}")


def test_kafka_stopped_mid_load_every_request_succeeds_and_every_call_lands(own_broker, mock_upstream, tmp_path):
    """Every call is on the topic after the drain. A record the broker appended just before it
    stopped, whose acknowledgement never came, is sent again from the spool: that second copy
    must carry the redelivery header (the flows count a call once, docs/architecture.md)."""
    home, port, topics = own_broker
    key = mint(topics)
    env = {
        **gateway_env(topics, mock_upstream.url),
        "TOKENTRAIL_KAFKA_MESSAGE_TIMEOUT_MS": "3000",
        # This test is about the spool: a broker restart on a loaded machine can outlast the
        # fail-closed limit (30 s), which test_control_trust.py covers on its own.
        "TOKENTRAIL_CONTROL_STALE_AFTER_S": "0",
    }
    gateway = spawn_gateway(env, tmp_path / "gateway-home")
    try:
        wait_delivering(gateway, key, topics)
        with Load(gateway.url, key) as load:
            time.sleep(1.5)
            stop_broker(home)
            stopped_at = sum(load.statuses.values())
            time.sleep(5)  # longer than the message timeout: queued records must reach the spool
            during_outage = sum(load.statuses.values()) - stopped_at
            spooled = gateway.metrics()["tokentrail_gateway_records_spooled_total"]
            up(home, port=port, topic_prefix=topics.prefix, die_with_parent=True)
            time.sleep(1.5)
        assert set(load.statuses) == {200}, load.statuses
        assert during_outage > 100 and spooled > 0
        wait_drained(gateway)
        total = load.statuses[200] + 1  # + the wait_for_key probe
        records = raw_calls(topics)  # drained: every record is acknowledged, so the topic's end is final
        calls = Counter(record["call_id"] for record, _ in records)
        assert len(calls) == total, f"{total - len(calls)} calls missing"
        first_seen: set[str] = set()
        for record, redelivery in records:
            assert redelivery or record["call_id"] not in first_seen, "a second copy without the redelivery header"
            first_seen.add(record["call_id"])
        metrics = gateway.metrics()
        assert metrics["tokentrail_gateway_records_drained_total"] >= spooled
    finally:
        gateway.stop()


@pytest.mark.timeout(900)  # a broker, two gateways and the flows, on a loaded 2-core machine
@pytest.mark.parametrize("broker", ["steady", "paused"])
def test_sigkill_under_load_loses_no_answered_call(own_broker, mock_upstream, tmp_path, broker):
    """Every request that got an answer is one row in ClickHouse after the gateway is killed
    under load and restarted on its spool, also when the broker stops acknowledging (SIGSTOP
    for 2 s) around the kill. A record may reach the topic twice (Kafka took it but the kill
    came before its acknowledgement): every second copy carries the redelivery header, and the
    flows write it once."""
    home, port, topics = own_broker
    key = mint(topics)
    env = gateway_env(topics, mock_upstream.url)
    gateway_home = tmp_path / "gateway-home"
    gateway = spawn_gateway(env, gateway_home)
    wait_delivering(gateway, key, topics)
    broker_pid = running_broker(home).pid
    with Load(gateway.url, key, workers=4, pause=0.0) as load:
        time.sleep(2)
        if broker == "paused":
            os.kill(broker_pid, signal.SIGSTOP)
            time.sleep(1)
        gateway.kill()
    answered = set(load.answered)
    if broker == "paused":
        time.sleep(1)
        os.kill(broker_pid, signal.SIGCONT)
    restarted = spawn_gateway(env, gateway_home)
    try:
        wait_drained(restarted)
        records = raw_calls(topics)
    finally:
        restarted.stop()
    by_request = Counter(record["request_id"] for record, _ in records)
    lost = answered - set(by_request)
    print(
        f"SIGKILL under load ({broker} broker): {len(answered)} answered, {len(lost)} lost, "
        f"{sum(n - 1 for n in by_request.values())} sent twice (all marked)"
    )
    assert not lost
    first_seen: set[str] = set()
    for record, redelivery in records:
        if record["call_id"] in first_seen:
            assert redelivery, "a second copy without the redelivery header"
        first_seen.add(record["call_id"])

    rows = rows_by_request(topics, tmp_path / "flows-home", expected=len(first_seen))
    doubled = {request_id for request_id in answered if rows.get(request_id, 0) > 1}
    missing = {request_id for request_id in answered if request_id not in rows}
    print(f"ClickHouse: {len(answered)} answered, {len(missing)} missing, {len(doubled)} doubled")
    assert not missing and not doubled


def rows_by_request(topics: KafkaTopics, home, expected: int) -> dict[str, int]:
    """Run `tokentrail flows` over the raw topic until `expected` calls are rows; rows per request id."""
    from tests.test_flows_e2e import FlowsProcess, query_embedded

    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **topics.env,
        "TOKENTRAIL_HOME": str(home),
        "TOKENTRAIL_SIGNING_KEY": SIGNING_KEY,
        "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY,
        "TOKENTRAIL_FLOWS_METRICS_PORT": str(free_port()),
        "TOKENTRAIL_FLOWS_SNAPSHOT_SECONDS": "1",
    }
    env.pop("TOKENTRAIL_CLICKHOUSE_URL", None)
    flows = FlowsProcess(home, env)
    flows.start()
    try:
        written = flows.wait_for("llm_calls", expected, timeout=180)
        assert written >= expected, flows.log.read_text()[-3000:]
        time.sleep(2)  # anything doubled would show by now
    finally:
        flows.kill(signal.SIGTERM)
    rows = query_embedded(home, "SELECT request_id, count() AS n FROM llm_calls GROUP BY request_id")
    return {row["request_id"]: row["n"] for row in rows}


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: the spool's disk fills within a second of load."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_gives_clients_normal_answers_and_a_metric(own_broker, mock_upstream, tmp_path, small_disk):
    _, _, topics = own_broker
    key = mint(topics)
    env = {**gateway_env(topics, mock_upstream.url), "TOKENTRAIL_SPOOL_DIR": str(small_disk)}
    gateway = spawn_gateway(env, tmp_path / "gateway-home")
    try:
        wait_for_key(gateway, key)
        with Load(gateway.url, key, workers=4, pause=0.0) as load:
            time.sleep(4)
        failures = gateway.metrics()["tokentrail_gateway_spool_write_failures_total"]
        wait_drained(gateway)
    finally:
        gateway.stop()
    assert set(load.statuses) == {200}, load.statuses
    assert failures > 0, "the disk never filled: the test measured nothing"
    on_topic = {record["request_id"] for record, _ in raw_calls(topics)}
    assert set(load.answered) <= on_topic  # Kafka was there: records went from memory


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.timeout(900)
def test_a_2_gb_log_left_by_a_crash_drains_with_rss_under_300_mb(own_broker, mock_upstream, tmp_path):
    """Frames written straight into one 2 GiB segment (what a long outage used to leave); the
    gateway started on it scans and drains it with its RSS sampled throughout."""
    _, _, topics = own_broker
    spool = tmp_path / "gateway-home" / "spool"
    spool.mkdir(parents=True)
    value = (b'{"kind":"filler","n":"%s"}' % uuid.uuid4().hex.encode()).ljust(256 * 1024, b" ")
    frame = encode(RECORD, 0, b"acme", value)
    blocks = (2 << 30) // (len(frame) * 64)
    frames = blocks * 64
    with open(spool / f"{1:020d}.wal", "wb") as file:
        block = frame * 64
        for _ in range(blocks):
            file.write(block)
    env = {**gateway_env(topics, mock_upstream.url), "TOKENTRAIL_SPOOL_WRITE_AHEAD": "true"}
    gateway = spawn_gateway(env, tmp_path / "gateway-home")
    peak = 0.0
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            peak = max(peak, rss_mib(gateway.pid))
            if not list(spool.glob("*.wal")):
                break
            time.sleep(0.2)
        drained = gateway.metrics()["tokentrail_gateway_records_drained_total"]
    finally:
        gateway.stop()
    print(f"2 GiB log: {frames} records drained, peak RSS {peak:.0f} MiB")
    assert drained == frames
    assert peak < 300


def wait_started_frame(spool: Path, timeout: float = 5.0) -> None:
    """Until the log holds a STARTED frame (a running stream is logged within the gateway's
    stream check interval, 0.2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(frame.kind == STARTED for path in spool.glob(f"*{SUFFIX}") for frame in read_frames(path)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no STARTED frame in {spool} within {timeout:.0f} s")


def test_a_stream_cut_by_a_gateway_kill_is_recorded_once_after_the_restart(own_broker, mock_upstream, tmp_path):
    """The gateway dies in the middle of relaying a stream that has run past its stream check:
    the restart records the call from its STARTED frame (the status answered, `error_type: gateway_ended`, no usage), once."""
    _, _, topics = own_broker
    key = mint(topics)
    env = gateway_env(topics, mock_upstream.url)
    gateway_home = tmp_path / "gateway-home"
    gateway = spawn_gateway(env, gateway_home)
    wait_delivering(gateway, key, topics)
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    host, port = gateway.url.removeprefix("http://").split(":")
    request_id = uuid.uuid4().hex
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"x-mock-chunk-delay-ms: 200\r\nx-request-id: "
            + request_id.encode()
            + b"\r\nAuthorization: Bearer "
            + key.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        assert connection.recv(65536).startswith(b"HTTP/1.1 200")  # the stream has begun
        wait_started_frame(gateway_home / "spool")  # it has run past the gateway's stream check
        gateway.kill()
    restarted = spawn_gateway(env, gateway_home)
    try:
        wait_drained(restarted)
        calls = [record for record, _ in raw_calls(topics) if record["request_id"] == request_id]
    finally:
        restarted.stop()
    assert len(calls) == 1, calls
    (call,) = calls
    assert call["status"] == 200 and call["stream"] is True
    assert call["error_type"] == "gateway_ended" and call["usage"] is None
