"""Core settings and the CLI dispatcher: precedence, clear errors, every problem at once."""

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from dotenv import dotenv_values

from tokentrail import cli
from tokentrail.settings import (
    DEFAULT_BOOTSTRAP,
    ConfigError,
    CoreSettings,
    broker_state_file,
    load,
)

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_loads_into_core_settings(monkeypatch):
    values = dotenv_values(ROOT / ".env.example")
    for name, value in values.items():
        monkeypatch.setenv(name, value or "")
    settings = load(CoreSettings)
    assert settings.bootstrap() == values["TOKENTRAIL_KAFKA_BOOTSTRAP"]
    assert settings.require_signing_key() == values["TOKENTRAIL_SIGNING_KEY"].encode()
    assert settings.operator_keys()[0] == values["TOKENTRAIL_OPERATOR_KEY"].encode()


def test_bootstrap_prefers_env_then_broker_state_then_default(tmp_path, monkeypatch):
    monkeypatch.delenv("TOKENTRAIL_KAFKA_BOOTSTRAP", raising=False)
    settings = CoreSettings(home=tmp_path)
    assert settings.bootstrap() == DEFAULT_BOOTSTRAP
    state = broker_state_file(tmp_path)
    state.parent.mkdir(parents=True)
    state.write_bytes(orjson.dumps({"bootstrap": "127.0.0.1:19092", "pid": 1}))
    assert settings.bootstrap() == "127.0.0.1:19092"
    assert CoreSettings(home=tmp_path, kafka_bootstrap="k:1").bootstrap() == "k:1"


def test_missing_signing_key_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("TOKENTRAIL_SIGNING_KEY", raising=False)
    with pytest.raises(ConfigError, match="TOKENTRAIL_SIGNING_KEY is not set"):
        CoreSettings().require_signing_key()


def test_keys_have_a_minimum_length_and_previous_keys_verify(monkeypatch):
    from schemas.signing import KeySet

    with pytest.raises(ConfigError, match="TOKENTRAIL_SIGNING_KEY is too short: 9 characters, at least 32"):
        CoreSettings(signing_key="too-short").signing_keys()
    current, old = "c" * 32, "o" * 32
    with pytest.raises(ConfigError, match=r"TOKENTRAIL_OPERATOR_KEYS_PREVIOUS \(key 2\) is too short"):
        CoreSettings(operator_key=current, operator_keys_previous=f"{old}, short").operator_keys()
    keys = KeySet(*CoreSettings(signing_key=current, signing_keys_previous=f"{old},").signing_keys())
    record = {"kind": "call"}
    record["signature"] = KeySet(old.encode()).sign(record)
    keys.verify(record)  # signed before the rotation, still accepted
    assert keys.sign({"kind": "call"}).startswith(KeySet(current.encode()).current_id + ":")
    with pytest.raises(ConfigError, match="must differ"):
        CoreSettings(signing_key=current, operator_key=current).operator_keys()


def test_signing_key_is_never_printed(monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_SIGNING_KEY", "super-secret-value")
    settings = CoreSettings()
    assert "super-secret-value" not in repr(settings)
    assert "super-secret-value" not in str(settings.model_dump())


def test_invalid_values_are_reported_together(monkeypatch):
    from pydantic_settings import BaseSettings

    from tokentrail.settings import ENV

    class Sample(BaseSettings):
        model_config = ENV
        port: int = 1
        ratio: float = 0.5

    monkeypatch.setenv("TOKENTRAIL_PORT", "eighty")
    monkeypatch.setenv("TOKENTRAIL_RATIO", "half")
    with pytest.raises(ConfigError) as info:
        load(Sample)
    assert "TOKENTRAIL_PORT" in str(info.value) and "TOKENTRAIL_RATIO" in str(info.value)


# One well-formed invocation per command; an unknown flag must still be refused in one line.
VALID_INVOCATIONS = {
    "kafka": ["kafka", "status"],
    "mock-upstream": ["mock-upstream"],
    "gateway": ["gateway"],
    "keys": ["keys", "list"],
    "freeze": ["freeze", "--tenant", "acme"],
    "flows": ["flows"],
    "migrate": ["migrate"],
    "events": ["events", "--tenant", "acme", "--since", "2026-01-01", "--until", "2026-01-02"],
    "report": ["report", "cost"],
    "demo": ["demo"],
}


def test_cli_offers_every_surface_of_the_design():
    subparsers = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert set(VALID_INVOCATIONS) <= set(subparsers.choices)


@pytest.mark.parametrize("command", sorted(VALID_INVOCATIONS))
def test_cli_rejects_unknown_flags_in_one_line(command):
    result = subprocess.run(
        [sys.executable, "-m", "tokentrail", *VALID_INVOCATIONS[command], "--no-such-flag"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def test_cli_start_up_loads_no_heavy_engine():
    """Every process (the gateway too) builds this parser: chdb alone would add ~250 MB RSS."""
    probe = (
        "import sys; from tokentrail import cli; cli.build_parser(); "
        "print(','.join(m for m in ('chdb', 'bytewax', 'genai_prices') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_readme_configuration_table_is_generated_from_the_settings():
    from tokentrail import config_docs

    readme = config_docs.README.read_text()
    assert config_docs.rewrite(readme) == readme, "run `python -m tokentrail.config_docs`"
    for variable in ("TOKENTRAIL_SIGNING_KEY", "TOKENTRAIL_CLICKHOUSE_URL", "OPENAI_API_KEY"):
        assert f"`{variable}`" in readme
