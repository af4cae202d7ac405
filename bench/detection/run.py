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

An alert is correct when it matches a labelled incident of its detector (same tenant, scope
if the label names one, starting between a minute before the incident and 30 minutes after
it ends); precision counts alerts (one per fingerprint firing), recall counts required
incidents with at least one matching alert.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "detection"))

from traffic import DETECTOR_RULES, Incident, build, calls, to_event  # noqa: E402

from detection.engine import Controls, Detection, Result  # noqa: E402
from detection.lifecycle import Change  # noqa: E402
from detection.synthetic import call_event  # noqa: E402
from schemas.models import Budget  # noqa: E402

RULE_DETECTOR = {rule: detector for detector, rules in DETECTOR_RULES.items() for rule in rules}
CHUNK = 20_000


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tenants", type=int, default=40)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--rss-identities", type=int, default=100_000)
    parser.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_only:
        print_rss(args.rss_identities)
        return

    started = time.process_time()
    scenario = build(args.seed, args.tenants, args.days)
    stream = calls(scenario, args.seed)
    controls = Controls()
    for tenant in scenario.tenants:
        if tenant.budget_usd_per_day:
            controls.apply(
                Budget(
                    scope=f"tenant:{tenant.tenant_id}",
                    period="day",
                    amount_usd=round(tenant.budget_usd_per_day, 2),
                    changed_at="2026-01-01T00:00:00Z",
                )
            )
    per_tenant = defaultdict(int)
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
    detection = Detection(controls=controls)
    changes, detect_seconds, parse_seconds, count = replay(stream, detection)
    print()
    print_table(score(changes, scenario.incidents))
    print()
    print(
        f"throughput, one process, per CPU second: detect (parse + detect) {count / detect_seconds:,.0f} events/s; "
        f"baseline parse only {count / parse_seconds:,.0f} events/s (ratio {parse_seconds / detect_seconds:.2f}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    # memory in a fresh process, so the heap freed by the replay above does not hide growth
    measured = subprocess.run(
        [sys.executable, __file__, "--rss-only", "--rss-identities", str(args.rss_identities)],
        capture_output=True,
        text=True,
        check=True,
    )
    print(measured.stdout.strip())


def print_rss(identities: int) -> None:
    before, after, remembered = measure_rss(identities)
    print(
        f"memory (fresh process): RSS {before:,.0f} MB after imports, {after:,.0f} MB holding {identities:,} identities "
        f"in 1,000 tenants ({(after - before) * 1024 * 1024 / identities:,.0f} bytes per identity, "
        f"{remembered:,} event ids remembered for dedup included)"
    )


if __name__ == "__main__":
    main()
