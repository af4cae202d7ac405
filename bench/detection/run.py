"""Evaluation harness of the detectors on synthetic traffic with labelled incidents.

    .venv/bin/python bench/detection/run.py [--seed 7] [--tenants 40] [--days 2] [--rss-identities 100000]

The scenario (`traffic.py`) is replayed in event-time order through `detection.engine.Detection`
in this process: each event is serialized as the enrich flow writes it, and the timed loop is
what the detect flow does per record (JSON parse, then detect). Baseline in the same run:
the JSON parse alone over the same records. Times are CPU seconds of this process
(`time.process_time`), so other load on a shared machine does not count against it. Per detector it prints precision, recall, median
and worst detection delay (event time), notifications per incident (fired notifications,
escalations included) and false pages on noise-only tenants; then events/s, and the RSS of a
detector holding `--rss-identities` identities.

With `--kafka` the same calls go through a private broker and `tokentrail flows --flow detect`;
`--baseline REV --rounds N` runs REV's detect flow on the same topic too, alternately, and
prints both rates and the median ratio (this machine is shared and noisy: compare ratios).

An alert is correct when it matches a labelled incident of its detector (same tenant, scope
if the label names one, starting between a minute before the incident and 30 minutes after
it ends); precision counts alerts (one per fingerprint firing), recall counts required
incidents with at least one matching alert.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
BASELINE_PATH = "TOKENTRAIL_BENCH_DETECTION_FROM"
"""Set by `--baseline`: a directory holding another revision's `detection/`, imported instead."""
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "detection"))
if os.environ.get(BASELINE_PATH):
    sys.path.insert(0, os.environ[BASELINE_PATH])

from traffic import DETECTOR_RULES, Incident, build, calls, to_event  # noqa: E402

from detection.engine import Controls, Detection, Result  # noqa: E402
from detection.lifecycle import SEVERITY_RANK, Change  # noqa: E402
from detection.synthetic import call_event  # noqa: E402
from flows.cli import tune_gc  # noqa: E402
from schemas.models import Alert, Budget, control_key  # noqa: E402
from schemas.signing import KeySet  # noqa: E402
from tokentrail import topics  # noqa: E402
from tokentrail.broker.admin import bulk_producer, produce_all, read_to_end  # noqa: E402
from tokentrail.broker.server import free_port, stop_broker, up  # noqa: E402
from tokentrail.control.records import encode  # noqa: E402
from tokentrail.processes import stop_process  # noqa: E402

RULE_DETECTOR = {rule: detector for detector, rules in DETECTOR_RULES.items() for rule in rules}
CHUNK = 20_000
PREFIX = "bench."
SIGNING_KEY = b"bench-signing-key-0123456789abcdef"
OPERATOR_KEY = b"bench-operator-key-0123456789abcdef"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def replay(events_source: list[dict[str, Any]], detection: Detection) -> tuple[list[Change], float, float, int]:
    """(changes, detect seconds, parse-only seconds, events)."""
    changes: list[Change] = []
    detect_seconds = parse_seconds = 0.0
    count = 0
    batched = "into" in inspect.signature(detection.observe).parameters
    for begin in range(0, len(events_source), CHUNK):
        records = [
            orjson.dumps(to_event(call, begin + n)) for n, call in enumerate(events_source[begin : begin + CHUNK])
        ]
        count += len(records)
        started = time.process_time()
        for record in records:
            orjson.loads(record)
        parse_seconds += time.process_time() - started
        result = Result()
        started = time.process_time()
        if batched:
            for record in records:
                detection.observe(orjson.loads(record), result)
        else:  # a revision before batch results (--baseline)
            for record in records:
                result.extend(detection.observe(orjson.loads(record)))
        detect_seconds += time.process_time() - started
        changes.extend(result.changes)
    return changes, detect_seconds, parse_seconds, count


def matches(change: Change, incident: Incident) -> bool:
    alert = change.alert
    return (
        alert.rule in DETECTOR_RULES[incident.detector]
        and alert.tenant_id == incident.tenant_id
        and (incident.scope is None or alert.scope == incident.scope)
        and incident.start - 60 <= alert.starts_at.timestamp() <= incident.end + 1800
    )


