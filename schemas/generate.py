"""Write the JSON Schema of every contract to `schemas/json/` (`make schemas`).

A test regenerates them in memory and fails when the committed files are out of date.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from schemas.models import Alert, ControlRecord, FailurePattern, Identity, RawRecord, UnifiedEvent

JSON_DIR = Path(__file__).parent / "json"

CONTRACTS: dict[str, Any] = {
    "raw_record": RawRecord,
    "unified_event": UnifiedEvent,
    "identity": Identity,
    "control_record": ControlRecord,
    "alert": Alert,
    "failure_pattern": FailurePattern,
}


def render() -> dict[str, bytes]:
    """File name -> schema bytes, deterministic (sorted keys, indented, trailing newline)."""
    return {
        f"{name}.schema.json": orjson.dumps(
            TypeAdapter(contract).json_schema(mode="validation"),
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )
        + b"\n"
        for name, contract in CONTRACTS.items()
    }


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for name, content in render().items():
        (JSON_DIR / name).write_bytes(content)
        print(f"wrote schemas/json/{name}")


if __name__ == "__main__":
    main()
