"""`open_store`: pick the adapter the settings and the machine call for."""

from __future__ import annotations

from tokentrail.storage.base import Store
from tokentrail.storage.settings import StorageSettings


def open_store(settings: StorageSettings | None = None) -> Store:
    """TOKENTRAIL_CLICKHOUSE_URL set: a ServerStore. Otherwise, if another live process holds
    the embedded store and runs its query server: a read-only RemoteStore through it. Otherwise
    the EmbeddedStore on TOKENTRAIL_HOME/clickhouse (StorageError, one line, if another
    process holds that path without a query server)."""
    settings = settings or StorageSettings()
    if settings.clickhouse_url is not None:
        from tokentrail.storage.server_store import ServerStore

        return ServerStore(settings.clickhouse_url.get_secret_value(), settings.clickhouse_database)
    from tokentrail.storage.embedded import EmbeddedStore
    from tokentrail.storage.query_server import find_query_server

    remote = find_query_server(settings)
    if remote is not None:
        return remote
    return EmbeddedStore(settings.embedded_path(), settings.clickhouse_database)
