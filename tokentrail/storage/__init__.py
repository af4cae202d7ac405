"""ClickHouse storage: the `Store` interface, its adapters, migrations and the query server.

    store = open_store()          # embedded chdb, a ClickHouse server, or a remote proxy
    migrate(store)                # apply clickhouse/NNNN_*.sql in order
    store.insert_rows("llm_calls", rows, dedup_token=token)

See docs/storage.md for tables, dedup semantics and the query server.
"""

from tokentrail.storage.base import Store
from tokentrail.storage.errors import StorageError
from tokentrail.storage.locked import LockedStore
from tokentrail.storage.migrations import migrate
from tokentrail.storage.query_server import start_query_server
from tokentrail.storage.settings import StorageSettings
from tokentrail.storage.stores import open_store

__all__ = ["LockedStore", "Store", "StorageError", "StorageSettings", "migrate", "open_store", "start_query_server"]
