"""Read-only queries on an embedded store another process holds.

chdb lets one process open a data path (ClickHouse locks `<path>/status`). While
`tokentrail flows` holds TOKENTRAIL_HOME/clickhouse, it runs `start_query_server(store, settings)`:
a loopback-only HTTP server thread answering `POST /query {"sql", "parameters"}` from a second
chdb session set to `readonly = 1` (non-SELECT statements are also refused before they reach
the engine). It records `{"port", "pid", "token"}` in
TOKENTRAIL_HOME/clickhouse/query-server.json (mode 0600; each request must present the token)
and removes the file when stopped. `open_store()` finds that file, checks that the pid is alive
and the server answers, and returns a `RemoteStore` that speaks to it: queries work, writes
raise StorageError.

Replies carry ClickHouse's JSONCompactEachRowWithNamesAndTypes body unchanged, so the client
decodes them by column type exactly as EmbeddedStore does.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tokentrail.storage.base import decode_compact, existing_ids_sql
from tokentrail.storage.errors import StorageError
from tokentrail.storage.settings import StorageSettings
from tokentrail.storage.sqltext import format_parameter

if TYPE_CHECKING:  # chdb costs ~250 MB and 0.2 s to import: only the embedded store loads it
    from chdb.session import Session

    from tokentrail.storage.embedded import EmbeddedStore

SERVER_FILE = "query-server.json"
READ_STATEMENT = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.I)
_LEADING_COMMENTS = re.compile(r"^(\s*(--[^\n]*\n|/\*.*?\*/))*", re.S)
MAX_REQUEST_BYTES = 1 << 20


def server_file(settings: StorageSettings) -> Path:
    return settings.embedded_path() / SERVER_FILE


def is_read_statement(sql: str) -> bool:
    return bool(READ_STATEMENT.match(_LEADING_COMMENTS.sub("", sql, count=1)))


@dataclass
class QueryServerHandle:
    port: int
    file: Path
    _server: ThreadingHTTPServer
    _thread: threading.Thread
    _session: Session

    def stop(self) -> None:
        """Stop answering, close the read-only session and remove the server file."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._session.close()
        try:
            if orjson.loads(self.file.read_bytes()).get("pid") == os.getpid():
                self.file.unlink()
        except (OSError, orjson.JSONDecodeError):
            pass


def start_query_server(store: EmbeddedStore, settings: StorageSettings | None = None) -> QueryServerHandle:
    """Serve read-only queries on 127.0.0.1 (an ephemeral port) until `handle.stop()`."""
    from tokentrail.storage.embedded import EmbeddedStore

    settings = settings or StorageSettings()
    session = store.read_only_session()
    token = secrets.token_hex(16)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path != "/health":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})
            self._reply(HTTPStatus.OK, {"pid": os.getpid()})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/query":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})
            presented = self.headers.get("Authorization", "")
            if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
                return self._reply(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong query-server token"})
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_REQUEST_BYTES:
                return self._reply(HTTPStatus.BAD_REQUEST, {"error": "request body missing or too large"})
            try:
                request = orjson.loads(self.rfile.read(length))
                sql, parameters = request["sql"], request.get("parameters") or {}
                if (
                    not isinstance(sql, str)
                    or not isinstance(parameters, dict)
                    or not all(isinstance(v, str) for v in parameters.values())
                ):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return self._reply(
                    HTTPStatus.BAD_REQUEST, {"error": 'expected {"sql": str, "parameters": {name: text}}'}
                )
            if not is_read_statement(sql):
                return self._reply(HTTPStatus.FORBIDDEN, {"error": "the query server only runs read-only queries"})
            try:
                body = EmbeddedStore.query_raw(session, sql, parameters)
            except StorageError as exc:
                return self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            self._send(HTTPStatus.OK, body, "application/x-ndjson")

        def _reply(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            self._send(status, orjson.dumps(payload), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: one log line per query would drown the flows' own logs."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="tokentrail-query-server", daemon=True)
    thread.start()
    file = server_file(settings)
    temporary = file.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps({"port": server.server_port, "pid": os.getpid(), "token": token}))
    temporary.chmod(0o600)
    temporary.replace(file)
    return QueryServerHandle(server.server_port, file, server, thread, session)


class RemoteStore:
    """Queries through another process's query server; writes raise StorageError."""

    def __init__(self, port: int, token: str, pid: int, timeout: float = 60.0) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.pid = pid
        self._token = token
        self._timeout = timeout

    def _read_only(self, what: str) -> StorageError:
        return StorageError(
            f"{what}: the embedded ClickHouse is held by process {self.pid}, which only serves "
            "read-only queries; stop that process first"
        )

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                return bool(orjson.loads(reply.read()).get("pid") == self.pid)
        except (OSError, orjson.JSONDecodeError):
            return False

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        params = {name: format_parameter(value) for name, value in (parameters or {}).items()}
        request = urllib.request.Request(
            f"{self.url}/query",
            data=orjson.dumps({"sql": sql, "parameters": params}),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:
                return decode_compact(reply.read())
        except urllib.error.HTTPError as exc:
            try:
                message = orjson.loads(exc.read())["error"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = f"HTTP {exc.code}"
            raise StorageError(message) from None
        except OSError as exc:
            raise StorageError(f"query server of process {self.pid} at {self.url} did not answer: {exc}") from None

    def existing_ids(self, table: str, column: str, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        return {row["id"] for row in self.query(existing_ids_sql(table, column), {"ids": list(ids)})}

    def insert_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str | None = None) -> None:
        raise self._read_only(f"cannot insert into {table}")

    def insert_json_lines(self, table: str, body: bytes, dedup_token: str | None = None) -> None:
        raise self._read_only(f"cannot insert into {table}")

    def command(self, sql: str) -> None:
        raise self._read_only("cannot run a statement")

    def close(self) -> None:
        """Nothing to release: each query is one HTTP request."""


def find_query_server(settings: StorageSettings) -> RemoteStore | None:
    """The live query server of another process holding the embedded store, if any.
    A file left by a dead process is removed."""
    file = server_file(settings)
    try:
        info = orjson.loads(file.read_bytes())
        port, pid, token = int(info["port"]), int(info["pid"]), str(info["token"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if pid == os.getpid():
        return None
    if not _alive(pid):
        file.unlink(missing_ok=True)
        return None
    remote = RemoteStore(port, token, pid)
    return remote if remote.ping() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
