"""Shared fixtures: an isolated KFCT_HOME per test, small generated datasets, a trained model.

Speed (the suite runs on 2 cores): a new MLflow SQLite store runs every alembic migration on
first use (seconds of CPU each time). `kfct_home`, and any home a test builds itself through
`seed_mlflow_store`, starts instead from a copy of one store migrated once per test run: the
same schema, no rows, as a fresh store is the moment after its migrations. A test about store
creation itself (two processes creating one store at once) does not seed its home.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.homekit import MLFLOW_DB, CtRun, compiled_once, migrated_store, off_the_stack

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

ROOT = Path(__file__).resolve().parents[1]
# What MLflow 3 makes in the working directory when a process uses it with no tracking URI set.
MLFLOW_DEFAULT_STORES = ("mlflow.db", "mlruns")


def _cwd() -> Path:
    try:
        return Path.cwd()
    except FileNotFoundError:  # a test left its working directory behind in a removed temp dir
        return ROOT


def default_mlflow_stores(folders) -> set[Path]:
    return {f / name for f in folders for name in MLFLOW_DEFAULT_STORES if (f / name).exists()}


@pytest.fixture(autouse=True)
def _no_default_mlflow_store():
    """Every MLflow use goes through kfct.governance.registry.setup (the store under KFCT_HOME, or the server
    the settings name). One that does not falls back to MLflow's default, ./mlflow.db in the working
    directory, where it outlives the test and once got committed: fail the test that made it
    (or whose subprocess did), wherever it runs from."""
    folders = {_cwd(), ROOT}
    before = default_mlflow_stores(folders)
    yield
    stray = default_mlflow_stores(folders | {_cwd()}) - before
    assert not stray, (
        f"MLflow used without kfct.governance.registry.setup: it made {sorted(map(str, stray))} "
        "(its default tracking store in the working directory)"
    )


def run_root(tmp_path_factory) -> Path:
    """The test run's basetemp, shared by its xdist workers (each worker's own is a folder in it)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory) -> Path:
    """The migrated, empty store every seeded home starts from (one per test run, shared by xdist workers)."""
    return migrated_store(run_root(tmp_path_factory) / "mlflow-template")


@pytest.fixture(scope="session")
def seed_mlflow_store(mlflow_store_template):
    """`seed(home)`: give a KFCT_HOME that has no store yet a migrated, empty one (a copy)."""

    def seed(home: Path) -> Path:
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        db = home / MLFLOW_DB
        if not db.exists():
            shutil.copyfile(mlflow_store_template, db)
        return home

    return seed


@pytest.fixture
def kfct_home(tmp_path, monkeypatch, seed_mlflow_store):
    """Point every setting at a fresh temp dir (MLflow store, audit, pipeline root).

    The MLflow store in it is a copy of a migrated, empty one (see the module docstring)."""
    from kfct.runtime.settings import reset_settings

    home = seed_mlflow_store(tmp_path / "kfct-home")
    monkeypatch.setenv("KFCT_HOME", str(home))
    for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    reset_settings()
    yield home
    reset_settings()


CT_RUN_ROWS = 20_000


@pytest.fixture(scope="session")
def ct_run(tmp_path_factory, seed_mlflow_store) -> CtRun:
    """The CT pipeline run once per test session (per xdist worker) under kfp's local runner, on
    20k generated rows in a home of its own: version 1 registered as champion, its MLflow run,
    card, audit entries and kfp outputs. For tests that only read what a run made; a test that
    writes (another run, an alias move) works on `copy_home(ct_run.home, ...)` instead."""
    from kfct.data.datagen import generate, write_frame
    from kfct.pipelines.local import run_ct
    from kfct.runtime.settings import reset_settings

    home = seed_mlflow_store(tmp_path_factory.mktemp("ct-run") / "kfct-home")
    data = write_frame(generate(CT_RUN_ROWS, seed=42), home / "data" / "customers.parquet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KFCT_HOME", str(home))
        for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT"):
            mp.delenv(var, raising=False)
        reset_settings()
        summary = off_the_stack(run_ct, data_uri=str(data))  # builds the pipeline in-process (tests/homekit.py)
    reset_settings()
    return CtRun(home, data, summary)


