"""Kafka security: every client takes TLS/SASL from the settings; the local broker runs SASL/SCRAM.

One broker of this module's own, started by `tokentrail kafka up`'s code with SCRAM-SHA-256
(the credential is added when its data directory is formatted).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from schemas.models import Actor
from tests.fixtures.gateway import OPERATOR_KEY, SIGNING_KEY, spawn_gateway, wait_for_key
from tests.fixtures.kafka import require_java_and_maven
from tokentrail.broker.server import free_port, stop_broker, up
from tokentrail.control.plane import ControlPlane
from tokentrail.settings import ConfigError, CoreSettings

USER, PASSWORD = "tokentrail", "scram-test-password-1"
SASL = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "SCRAM-SHA-256",
    "sasl.username": USER,
    "sasl.password": PASSWORD,
}


def sasl_env(bootstrap: str, password: str = PASSWORD) -> dict[str, str]:
    return {
        "TOKENTRAIL_KAFKA_BOOTSTRAP": bootstrap,
        "TOKENTRAIL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "TOKENTRAIL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "TOKENTRAIL_KAFKA_SASL_USERNAME": USER,
        "TOKENTRAIL_KAFKA_SASL_PASSWORD": password,
    }


def test_client_config_carries_security_from_settings_and_a_properties_file(tmp_path):
    settings = CoreSettings(
        kafka_bootstrap="k1:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "k1:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "pw",
    }
    assert "pw" not in repr(settings)
    with pytest.raises(ConfigError, match="needs TOKENTRAIL_KAFKA_SASL_USERNAME"):
        CoreSettings(kafka_security_protocol="SASL_PLAINTEXT").kafka_client_config()
    properties = tmp_path / "client.properties"
    properties.write_text("# mTLS\nsecurity.protocol=SSL\nssl.certificate.location = /etc/cert.pem\n")
    config = CoreSettings(kafka_bootstrap="k:1", kafka_properties_file=properties).kafka_client_config()
    assert config["security.protocol"] == "SSL" and config["ssl.certificate.location"] == "/etc/cert.pem"
    properties.write_text("nonsense\n")
    with pytest.raises(ConfigError, match=r"client.properties:1: expected name=value"):
        CoreSettings(kafka_properties_file=properties).kafka_client_config()
    with pytest.raises(ConfigError, match="no such file"):
        CoreSettings(kafka_ssl_ca_location=tmp_path / "missing.pem").kafka_client_config()


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory) -> Iterator[str]:
    require_java_and_maven()
    home = tmp_path_factory.mktemp("sasl-kafka-home")
    handle, _, _ = up(home, port=free_port(), die_with_parent=True, security=SASL)
    try:
        yield handle.bootstrap
    finally:
        stop_broker(home)


@pytest.mark.kafka
def test_everything_works_over_sasl_scram(sasl_broker, mock_upstream, tmp_path, monkeypatch):
    env = sasl_env(sasl_broker)
    for name, value in {**env, "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY}.items():
        monkeypatch.setenv(name, value)
    _, key = ControlPlane(CoreSettings()).create_key("acme", Actor(type="human", id="alice"))  # producer + consumer
    gateway = spawn_gateway(
        {**env, "TOKENTRAIL_UPSTREAM_OPENAI_URL": mock_upstream.url, "OPENAI_API_KEY": "sk-test"},
        tmp_path / "gateway",
    )
    try:
        wait_for_key(gateway, key)  # the gateway's follower read the key over SASL
        request = urllib.request.Request(
            gateway.url + "/v1/chat/completions",
            data=orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert gateway.metrics()["tokentrail_gateway_records_spooled_total"] == 0.0
    finally:
        gateway.stop()


@pytest.mark.kafka
def test_a_plaintext_client_is_not_served(sasl_broker):
    from tokentrail.broker.admin import wait_ready

    assert not wait_ready(sasl_broker, timeout=3)
    assert wait_ready(sasl_broker, timeout=10, security=SASL)


@pytest.mark.kafka
def test_gateway_with_wrong_sasl_credentials_fails_to_start_with_one_line(sasl_broker, tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
    environment.update(
        sasl_env(sasl_broker, password="not-the-password"),
        TOKENTRAIL_HOME=str(tmp_path),
        TOKENTRAIL_SIGNING_KEY=SIGNING_KEY,
        TOKENTRAIL_OPERATOR_KEY=OPERATOR_KEY,
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--port", str(free_port())],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        f"tokentrail gateway: Kafka at {sasl_broker} refused TOKENTRAIL_KAFKA_SASL_USERNAME='{USER}'"
    )
    assert "SCRAM-SHA-256" in line and "not-the-password" not in line
