"""`tokentrail flows`: run registered dataflows (`flows.registry`) with migrations, the query
server and /metrics."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from flows.registry import DEFAULT_FLOW, FLOWS
from tokentrail.errors import CliError

if TYPE_CHECKING:  # the CLI hub imports every command module: heavy imports wait for the command
    from bytewax.recovery import RecoveryConfig

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

KAFKA_WAIT_S = 10.0
"""How long `tokentrail flows` waits for Kafka at start before it says none is there (a
service manager restarts it; a person sees one line instead of a silent wait)."""


def register(subparsers: Subparsers) -> None:
    listing = "\n".join(f"  {flow.name:<10} {flow.summary}" for flow in FLOWS.values())
    parser = subparsers.add_parser(
        "flows",
        help="run the dataflows: enrich (verify raw calls, join identity, price, write events and rows), ...",
        description=f"Runs registered dataflows in one process. Flows:\n{listing}\nNeeds TOKENTRAIL_SIGNING_KEY.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--flow",
        dest="flows",
        action="append",
        choices=list(FLOWS),
        metavar="NAME",
        help=f"a flow to run; repeat to run several in one dataflow (default {DEFAULT_FLOW}; one of: {', '.join(FLOWS)})",
    )
    parser.add_argument("-w", "--workers", type=_positive, default=1, help="worker threads per process (default 1)")
    parser.add_argument(
        "-p",
        "--processes",
        type=_positive,
        default=1,
        help="processes on this machine (default 1; more needs TOKENTRAIL_CLICKHOUSE_URL)",
    )
    parser.add_argument(
        "--recovery",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="resume where a stopped flow left off (default: TOKENTRAIL_FLOWS_RECOVERY, on)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of /metrics and /healthz (default TOKENTRAIL_FLOWS_METRICS_PORT; 0: off)",
    )
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from bytewax.recovery import RecoveryConfig
    from bytewax.testing import cluster_main  # the public name of bytewax's threaded runner

    from flows.context import FlowContext
    from flows.dataflows import build_dataflow
    from flows.pricing import load_overrides
    from flows.settings import FlowSettings
    from tokentrail.broker.admin import require_credentials
    from tokentrail.kafka_reach import require_kafka
    from tokentrail.processes import release_freed_memory
    from tokentrail.settings import CoreSettings, load
    from tokentrail.storage import LockedStore, StorageSettings, migrate, open_store, start_query_server
    from tokentrail.storage.embedded import EmbeddedStore
    from tokentrail.storage.query_server import RemoteStore

    names = list(dict.fromkeys(args.flows or [DEFAULT_FLOW]))
    core = load(CoreSettings)
    core.signing_keys()
    core.operator_keys()
    core.kafka_client_config()  # an incomplete TLS/SASL setup is a one-line error before anything starts
    settings = load(FlowSettings, flows_recovery=args.recovery, flows_metrics_port=args.metrics_port)
    if settings.price_overrides:
        load_overrides(settings.price_overrides)  # a bad file is a one-line error before anything starts
    storage = load(StorageSettings)
    if args.processes > 1 and storage.clickhouse_url is None:
        raise CliError(
            "-p above 1 needs a ClickHouse server (TOKENTRAIL_CLICKHOUSE_URL): "
            "the embedded engine is held by one process; use -w for more workers"
        )
    require_kafka(core.bootstrap(), core.home, KAFKA_WAIT_S)
    require_credentials(core)  # a reachable broker that refuses our SASL credentials: one line too
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    store = open_store(storage)
    if isinstance(store, RemoteStore):
        raise CliError(
            f"the embedded ClickHouse in {storage.embedded_path()} is held by another running "
            "process (its query server answers); stop it first"
        )
    query_server = metrics_server = releaser = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        migrate(store, storage)
        if isinstance(store, EmbeddedStore):  # others read it through this process
            query_server = start_query_server(store, storage)
        context = FlowContext(LockedStore(store), settings, core)
        if settings.flows_metrics_port:
            metrics_server = serve_metrics(settings.flows_metrics_port, settings.flows_metrics_host)
        recovery = None
        epoch = timedelta(seconds=settings.flows_snapshot_seconds)
        if settings.flows_recovery:
            recovery_dir = FlowContext.state_dir(settings.recovery_dir(core), names[0])
            prepare_recovery(recovery_dir, args.processes * args.workers)
            recovery = RecoveryConfig(recovery_dir)
        flow = build_dataflow(names, context)
        tune_gc()
        releaser = release_freed_memory(settings.flows_release_memory_seconds)
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        addresses = None
        if args.processes > 1:
            addresses = [f"127.0.0.1:{_free_port()}" for _ in range(args.processes)]
            children = [
                spawn_process(names, index, addresses, args.workers, recovery, epoch)
                for index in range(1, args.processes)
            ]
        print(
            f"tokentrail flows: running {', '.join(names)} ({args.processes} process(es) x {args.workers} worker(s), "
            f"recovery {'on' if recovery else 'off'}, metrics on :{settings.flows_metrics_port or 'off'})",
            file=sys.stderr,
            flush=True,
        )
        try:
            # Always the threaded runner, even for one worker: its workers run on their own
            # threads and stop at their next step when the main thread sees the signal. Bytewax's
            # single-worker runner (cli_main with one worker) runs the dataflow on the main
            # thread, where Python raises the interrupt inside whatever step is running, e.g. a
            # Kafka poll, and Rust panics on it ("panicked at src/inputs.rs:446:37").
            cluster_main(
                flow,
                addresses,
                0,
                epoch_interval=epoch,
                recovery_config=recovery,
                worker_count_per_proc=args.workers,
            )
        except BaseException as exc:
            if not _stop_requested.is_set() and not isinstance(exc, KeyboardInterrupt):
                raise
            # The committed epochs are safe; a restart resumes after the last one.
        print("tokentrail flows: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        for child in children:
            child.terminate()
            child.wait(timeout=30)
        if releaser is not None:
            releaser.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
        if query_server is not None:
            query_server.stop()
        store.close()


def tune_gc() -> None:
    """The flow allocates many short-lived dicts per call while holding a large, long-lived
    identity state; CPython's default thresholds then rescan that state over and over
    (measured: verify, join and price steps 1.5-3.5x slower). Freeze what exists at start
    and collect the older generations rarely."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


