"""The two ways to start a CT run that drift monitoring asks for (`kfct.contracts.launcher`).

`LocalLauncher` runs the CT pipeline on this machine with kfp's local runner
(`kfct.pipelines.local.run_ct`) and returns its summary; `KfpLauncher` starts the
version of the CT pipeline an operator pinned (`kfct submit` / `kfct schedule`, audit event
`pipeline_version_pinned`) through the KFP API, the reason in the run's name and
`run_reason` parameter, and returns the created run (its pipeline version id included).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kfct.contracts.launcher import RetrainRequest

if TYPE_CHECKING:
    from kfct.runtime.settings import Settings


class LocalLauncher:
    """A CT run with kfp.local; it gates the new model like any other run."""

    def __init__(self, settings: Settings | None = None, where: str = "local"):
        self.settings = settings
        self.where = where

    def launch(self, request: RetrainRequest) -> dict[str, Any]:
        from kfct.pipelines.local import run_ct

        return run_ct(
            data_uri=request.data_uri or None,
            cfg=request.cfg or None,
            model_name=request.model_name,
            run_reason=request.run_reason,
            settings=self.settings,
            raise_on_validation=False,
        )


class KfpLauncher:
    """A new run of the uploaded CT pipeline through the KFP API."""

    def __init__(self, settings: Settings | None = None, where: str = "cluster"):
        self.settings = settings
        self.where = where

    def launch(self, request: RetrainRequest) -> dict[str, Any]:
        from kfct.pipelines.ct import PIPELINE_NAME
        from kfct.pipelines.kfp_client import trigger_run

        params = {"run_reason": request.run_reason, "model_name": request.model_name}
        if request.data_uri:
            params["data_uri"] = request.data_uri
        stamp = (request.requested_at or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
        info = trigger_run(
            PIPELINE_NAME, params, run_name=f"{PIPELINE_NAME} retrain drift-{request.severity} {stamp}", settings=self.settings
        )
        return info.to_dict()


def launcher_for(mode: str = "auto", settings: Settings | None = None) -> LocalLauncher | KfpLauncher:
    """The launcher the monitoring pipeline and the CLI inject: cluster or local by `mode`."""
    from kfct.contracts.launcher import uses_cluster
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    return KfpLauncher(settings=s) if uses_cluster(s, mode) else LocalLauncher(settings=s)