def score(changes: list[Change], incidents: list[Incident]) -> list[dict[str, Any]]:
    fired = [c for c in changes if c.kind == "fired"]
    first_fires = {}
    for change in fired:  # one alert per fingerprint firing (escalations are notifications, not alerts)
        first_fires.setdefault((change.alert.fingerprint, change.alert.starts_at), change)
    noisy_tenants = {i.tenant_id for i in incidents}
    rows = []
    for detector in DETECTOR_RULES:
        alerts = [c for c in first_fires.values() if RULE_DETECTOR[c.alert.rule] == detector]
        own = [i for i in incidents if i.detector == detector]
        correct = [a for a in alerts if any(matches(a, i) for i in own)]
        required = [i for i in own if i.required]
        delays, notifications = [], []
        for incident in required:
            hits = [a for a in alerts if matches(a, incident)]
            if hits:
                delays.append(min(a.alert.starts_at.timestamp() for a in hits) - incident.start)
                notifications.append(sum(1 for c in fired if matches(c, incident)))
        false_pages = [
            a
            for a in alerts
            if a.alert.severity == "page" and a.alert.tenant_id not in noisy_tenants and a not in correct
        ]
        rows.append(
            {
                "detector": detector,
                "alerts": len(alerts),
                "incidents": len(required),
                "precision": len(correct) / len(alerts) if alerts else 1.0,
                "recall": len(delays) / len(required) if required else 1.0,
                "median_delay": statistics.median(delays) if delays else None,
                "worst_delay": max(delays) if delays else None,
                "notifications": (sum(notifications) / len(notifications)) if notifications else None,
                "max_notifications": max(notifications) if notifications else None,
                "false_pages_noise_only": len(false_pages),
                "wrong": [a.alert.summary for a in alerts if a not in correct][:5],
            }
        )
    return rows


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} m"


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'detector':<18} {'incidents':>9} {'alerts':>6} {'precision':>9} {'recall':>6} {'median delay':>12} {'worst delay':>11} {'notif/incident':>14} {'false pages (noise-only)':>24}"
    print(header)
    print("-" * len(header))
    for row in rows:
        notes = "-" if row["notifications"] is None else f"{row['notifications']:.2f} (max {row['max_notifications']})"
        print(
            f"{row['detector']:<18} {row['incidents']:>9} {row['alerts']:>6} {row['precision']:>9.2f} {row['recall']:>6.2f} "
            f"{seconds_text(row['median_delay']):>12} {seconds_text(row['worst_delay']):>11} {notes:>14} {row['false_pages_noise_only']:>24}"
        )
    for row in rows:
        for summary in row["wrong"]:
            print(f"  unmatched {row['detector']} alert: {summary}")


def measure_rss(identities: int) -> tuple[float, float, int]:
    """RSS before and after one detector has seen `identities` identities (a call each with
    a cost, 1% failing), across 1,000 tenants."""
    gc.collect()
    before = rss_mb()
    detection = Detection()
    at = 1_780_012_800.0
    for n in range(identities):
        status = 503 if n % 100 == 0 else 200
        detection.observe(
            call_event(f"rss-t{n % 1000:03d}", at + n * 0.01, key_id=f"rss-k{n}", status=status, cost_usd=0.002)
        )
    gc.collect()
    return before, rss_mb(), len(detection.detector.dedup)


def through_bytewax(stream: list[dict[str, Any]], controls: Controls) -> float:
    """Records per CPU second of the detect dataflow (`flows.detect.add_steps`, one worker) on
    Bytewax's testing source and sink: the flow's steps without Kafka."""
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, cluster_main
    from confluent_kafka import Message

    from detection.engine import DetectionConfig
    from flows.detect import DetectTopics, add_steps

    messages = [
        Message(
            key=call["tenant"].tenant_id.encode(),
            value=orjson.dumps(to_event(call, number)),
            topic=topics.EVENTS,
            partition=0,
            offset=number,
        )
        for number, call in enumerate(stream)
    ]
    polls = [messages[start : start + 2000] for start in range(0, len(messages), 2000)]
    flow = Dataflow("bench_detect")
    add_steps(
        flow,
        events=TestingSource(polls),  # polls of TOKENTRAIL_FLOWS_KAFKA_BATCH's default, as `kafka_polls` emits
        kafka_out=TestingSink([]),
        clickhouse_out=None,
        names=DetectTopics(topics.EVENTS, topics.ALERTS, topics.DLQ),
        config=DetectionConfig(),
        controls=controls,
    )
    started = time.process_time()
    cluster_main(flow, [], 0, worker_count_per_proc=1)
    return len(messages) / (time.process_time() - started)