_stop_requested = threading.Event()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the flow like Ctrl-C: Bytewax sees the interrupt at its next poll."""
    _stop_requested.set()
    raise KeyboardInterrupt


def prepare_recovery(directory: Path, partitions: int) -> None:
    """Create the recovery partitions once; later runs reuse them (and resume)."""
    from bytewax.recovery import init_db_dir

    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("part-*.sqlite3")):
        init_db_dir(directory, partitions)


def spawn_process(
    names: list[str],
    index: int,
    addresses: list[str],
    workers: int,
    recovery: RecoveryConfig | None,
    epoch: timedelta,
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "bytewax.run",
        f"flows.dataflows:get_flow({', '.join(map(repr, names))})",
        "-w",
        str(workers),
        "-i",
        str(index),
        "-a",
        ";".join(addresses),
        "-s",
        str(int(epoch.total_seconds())),
    ]
    if recovery is not None:
        command += ["-r", str(recovery.db_dir), "-b", "0"]
    return subprocess.Popen(command, env=os.environ.copy())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


METRICS_CONNECTIONS = 8
"""Connections the metrics server serves at once; more are closed at once (a scraper needs one)."""
METRICS_TIMEOUT_S = 5.0
"""A metrics connection that sends nothing for this long is closed."""


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but at most METRICS_CONNECTIONS of them."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(METRICS_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve_metrics(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """`/metrics` (Prometheus text) and `/healthz` on host:port, in daemon threads (bounded, with
    timeouts: docs/flows.md)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        timeout = METRICS_TIMEOUT_S

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                body, kind, status = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                body, kind, status = b'{"status":"ok"}', "application/json", 200
            else:
                body, kind, status = b'{"error":"not found"}', "application/json", 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    try:
        server = _BoundedHTTPServer((host, port), Handler)
    except OSError as exc:
        raise CliError(
            f"cannot serve metrics on port {port}: {exc.strerror} (set TOKENTRAIL_FLOWS_METRICS_PORT or --metrics-port)"
        ) from None
    threading.Thread(target=server.serve_forever, name="flows-metrics", daemon=True).start()
    return server
