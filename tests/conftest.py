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
