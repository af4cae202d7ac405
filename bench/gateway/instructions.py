"""Instructions per gateway request, counted by valgrind: a figure this shared machine cannot blur.

    .venv/bin/python bench/gateway/instructions.py [--baseline REV ...] [--requests 2500] [--warmup 500]
                                                   [--modes plain,stream]

bench/gateway/run.py measures time, and on this VM its req/s moves 10-20% between rounds of
identical code, more than the 5% a change must be held to. This counts work instead. For each
target, each mode (non-streaming, streaming POST /v1/chat/completions), the gateway runs under
`valgrind --tool=cachegrind --cache-sim=no` twice: serving `--warmup` requests, then `--warmup`
+ `--requests`, one after another over one kept-alive connection, then SIGTERM. The difference
of the two totals over `--requests` is what one request costs, start-up and shutdown cancelled
out. Every thread counts, librdkafka's included; Kafka and the mock upstream run outside it.
Targets: `no-wal` (this tree, `TOKENTRAIL_SPOOL_WRITE_AHEAD=false`), `gateway` (this tree as
shipped) and each `--baseline REV` (that revision's tree, the log off where it has one, a key
minted by its own control plane), on one private broker and mock. Prints instructions per
request and the ratio of each target to the first baseline.

Deterministic to ~1-2% between runs (background threads wake on wall-clock timers, which
valgrind stretches). What it does not see: cache misses, context switches, lock and GIL
waits, system-call time; run.py is still the measure of speed, this is the measure of work.
Installs valgrind with apt-get when missing.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from run import baseline_key, bench_stack, export_revision, gateway_env, wait_key, wait_ready  # noqa: E402

from tokentrail.broker.server import free_port  # noqa: E402

VALGRIND_START_S = 600.0
"""A gateway under valgrind takes ~10-30 s to import and start here; allow for a loaded machine."""
MODES = {"plain": False, "stream": True}


def ensure_valgrind() -> None:
    if shutil.which("valgrind") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "valgrind"], check=True)


def post(connection: http.client.HTTPConnection, key: str, stream: bool) -> None:
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]%s}' % (
        b',"stream":true' if stream else b""
    )
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"the gateway answered {response.status}: the count would not be of a served call")


def instructions(env: dict[str, str], tree: Path, key: str, stream: bool, requests: int, log: Path) -> int:
    """Instructions of one gateway process, start to exit, serving `requests` requests."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    counts = log.with_suffix(".cachegrind")
    with log.open("ab") as output:
        gateway = subprocess.Popen(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={counts}",
                sys.executable,
                "-m",
                "gateway",
                "--port",
                str(port),
            ],
            env=env,
            cwd=tree,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(url, gateway, "/readyz", timeout=VALGRIND_START_S)
        wait_key(url, key, timeout=VALGRIND_START_S)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(requests):
            post(connection, key, stream)
        connection.close()
    finally:
        gateway.terminate()
        gateway.wait(VALGRIND_START_S)
    summary = re.search(r"^summary:\s+(\d+)", counts.read_text(), re.MULTILINE)
    if summary is None:
        raise SystemExit(f"cachegrind wrote no summary; see {log}")
    return int(summary.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", action="append", default=[], help="a git revision (repeatable)")
    parser.add_argument("--requests", type=int, default=2500, help="requests counted per target and mode")
    parser.add_argument("--warmup", type=int, default=500, help="requests whose cost is subtracted (default 500)")
    parser.add_argument("--modes", default="plain,stream", help="comma-separated: plain, stream (default both)")
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if args.requests < 1 or args.warmup < 1 or not modes or set(modes) - set(MODES):
        parser.error(f"--requests and --warmup must be positive, --modes a list of {', '.join(MODES)}")
    ensure_valgrind()
    with bench_stack("instructions", pinned=False) as (workdir, handle, mock):
        home = workdir / "home"
        env = {  # the system allocator: valgrind follows it without false reports
            **gateway_env(home, handle.bootstrap, mock.url),
            "PYTHONMALLOC": "malloc",
        }
        key = baseline_key(env, ROOT)
        targets = {  # the baselines first: each later row prints its ratio to the first
            revision: (export_revision(revision, workdir / f"baseline-{revision}"), {}) for revision in args.baseline
        }
        targets["no-wal"] = (ROOT, {"TOKENTRAIL_SPOOL_WRITE_AHEAD": "false"})
        targets["gateway"] = (ROOT, {})
        keys = {name: key if tree == ROOT else baseline_key(env, tree) for name, (tree, _) in targets.items()}
        print(
            f"instructions per request (valgrind cachegrind), {args.requests} requests after {args.warmup}, "
            "one connection, every thread counted",
            flush=True,
        )
        per_request: dict[tuple[str, str], float] = {}
        for mode in modes:
            for name, (tree, extra) in targets.items():
                target_env = {
                    **env,
                    "TOKENTRAIL_SPOOL_WRITE_AHEAD": "false",
                    "TOKENTRAIL_SPOOL_DIR": str(home / f"spool-{name}"),
                    **extra,
                }
                if tree != ROOT:
                    target_env["PYTHONPATH"] = str(tree)
                log = workdir / f"{name}-{mode}"
                counted = [
                    instructions(target_env, tree, keys[name], MODES[mode], requests, log.with_name(f"{log.name}-{n}"))
                    for n, requests in enumerate((args.warmup, args.warmup + args.requests))
                ]
                per_request[(name, mode)] = (counted[1] - counted[0]) / args.requests
                ratio = (
                    f"  {per_request[(name, mode)] / per_request[(args.baseline[0], mode)]:.3f}x {args.baseline[0]}"
                    if args.baseline and (args.baseline[0], mode) in per_request
                    else ""
                )
                print(f"{mode:<7} {name:<10} {per_request[(name, mode)]:>12,.0f}{ratio}", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
