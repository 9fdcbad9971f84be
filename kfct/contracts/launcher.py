"""Starting a CT run from below the pipelines layer: the retrain launcher interface.

Drift monitoring (`kfct.components.retrain_policy`) decides *when* to retrain; where the
run happens is not its business. It asks a `RetrainLauncher`, which the pipelines
layer implements twice (`kfct.pipelines.launchers`): `LocalLauncher` runs the CT
pipeline with kfp's local runner, `KfpLauncher` creates a run through the KFP API.
The monitoring pipeline and the CLI pass one in; a kfp component, which runs in its
own process, picks one by settings (`pick_launcher`). Either way no component
imports `kfct.pipelines`, so the layers keep pointing down.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from kfct.errors import KfctError

if TYPE_CHECKING:
    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings

# The implementations `pick_launcher` loads by name (settings.retrain_launcher overrides both).
DEFAULTS = {"local": "kfct.pipelines.launchers:LocalLauncher", "cluster": "kfct.pipelines.launchers:KfpLauncher"}


class LauncherError(KfctError):
    """The retrain launcher named in settings cannot be loaded."""


@dataclass
class RetrainRequest:
    """One CT run to start: which model, on which data, and why."""

    model_name: str
    run_reason: str
    cfg: RunConfig | None = None  # None: the CT pipeline's default config
    data_uri: str = ""  # '' = the CT pipeline's default dataset
    severity: str = "?"
    requested_at: datetime | None = None  # when the monitor decided (names the cluster run)


class RetrainLauncher(Protocol):
    """Starts a CT run. `where` is 'local' or 'cluster' (it goes into the audit trail)."""

    where: str

    def launch(self, request: RetrainRequest) -> dict[str, Any]:
        """Start the run. Local: the CT summary once it finished; cluster: the created run
        (`run_id`, `run_name`, `url`, ...) as soon as the API accepted it."""
        ...


def uses_cluster(settings: Settings, mode: str = "auto") -> bool:
    """'auto' retrains on the cluster inside a pod or when a KFP host is configured."""
    if mode not in ("auto", "local", "cluster"):
        raise ValueError(f"mode must be auto, local or cluster, got {mode!r}")
    if mode == "auto":
        return bool(settings.in_cluster or settings.kfp_host)
    return mode == "cluster"


def pick_launcher(mode: str = "auto", settings: Settings | None = None) -> RetrainLauncher:
    """The launcher for `mode` (auto | local | cluster): `settings.retrain_launcher` when set
    ('module:Class', the class takes `settings=`), else the pipelines layer's own."""
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    where = "cluster" if uses_cluster(s, mode) else "local"
    target = s.retrain_launcher or DEFAULTS[where]
    module, _, name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise LauncherError(f"retrain launcher {target!r} (KFCT_RETRAIN_LAUNCHER) cannot be loaded: {exc}") from exc
    return cls(settings=s, where=where)
