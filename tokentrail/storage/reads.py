"""Record who read a tenant's data: the evidence the Customers dashboard's silent-churn panel
needs (a tenant whose traffic continues while nobody looks at it). `report`, `events` and the
HTML report each record one read in the `reads` table (clickhouse/0012_create_reads.sql).

The reader is the operating-system login running the command: the CLI has no other identity
for a person. A store that cannot take writes (the read-only query server of a running
`tokentrail flows`, docs/storage.md) cannot record the read; the command still answers and
says so on stderr rather than failing the read itself.
"""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, datetime
from typing import Any

from schemas.ids import new_id
from tokentrail.storage.base import Store
from tokentrail.storage.errors import StorageError

Surface = str
"""`report cost`, `report html`, `events`, ... (the command that read)."""


def reader_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's anonymous uid)
        return "unknown"


def read_row(
    surface: Surface,
    tenant_id: str | None,
    since: datetime | None,
    until: datetime | None,
    reader: str,
    at: datetime | None = None,
) -> dict[str, Any]:
    """A `reads` row; `tenant_id` None (a read across all tenants) is stored as ''."""
    return {
        "read_id": new_id(),
        "read_at": (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "tenant_id": tenant_id or "",
        "reader": reader,
        "surface": surface,
        "since": None if since is None else since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "until": None if until is None else until.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
    }


def record_read(
    store: Store, surface: Surface, tenant_id: str | None, since: datetime | None, until: datetime | None
) -> bool:
    """Insert one read; False (with one line on stderr) when the store refuses writes."""
    try:
        store.insert_rows("reads", [read_row(surface, tenant_id, since, until, reader_name())])
    except StorageError as exc:
        print(f"tokentrail: this read was not recorded ({exc})", file=sys.stderr)
        return False
    return True
