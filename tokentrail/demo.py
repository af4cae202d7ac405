"""`tokentrail demo`: the whole pipeline on one machine, incidents included, in a few minutes.

It starts the home's Kafka broker, the mock provider, the gateway and the flows (enrich and
detect in one process); mints keys for three tenants (humans, agents acting for them, a system
job); drives traffic through the gateway with the official OpenAI and Anthropic SDKs,
streaming and not; then injects four incidents: a nightly batch that spends its tenant's daily
budget, a runaway agent, a provider outage seen by every identity of every tenant, and the
runaway agent's key frozen. It waits until every call is a row in ClickHouse and every
incident is detected, and prints the cost by owner, the alerts and patterns with their
detection delays, and the HTML report's path. Everything it started is stopped at the end
(also on Ctrl-C or SIGTERM), unless `--keep-running` is given.

Detection runs on its production settings. Event time is the gateway's clock, so the demo's
incidents are real bursts in event time, and the defaults see them within seconds: the
spend-spike bar of a young identity is the floor (10 x $1/h), which a loop of $0.12 calls
crosses after ten calls; a page rule judges the history there is (a minute of it), so once the
outage has failed 6% of a tenant's calls (and at least 5) the 6x rule pages; a failure pattern
needs three identities (three tenants, twice each) inside ten minutes; `budget_exhausted`
fires when the period's spend reaches the budget. No window is shortened for the demo, so what
it shows is what production would page on (docs/detection.md).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokentrail.errors import CliError
from tokentrail.processes import die_with_parent, stop_process

READY_TIMEOUT = 60.0
ROWS_TIMEOUT = 120.0
DETECT_TIMEOUT = 60.0
SENDERS = 6
"""Concurrent SDK clients: enough to make the runaway and the outage bursts in event time."""

OPENAI_MODEL = "gpt-4o"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
BATCH_CALLS = 8
"""The nightly batch: 8 documents of 10k tokens ($0.42) against a $0.30 daily budget; under the
spike detector's 10-call minimum, so it shows budget exhaustion and nothing else."""
BATCH_USAGE = "input=10000,output=1500"
BATCH_BUDGET_USD = "0.30"
CONTROL_SETTLE_S = 2.0
"""Seconds the demo gives the detect flow to read a budget before spending against it: a budget
counts the spend it sees after it arrives, and on a slow machine the flow's control follower
took longer than the gateway's first calls (CI: the budget's incident not found)."""
RUNAWAY_CALLS = 30
RUNAWAY_USAGE = "input=40000,output=2000"
"""$0.12 a call on gpt-4o: ten calls in a few seconds is over 10x the $1/h floor."""
OUTAGE_STATUS = "503"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on this machine, inject incidents, show what it records and detects",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--calls", type=int, default=30, help="ordinary calls per identity (default 30)")
    parser.add_argument("--gateway-port", type=int, default=8080, help="gateway port (default 8080)")
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=None,
        help="port of the broker the demo starts (default: as `tokentrail kafka up`)",
    )
    parser.add_argument("--html", type=Path, default=None, help="HTML report file (default: HOME/demo-report.html)")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave Kafka, the mock provider, the gateway and the flows running, and say how to reach each",
    )
    parser.set_defaults(func=run)


_BEGAN = time.monotonic()


def say(message: str) -> None:
    print(f"demo [{time.monotonic() - _BEGAN:5.1f} s]: {message}", flush=True)


def progress(line: str, final: bool = False) -> None:
    """One progress line, rewritten in place on a terminal; in a log, only the final state."""
    if sys.stdout.isatty():
        print(f"\r  {line}".ljust(80), end="\n" if final else "", flush=True)
    elif final:
        print(f"  {line}", flush=True)


@dataclass
class Identity:
    tenant: str
    name: str
    kind: str
    key_id: str
    key: str
    on_behalf_of: str = ""


