"""`tokentrail demo`: the whole pipeline on one machine, end to end, in about a minute.

It starts (or reuses) the home's Kafka broker, the mock provider, the flows and a gateway; mints
keys for a small org (a human, an agent acting for her, a sub-agent acting for the agent, and a
system job in another tenant); sends OpenAI and Anthropic calls through the gateway, streaming
and not, some failing; shows a revoked key refused and a frozen tenant blocked; waits until every
call is a row in the embedded ClickHouse; and prints the spend report and one tenant's timeline.
Everything it started is stopped at the end, except the broker when `--keep-kafka` is given.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import orjson

from tokentrail.errors import CliError
from tokentrail.processes import stop_process

READY_TIMEOUT = 60.0
ROWS_TIMEOUT = 90.0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on this machine and show what it records",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--calls", type=int, default=40, help="calls per identity (default 40)")
    parser.add_argument("--gateway-port", type=int, default=8080, help="gateway port (default 8080)")
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=None,
        help="port of the broker the demo starts (default: as `tokentrail kafka up`)",
    )
    parser.add_argument("--keep-kafka", action="store_true", help="leave the Kafka broker running afterwards")
    parser.set_defaults(func=run)


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def run(args) -> int:
    from mock_upstream.process import spawn_mock_upstream
    from schemas.models import Actor, Freeze
    from tokentrail.broker import server
    from tokentrail.control.plane import ControlPlane
    from tokentrail.settings import CoreSettings, load

    if args.calls < 1:
        raise CliError("--calls must be at least 1")
    os.environ.setdefault("TOKENTRAIL_SIGNING_KEY", "demo-" + secrets.token_hex(16))
    os.environ.setdefault("TOKENTRAIL_OPERATOR_KEY", "demo-operator-" + secrets.token_hex(16))
    core = load(CoreSettings)
    home = core.home.resolve()
    children: list[subprocess.Popen] = []
    mock = None
    say(f"state directory {home}")
    handle, started_broker, _ = server.up(home, port=args.kafka_port)
    say(f"Kafka broker {'started' if started_broker else 'already running'} at {handle.bootstrap}")
    try:
        mock = spawn_mock_upstream()
        say(f"mock provider (OpenAI + Anthropic wire formats) at {mock.url}")
        env = {
            **os.environ,
            "TOKENTRAIL_HOME": str(home),
            "TOKENTRAIL_KAFKA_BOOTSTRAP": handle.bootstrap,
            "TOKENTRAIL_UPSTREAM_OPENAI_URL": mock.url,
            "TOKENTRAIL_UPSTREAM_ANTHROPIC_URL": mock.url,
        }
        flows = _spawn(["flows", "--metrics-port", "0"], env, home / "logs" / "demo-flows.log")
        children.append(flows)
        say("flows started (verify -> identity -> price -> ClickHouse)")

        plane = ControlPlane(core.model_copy(update={"kafka_bootstrap": handle.bootstrap}))
        tenant = f"acme-{secrets.token_hex(2)}"
        other = f"globex-{secrets.token_hex(2)}"
        alice, alice_key = plane.create_key(tenant, Actor(type="human", id="alice"))
        planner, planner_key = plane.create_key(tenant, Actor(type="agent", id="planner"), alice.key_id)
        _, summarizer_key = plane.create_key(tenant, Actor(type="agent", id="summarizer"), planner.key_id)
        batch, batch_key = plane.create_key(other, Actor(type="system", id="nightly-batch"))
        keys = [alice_key, planner_key, summarizer_key, batch_key]
        say(f"minted keys: tenant {tenant}: alice -> planner -> summarizer; tenant {other}: nightly-batch")

        gateway_url = f"http://127.0.0.1:{args.gateway_port}"
        gateway = _spawn(["gateway", "--port", str(args.gateway_port)], env, home / "logs" / "demo-gateway.log")
        children.append(gateway)
        _wait_http(gateway_url + "/readyz", gateway)
        say(f"gateway at {gateway_url} (point an SDK's base_url here)")

        traffic = _send_traffic(gateway_url, keys, args.calls)
        say(
            f"sent {traffic.sent} calls through the gateway ({args.calls} per identity): {traffic.streaming} streaming, "
            f"{traffic.failing} failing on purpose (the mock provider answers 500 or 529)"
        )

        revoked = plane.revoke_key(batch.key_id)
        status, revoke_probes = _wait_status(gateway_url, batch_key, 401)
        say(f"revoked {revoked.key_id}: the gateway now answers {status}")
        plane.put_control(Freeze(scope=f"tenant:{tenant}", frozen=True, reason="demo", changed_at=datetime.now(UTC)))
        status, freeze_probes = _wait_status(gateway_url, alice_key, 403)
        say(f"froze tenant {tenant}: the gateway now answers {status}")
        plane.put_control(Freeze(scope=f"tenant:{tenant}", frozen=False, changed_at=datetime.now(UTC)))

        probes = revoke_probes + freeze_probes
        forwarded = traffic.sent + probes
        rows = _wait_rows(forwarded, tenant, other, flows=flows)
        say(
            f"{rows} llm_calls rows in ClickHouse, one per call forwarded: the {traffic.sent} calls sent plus "
            f"{probes} probe call(s) that went through while the revoke and the freeze reached the gateway "
            "(their number varies with timing); the 2 refused probes (401, 403) are events, not calls"
        )
        _show(["report", "cost", "--by", "root"])
        _show(["report", "cost", "--by", "identity", "--tenant", tenant])
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        _show(
            [
                "events",
                "--tenant",
                tenant,
                "--since",
                since,
                "--until",
                until,
                "--type",
                "llm_call_failed",
                "--type",
                "protection_decision",
            ]
        )
        say("done. Logs are in " + str(home / "logs"))
        return 0
    finally:
        for child in reversed(children):
            stop_process(child, timeout=30)
        if mock is not None:
            mock.stop()
        if started_broker and not args.keep_kafka:
            server.stop_broker(home)
            say("Kafka broker stopped (use --keep-kafka to leave it running)")


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tokentrail", *command], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_http(url: str, process: subprocess.Popen) -> None:

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CliError(f"{process.args[3]} exited with {process.returncode} before it was ready; see its log")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise CliError(f"{url} did not answer within {READY_TIMEOUT:.0f} s")


def _post(url: str, body: dict, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), method="POST", headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


FAIL_EVERY = 5
"""Every fifth call of each identity (the fourth, ninth, ...) fails on purpose, so even
`--calls 4` shows failures."""


def _fails(index: int) -> bool:
    return index % FAIL_EVERY == FAIL_EVERY - 2


def _streams(index: int) -> bool:
    return index % 4 == 1


def _openai_call(gateway_url: str, key: str, index: int) -> int:
    headers = {"authorization": f"Bearer {key}"}
    if _fails(index):
        headers["x-mock-status"] = "500"
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": f"question {index}"}],
        "stream": _streams(index),
    }
    return _post(gateway_url + "/v1/chat/completions", body, headers)[0]


def _anthropic_call(gateway_url: str, key: str, index: int) -> int:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    if _fails(index):
        headers["x-mock-status"] = "529"
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": _streams(index),
        "messages": [{"role": "user", "content": f"summarize {index}"}],
    }
    return _post(gateway_url + "/v1/messages", body, headers)[0]


class Traffic(NamedTuple):
    sent: int
    streaming: int
    failing: int


def _send_traffic(gateway_url: str, keys: list[str], per_key: int) -> Traffic:
    for key in keys:
        for index in range(per_key):
            call = _openai_call if index % 2 == 0 else _anthropic_call
            call(gateway_url, key, index)
    indexes = range(per_key)
    return Traffic(
        len(keys) * per_key,
        len(keys) * sum(map(_streams, indexes)),
        len(keys) * sum(map(_fails, indexes)),
    )


def _wait_status(gateway_url: str, key: str, wanted: int) -> tuple[int, int]:
    """Poll with a cheap call until the gateway's registry has caught up (within a second).
    Returns the last status and how many probes were still forwarded (each one is a call)."""
    deadline = time.monotonic() + 10
    status, forwarded = 0, 0
    while time.monotonic() < deadline:
        status = _post(
            gateway_url + "/v1/chat/completions",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "ping"}]},
            {"authorization": f"Bearer {key}"},
        )[0]
        if status == wanted:
            break
        forwarded += 1
        time.sleep(0.05)
    return status, forwarded


def _wait_rows(sent: int, *tenants: str, flows: subprocess.Popen) -> int:
    """Count llm_calls rows of the demo's tenants through the flows' query server."""
    from tokentrail.storage import open_store

    deadline = time.monotonic() + ROWS_TIMEOUT
    rows, last_error = 0, None
    while time.monotonic() < deadline:
        if flows.poll() is not None:
            raise CliError(f"the flows exited with {flows.returncode}; see logs/demo-flows.log")
        try:
            store = open_store()
            try:
                result = store.query(
                    "SELECT count() AS n FROM llm_calls WHERE tenant_id IN {tenants:Array(String)}",
                    {"tenants": list(tenants)},
                )
            finally:
                store.close()
            rows = int(result[0]["n"])
        except Exception as exc:  # the query server may not be up yet: keep polling, say why at the end
            last_error = exc
        else:
            last_error = None
            if rows >= sent:
                return rows
        time.sleep(0.5)
    raise CliError(
        f"only {rows} of {sent} calls reached ClickHouse within {ROWS_TIMEOUT:.0f} s"
        + (f" (last error: {last_error})" if last_error else "")
    )


def _show(command: list[str]) -> None:
    from tokentrail.cli import main

    print(f"\n$ tokentrail {' '.join(command)}", flush=True)
    main(command)
