"""The write-ahead log's CPU cost, measured with every gateway on one core at the same time.

    .venv/bin/python bench/gateway/share.py [--windows 12] [--duration 5] [--connections 64]
                                            [--modes plain,stream] [--baseline REV ...]

`run.py` measures each gateway alone on its core, one after the other; on these shared VMs the
machine's speed moves by 20-30% from one run to the next, so its rounds' req/s ratios spread
0.6-1.2 and a few percent take dozens of rounds to resolve. Here the gateways are on the
server core together, each loaded by its own wrk at once: whatever the machine does during a
window, it does to all of them, and the ratio of their CPU time per request (utime+stime of
/proc/<pid>/stat over the window / requests answered) is measured within a few percent in one
window. It measures CPU per request, not req/s: on a saturated core req/s is its inverse, but
the scheduler's share of the core is not the same for each gateway (it is per thread), so the
requests each one answered in a window are not the figure.

Targets (`run.py`'s set-up: real Kafka, the mock, a key with limits; wrk and the mock and the
broker on the load core):
- `no-wal`: the gateway with `TOKENTRAIL_SPOOL_WRITE_AHEAD=false` (the reference);
- `gateway`: every feature on, the log on this machine's disk;
- `log-on-tmpfs`: the log in /dev/shm: no disk, no writeback, so `gateway` minus this is what
  the kernel spends writing the log's pages to disk (the fsync's I/O), the rest being the log's
  own work (framing, the copy into the page cache, Kafka's success reports, the bookkeeping);
- `--baseline REV`: the gateway of that git revision (run.py's `export_revision`).
Prints, per mode, each target's CPU µs per request (median window) and its ratio to `no-wal`
(median and range of the windows' ratios).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from run import (  # noqa: E402
    ROOT,
    SERVER_CORE,
    baseline_key,
    bench_key,
    bench_stack,
    cpu_seconds,
    ensure_wrk,
    export_revision,
    free_port,
    gateway_env,
    lua_script,
    wait_key,
    wait_ready,
    wrk_command,
)

REFERENCE = "no-wal"


def requests_of(wrk_output: str) -> int:
    """The request count of wrk's summary ('N requests in ...')."""
    for line in wrk_output.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise RuntimeError(f"wrk printed no summary:\n{wrk_output}")


def measure(
    targets: dict[str, tuple[str, int]], keys: dict[str, str], workdir: Path, stream: bool, args: argparse.Namespace
) -> dict[str, list[float]]:
    """CPU µs per request of each target, one entry per window (all targets loaded at once)."""
    scripts = {name: lua_script(workdir, f"share-{name}", keys[name], stream) for name in targets}
    per_request: dict[str, list[float]] = {name: [] for name in targets}
    for window in range(args.windows + 1):
        before = {name: cpu_seconds(pid) for name, (_, pid) in targets.items()}
        loads = {
            name: subprocess.Popen(
                wrk_command(url, scripts[name], args.connections, args.duration), stdout=subprocess.PIPE, text=True
            )
            for name, (url, _) in targets.items()
        }
        outputs = {name: load.communicate()[0] for name, load in loads.items()}
        after = {name: cpu_seconds(pid) for name, (_, pid) in targets.items()}
        if window == 0:
            continue  # warm-up: connections, caches, the first segments
        for name in targets:
            per_request[name].append((after[name] - before[name]) / requests_of(outputs[name]) * 1e6)
        print(f"  window {window}/{args.windows} done", file=sys.stderr, flush=True)
    return per_request


def report(mode: str, per_request: dict[str, list[float]], args: argparse.Namespace) -> None:
    print(f"{mode}, {args.connections} connections each, {args.windows} windows of {args.duration} s:")
    reference = per_request[REFERENCE]
    for name, values in per_request.items():
        ratios = sorted(value / base for value, base in zip(values, reference, strict=True))
        print(
            f"  {name:<14} CPU {statistics.median(values):6.0f} µs/request   vs {REFERENCE}: "
            f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--duration", type=int, default=5, help="seconds a window")
    parser.add_argument("--connections", type=int, default=64, help="per gateway")
    parser.add_argument("--modes", default="plain,stream")
    parser.add_argument("--baseline", action="append", default=[], metavar="REV")
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",")]
    if any(mode not in ("plain", "stream") for mode in modes):
        parser.error("--modes takes plain and/or stream")
    if args.windows < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--windows, --duration and --connections must be positive")
    ensure_wrk()
    tmpfs = Path(tempfile.mkdtemp(prefix="tokentrail-share-", dir="/dev/shm"))
    processes: list[subprocess.Popen] = []
    with bench_stack("share", pinned=True) as (workdir, handle, mock):
        home = workdir / "home"
        try:
            key = bench_key(home, handle.bootstrap)
            env = gateway_env(home, handle.bootstrap, mock.url)
            variants: dict[str, tuple[dict[str, str], Path]] = {
                REFERENCE: ({"TOKENTRAIL_SPOOL_WRITE_AHEAD": "false", "TOKENTRAIL_SPOOL_DIR": str(home / "s0")}, ROOT),
                "gateway": ({"TOKENTRAIL_SPOOL_DIR": str(home / "s1")}, ROOT),
                "log-on-tmpfs": ({"TOKENTRAIL_SPOOL_DIR": str(tmpfs)}, ROOT),
            }
            keys = dict.fromkeys(variants, key)
            for revision in args.baseline:
                tree = export_revision(revision, workdir / f"baseline-{revision}")
                variants[revision] = ({"PYTHONPATH": str(tree), "TOKENTRAIL_SPOOL_DIR": str(home / revision)}, tree)
                keys[revision] = baseline_key(env, tree)
            targets: dict[str, tuple[str, int]] = {}
            for name, (overrides, tree) in variants.items():
                port = free_port()
                process = subprocess.Popen(
                    ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "gateway", "--port", str(port)],
                    env={**env, **overrides},
                    cwd=tree,
                    stdout=subprocess.DEVNULL,
                    stderr=open(workdir / f"{name}.log", "wb"),
                )
                processes.append(process)
                url = f"http://127.0.0.1:{port}"
                wait_ready(url, process, "/readyz")
                wait_key(url, keys[name])
                targets[name] = (url, process.pid)
            for mode in modes:
                report(mode, measure(targets, keys, workdir, mode == "stream", args), args)
        finally:
            for process in processes:
                process.kill()
                process.wait()
            shutil.rmtree(tmpfs, ignore_errors=True)


if __name__ == "__main__":
    main()
