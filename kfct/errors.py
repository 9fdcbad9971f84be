"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class KfctError(Exception):
    """An error whose message is complete and meant for the user (no traceback)."""

    exit_code = 2


class DataSourceError(KfctError):
    """A dataset cannot be read: missing file, unreachable or refusing S3 endpoint, bad format."""


class ValidationFailed(KfctError):
    """The dataset failed validation; the pipeline stopped before training."""

    exit_code = 3


class StageError(KfctError):
    """A pipeline stage failed."""

    exit_code = 4
