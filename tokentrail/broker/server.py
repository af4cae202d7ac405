"""A single-node Apache Kafka (KRaft, combined broker + controller) run from TOKENTRAIL_HOME.

Files under `<home>/kafka/`:
  broker.json        state of the running broker (`tokentrail.settings.broker_state_file`)
  cluster.id         the cluster id this home formatted, to spot a foreign data directory
  server.properties  written on every start (ports may change)
  data/              the default data directory (`--data` picks another)
  logs/server.log    the broker's log (rolled at 10 MB); logs/kafka.out the JVM's own output
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from tokentrail import processes
from tokentrail.broker import admin
from tokentrail.broker.jars import (
    KAFKA_VERSION,
    LOG4J_CONFIG,
    BrokerError,
    BrokerSettings,
    find_java,
    kafka_libs,
)
from tokentrail.settings import broker_state_file, load

DEFAULT_PORT = 9092
HOST = "127.0.0.1"
NODE_ID = "1"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",  # two cores and a small heap: no parallel GC threads competing with the broker
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
RESET_HINT = "rerun with --reset to wipe it and start an empty broker"
SASL_PROTOCOLS = ("SASL_PLAINTEXT",)
"""Security the local broker's client listener can run: PLAINTEXT (default) or SASL_PLAINTEXT
with PLAIN or SCRAM (TLS needs certificates; use a real cluster for it)."""
_SAFE_CREDENTIAL = re.compile(r"^[A-Za-z0-9._~@+-]{1,128}$")


@dataclass(frozen=True, slots=True)
class BrokerHandle:
    """The broker a home runs, as recorded in its state file."""

    bootstrap: str
    pid: int
    port: int
    controller_port: int
    data_dir: str
    config: str
    log_file: str
    kafka_version: str


def kafka_dir(home: Path) -> Path:
    return Path(home) / "kafka"


def running_broker(home: Path) -> BrokerHandle | None:
    """The broker this home started, if its process is still alive (a stale state file is ignored)."""
    try:
        handle = BrokerHandle(**orjson.loads(broker_state_file(Path(home)).read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None
    return handle if _is_our_broker(handle) else None


def start_broker(
    home: Path,
    port: int | None = None,
    data_dir: Path | None = None,
    reset: bool = False,
    die_with_parent: bool = False,
    security: dict[str, str] | None = None,
) -> tuple[BrokerHandle, bool]:
    """Start the home's broker, or reuse the one already running. Returns (handle, started).

    Returns once the broker answers a metadata request. `die_with_parent` ties the broker's life
    to this process (test fixtures: no broker outlives a killed test run). `security` is the
    clients' librdkafka TLS/SASL configuration (`CoreSettings.kafka_client_config()`): with
    SASL_PLAINTEXT the broker's client listener requires SASL with that mechanism, and that
    user is the one it knows (SCRAM credentials are added when the data directory is formatted).
    """
    sasl = _broker_sasl(security or {})
    home = Path(home).resolve()
    existing = running_broker(home)
    if existing:
        if port is not None and port != existing.port:
            raise BrokerError(
                f"a broker already runs at {existing.bootstrap} (pid {existing.pid}); "
                "`tokentrail kafka down` first to move it to another port"
            )
        if reset:
            raise BrokerError(
                f"--reset wipes the data of a stopped broker, and one runs at {existing.bootstrap} "
                f"(pid {existing.pid}); `tokentrail kafka down` first"
            )
        if not admin.wait_ready(existing.bootstrap, timeout=START_TIMEOUT, security=security):
            raise BrokerError(
                f"the broker at {existing.bootstrap} (pid {existing.pid}) does not answer; "
                f"see {existing.log_file}, or `tokentrail kafka down` and up again"
            )
        return existing, False

    port = DEFAULT_PORT if port is None else port
    java = find_java()
    _require_free(port)
    libs = kafka_libs(load(BrokerSettings).kafka_cache)
    directory = kafka_dir(home)
    data = Path(data_dir).resolve() if data_dir else directory / "data"
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    controller_port = free_port()
    config = directory / "server.properties"
    config.write_text(_server_properties(port, controller_port, data, sasl))
    java_command = [
        java,
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={logs}",
        "-cp",
        str(libs / "*"),
    ]
    _prepare_data_dir(directory, data, config, java_command, reset, sasl)

    with open(logs / "kafka.out", "wb") as jvm_output:
        process = subprocess.Popen(
            [*java_command, "kafka.Kafka", str(config)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=jvm_output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a daemon: Ctrl-C in the shell that ran `up` must not reach it
            preexec_fn=processes.die_with_parent if die_with_parent else None,
        )
    handle = BrokerHandle(
        bootstrap=f"{HOST}:{port}",
        pid=process.pid,
        port=port,
        controller_port=controller_port,
        data_dir=str(data),
        config=str(config),
        log_file=str(logs / "server.log"),
        kafka_version=KAFKA_VERSION,
    )
    # Recorded before the wait, so an interrupted `up` still leaves a broker `down` can stop.
    _write_state(home, handle)
    if not admin.wait_ready(
        handle.bootstrap, timeout=START_TIMEOUT, alive=lambda: process.poll() is None, security=security
    ):
        code = process.poll()
        if code is None:
            _terminate(process.pid, process)
        broker_state_file(home).unlink(missing_ok=True)
        what = (
            f"exited during start (exit code {code})"
            if code is not None
            else (f"did not answer within {START_TIMEOUT:.0f}s and was stopped")
        )
        raise BrokerError(
            f"the Kafka broker {what}: see {handle.log_file} (last lines above); "
            f"if its data directory {data} is damaged, {RESET_HINT}",
            details=_tail(logs),
        )
    return handle, True


def up(
    home: Path,
    port: int | None = None,
    data_dir: Path | None = None,
    reset: bool = False,
    topic_prefix: str = "",
    die_with_parent: bool = False,
    security: dict[str, str] | None = None,
) -> tuple[BrokerHandle, bool, list[str]]:
    """What `tokentrail kafka up` does: start (or reuse) the broker, then make sure every topic
    of docs/architecture.md, Contracts exists. Returns (handle, started, topics created)."""
    handle, started = start_broker(home, port, data_dir, reset, die_with_parent, security)
    return handle, started, admin.ensure_topics(handle.bootstrap, prefix=topic_prefix, security=security)


def stop_broker(home: Path, timeout: float = STOP_TIMEOUT) -> BrokerHandle | None:
    """Stop the home's broker by its pid (SIGTERM, then SIGKILL after `timeout`) and remove the
    state file. Returns the broker stopped, or None when none was running."""
    home = Path(home).resolve()
    handle = running_broker(home)
    if handle:
        _terminate(handle.pid, timeout=timeout)
    broker_state_file(home).unlink(missing_ok=True)
    return handle


def new_cluster_id() -> str:
    """A KRaft cluster id in Kafka's own format (`kafka-storage random-uuid`): url-safe base64,
    never starting with "-" (the formatter would read it as an option), as Kafka's own ids."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _broker_sasl(security: dict[str, str]) -> tuple[str, str, str] | None:
    """(mechanism, username, password) the broker's client listener requires, or None (PLAINTEXT)."""
    protocol = security.get("security.protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return None
    if protocol not in SASL_PROTOCOLS:
        raise BrokerError(
            f"the local broker runs PLAINTEXT or SASL_PLAINTEXT, not {protocol}; use a real cluster for TLS"
        )
    user, password = security.get("sasl.username", ""), security.get("sasl.password", "")
    if not (_SAFE_CREDENTIAL.match(user) and _SAFE_CREDENTIAL.match(password)):
        raise BrokerError(
            "the local broker's SASL user and password must be 1-128 letters, digits or ._~@+- "
            "(they are written into its JAAS configuration)"
        )
    return security["sasl.mechanism"], user, password


def _server_properties(port: int, controller_port: int, data: Path, sasl: tuple[str, str, str] | None = None) -> str:
    listener = "PLAINTEXT" if sasl is None else "SASL_PLAINTEXT"
    settings = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        "listeners": f"{listener}://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"{listener}://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
        # A static voter set: the controller port may change between starts of the same data.
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{controller_port}",
        "log.dirs": str(data),
        # One node: internal topics cannot have more than one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # A consumer group starts consuming at once instead of waiting 3 s for more members.
        "group.initial.rebalance.delay.ms": "0",
        # Topics come from `tokentrail kafka up` with their cleanup policy; a typo must fail loudly.
        "auto.create.topics.enable": "false",
        # The cleaner looks for work every second, so compaction is observable in tests and demos.
        "log.cleaner.backoff.ms": "1000",
    }
    if sasl is not None:
        mechanism, user, password = sasl
        if mechanism == "PLAIN":
            jaas = (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{user}" password="{password}" user_{user}="{password}";'
            )
        else:  # SCRAM: the credential itself is added to the metadata when the directory is formatted
            jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'
        settings |= {
            "sasl.enabled.mechanisms": mechanism,
            "sasl.mechanism.inter.broker.protocol": mechanism,
            f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config": jaas,
        }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _prepare_data_dir(
    directory: Path,
    data: Path,
    config: Path,
    java_command: list[str],
    reset: bool,
    sasl: tuple[str, str, str] | None = None,
) -> None:
    """Check an existing data directory belongs to this home's cluster, or format a new one."""
    cluster_file = directory / "cluster.id"
    meta = data / "meta.properties"
    # Only a Kafka directory, or the home's own, is ever wiped: `--data ~ --reset` must not be.
    ours = data == directory / "data" or meta.exists()
    holds_files = data.exists() and any(data.iterdir())
    if holds_files and not ours:
        raise BrokerError(
            f"data directory {data} holds files but no Kafka meta.properties; give --data an empty or new directory"
        )
    if reset:
        shutil.rmtree(data, ignore_errors=True)
        cluster_file.unlink(missing_ok=True)
    elif meta.exists():
        _check_meta(meta, cluster_file)
        return
    elif holds_files:
        raise BrokerError(f"data directory {data} holds files but no Kafka meta.properties; {RESET_HINT}")
    cluster_id = new_cluster_id()
    scram = []
    if sasl is not None and sasl[0].startswith("SCRAM"):
        mechanism, user, password = sasl
        scram = ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    result = subprocess.run(
        [*java_command, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *scram],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise BrokerError(f"could not format {data}: {output[-1] if output else result.returncode}")
    cluster_file.write_text(cluster_id)


def _check_meta(meta: Path, cluster_file: Path) -> None:
    try:
        lines = meta.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerError(f"data directory {meta.parent} is unreadable ({exc}); {RESET_HINT}") from None
    props = dict(line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    cluster_id, node_id = props.get("cluster.id", "").strip(), props.get("node.id", "").strip()
    if not cluster_id or node_id != NODE_ID:
        raise BrokerError(
            f"data directory {meta.parent} is not a tokentrail broker's "
            f"(meta.properties has cluster.id={cluster_id or '?'}, node.id={node_id or '?'}); {RESET_HINT}"
        )
    expected = cluster_file.read_text().strip() if cluster_file.exists() else cluster_id
    if cluster_id != expected:
        raise BrokerError(
            f"data directory {meta.parent} belongs to Kafka cluster {cluster_id}, "
            f"not to this home's cluster {expected}; {RESET_HINT}"
        )
    if not cluster_file.exists():
        cluster_file.write_text(cluster_id)


def _require_free(port: int) -> None:
    """Fail before starting Java if the port is taken (Kafka would die with a long stack trace)."""
    with socket.socket() as probe:
        # Like the JVM's listener: a port left in TIME_WAIT by a stopped broker counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            raise BrokerError(f"port {port} on {HOST} is already in use; pick another with --port") from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _write_state(home: Path, handle: BrokerHandle) -> None:
    state = broker_state_file(home)
    temporary = state.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps(asdict(handle), option=orjson.OPT_INDENT_2))
    temporary.replace(state)


def _is_our_broker(handle: BrokerHandle) -> bool:
    """The pid is alive and still runs this home's `kafka.Kafka <config>`, not a reused pid."""
    if not _alive(handle.pid):
        return False
    try:
        argv = Path(f"/proc/{handle.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in argv and handle.config.encode() in argv


def _alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, just reaped
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _terminate(pid: int, process: subprocess.Popen | None = None, timeout: float = STOP_TIMEOUT) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if (process.poll() is not None) if process else not _alive(pid):
                return
            time.sleep(0.05)
    raise BrokerError(f"broker pid {pid} did not exit after SIGKILL")


def _tail(logs: Path, lines: int = 12) -> str:
    """The last lines of the broker's logs, stack frames left out: where a failed start says why."""
    parts = []
    for name in ("server.log", "kafka.out"):
        try:
            text = (logs / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        kept = [line for line in text if line.strip() and not line.startswith(("\tat ", "\t..."))]
        if kept:
            parts.append(f"--- last lines of {logs / name}\n" + "\n".join(kept[-lines:]))
    return "\n".join(parts)