def changes_of(alerts: list[Alert]) -> list[Change]:
    """Alert records (in topic order per fingerprint) -> the state changes they publish: the
    first firing record and any record that raises the severity are notifications ("fired"),
    resolved records are "resolved", the rest quiet "updated"."""
    changes = []
    severity: dict[str, str] = {}
    for alert in alerts:
        if alert.status == "resolved":
            kind = "resolved"
            severity.pop(alert.fingerprint, None)
        else:
            before = severity.get(alert.fingerprint)
            raised = before is None or SEVERITY_RANK[alert.severity] > SEVERITY_RANK[before]
            kind = "fired" if alert.revision == 0 or raised else "updated"
            severity[alert.fingerprint] = alert.severity
        changes.append(Change(kind, alert))  # type: ignore[arg-type]
    return changes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_consume(bootstrap: str, topic: str, expected: int) -> tuple[float, float]:
    """The baseline: (records per wall second, per CPU second of this process) reading `topic`
    from the beginning with a plain confluent-kafka consumer, nothing else."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-baseline", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while seen < expected:
        seen += sum(1 for m in consumer.consume(10_000, 1.0) if m.error() is None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    consumer.close()
    return seen / wall, seen / cpu


def topic_end(bootstrap: str, topic: str) -> int:
    """Records in `topic` (sum of its partitions' high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-ends"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def read_alerts(bootstrap: str, topic: str) -> list[Alert]:
    return [Alert.model_validate_json(message.value()) for message in read_to_end(bootstrap, topic)]


def flow_records(port: int) -> int:
    """`tokentrail_flows_records_total{source="events"}` of the running flow (0 before it serves)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    match = re.search(r'^tokentrail_flows_records_total\{source="events"\} (\S+)$', text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


def through_kafka(
    stream: list[dict[str, Any]], budgets: list[Budget], keep: bool, baseline: Path | None, rounds: int
) -> tuple[list[Change], list[str]]:
    """The scenario through a private broker and `tokentrail flows --flow detect` (one process,
    one worker): (the state changes the flow published on the alerts topic, the throughput
    lines). The calls go on the events topic as the enrich flow writes them (key: tenant);
    budgets on the controls topic, operator-signed. Each of `rounds` reads the whole topic
    with a fresh flow of this tree and, with `baseline` (another revision's tree), one of that
    tree's, alternating which goes first; the alerts are those of this tree's first run."""
    home = Path(tempfile.mkdtemp(prefix="tokentrail-bench-detect-"))
    try:
        handle, _, _ = up(home, port=free_port(), topic_prefix=PREFIX, die_with_parent=True)
        bootstrap = handle.bootstrap
        producer = bulk_producer(bootstrap)
        operator = KeySet(OPERATOR_KEY)
        produce_all(
            producer, PREFIX + topics.CONTROLS, ((control_key(b).encode(), encode(b, operator)) for b in budgets)
        )
        events_topic = PREFIX + topics.EVENTS
        produce_all(
            producer,
            events_topic,
            (
                (call["tenant"].tenant_id.encode(), orjson.dumps(to_event(call, number)))
                for number, call in enumerate(stream)
            ),
        )
        del producer  # flushed: its connections close before the broker stops
        total = len(stream)
        raw_wall, raw_cpu = raw_consume(bootstrap, events_topic, total)
        trees = [("this tree", ROOT)] + ([("baseline", baseline)] if baseline is not None else [])
        rates: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in trees}
        changes: list[Change] | None = None
        for round_ in range(rounds):
            for label, tree in trees if round_ % 2 == 0 else trees[::-1]:
                flow_home = home / f"flow-{round_}-{'base' if tree != ROOT else 'now'}"
                rates[label].append(run_flow(tree, flow_home, bootstrap, events_topic, total))
                print(f"  round {round_ + 1}, {label}: {rates[label][-1][0]:,.0f} records/s", flush=True)
                if changes is None:
                    changes = changes_of(read_alerts(bootstrap, PREFIX + topics.ALERTS))
        assert changes is not None
        lines = []
        for label, runs in rates.items():
            wall = statistics.median(rate for rate, _ in runs)
            cpu = statistics.median(rate for _, rate in runs)
            lines.append(
                f"through Kafka, one process, {label}: detect flow (`tokentrail flows --flow detect -w 1`) "
                f"{wall:,.0f} records/s ({cpu:,.0f} per CPU second of the flow process), median of "
                f"{len(runs)} ({', '.join(f'{rate:,.0f}' for rate, _ in runs)})"
            )
        if baseline is not None:
            ratio = statistics.median(
                now[0] / base[0] for now, base in zip(rates["this tree"], rates["baseline"], strict=True)
            )
            lines.append(f"this tree / baseline, median of the rounds' ratios: {ratio:.2f}")
        lines.append(
            f"baseline raw consume of the same topic {raw_wall:,.0f} records/s ({raw_cpu:,.0f} per CPU second); "
            f"{total:,} calls (plus detection's own events coming back), load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        return changes, lines
    finally:
        stop_broker(home)
        if keep:
            print(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def run_flow(tree: Path, home: Path, bootstrap: str, events_topic: str, total: int) -> tuple[float, float]:
    """One detect flow of `tree` (its own code, this virtualenv) reading the events topic from
    the beginning until it has read its own detection events too: (records per wall second,
    per CPU second of the flow process), timed from its first poll with records to the one
    at which it had read every call."""
    home.mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "TOKENTRAIL_HOME": str(home),
        "TOKENTRAIL_KAFKA_BOOTSTRAP": bootstrap,
        "TOKENTRAIL_TOPIC_PREFIX": PREFIX,
        "TOKENTRAIL_SIGNING_KEY": SIGNING_KEY.decode(),
        "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY.decode(),
        "TOKENTRAIL_FLOWS_METRICS_PORT": str(port),
        "TOKENTRAIL_FLOWS_START_AT": "beginning",
    }
    env.pop("TOKENTRAIL_CLICKHOUSE_URL", None)
    with (home / "flows.log").open("wb") as log:
        flows = subprocess.Popen(
            [sys.executable, "-m", "tokentrail", "flows", "--flow", "detect", "-w", "1"],
            env=env,
            cwd=tree,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def check() -> None:
            if flows.poll() is not None:
                raise SystemExit(f"the detect flow exited: {(home / 'flows.log').read_text()[-3000:]}")

        first: tuple[float, float, int] | None = None  # (wall, flow CPU, records) at the first poll with records
        seen = 0
        deadline = time.monotonic() + 1800
        while seen < total and time.monotonic() < deadline:
            check()
            seen = flow_records(port)
            if seen and first is None:
                first = (time.perf_counter(), cpu_seconds(flows.pid), seen)
            time.sleep(1.0)  # each poll costs the flow a /metrics rendering (2-3% of its CPU at 4 a second)
        if first is None or seen < total:
            raise SystemExit(f"the detect flow read {seen:,} of {total:,} records in 30 minutes")
        last = (time.perf_counter(), cpu_seconds(flows.pid), seen)
        # then until it has read its own detection events too (everything it published is out)
        while flow_records(port) < topic_end(bootstrap, events_topic) and time.monotonic() < deadline:
            check()
            time.sleep(0.5)
        time.sleep(1.0)
        records = last[2] - first[2]
        return records / (last[0] - first[0]), records / (last[1] - first[1])
    finally:
        stop_process(flows, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tenants", type=int, default=40)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--rss-identities", type=int, default=100_000)
    parser.add_argument(
        "--kafka", action="store_true", help="also run the scenario through Kafka and `tokentrail flows --flow detect`"
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also time the detectors (and with --kafka the detect flow) of git revision REV",
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --kafka: flow runs per tree (median)")
    parser.add_argument("--keep", action="store_true", help="keep the --kafka run's temporary home")
    parser.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--throughput-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_only:
        print_rss(args.rss_identities)
        return

    started = time.process_time()
    scenario = build(args.seed, args.tenants, args.days)
    stream = calls(scenario, args.seed)
    budgets = [
        Budget(
            scope=f"tenant:{tenant.tenant_id}",
            period="day",
            amount_usd=round(tenant.budget_usd_per_day, 2),
            changed_at="2026-01-01T00:00:00Z",
        )
        for tenant in scenario.tenants
        if tenant.budget_usd_per_day
    ]
    controls = Controls()
    for budget in budgets:
        controls.apply(budget)
    tune_gc()  # the detect flow process's settings (the scenario built above is frozen, as startup state is there)
    if args.throughput_only:
        _, detect_seconds, _, count = replay(stream, Detection(controls=controls))
        print(orjson.dumps({"events": count, "seconds": detect_seconds}).decode())
        return
    per_tenant: dict[str, int] = defaultdict(int)
    for call in stream:
        per_tenant[call["tenant"].tenant_id] += 1
    sizes = sorted(per_tenant.values())
    print(
        f"scenario: seed {args.seed}, {len(scenario.tenants)} tenants, {args.days} days, {len(stream):,} calls "
        f"(tenant calls: min {sizes[0]:,}, median {sizes[len(sizes) // 2]:,}, max {sizes[-1]:,}), "
        f"{sum(1 for i in scenario.incidents if i.required)} required incidents, {len(scenario.decoys)} decoys; "
        f"generated in {time.process_time() - started:.1f} s"
    )
    for decoy in scenario.decoys:
        print(f"  decoy: {decoy}")
    baseline = None if args.baseline is None else time_revision(args.baseline, args)
    detection = Detection(controls=controls)
    changes, detect_seconds, parse_seconds, count = replay(stream, detection)
    print()
    print("in-process (parse + detect, the detect flow's per-record work):")
    print_table(score(changes, scenario.incidents))
    print()
    print(
        f"throughput, one process, per CPU second: detect (parse + detect) {count / detect_seconds:,.0f} events/s; "
        f"baseline parse only {count / parse_seconds:,.0f} events/s (ratio {parse_seconds / detect_seconds:.2f}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    if baseline is not None:
        rate = baseline["events"] / baseline["seconds"]
        print(
            f"baseline revision {args.baseline}: {rate:,.0f} events/s per CPU second on the same events "
            f"(this tree {count / detect_seconds / rate:.2f}x)"
        )
    # memory in a fresh process, so the heap freed by the replay above does not hide growth
    measured = subprocess.run(
        [sys.executable, __file__, "--rss-only", "--rss-identities", str(args.rss_identities)],
        capture_output=True,
        text=True,
        check=True,
    )
    print(measured.stdout.strip())
    if args.kafka:
        dataflow_rate = through_bytewax(stream, controls)
        with tempfile.TemporaryDirectory(prefix="tokentrail-bench-baseline-") as where:
            tree = None if args.baseline is None else export(args.baseline, Path(where))
            flow_changes, lines = through_kafka(stream, budgets, args.keep, tree, args.rounds)
        print()
        print("through Kafka and the running detect flow (alerts read back from the alerts topic):")
        print_table(score(flow_changes, scenario.incidents))
        print()
        print("\n".join(lines))
        print(
            f"where the time goes, per CPU second: detectors alone (parse + detect) {count / detect_seconds:,.0f}; "
            f"the detect dataflow on Bytewax's testing source (no Kafka, one worker) {dataflow_rate:,.0f}; "
            "through Kafka: above"
        )


def time_revision(revision: str, args: argparse.Namespace) -> dict[str, float]:
    """CPU seconds of the in-process replay with `detection/` as of git `revision` (checked
    out into a temporary directory that goes first on the child's import path)."""
    with tempfile.TemporaryDirectory(prefix="tokentrail-bench-baseline-") as where:
        export(revision, Path(where), "detection")
        child = subprocess.run(
            [sys.executable, __file__, "--throughput-only"]
            + ["--seed", str(args.seed), "--tenants", str(args.tenants), "--days", str(args.days)],
            env={**os.environ, BASELINE_PATH: where},
            capture_output=True,
            text=True,
            check=True,
        )
    return orjson.loads(child.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def export(revision: str, where: Path, *paths: str) -> Path:
    """`paths` (default: everything) of git `revision`, extracted under `where`."""
    archive = subprocess.run(["git", "archive", revision, *paths], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def print_rss(identities: int) -> None:
    before, after, remembered = measure_rss(identities)
    print(
        f"memory (fresh process): RSS {before:,.0f} MB after imports, {after:,.0f} MB holding {identities:,} identities "
        f"in 1,000 tenants ({(after - before) * 1024 * 1024 / identities:,.0f} bytes per identity, "
        f"{remembered:,} event ids remembered for dedup included)"
    )


if __name__ == "__main__":
    main()
