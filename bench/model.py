"""The run's working state and the one registered model the serving and scoring sections use.

Everything lives under a temporary `KFCT_HOME` (MLflow SQLite store, artifacts, audit
trail, prediction log), never under the repository's `.kfct/`. The model is trained
exactly as the pipeline's train stage does (`featurize_core` + `train_core`, default
config, CPU) on 100k generated customers and registered with its sha256 tag, so the
kfct server's hash check passes; MLflow's server and the FastAPI app load the same
version from the same store.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MODEL_ROWS = 100_000
MODEL_SEED = 42


@dataclass
class Registered:
    name: str
    version: str
    model: object
    train_rows: int
    val_auc: float


@dataclass
class Context:
    """Paths, options and the lazily registered model shared by the sections."""

    workdir: Path
    cache_dir: Path
    quick: bool = False
    log: object = print
    registered: Registered | None = None
    frames: dict = field(default_factory=dict)
    trained: dict = field(default_factory=dict)  # rows -> (model, train_df): reuse by the model step

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def activate(self) -> None:
        """Point kfct's settings (and MLflow) at this run's home."""
        from kfct.runtime.settings import reset_settings

        self.home.mkdir(parents=True, exist_ok=True)
        os.environ["KFCT_HOME"] = str(self.home)
        for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_MLFLOW_ARTIFACT_ROOT", "KFCT_S3_ENDPOINT", "KFCT_CONFIG"):
            os.environ.pop(var, None)
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        reset_settings()

    @property
    def tracking_uri(self) -> str:
        from kfct.runtime.settings import get_settings

        return get_settings().tracking_uri

    def frame(self, rows: int, seed: int):
        """Generated customers, kept in memory for the run."""
        key = (rows, seed)
        if key not in self.frames:
            from kfct.data.datagen import generate

            self.frames[key] = generate(rows, seed=seed)
        return self.frames[key]

    def drop_frames(self) -> None:
        self.frames.clear()


def new_workdir(base: str | None = None) -> Path:
    return Path(tempfile.mkdtemp(prefix="kfct-bench-", dir=base))


def default_cache_dir() -> Path:
    """Large generated inputs (2.1M customers) are kept here between runs."""
    return Path(os.environ.get("KFCT_BENCH_CACHE") or Path(tempfile.gettempdir()) / "kfct-bench-cache")


def train(ctx: Context, rows: int = MODEL_ROWS, seed: int = MODEL_SEED):
    """Train as the pipeline does. Returns (model, train_df, val_metrics, info, seconds)."""
    from kfct.components.featurize import featurize_core
    from kfct.components.train import train_core
    from kfct.config import load_config

    cfg = load_config()
    df = ctx.frame(rows, seed)
    t0 = time.perf_counter()
    tr, va, _te, enc = featurize_core(df, cfg)
    model, _params, val_metrics, info = train_core(tr, va, cfg, encoder=enc, device="cpu")
    return model, tr, val_metrics, info, time.perf_counter() - t0


def ensure_registered(ctx: Context) -> Registered:
    """Register the 100k-row model once per run (reusing the training section's model if it ran)."""
    if ctx.registered is not None:
        return ctx.registered
    import mlflow

    from kfct.config import load_config
    from kfct.governance import registry

    cfg = load_config()
    name = cfg.register_.model_name
    label = cfg.dataset.label
    if MODEL_ROWS in ctx.trained:
        model, tr, auc = ctx.trained[MODEL_ROWS]
    else:
        ctx.log(f"  training the benchmark model on {MODEL_ROWS:,} rows ...")
        model, tr, val_metrics, _info, _s = train(ctx)
        auc = val_metrics["val_roc_auc"]
    registry.setup()
    with mlflow.start_run(run_name="bench-model"):
        logged = registry.log_model(model, tr.drop(columns=[label]))
    version = registry.register(logged["model_uri"], name, {"model_sha256": logged["model_sha256"], "bench": "true"})
    registry.set_alias(name, cfg.register_.alias, version, reason="benchmark model")
    ctx.registered = Registered(name, version, model, MODEL_ROWS, float(auc))
    ctx.log(f"  registered {name} v{version} (val AUC {auc:.4f}) in {ctx.home}")
    return ctx.registered