@dataclass
class Tally:
    """Calls sent and what became of them, across the sender threads."""

    forwarded: int = 0
    refused: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int) -> None:
        with self.lock:
            if status in (401, 403):  # refused by the gateway: never reached the provider, no llm_calls row
                self.refused += 1
            else:
                self.forwarded += 1
                self.failed += status >= 400


@dataclass
class Stack:
    """What the demo started; `stop` ends it in reverse order."""

    home: Path
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    started_broker: bool = False

    def stop(self) -> None:
        from tokentrail.broker import server

        for name, child in reversed(self.children):
            stop_process(child, timeout=30)
            say(f"stopped {name} (pid {child.pid})")
        if self.started_broker:
            broker = server.stop_broker(self.home)
            say(f"stopped the Kafka broker (pid {broker.pid if broker else '?'})")


def run(args: argparse.Namespace) -> int:
    from tokentrail.broker import server
    from tokentrail.settings import CoreSettings, load

    if args.calls < 1:
        raise CliError("--calls must be at least 1")
    global _BEGAN
    _BEGAN = began = time.monotonic()
    generated = {  # the demo's own secrets, unless the caller set them; --keep-running prints them
        name: os.environ.setdefault(name, value)
        for name, value in (
            ("TOKENTRAIL_SIGNING_KEY", "demo-" + secrets.token_hex(16)),
            ("TOKENTRAIL_OPERATOR_KEY", "demo-operator-" + secrets.token_hex(16)),
        )
        if name not in os.environ
    }
    home = load(CoreSettings).home.resolve()
    stack = Stack(home)
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    keep = False
    try:
        say(f"state directory {home}")
        stack.started_broker = server.running_broker(home) is None  # stopped even if Ctrl-C hits while it starts
        handle, _, _ = server.up(home, port=args.kafka_port)
        say(f"Kafka broker {'started' if stack.started_broker else 'already running'} at {handle.bootstrap}")
        os.environ.update(
            TOKENTRAIL_HOME=str(home),
            TOKENTRAIL_KAFKA_BOOTSTRAP=handle.bootstrap,
            TOKENTRAIL_FORWARD_HEADERS="x-mock-*",  # the demo's failures are the mock provider's, by header
        )
        urls = _start_stack(stack, args)
        started_at = datetime.now(UTC)
        cast = _mint_cast()
        tally = Tally()
        incidents = _drive(urls["gateway"], cast, args.calls, tally)
        say(
            f"{tally.forwarded + tally.refused} calls sent: {tally.forwarded} forwarded ({tally.failed} failed), "
            f"{tally.refused} refused by the gateway"
        )
        tenants = sorted({identity.tenant for identity in cast})
        rows = _wait_rows(tally.forwarded, tenants, stack)
        say(f"{rows} llm_calls rows in ClickHouse for {tally.forwarded} calls forwarded: one row per call")
        found = _wait_detections(incidents, tenants, started_at, stack)
        # Whole minutes: the reports' rollups are per minute, and the HTML report's panels compare
        # the minute itself with --since (a bound inside the first minute would drop it).
        since = started_at.replace(second=0, microsecond=0).isoformat()
        _cli(["report", "cost", "--by", "root", "--since", since], show=True)
        _cli(["report", "alerts", "--since", since], show=True)
        _cli(["report", "patterns", "--since", since], show=True)
        _print_delays(incidents, found)
        _write_html(args.html or home / "demo-report.html", since)
        say(f"done in {time.monotonic() - began:.0f} s; logs are in {home / 'logs'}")
        keep = args.keep_running
        if keep:
            _print_running(stack, urls, handle.bootstrap, generated)
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if not keep:
            stack.stop()
        signal.signal(signal.SIGTERM, previous_sigterm)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _start_stack(stack: Stack, args: argparse.Namespace) -> dict[str, str]:
    from tokentrail.broker.server import free_port

    logs = stack.home / "logs"
    keep = args.keep_running
    mock_url = f"http://127.0.0.1:{free_port()}"
    mock = _spawn("mock provider", ["mock-upstream", "--port", mock_url.rsplit(":", 1)[1]], logs, stack, keep)
    _wait_http("mock provider", mock_url + "/healthz", mock)
    say(f"mock provider (OpenAI + Anthropic wire formats) at {mock_url}")
    os.environ.update(TOKENTRAIL_UPSTREAM_OPENAI_URL=mock_url, TOKENTRAIL_UPSTREAM_ANTHROPIC_URL=mock_url)
    flows_command = ["flows", "--flow", "enrich", "--flow", "detect", "--metrics-port", "0"]
    _spawn("flows", flows_command, logs, stack, keep)
    say("flows started: enrich (verify, identity, price, store) and detect (burn rates, spikes, patterns)")
    gateway_url = f"http://127.0.0.1:{args.gateway_port}"
    gateway = _spawn("gateway", ["gateway", "--port", str(args.gateway_port)], logs, stack, keep)
    _wait_http("gateway", gateway_url + "/readyz", gateway)
    say(f"gateway at {gateway_url} (point an SDK's base_url here)")
    return {"mock": mock_url, "gateway": gateway_url}


