"""The one root of every error tokentrail reports to a person.

Each part raises its own subclass (ConfigError, StorageError, RecordError, ...) with a message
that is complete on one line; the CLI hub prints any `TokentrailError` as that line and exits
2, so no command converts errors by hand. Part of the kernel: imports nothing of tokentrail.
"""


class TokentrailError(Exception):
    """A problem the user can understand (and usually fix); the message is one line."""


class ConfigError(TokentrailError):
    """Configuration the process cannot start with; the message lists every problem at once."""


class CliError(TokentrailError):
    """A problem with a command's arguments or situation, found by a command."""
