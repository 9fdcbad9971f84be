"""Compile the pipelines to KFP IR YAML (`make compile`, `kfct compile`).

`build/ct_pipeline.yaml` is what you upload in the Kubeflow UI, what `kfct submit`
sends, and what CI checks. Type checking is on, so a component wired to an output of
the wrong type fails here rather than on the cluster. The monitoring pipeline
(`build/monitoring_pipeline.yaml`) and the batch-scoring pipeline
(`build/batch_scoring_pipeline.yaml`) are compiled beside it.

Pipelines are built under `task_config.target("cluster")`: resources, retries, GPU
and the Secret/ConfigMap env are always in the compiled YAML, even in a process that
ran a local pipeline before.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfct.errors import KfctError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings

CT_FILE = "ct_pipeline.yaml"
CT_PARTS_FILE = "ct_parts_pipeline.yaml"  # the map -> reduce variant for datasets in parts
MONITORING_FILE = "monitoring_pipeline.yaml"
BATCH_FILE = "batch_scoring_pipeline.yaml"


class CompileError(KfctError):
    """A pipeline could not be built or failed kfp's compiler (type checks included)."""


@contextlib.contextmanager
def _building(what: str) -> Iterator[None]:
    try:
        yield
    except KfctError:
        raise
    except Exception as exc:  # kfp raises TypeError/ValueError/... for bad wiring and types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CompileError(f"cannot compile the {what} pipeline: {type(exc).__name__}: {first}"[:500]) from exc


def _compile(pipeline_func: Any, path: Path) -> Path:
    from kfp import compiler

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=pipeline_func, package_path=str(path), type_check=True)
    return path


def compile_ct(
    out_dir: str | Path = "build", gpu: bool = False, settings: Settings | None = None, cfg: RunConfig | None = None
) -> Path:
    from kfct.pipelines.ct import build_ct_pipeline
    from kfct.pipelines.task_config import target

    with _building("CT"), target("cluster"):
        func = build_ct_pipeline(settings=settings, cfg=cfg, gpu=gpu)
        return _compile(func, Path(out_dir) / CT_FILE)


def compile_ct_parts(
    out_dir: str | Path = "build", gpu: bool = False, settings: Settings | None = None, cfg: RunConfig | None = None
) -> Path:
    """The CT pipeline for a dataset in parts (`kfct-ct-parts`: validate and featurize per part, then merged)."""
    from kfct.pipelines.ct import build_ct_pipeline
    from kfct.pipelines.task_config import target

    with _building("CT (parts)"), target("cluster"):
        func = build_ct_pipeline(settings=settings, cfg=cfg, gpu=gpu, parts=True)
        return _compile(func, Path(out_dir) / CT_PARTS_FILE)


def monitoring_available() -> bool:
    return importlib.util.find_spec("kfct.pipelines.monitoring") is not None


def compile_monitoring(out_dir: str | Path = "build") -> Path | None:
    if not monitoring_available():
        return None
    from kfct.pipelines.task_config import target

    with _building("monitoring"), target("cluster"):
        from kfct.pipelines.monitoring import build_monitoring_pipeline

        func = build_monitoring_pipeline()
        return _compile(func, Path(out_dir) / MONITORING_FILE)


def compile_batch(out_dir: str | Path = "build", settings: Settings | None = None, cfg: RunConfig | None = None) -> Path:
    from kfct.pipelines.task_config import target

    with _building("batch-scoring"), target("cluster"):
        from kfct.pipelines.batch_scoring import build_batch_pipeline

        return _compile(build_batch_pipeline(settings=settings, cfg=cfg), Path(out_dir) / BATCH_FILE)


def compile_all(
    out_dir: str | Path = "build", gpu: bool = False, settings: Settings | None = None, cfg: RunConfig | None = None
) -> list[Path]:
    """Compile every pipeline that exists; returns the written paths (CT first, then monitoring, batch scoring)."""
    paths = [compile_ct(out_dir, gpu=gpu, settings=settings, cfg=cfg)]
    mon = compile_monitoring(out_dir)
    if mon is not None:
        paths.append(mon)
    paths.append(compile_batch(out_dir, settings=settings, cfg=cfg))
    paths.append(compile_ct_parts(out_dir, gpu=gpu, settings=settings, cfg=cfg))
    return paths
