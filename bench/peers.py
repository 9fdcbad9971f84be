"""The servers the serving benchmark compares, each in its own process on 127.0.0.1.

- kfct: `python -m kfct.serving` (KServe ModelServer + kfct router), as `kfct serve` runs it:
  V1 `POST /v1/models/<name>:predict`.
- MLflow: `mlflow models serve -m models:/<name>/<version> --env-manager local -w 1`:
  `POST /invocations` (MLflow's scoring server accepts the same `{"instances": [...]}`).
- MLServer 1.7.1 with `mlserver-xgboost` (the runtime KServe itself uses for XGBoost V2),
  in a virtualenv of its own (its pins clash with requirements.lock): the model's booster
  saved as JSON, `POST /v2/models/<name>/infer` with the encoded FP32 row (the encoder runs
  in the client: the runtime takes numbers, not feature records); the booster's `predict` is
  the probability (objective binary:logistic).
- FastAPI: the case study's serving app (seeds/003, `api.py`): a pydantic model of the
  features, the model loaded from the MLflow registry, `predict_proba` on a one-row
  DataFrame per request, Prometheus counters; uvicorn, one worker. `python -m bench.peers`
  runs it; the route takes the same V1 body.

Every server loads the same registered version from the same MLflow store and gets the
same request bodies. Each runs with its own defaults (uvicorn's access log is on for the
two peers, off in kfct), one worker, `OMP_NUM_THREADS=1`. Servers are started in a new session and stopped by
signalling that process group, so `mlflow models serve`'s uvicorn child goes with it.
"""

