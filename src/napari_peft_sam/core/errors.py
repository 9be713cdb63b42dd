"""Errors a user can cause, each carrying one sentence that says what to change."""


class UserError(ValueError):
    """A problem with the user's input; the CLI exits with code 2 on it."""


class ConfigError(UserError):
    """An impossible or unknown hyperparameter value."""


class ModelNotAvailableError(UserError):
    """A base model whose weights are neither cached nor downloadable."""


class MethodUnavailableError(UserError):
    """A PEFT method that needs hardware or packages this machine lacks."""
