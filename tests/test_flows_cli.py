"""`tokentrail flows` refuses bad configuration with one clear line and exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def flows(*args, tmp_path, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
    environment.update(TOKENTRAIL_HOME=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-m", "tokentrail", "flows", *args],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


KEYS = {"TOKENTRAIL_SIGNING_KEY": "flows-cli-test-signing-key-0123456789", "TOKENTRAIL_OPERATOR_KEY": "o" * 32}


def test_missing_signing_key_is_one_line_and_exit_2(tmp_path):
    result = flows(tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tokentrail flows: TOKENTRAIL_SIGNING_KEY is not set: set it to a shared secret (the demo sets its own)"
    ]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"TOKENTRAIL_SIGNING_KEY": "short"}, "TOKENTRAIL_SIGNING_KEY is too short: 5 characters, at least 32"),
        ({**KEYS, "TOKENTRAIL_OPERATOR_KEY": ""}, "TOKENTRAIL_OPERATOR_KEY is not set"),
        (
            {**KEYS, "TOKENTRAIL_OPERATOR_KEY": KEYS["TOKENTRAIL_SIGNING_KEY"]},
            "must differ from TOKENTRAIL_SIGNING_KEY",
        ),
    ],
)
def test_short_missing_or_shared_keys_are_one_line(tmp_path, env, message):
    result = flows(tmp_path=tmp_path, **env)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["-w", "0"], "must be at least 1"),
        (["-p", "x"], "expected a whole number"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, args, message):
    result = flows(*args, tmp_path=tmp_path, **KEYS)
    assert result.returncode == 2 and message in result.stderr


def test_several_processes_need_a_clickhouse_server(tmp_path):
    result = flows("-p", "2", tmp_path=tmp_path, **KEYS)
    assert result.returncode == 2
    assert "TOKENTRAIL_CLICKHOUSE_URL" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_settings_and_price_file_are_one_line(tmp_path):
    result = flows(tmp_path=tmp_path, **KEYS, TOKENTRAIL_FLOWS_FLUSH_MS="soon")
    assert result.returncode == 2 and "TOKENTRAIL_FLOWS_FLUSH_MS" in result.stderr
    prices = tmp_path / "prices.json"
    prices.write_text('{"openai": {"m": {"input_mtok": -1}}}')
    result = flows(tmp_path=tmp_path, **KEYS, TOKENTRAIL_PRICE_OVERRIDES=str(prices))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tokentrail flows: TOKENTRAIL_PRICE_OVERRIDES: {prices}: openai.m.input_mtok: must be a non-negative number, got -1"
    ]


def test_negative_memory_release_interval_is_one_line(tmp_path):
    result = flows(tmp_path=tmp_path, **KEYS, TOKENTRAIL_FLOWS_RELEASE_MEMORY_SECONDS="-1")
    assert result.returncode == 2 and "TOKENTRAIL_FLOWS_RELEASE_MEMORY_SECONDS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
