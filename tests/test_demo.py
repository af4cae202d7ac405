"""`tokentrail demo` is the product's smoke test: every real component wired together once."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tokentrail.broker.server import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.kafka
@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_cleans_up(tmp_path):
    env = {**os.environ, "TOKENTRAIL_HOME": str(tmp_path / "home")}
    for name in ("TOKENTRAIL_KAFKA_BOOTSTRAP", "TOKENTRAIL_TOPIC_PREFIX", "TOKENTRAIL_CLICKHOUSE_URL"):
        env.pop(name, None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokentrail",
            "demo",
            "--calls",
            "4",
            "--kafka-port",
            str(free_port()),
            "--gateway-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=280,
    )
    out = result.stdout
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sent = re.search(r"sent (\d+) calls through the gateway \(4 per identity\): (\d+) streaming, (\d+) failing", out)
    assert sent and sent.groups() == ("16", "4", "4"), out  # --calls 4 still has failing calls
    rows = re.search(
        r"(\d+) llm_calls rows in ClickHouse, one per call forwarded: the 16 calls sent plus (\d+) probe", out
    )
    assert rows and int(rows.group(1)) == 16 + int(rows.group(2)), out
    assert "llm_call_failed" in out  # the failures are visible in the timeline
    assert "the gateway now answers 401" in out
    assert "the gateway now answers 403" in out
    # Spend rolls up to the human at the root of the agent chain: her 4 calls, her agent's
    # and its sub-agent's (plus any probe forwarded before the freeze took effect).
    alice_line = next(line for line in out.splitlines() if " human " in line and "alice" in line)
    assert int(re.search(r"alice\s+(\d+)\s", alice_line).group(1)) >= 12, alice_line
    assert "protection_decision" in out
    assert "Kafka broker stopped" in out
    assert not (tmp_path / "home" / "kafka" / "broker.json").exists()