# No `from __future__ import annotations` here: FastAPI reads the route's annotations at
# runtime, and the request model is local to `build_fastapi_app`.
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfct.config import RunConfig


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body=None, timeout: float = 10.0) -> tuple[int, object]:
    """A plain urllib call for readiness and sanity checks (not for measuring)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class ServerProcess:
    """A server under test: its command, where it answers, and how to read its answer."""

    name: str
    label: str
    cmd: list[str]
    env: dict[str, str]
    base_url: str
    predict_path: str
    ready_path: str
    log_path: Path
    proc: subprocess.Popen | None = None
    started_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def predict_url(self) -> str:
        return self.base_url + self.predict_path

    def start(self) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.log_path.open("wb")
        self._t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        fh.close()
        return self

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Poll the readiness URL; returns seconds from start to ready. Raises with the log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with code {self.proc.returncode} before it was ready:\n" + self.log_tail()
                )
            try:
                status, _ = http_json("GET", self.base_url + self.ready_path, timeout=2.0)
                if status == 200:
                    self.started_s = round(time.perf_counter() - self._t0, 2)
                    return self.started_s
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.label} not ready after {timeout:.0f} s:\n" + self.log_tail())

    def log_tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)  # the group this process leads (start_new_session)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _env(home: Path, tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env.update(
        {
            "KFCT_HOME": str(home),
            "MLFLOW_TRACKING_URI": tracking_uri,
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "GIT_PYTHON_REFRESH": "quiet",
            "PYTHONUNBUFFERED": "1",
            # `mlflow models serve` execs `uvicorn` from PATH: the one in this virtualenv.
            "PATH": bindir + os.pathsep + env.get("PATH", ""),
            # One worker, one core, for every server: XGBoost's OpenMP threads (nthread=0 = all
            # cores) would otherwise fight the load generator for the machine's two cores; that
            # made the FastAPI app's p50 about 3x worse in trials, an artefact of co-location.
            "OMP_NUM_THREADS": "1",
        }
    )
    env.pop("KFCT_MLFLOW_TRACKING_URI", None)
    return env


def kfct_server(
    home: Path,
    tracking_uri: str,
    model_name: str,
    logs: Path,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    label: str = "kfct (KServe ModelServer)",
    log_name: str = "kfct.log",
) -> ServerProcess:
    port = port or free_port()
    return ServerProcess(
        name="kfct",
        label=label,
        cmd=[
            sys.executable,
            "-m",
            "kfct.serving",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            model_name,
            *extra_args,
        ],
        env=_env(home, tracking_uri),
        base_url=f"http://127.0.0.1:{port}",
        predict_path=f"/v1/models/{model_name}:predict",
        ready_path=f"/v1/models/{model_name}",
        log_path=logs / log_name,
    )


def mlflow_server(
    home: Path, tracking_uri: str, model_name: str, version: str, logs: Path, port: int | None = None
) -> ServerProcess:
    port = port or free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_bin)] if mlflow_bin.exists() else [sys.executable, "-m", "mlflow"]
    cmd += [
        "models",
        "serve",
        "-m",
        f"models:/{model_name}/{version}",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    return ServerProcess(
        name="mlflow",
        label="mlflow models serve",
        cmd=cmd,
        env=_env(home, tracking_uri),
        base_url=f"http://127.0.0.1:{port}",
        predict_path="/invocations",
        ready_path="/ping",
        log_path=logs / "mlflow.log",
    )


def fastapi_server(
    home: Path, tracking_uri: str, model_name: str, version: str, logs: Path, port: int | None = None
) -> ServerProcess:
    port = port or free_port()
    return ServerProcess(
        name="fastapi",
        label="FastAPI app (case study)",
        cmd=[
            sys.executable,
            "-m",
            "bench.peers",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            model_name,
            "--version",
            str(version),
        ],
        env=_env(home, tracking_uri),
        base_url=f"http://127.0.0.1:{port}",
        predict_path=f"/v1/models/{model_name}:predict",
        ready_path="/health",
        log_path=logs / "fastapi.log",
    )


# --- MLServer with its XGBoost runtime (KServe's own V2 runtime for XGBoost) -----------------

MLSERVER_PINS = ("mlserver==1.7.1", "mlserver-xgboost==1.7.1", "xgboost==3.2.0")


def ensure_mlserver_venv(cache_dir: Path, log=print) -> Path:
    """A virtualenv of its own for MLServer (its pins clash with requirements.lock: with the
    lock pip falls back to mlserver 1.2.1). Built once into the bench cache; returns its bin/."""
    venv = Path(cache_dir) / "mlserver-venv"
    marker = venv / ".installed"
    want = " ".join(MLSERVER_PINS)
    if marker.exists() and marker.read_text() == want:
        return venv / "bin"
    log(f"  creating {venv} with {want} (once) ...")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    cp = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *MLSERVER_PINS], capture_output=True, text=True, timeout=1800
    )
    if cp.returncode != 0:
        raise RuntimeError(f"pip install {want} failed: {cp.stderr.strip()[-600:]}")
    marker.write_text(want)
    return venv / "bin"


def mlserver_bodies(model, records: list[dict]) -> list[dict]:
    """V2 bodies for MLServer: the model's own encoder runs client-side (the XGBoost runtime takes
    the numeric matrix, not feature records), one FP32 row per request; the booster's
    `predict` output is already the probability (binary:logistic)."""
    import numpy as np

    M = np.asarray(model.encoder.transform_records(records), dtype=np.float32)
    return [
        {"inputs": [{"name": "input-0", "shape": [1, int(M.shape[1])], "datatype": "FP32", "data": row.tolist()}]} for row in M
    ]


def mlserver_server(
    bin_dir: Path, model, model_name: str, version: str, workdir: Path, logs: Path, port: int | None = None
) -> ServerProcess:
    """`mlserver start` on a folder holding the model's booster (JSON) and its settings files."""
    port = port or free_port()
    root = Path(workdir) / "mlserver-model"
    root.mkdir(parents=True, exist_ok=True)
    booster = model._booster()
    booster.save_model(str(root / "model.json"))
    (root / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": 0,
                "debug": False,
            }
        )
    )
    (root / "model-settings.json").write_text(
        json.dumps(
            {
                "name": model_name,
                "implementation": "mlserver_xgboost.XGBoostModel",
                "parameters": {"uri": "./model.json", "version": str(version)},
            }
        )
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PATH=str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    for var in ("VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(var, None)
    return ServerProcess(
        name="mlserver",
        label="MLServer 1.7.1 (XGBoost runtime)",
        cmd=[str(bin_dir / "mlserver"), "start", str(root)],
        env=env,
        base_url=f"http://127.0.0.1:{port}",
        predict_path=f"/v2/models/{model_name}/infer",
        ready_path=f"/v2/models/{model_name}/ready",
        log_path=logs / "mlserver.log",
    )


def positive_probability(server: str, payload) -> list[float]:
    """The positive-class probabilities in one server's response (for the same-model check)."""
    if server == "kfct":
        return [float(p["probability"]) for p in payload["predictions"]]
    if server == "mlflow":  # pyfunc_predict_fn=predict_proba: [[p0, p1], ...]
        return [float(p[1]) if isinstance(p, list) else float(p) for p in payload["predictions"]]
    if server == "fastapi":
        return [float(p["churn_probability"]) for p in payload["predictions"]]
    if server == "mlserver":  # the booster (binary:logistic) loads as XGBRegressor: `predict` = probability
        return [float(v) for v in payload["outputs"][0]["data"]]
    raise ValueError(f"unknown server {server!r}")


# --- the case study's FastAPI app ----------------------------------------------------------


def features_model(cfg: "RunConfig"):
    """Pydantic model of one customer, built from the dataset schema (bounds as `Field(ge, le)`).

    The case study writes this class by hand; building it from the config keeps the peer
    in step with whatever dataset the config describes.
    """
    from typing import Literal

    from pydantic import Field, create_model

    ds = cfg.dataset
    label = ds.label
    fields = {ds.id_column: (str, Field(...))}
    for col, spec in ds.columns.items():
        if col in (label, ds.id_column) or col in ds.exclude_features:
            continue
        kind = spec.dtype
        if kind == "category":
            typ = Literal[tuple(str(v) for v in spec.categories)]
        elif kind == "int":
            typ = int
        elif kind == "float":
            typ = float
        else:
            typ = str
        bounds = {k: getattr(spec, m) for k, m in (("ge", "min"), ("le", "max")) if kind in ("int", "float")}
        if spec.nullable:
            fields[col] = (typ | None, Field(None, **bounds))
        else:
            fields[col] = (typ, Field(..., **bounds))
    return create_model("CustomerFeatures", **fields)


def build_fastapi_app(model_name: str, version: str, cfg: "RunConfig | None" = None):
    """The case study's `api.py`, reduced to its real-time path and given the V1 route."""
    from contextlib import asynccontextmanager

    import pandas as pd
    from fastapi import FastAPI, HTTPException
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from pydantic import BaseModel

    from kfct.config import load_config

    cfg = cfg or load_config()
    id_col = cfg.dataset.id_column
    Features = features_model(cfg)

    class V1Request(BaseModel):
        instances: list[Features]  # type: ignore[valid-type]

    class Prediction(BaseModel):
        customer_id: str
        churn_probability: float
        churn_prediction: bool
        confidence: str
        model_version: str

    class V1Response(BaseModel):
        predictions: list[Prediction]

    reg = CollectorRegistry()
    predictions_total = Counter("churn_predictions_total", "predictions", ["mode", "model_version"], registry=reg)
    duration = Histogram(
        "churn_prediction_duration_seconds",
        "latency",
        ["mode"],
        registry=reg,
        buckets=[0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0],
    )
    avg_gauge = Gauge("churn_prediction_avg_probability", "mean probability", registry=reg)
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        import mlflow

        state["model"] = mlflow.sklearn.load_model(f"models:/{model_name}/{version}")
        state["version"] = str(version)
        yield
        state.clear()

    app = FastAPI(title="churn API (case study)", lifespan=lifespan)

    def confidence(p: float) -> str:
        if p >= 0.75 or p <= 0.25:
            return "high"
        if p >= 0.60 or p <= 0.40:
            return "medium"
        return "low"

    @app.get("/health")
    async def health():
        if "model" not in state:
            raise HTTPException(status_code=503, detail="model not loaded")
        return {"status": "healthy", "model_version": state["version"]}

    @app.post(f"/v1/models/{model_name}:predict", response_model=V1Response)
    async def predict(req: V1Request):
        if "model" not in state:
            raise HTTPException(status_code=503, detail="model not loaded")
        t0 = time.time()
        model = state["model"]
        rows = [c.model_dump() for c in req.instances]
        X = pd.DataFrame(rows)
        proba = model.predict_proba(X)[:, 1]
        thr = float(getattr(model, "threshold", 0.5))
        out = [
            Prediction(
                customer_id=r[id_col],
                churn_probability=round(float(p), 6),
                churn_prediction=bool(p >= thr),
                confidence=confidence(float(p)),
                model_version=state["version"],
            )
            for r, p in zip(rows, proba)
        ]
        predictions_total.labels(mode="realtime", model_version=state["version"]).inc(len(out))
        avg_gauge.set(float(proba.mean()))
        duration.labels(mode="realtime").observe(time.time() - t0)
        return V1Response(predictions=out)

    return app


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.peers", description="the case study's FastAPI churn app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--version", required=True, help="registered version")
    args = p.parse_args(argv)
    import uvicorn

    # As the case study runs it (`uvicorn.run(app, host, port)`): uvicorn's defaults, one worker.
    uvicorn.run(build_fastapi_app(args.model, args.version), host=args.host, port=args.port, workers=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
