"""The errors a command prints in one line (exit code 2), torch-free: the command line,
the tasks, the config resolution and the data fetching raise them, and the ``hdetach``
command catches them without importing what raised them."""


class ConfigError(ValueError):
    """A bad option value, detected before any work starts."""


class DataError(RuntimeError):
    """Data missing or corrupt; the message says what to do."""
