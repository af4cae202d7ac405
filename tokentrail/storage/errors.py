"""The one exception storage raises."""


class StorageError(Exception):
    """A storage operation failed; the message names the table (or query) and what went wrong."""
