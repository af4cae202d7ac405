"""Fixtures live in tests/fixtures/<area>.py, one module per real component."""

pytest_plugins: list[str] = [
    "tests.fixtures.kafka",
    "tests.fixtures.clickhouse",
    "tests.fixtures.flows",
    "tests.fixtures.mock_upstream",
    "tests.fixtures.gateway",
    "tests.fixtures.dashboards",
    "tests.fixtures.chromium",
    "tests.fixtures.alertmanager",
]


def pytest_configure(config) -> None:
    """No test may touch the user's real state directory: the default TOKENTRAIL_HOME
    ($XDG_STATE_HOME/tokentrail) points into a directory of this session, for every
    subprocess too. Tests that need a home still give their own TOKENTRAIL_HOME."""
    import os
    import tempfile

    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="tokentrail-test-state-")
