"""Identifiers: UUIDv7 everywhere, so ids sort by creation time and `(timestamp, event_id)` is a total order."""

import uuid_utils


def new_id() -> str:
    return str(uuid_utils.uuid7())
