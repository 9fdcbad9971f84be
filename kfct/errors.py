"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class KfctError(Exception):
    """An error whose message is complete and meant for the user (no traceback)."""

    exit_code = 2


class DataSourceError(KfctError):
    """A dataset cannot be read: missing file, unreachable or refusing S3 endpoint, bad format."""


class ValidationFailed(KfctError):
    """The dataset failed validation; the pipeline stopped before training."""

    exit_code = 3


class DataVerdict(KfctError):
    """The gate judged the data, not the model (the champion collapsed on it): the run stopped."""

    exit_code = 5


class StageError(KfctError):
    """A pipeline stage failed."""

    exit_code = 4
    run_id: str | None = None  # the local run it failed in (the stage's `stage_failed` audit entry names it)


class FeatureError(ValueError):
    """An input record does not fit the model's feature schema. `field` names it.

    Defined here, not next to the encoder in `kfct.evidence.model`, so that the model server can
    catch it without importing scikit-learn at import time.
    """

    def __init__(self, field: str, message: str, index: int | None = None):
        self.field = field
        self.index = index
        where = f"instance {index}: " if index is not None else ""
        super().__init__(f"{where}feature {field!r}: {message}")
