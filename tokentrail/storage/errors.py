"""The one exception storage raises."""

from tokentrail.errors import TokentrailError


class StorageError(TokentrailError):
    """A storage operation failed; the message names the table (or query) and what went wrong."""
