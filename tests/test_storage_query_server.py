"""Embedded-store specifics: who may open a path, and reading through the query server while
another process holds the store."""

import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import orjson
import pytest

from tests.fixtures.clickhouse import call_row, event_row
from tokentrail.storage import StorageError, StorageSettings, open_store, start_query_server
from tokentrail.storage.embedded import EmbeddedStore
from tokentrail.storage.query_server import RemoteStore, is_read_statement, server_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A separate process that holds the embedded store (as `tokentrail flows` does), seeds it,
# optionally serves queries, says "ready" and waits for a line on stdin before it stops.
HOLDER = textwrap.dedent("""
    import sys
    from tests.fixtures.clickhouse import call_row, event_row
    from tokentrail.storage import StorageSettings, migrate, start_query_server
    from tokentrail.storage.embedded import EmbeddedStore

    settings = StorageSettings()
    store = EmbeddedStore(settings.embedded_path())
    migrate(store, settings)
    store.insert_rows("events", [
        event_row(event_id="e2", timestamp="2026-03-01 10:00:02.000"),
        event_row(event_id="e1", timestamp="2026-03-01 10:00:01.000"),
    ])
    store.insert_rows("llm_calls", [call_row(cost_usd="2.5"), call_row(cost_usd="0.5")])
    handle = start_query_server(store, settings) if sys.argv[1] == "serve" else None
    print("ready", flush=True)
    sys.stdin.readline()
    if handle:
        handle.stop()
    store.close()
""")


@pytest.fixture
def holder(tmp_path):
    """Start the holder process; `holder(serve=True)` -> (process, env for the CLI)."""
    started = []

    def start(serve: bool):
        env = {**os.environ, "TOKENTRAIL_HOME": str(tmp_path / "home"), "PYTHONPATH": REPO}
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, "serve" if serve else "hold"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout.readline().strip() == "ready"
        return process, env

    yield start
    for process in started:
        if process.poll() is None:
            process.stdin.write("\n")
            process.stdin.flush()
            process.wait(timeout=20)


def tokentrail(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "tokentrail", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_cli_reads_through_the_query_server_of_the_process_holding_the_store(holder):
    process, env = holder(serve=True)
    events = tokentrail(
        env, "events", "--tenant", "acme", "--since", "2026-03-01", "--until", "2026-03-02", "--format", "jsonl"
    )
    assert events.returncode == 0, events.stderr
    assert [orjson.loads(line)["event_id"] for line in events.stdout.splitlines()] == ["e1", "e2"]
    # The query server is read-only: the read cannot be recorded, and the CLI says so (docs/dashboards.md).
    assert events.stderr.startswith("tokentrail: this read was not recorded (cannot insert into reads")

    report = tokentrail(env, "report", "cost", "--format", "csv")
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[1].startswith("acme,2,0,") and ",3,0" in report.stdout

    migrate = tokentrail(env, "migrate")
    assert migrate.returncode == 2
    assert migrate.stderr.strip() == (
        f"tokentrail migrate: cannot run a statement: the embedded ClickHouse is held by process "
        f"{process.pid}, which only serves read-only queries; stop that process first"
    )

    process.stdin.write("\n")
    process.stdin.flush()
    process.wait(timeout=20)
    assert not (server_file(StorageSettings(home=env["TOKENTRAIL_HOME"]))).exists()


def test_a_held_store_without_query_server_is_one_clear_line(holder):
    process, env = holder(serve=False)
    result = tokentrail(env, "events", "--tenant", "acme", "--since", "2026-03-01", "--until", "2026-03-02")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("tokentrail events: the embedded ClickHouse at ")
    assert f"is held by another process (pid {process.pid})" in lines[-1]


def test_one_path_per_process_is_reported(store, tmp_path):
    with pytest.raises(StorageError, match="this process already has another path open"):
        EmbeddedStore(tmp_path / "elsewhere")


def test_query_server_is_read_only_and_needs_its_token(store, storage_settings):
    store.insert_rows("llm_calls", [call_row(call_id="x")])
    handle = start_query_server(store, storage_settings)
    try:
        info = orjson.loads(server_file(storage_settings).read_bytes())
        assert info["port"] == handle.port and info["pid"] == os.getpid()
        assert oct(server_file(storage_settings).stat().st_mode & 0o777) == "0o600"
        remote = RemoteStore(handle.port, info["token"], os.getpid())
        assert remote.query("SELECT call_id FROM llm_calls WHERE call_id = {c:String}", {"c": "x"}) == [
            {"call_id": "x"}
        ]
        assert remote.existing_ids("llm_calls", "call_id", ["x", "y"]) == {"x"}
        with pytest.raises(StorageError, match="only runs read-only queries"):
            remote.query("INSERT INTO llm_calls (call_id) VALUES ('y')")
        with pytest.raises(StorageError, match="readonly mode"):
            remote.query("SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String') SETTINGS readonly = 0")
        with pytest.raises(StorageError, match="exactly one SQL statement"):
            remote.query("SELECT 1; DROP TABLE llm_calls")
        with pytest.raises(StorageError, match="only serves read-only queries"):
            remote.insert_rows("llm_calls", [call_row()])
        with pytest.raises(StorageError, match="wrong query-server token"):
            RemoteStore(handle.port, "guess", os.getpid()).query("SELECT 1")
        request = urllib.request.Request(
            f"http://127.0.0.1:{handle.port}/query",
            data=b"{not json",
            headers={"Authorization": f"Bearer {info['token']}"},
        )
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(request, timeout=5)
        assert bad.value.code == 400
        assert store.query("SELECT count() AS n FROM llm_calls") == [{"n": 1}]
    finally:
        handle.stop()
    assert not server_file(storage_settings).exists()


def test_open_store_in_the_holding_process_uses_the_engine_directly(store, storage_settings):
    handle = start_query_server(store, storage_settings)
    try:
        opened = open_store(storage_settings)
        assert isinstance(opened, EmbeddedStore)
        opened.insert_rows("events", [event_row()])
        opened.close()
        assert store.query("SELECT count() AS n FROM events") == [{"n": 1}], "closing a second session keeps the first"
    finally:
        handle.stop()


def test_a_server_file_left_by_a_dead_process_is_ignored_and_removed(store, storage_settings):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    file = server_file(storage_settings)
    file.write_bytes(orjson.dumps({"port": 1, "pid": int(dead.stdout), "token": "t"}))
    assert isinstance(open_store(storage_settings), EmbeddedStore)
    assert not file.exists()


@pytest.mark.parametrize(
    ("sql", "allowed"),
    [
        ("SELECT 1", True),
        ("  with x AS (SELECT 1) SELECT * FROM x", True),
        ("-- c\nSHOW TABLES", True),
        ("/* x */ DESCRIBE events", True),
        ("INSERT INTO t VALUES (1)", False),
        ("DROP TABLE events", False),
        ("ALTER TABLE events DELETE WHERE 1", False),
        ("SYSTEM SHUTDOWN", False),
        ("selectx", False),
    ],
)
def test_read_statement_check(sql, allowed):
    assert is_read_statement(sql) is allowed


def test_an_unreachable_server_is_one_clear_error():
    from tokentrail.storage.server_store import ServerStore

    with pytest.raises(StorageError, match=r"cannot connect to ClickHouse at 127\.0\.0\.1:1") as failure:
        ServerStore("http://default:secret@127.0.0.1:1/tokentrail")
    assert "secret" not in str(failure.value) and "\n" not in str(failure.value)
