"""The README's configuration table, generated from the settings classes themselves.

`python -m tokentrail.config_docs` rewrites the block between the markers in README.md; a test
fails when a setting is added, renamed or re-documented without regenerating it.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- config:start -->", "<!-- config:end -->"


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    from alerting.settings import AlertingSettings
    from detection.settings import DetectSettings
    from flows.settings import FlowSettings
    from gateway.settings import GatewaySettings
    from mock_upstream.settings import MockUpstreamSettings
    from tokentrail.broker.jars import BrokerSettings
    from tokentrail.settings import CoreSettings
    from tokentrail.storage.settings import StorageSettings

    return [
        ("every process", CoreSettings),
        ("gateway", GatewaySettings),
        ("flows", FlowSettings),
        ("detect flow", DetectSettings),
        ("storage", StorageSettings),
        ("alert delivery", AlertingSettings),
        ("Kafka broker", BrokerSettings),
        ("mock provider", MockUpstreamSettings),
    ]


def _default(field) -> str:
    if field.default_factory is not None:
        return "computed"
    default = field.default
    if default is None:
        return "unset"
    if default == "":
        return "empty"
    if isinstance(default, Path) and default.is_absolute() and default.is_relative_to(ROOT):
        default = f"{default.relative_to(ROOT)}/ of this repository"  # same in every checkout
    return f"`{default}`"


def render() -> str:
    rows = ["| variable | used by | default | meaning |", "|---|---|---|---|"]
    seen: set[str] = set()
    for owner, cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            alias = field.validation_alias if isinstance(field.validation_alias, str) else None
            variable = alias or f"{prefix}{name}".upper()
            if variable in seen:
                continue
            seen.add(variable)
            meaning = " ".join((field.description or "").split())
            meaning = re.sub(rf"^{variable}:\s*", "", meaning).replace("|", "\\|")
            rows.append(f"| `{variable}` | {owner} | {_default(field)} | {meaning} |")
    return "\n".join(rows)


def rewrite(text: str) -> str:
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    return f"{before}{START}\n{render()}\n{END}{after}"


def main() -> None:
    README.write_text(rewrite(README.read_text()))
    print("README.md configuration table regenerated")


if __name__ == "__main__":
    main()
