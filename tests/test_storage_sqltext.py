"""SQL text helpers: identifiers, literals, bound values and statement splitting, checked
against the real engine where it matters (a hostile value must come back unchanged and run
nothing)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tokentrail.storage.errors import StorageError
from tokentrail.storage.sqltext import (
    format_parameter,
    identifier,
    quote_string,
    single_statement,
    split_statements,
)

HOSTILE = [
    "'; DROP TABLE events; --",
    "x') OR 1=1 --",
    "back\\slash\\",
    "tab\tnew\nline\r",
    "\\N",
    "{tenant:String}",
    "quote ' and \\' and \"double\" and `tick`",
    "unicode ✓ ключ",
]


@pytest.mark.parametrize("name", ["llm_calls", "_x1", "A"])
def test_identifier_quotes_plain_names(name):
    assert identifier(name) == f"`{name}`"


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a`b", "events; DROP TABLE x", "a.b", "x" * 200, None])
def test_identifier_rejects_anything_else(name):
    with pytest.raises(StorageError, match="not a valid table or column name"):
        identifier(name)


def test_quote_string_escapes_quote_and_backslash():
    assert quote_string("it's \\ok") == "'it\\'s \\\\ok'"


def test_format_parameter_forms():
    assert format_parameter("a\tb\\") == "a\\tb\\\\"
    assert format_parameter(7) == "7"
    assert format_parameter(True) == "true"
    assert format_parameter(Decimal("1.50")) == "1.50"
    moment = datetime(2026, 3, 1, 11, 0, 0, 123456, tzinfo=UTC)
    assert format_parameter(moment) == "2026-03-01 11:00:00.123"
    assert format_parameter(["a'b", "c"]) == "['a\\'b','c']"
    with pytest.raises(StorageError, match="cannot bind a dict"):
        format_parameter({"a": 1})


def test_hostile_values_bind_as_data_and_run_nothing(store):
    """Bound through {name:Type}: every hostile string comes back byte for byte, as a scalar
    and inside an array, and the tables are still there afterwards."""
    for value in HOSTILE:
        rows = store.query(
            "SELECT {v:String} AS v, {a:Array(String)} AS a, count() AS n FROM events WHERE tenant_id = {v:String}",
            {"v": value, "a": [value, value]},
        )
        assert rows == [{"v": value, "a": [value, value], "n": 0}]
    assert store.query("SELECT count() AS n FROM events") == [{"n": 0}]


def test_hostile_dedup_token_is_a_literal_not_sql(store):
    from tests.fixtures.clickhouse import call_row

    token = "t', insert_deduplicate = 0, x = '"
    rows = [call_row()]
    store.insert_rows("llm_calls", rows, dedup_token=token)
    store.insert_rows("llm_calls", rows, dedup_token=token)
    assert store.query("SELECT count() AS n FROM llm_calls") == [{"n": 1}]


def test_split_statements_respects_quotes_and_comments():
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x String DEFAULT ';') ENGINE = Memory;
    /* block; comment */
    SELECT 'it\\'s; fine', "q;uoted", `b;t`;
    -- trailing comment only
    """
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[0].endswith("ENGINE = Memory")
    assert "SELECT 'it\\'s; fine', \"q;uoted\", `b;t`" in statements[1]


def test_single_statement_refuses_two():
    assert single_statement("SELECT 1;") == "SELECT 1"
    with pytest.raises(StorageError, match="exactly one SQL statement, got 2"):
        single_statement("SELECT 1; DROP TABLE events")
    with pytest.raises(StorageError, match="got 0"):
        single_statement("-- nothing")