@pytest.fixture(scope="session")
def compiled_pipelines(tmp_path_factory) -> list[Path]:
    """`kfct compile` once per test run with default settings (no KFCT_* variable): the paths
    `compile_all` returns (CT first, then monitoring and batch scoring). For tests that read the
    IR; a test that compiles with settings of its own still calls the compiler itself.

    Compiling costs seconds of CPU (kfp calls `inspect.stack()` for every resource a task sets), so
    the xdist workers share one compile (tests/homekit.py `compiled_once`) rather than one each."""
    return compiled_once(run_root(tmp_path_factory) / "build")


# The services a cluster's pods reach (what `kfct compile` bakes into the IR's ConfigMap env).
CLUSTER_SETTINGS = {"s3_endpoint": "minio.test:9000", "mlflow_tracking_uri": "http://mlflow.test:5000"}


@pytest.fixture(scope="session")
def cluster_compiled(tmp_path_factory) -> dict[str, list[dict]]:
    """`compile_all` once per test run with `Settings(**CLUSTER_SETTINGS)`, read: file name ->
    its YAML documents (CT, monitoring, batch scoring, CT in parts). For tests that read the IR
    a cluster gets; shared by the xdist workers like `compiled_pipelines`."""
    import yaml

    paths = compiled_once(run_root(tmp_path_factory) / "build-cluster", **CLUSTER_SETTINGS)
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in paths}


@pytest.fixture(scope="session")
def cfg():
    from kfct.config import load_config

    return load_config()


@pytest.fixture(scope="session")
def small_df():
    from kfct.data.datagen import generate

    return generate(8000, seed=11)


@pytest.fixture(scope="session")
def trained(small_df, cfg):
    """(model, train, val, test) trained once per session on 8k rows."""
    from kfct.components.featurize import featurize_core
    from kfct.components.train import train_core

    tr, va, te, enc = featurize_core(small_df, cfg)
    model, *_ = train_core(tr, va, cfg, encoder=enc)
    return model, tr, va, te


# -- selection and scheduling -------------------------------------------------------------------
# `make test` runs every test on pytest-xdist workers (`--dist loadfile`); `make test-fast`
# deselects the slow, e2e and tool tests (pyproject.toml, docs/developing.md).

E2E_DIR = ROOT / "tests" / "e2e"


# Files whose tests judge latency or traffic within seconds on live servers (a rollout's p99 checks, a
# canary's "enough traffic" window): with another xdist worker running a pipeline on the same 2 cores
# they judge the machine, not the code. `make test` runs them after the parallel pass, with no pipeline
# beside them: one file per core at most (Makefile ALONE_WORKERS).
ALONE_FILES = frozenset(
    {
        "test_serving_canary.py",
        "test_serving_hostile.py",
        "test_faults_serving.py",
        "test_rollout_adversarial.py",
        "test_rollout_replicas.py",
        "test_canary_modes.py",
        "test_canary_route.py",
    }
)


def pytest_collection_modifyitems(config, items):
    """Mark tests/e2e `e2e`; under xdist, schedule the e2e files first and the slow ones next.

    `make test` runs each test file on one worker (`--dist loadfile`): a file's module-scoped
    fixtures (a pipeline run, a server, a registry) are made once and its tests run in the order
    they are written, as in a serial run. (`--dist loadgroup` would let tests of several files
    share a worker, but pytest-xdist 3.8 cannot name the groups under pytest 9: it rewrites
    `item._nodeid`, which pytest 9 no longer reads.) The files go out in this order
    (`--no-loadscope-reorder`), so the longest start while the quick ones fill the other workers."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)
        if item.path.name in ALONE_FILES:
            item.add_marker(pytest.mark.alone)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {}
        for item in items:
            r = 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("slow") else 2
            rank[item.path] = min(rank.get(item.path, 2), r)
        items.sort(key=lambda i: rank[i.path])  # stable: the order within each file is kept
