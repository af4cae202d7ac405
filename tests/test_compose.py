"""docker-compose.yml, checked for structure (no Docker engine runs on the build machines):
every service is there, images are pinned, every referenced file and volume exists,
dependencies point at services that can satisfy their condition, and the configuration
files it mounts agree with it (Prometheus targets, Grafana data sources)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokentrail.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
EXPECTED = {
    "kafka",
    "clickhouse",
    "migrate",
    "mock-upstream",
    "gateway",
    "flows-enrich",
    "flows-detect",
    "kafka-exporter",
    "prometheus",
    "alertmanager",
    "grafana",
}


def test_every_part_of_the_stack_is_a_service():
    assert set(SERVICES) == EXPECTED
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert SERVICES["mock-upstream"]["profiles"] == ["mock"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["flows-enrich"]["command"] == ["flows", "--flow", "enrich"]
    assert SERVICES["flows-detect"]["command"] == ["flows", "--flow", "detect"]
    assert "grafana-clickhouse-datasource@" in SERVICES["grafana"]["environment"]["GF_PLUGINS_PREINSTALL"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_images_are_pinned_or_built_from_this_repository(name):
    service = SERVICES[name]
    if "build" in service:
        assert (ROOT / service["build"] / "Dockerfile").is_file()
        command = service.get("command") or []
        if command:  # the image's entrypoint is `tokentrail`: the sub-command must exist
            subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
            assert command[0] in subcommands, command
    else:
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)+", image), f"{name}: {image} is not pinned to a version"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dependencies_can_satisfy_their_conditions(name):
    for target, rule in (SERVICES[name].get("depends_on") or {}).items():
        assert target in SERVICES, f"{name} depends on unknown {target}"
        condition = rule["condition"]
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[target], f"{name} waits for {target} to be healthy: it has no healthcheck"
        elif condition == "service_completed_successfully":
            assert SERVICES[target].get("restart") == "no", f"{target} must be one-shot"
        else:
            assert condition == "service_started"
        if "profiles" in SERVICES[target] and "profiles" not in SERVICES[name]:
            assert rule.get("required") is False, f"{name} needs {target}, which only runs under a profile"


def test_long_running_services_have_healthchecks_and_restart():
    for name, service in SERVICES.items():
        if name in ("migrate", "kafka-exporter", "mock-upstream"):
            continue
        assert "healthcheck" in service, name
        assert service.get("restart") == "unless-stopped", name


def bind_mounts() -> list[tuple[str, str, str]]:
    out = []
    for name, service in SERVICES.items():
        for volume in service.get("volumes") or []:
            source, target = volume.split(":")[:2]
            out.append((name, source, target))
    return out


def test_mounted_files_exist_and_named_volumes_are_declared():
    declared = set(COMPOSE["volumes"])
    used = set()
    for name, source, _ in bind_mounts():
        if source.startswith("."):
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        else:
            assert source in declared, f"{name} uses undeclared volume {source}"
            used.add(source)
    assert used == declared


def test_state_that_must_survive_is_on_volumes():
    mounts = {(name, target) for name, _, target in bind_mounts()}
    home = "/var/lib/tokentrail"  # TOKENTRAIL_HOME: spool (gateway), recovery and journal (flows)
    assert COMPOSE["x-tokentrail-env"]["TOKENTRAIL_HOME"] == home
    for name in ("gateway", "flows-enrich", "flows-detect"):
        assert (name, home) in mounts
        assert SERVICES[name]["environment"]["TOKENTRAIL_HOME"] == home
    assert ("kafka", SERVICES["kafka"]["environment"]["KAFKA_LOG_DIRS"]) in mounts
    assert ("clickhouse", "/var/lib/clickhouse") in mounts
    # Each flow has its own recovery state: two flows must never share one volume.
    flow_volumes = [s for n, s, t in bind_mounts() if n.startswith("flows-")]
    assert len(flow_volumes) == len(set(flow_volumes)) == 2


def test_ports_are_unique_and_well_formed():
    published = []
    for service in SERVICES.values():
        for port in service.get("ports") or []:
            host, container = port.split(":")
            assert host.isdigit() and container.isdigit()
            published.append(int(host))
    assert len(published) == len(set(published))
    assert {8080, 3000, 9090, 9093} <= set(published)


def test_prometheus_scrapes_services_that_exist_on_their_metrics_ports():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert targets == {"gateway:8080", "flows-enrich:9465", "flows-detect:9465", "kafka-exporter:9308"}
    for target in targets:
        assert target.split(":")[0] in SERVICES
    from flows.settings import FlowSettings

    assert FlowSettings.model_fields["flows_metrics_port"].default == 9465
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_grafana_provisioning_points_at_the_compose_services():
    sources = {}
    for path in (ROOT / "dashboards/provisioning/datasources").glob("*.yaml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            sources[source["type"]] = source
    clickhouse = sources["grafana-clickhouse-datasource"]
    assert clickhouse["jsonData"]["host"] in SERVICES
    assert clickhouse["jsonData"]["username"] == SERVICES["clickhouse"]["environment"]["CLICKHOUSE_USER"]
    assert clickhouse["secureJsonData"]["password"] == SERVICES["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"]
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/tokentrail.yaml").read_text())
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert ("grafana", "./dashboards", dashboards_dir) in bind_mounts()
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "dashboards" / Path(home).name).is_file()