def _spawn(name: str, command: list[str], logs: Path, stack: Stack, keep: bool) -> subprocess.Popen[bytes]:
    """A child in its own session (Ctrl-C reaches the demo, which stops it in order); it dies
    with the demo unless it is meant to outlive it (`--keep-running`)."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"demo-{command[0]}.log", "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "tokentrail", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if keep else die_with_parent,
        )
    stack.children.append((name, child))
    return child


def _wait_http(name: str, url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CliError(f"the {name} exited with {process.returncode}; see its log in TOKENTRAIL_HOME/logs")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise CliError(f"{url} did not answer within {READY_TIMEOUT:.0f} s")


def _mint_cast() -> list[Identity]:
    """Three tenants, each with a human, an agent acting for them, and a third identity."""
    from schemas.models import Actor
    from tokentrail.control.plane import ControlPlane
    from tokentrail.settings import CoreSettings, load

    plane = ControlPlane(load(CoreSettings))
    suffix = secrets.token_hex(2)
    cast: list[Identity] = []

    def mint(tenant: str, kind: str, name: str, parent: Identity | None = None) -> Identity:
        entry, key = plane.create_key(tenant, Actor(type=kind, id=name), parent.key_id if parent else None)  # type: ignore[arg-type]
        identity = Identity(tenant, name, kind, entry.key_id, key, f"{parent.kind}:{parent.name}" if parent else "")
        cast.append(identity)
        return identity

    acme, globex, initech = f"acme-{suffix}", f"globex-{suffix}", f"initech-{suffix}"
    alice = mint(acme, "human", "alice")
    planner = mint(acme, "agent", "planner", alice)
    mint(acme, "agent", "summarizer", planner)
    carol = mint(globex, "human", "carol")
    mint(globex, "agent", "researcher", carol)
    mint(globex, "system", "nightly-batch")
    dave = mint(initech, "human", "dave")
    bot = mint(initech, "agent", "support-bot", dave)
    mint(initech, "agent", "triage", bot)
    for tenant in (acme, globex, initech):
        members = ", ".join(
            f"{i.kind}:{i.name}" + (f" (for {i.on_behalf_of})" if i.on_behalf_of else "")
            for i in cast
            if i.tenant == tenant
        )
        say(f"tenant {tenant}: {members}")
    return cast


@dataclass
class Incident:
    name: str
    tenant: str
    rule: str
    """The alert rule that finds it, or "pattern" (a failure_patterns row)."""
    injected_at: datetime


def _drive(gateway_url: str, cast: list[Identity], calls: int, tally: Tally) -> list[Incident]:
    """Ordinary traffic, then the four incidents; returns what should be detected."""
    by_name = {identity.name: identity for identity in cast}
    batch, runaway = by_name["nightly-batch"], by_name["summarizer"]
    clients = {identity.name: _Clients(gateway_url, identity.key) for identity in cast}
    incidents: list[Incident] = []
    pool = ThreadPoolExecutor(SENDERS)
    try:

        def burst(label: str, jobs: list[Callable[[], int]], quiet: bool = False) -> None:
            done, started = 0, time.monotonic()
            statuses: dict[int, int] = {}
            for status in pool.map(lambda job: job(), jobs):
                tally.count(status)
                statuses[status] = statuses.get(status, 0) + 1
                done += 1
                if not quiet and (done % 20 == 0 or done == len(jobs)):
                    answers = ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items()))
                    line = f"{label}: {done}/{len(jobs)} calls ({answers}) in {time.monotonic() - started:.1f} s"
                    progress(line, final=done == len(jobs))

        say(f"1/5 ordinary traffic: {calls} calls per identity, OpenAI and Anthropic SDKs, streaming and not")
        ordinary = [
            _job(clients[i.name], i.tenant, n) for n in range(calls) for i in cast if i is not batch
        ]  # interleaved: every identity is active at once
        burst("ordinary", ordinary)

        say(f"2/5 budget: {batch.tenant} gets a ${BATCH_BUDGET_USD}/day budget; its nightly batch spends more")
        _cli(["budget", "set", "--tenant", batch.tenant, "--usd", BATCH_BUDGET_USD, "--period", "day"], show=True)
        time.sleep(CONTROL_SETTLE_S)
        incidents.append(Incident("budget runs out", batch.tenant, "budget_exhausted", datetime.now(UTC)))
        batch_jobs = [
            _job(clients[batch.name], batch.tenant, n, usage=BATCH_USAGE, model="anthropic") for n in range(BATCH_CALLS)
        ]
        burst("nightly batch", batch_jobs)

        say(f"3/5 runaway agent: {runaway.name} (for {runaway.on_behalf_of}) loops on {OPENAI_MODEL}")
        incidents.append(Incident("runaway agent", runaway.tenant, "spend_spike", datetime.now(UTC)))
        loop = [
            _job(clients[runaway.name], runaway.tenant, n, usage=RUNAWAY_USAGE, model="openai")
            for n in range(RUNAWAY_CALLS)
        ]
        burst("runaway loop", loop)

        outage_calls = max(4, calls // 4)
        say(f"4/5 provider outage: {OPENAI_MODEL} answers {OUTAGE_STATUS} to every identity of every tenant")
        now = datetime.now(UTC)
        for tenant in sorted({i.tenant for i in cast}):
            incidents.append(Incident("provider outage", tenant, "error_budget_burn", now))
            incidents.append(Incident("provider outage", tenant, "pattern", now))
        incidents.append(Incident("provider outage", "_system", "pattern", now))
        outage = [
            _job(clients[i.name], i.tenant, n, status=OUTAGE_STATUS, model="openai")
            for n in range(outage_calls)
            for i in cast
        ]
        burst("outage", outage)

        say(f"5/5 freeze: the operator freezes {runaway.name}'s key; its loop goes on")
        _cli(["freeze", "--key", runaway.key_id, "--reason", "runaway loop"], show=True)
        refused_before = tally.refused
        deadline = time.monotonic() + 15
        while tally.refused == refused_before and time.monotonic() < deadline:  # the gateway follows within a second
            burst("probe", [_job(clients[runaway.name], runaway.tenant, 0, model="openai")], quiet=True)
        if tally.refused == refused_before:
            raise CliError("the gateway did not refuse the frozen key within 15 s")
        burst("frozen loop", [_job(clients[runaway.name], runaway.tenant, n, model="openai") for n in range(5)])
        say(f"the gateway now answers 403 to {runaway.name}'s key")
    finally:  # on Ctrl-C, calls not yet started are dropped
        pool.shutdown(cancel_futures=True)
        for pair in clients.values():
            pair.close()
    return incidents


class _Clients:
    """One identity's OpenAI and Anthropic SDK clients, pointed at the gateway. No retries: the
    demo counts every call it makes."""

    def __init__(self, gateway_url: str, key: str) -> None:
        try:
            import anthropic
            import openai
        except ImportError as exc:  # dev dependencies: `make install` has them
            raise CliError(f"the demo drives the official SDKs: {exc.name} is not installed (make install)") from None

        self.openai = openai.OpenAI(base_url=gateway_url + "/v1", api_key=key, max_retries=0, timeout=30)
        self.anthropic = anthropic.Anthropic(base_url=gateway_url, api_key=key, max_retries=0, timeout=30)

    def close(self) -> None:
        self.openai.close()
        self.anthropic.close()


def _job(
    clients: _Clients, tenant: str, index: int, usage: str = "", status: str = "", model: str = ""
) -> Callable[[], int]:
    """One SDK call as a job returning its HTTP status. Every third call streams; `model`
    forces the provider (else they alternate); `usage` and `status` go to the mock provider."""
    headers = {name: value for name, value in (("x-mock-usage", usage), ("x-mock-status", status)) if value}
    stream = index % 3 == 1
    use_openai = model == "openai" or (not model and index % 2 == 0)
    system = f"You are {tenant.split('-')[0]}'s assistant."  # one request shape per tenant's app

    def call() -> int:
        import anthropic
        import openai

        try:
            if use_openai:
                messages: Any = [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"question {index}"},
                ]
                if stream:
                    chunks = clients.openai.chat.completions.create(
                        model=OPENAI_MODEL,
                        messages=messages,
                        stream=True,
                        stream_options={"include_usage": True},
                        extra_headers=headers,
                    )
                    for _ in chunks:
                        pass
                else:
                    clients.openai.chat.completions.create(model=OPENAI_MODEL, messages=messages, extra_headers=headers)
            else:
                request: Any = {
                    "model": ANTHROPIC_MODEL,
                    "max_tokens": 64,
                    "system": system,
                    "messages": [{"role": "user", "content": f"summarize document {index}"}],
                    "extra_headers": headers,
                }
                if stream:
                    with clients.anthropic.messages.stream(**request) as events:
                        for _ in events:
                            pass
                else:
                    clients.anthropic.messages.create(**request)
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:
            return exc.status_code
        return 200

    return call


def _cli(command: list[str], show: bool = False) -> None:
    """Run a tokentrail command in this process (the same code a user's command runs)."""
    from tokentrail.cli import main

    if show:
        print(f"\n$ tokentrail {' '.join(command)}", flush=True)
    code = main(command)
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        raise CliError(f"`tokentrail {' '.join(command)}` failed with exit code {code}")


@contextmanager
def _store() -> Iterator[Any]:
    from tokentrail.storage import open_store

    store = open_store()
    try:
        yield store
    finally:
        store.close()


def _poll(what: str, timeout: float, stack: Stack, check: Callable[[Any], tuple[bool, str]]) -> str:
    """Ask the flows' query server until `check(store)` holds; show progress; fail with the last state."""
    deadline = time.monotonic() + timeout
    state, shown = "", ""
    while time.monotonic() < deadline:
        for name, child in stack.children:
            if child.poll() is not None:
                raise CliError(f"the {name} exited with {child.returncode}; see {stack.home / 'logs'}")
        try:
            with _store() as store:
                done, state = check(store)
        except Exception as exc:  # the query server may not be up yet: keep polling, say why at the end
            done, state = False, f"not readable yet ({exc})"
        if state != shown:
            progress(f"{what}: {state}")
            shown = state
        if done:
            progress(f"{what}: {state}", final=True)
            return state
        time.sleep(0.5)
    progress(f"{what}: {state}", final=True)
    raise CliError(f"{what}: still {state} after {timeout:.0f} s; see {stack.home / 'logs'}")


def _wait_rows(forwarded: int, tenants: list[str], stack: Stack) -> int:
    say("waiting for the calls to reach ClickHouse")

    def check(store: Any) -> tuple[bool, str]:
        sql = "SELECT count() AS n FROM llm_calls WHERE tenant_id IN {tenants:Array(String)}"
        rows = int(store.query(sql, {"tenants": tenants})[0]["n"])
        return rows >= forwarded, f"{rows}/{forwarded} rows"

    return int(_poll("llm_calls", ROWS_TIMEOUT, stack, check).split("/")[0])


Found = dict[tuple[str, str], datetime]
"""(tenant, rule or "pattern") -> when detection first said so (event time)."""


def _detections(store: Any, tenants: list[str], since: datetime) -> Found:
    found: Found = {}
    alerts = store.query(
        "SELECT tenant_id, rule, min(starts_at) AS at FROM alerts FINAL "
        "WHERE tenant_id IN {tenants:Array(String)} AND starts_at >= {since:DateTime64(3, 'UTC')} GROUP BY tenant_id, rule",
        {"tenants": tenants, "since": since},
    )
    patterns = store.query(
        "SELECT tenant_id, min(detected_at) AS at FROM failure_patterns FINAL "
        "WHERE (tenant_id IN {tenants:Array(String)} OR hasAny(tenants, {tenants:Array(String)})) "
        "AND detected_at >= {since:DateTime64(3, 'UTC')} GROUP BY tenant_id",
        {"tenants": tenants, "since": since},
    )
    for row in alerts:
        found[(row["tenant_id"], row["rule"])] = _utc(row["at"])
    for row in patterns:
        found[(row["tenant_id"], "pattern")] = _utc(row["at"])
    return found


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _wait_detections(incidents: list[Incident], tenants: list[str], since: datetime, stack: Stack) -> Found:
    say("waiting for detection to find the injected incidents")
    expected = {(i.tenant, i.rule) for i in incidents}
    found: Found = {}

    def check(store: Any) -> tuple[bool, str]:
        found.clear()
        found.update(_detections(store, [*tenants, "_system"], since))
        return expected <= found.keys(), f"{len(expected & found.keys())}/{len(expected)} incidents found"

    try:
        _poll("detection", DETECT_TIMEOUT, stack, check)
    except CliError as exc:  # say what was missed, then show what was found
        say(f"{exc}; missing: {', '.join(f'{rule} in {tenant}' for tenant, rule in sorted(expected - found.keys()))}")
    return found


def _print_delays(incidents: list[Incident], found: Found) -> None:
    """Each injected incident and how long detection took, in event time (the gateway's clock)."""
    from tokentrail.storage.cli import print_table

    print("\ndetection delays (event time, from the start of each injected incident):", flush=True)
    rows = []
    for incident in incidents:
        at = found.get((incident.tenant, incident.rule))
        delay = f"{(at - incident.injected_at).total_seconds():.1f} s" if at else "NOT FOUND"
        rows.append(
            (incident.name, incident.tenant, incident.rule, at.strftime("%H:%M:%S.%f")[:-3] if at else "", delay)
        )
    print_table(("incident", "tenant", "found as", "detected at", "delay"), rows)


def _write_html(path: Path, since: str) -> None:
    _cli(["report", "--html", str(path), "--since", since], show=True)
    say(f"HTML report: {path.resolve()}")


def _print_running(stack: Stack, urls: dict[str, str], bootstrap: str, generated: dict[str, str]) -> None:
    pids = " ".join(str(child.pid) for _, child in stack.children)
    home = stack.home
    secrets_line = "".join(f" {name}={value}" for name, value in generated.items())
    print(
        f"""
The stack is still running (--keep-running):
  gateway         {urls["gateway"]}   (OpenAI SDK base_url {urls["gateway"]}/v1, Anthropic SDK base_url {urls["gateway"]})
  mock provider   {urls["mock"]}
  Kafka           {bootstrap}
  ClickHouse      embedded, held by the flows: TOKENTRAIL_HOME={home} tokentrail report cost | events | report alerts
  logs            {home / "logs"}
In another shell (reports read ClickHouse through the flows; keys, freeze and budget need the operator key):
  export TOKENTRAIL_HOME={home}{secrets_line}
Stop it:  kill {pids} && TOKENTRAIL_HOME={home} tokentrail kafka down""",
        flush=True,
    )
