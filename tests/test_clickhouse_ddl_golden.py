"""The DDL of the core tables, pinned: a change to them is a visible diff in tests/golden/.

After an intended change, regenerate with `UPDATE_GOLDEN=1 python -m pytest
tests/test_clickhouse_ddl_golden.py` and review the diff (default retention, 400 days).
"""

import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
CORE_TABLES = ["llm_calls", "events", "cost_by_tenant_1h", "incidents_by_error_1m", "alerts", "failure_patterns"]


@pytest.mark.parametrize("table", CORE_TABLES)
def test_core_table_ddl_matches_golden(store, table):
    ddl = store.query(f"SHOW CREATE TABLE {table}")[0]["statement"] + "\n"
    golden = GOLDEN / f"{table}.sql"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(ddl)
    assert golden.exists(), f"no golden file {golden}: run with UPDATE_GOLDEN=1"
    assert ddl == golden.read_text(), f"DDL of {table} changed: review, then regenerate with UPDATE_GOLDEN=1"
