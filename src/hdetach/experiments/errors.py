"""The error every bad option raises, torch-free: the command line, the tasks and the
config resolution all refuse with it, and the ``hdetach`` command prints it in one line."""


class ConfigError(ValueError):
    """A bad option value, detected before any work starts."""
