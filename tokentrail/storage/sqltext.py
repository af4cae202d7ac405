"""The only places SQL text is put together: checked identifiers, quoted literals, bound
parameter values, and splitting a migration file into statements.

Every value in a query binds server-side to a `{name:Type}` placeholder; nothing a user typed
is ever formatted into SQL. These helpers cover what binding cannot: table and column names
(checked against a strict pattern), the insert_deduplication_token in an INSERT's SETTINGS
clause, and the text form chdb expects for bound values.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

from tokentrail.storage.errors import StorageError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def identifier(name: str) -> str:
    """A table or column name, checked and back-quoted, so it can be placed into SQL text."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise StorageError(f"not a valid table or column name: {name!r}")
    return f"`{name}`"


def quote_string(value: str) -> str:
    """A ClickHouse string literal for `value`: backslashes and quotes escaped, nothing else needed."""
    if not isinstance(value, str):
        raise StorageError(f"expected a string, got {type(value).__name__}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def format_parameter(value: object) -> str:
    """The text chdb binds to a `{name:Type}` placeholder, as for HTTP `param_<name>`: a
    top-level string in escaped (TSV) form, an array as a literal of quoted elements.
    Strings, numbers, bools, datetimes (sent as UTC) and lists of those."""
    text = _parameter_text(value, nested=False)
    return text.translate(_TSV_ESCAPES) if isinstance(value, str) else text


def _parameter_text(value: object, nested: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        text = value.isoformat(sep=" ", timespec="milliseconds")
        return quote_string(text) if nested else text
    if isinstance(value, date):
        return quote_string(value.isoformat()) if nested else value.isoformat()
    if isinstance(value, str):
        return quote_string(value) if nested else value
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ",".join(_parameter_text(item, nested=True) for item in value) + "]"
    raise StorageError(f"cannot bind a {type(value).__name__} as a query parameter")


def split_statements(sql: str) -> list[str]:
    """The statements of a migration file, split at `;` outside quotes and comments.
    Comments are kept with the statement that follows them; empty statements are dropped."""
    statements, current, i, quote = [], [], 0, None
    while i < len(sql):
        char = sql[i]
        if quote:
            current.append(char)
            if char == "\\":
                current.append(sql[i + 1 : i + 2])
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
            current.append(char)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end == -1 else end
            current.append(sql[i:end])
            i = end
            continue
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = len(sql) if end == -1 else end + 2
            current.append(sql[i:end])
            i = end
            continue
        elif char == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    """True when a chunk holds more than whitespace and comments."""
    without = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S)
    return bool(without.strip())


def single_statement(sql: str) -> str:
    """`sql` as exactly one statement (a trailing `;` removed). chdb runs every statement of a
    multi-statement string and, after a failure, leaks the earlier results into the next
    query's reply (chdb 4.4), so the embedded adapter accepts one statement per call."""
    statements = split_statements(sql)
    if len(statements) != 1:
        raise StorageError(f"expected exactly one SQL statement, got {len(statements)}")
    return statements[0]
