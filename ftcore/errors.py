"""Errors a user can act on. Each message names the field, file, row or model at fault."""


class FtflowError(Exception):
    """Base of errors caused by input or environment, reported without a traceback by the CLI."""


class ConfigError(FtflowError):
    """The config is invalid: unknown key, bad value, or a file it names does not exist."""


class DataError(FtflowError):
    """A dataset file or row is malformed."""


class ModelNotAvailableError(FtflowError):
    """A model reference cannot be resolved to local files (offline, not cached, unknown)."""


class ServiceUnavailableError(FtflowError):
    """A service the job needs (e.g. the MLflow tracking server) does not answer."""
