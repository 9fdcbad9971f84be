"""Batch scoring on the cluster: resolve the champion once, score shards in parallel, gather.

The case study scores all 2.1 M customers every month. `kfct score` does it in one
process; the batch-scoring pipeline (pipelines/batch_scoring.py) lets the cluster scale
it out instead: `dsl.ParallelFor` over shards, each shard a pod running the same
`score_file` core as `kfct score`. Four stages, each a pure core plus a thin kfp function:

- `resolve_champion`: alias -> version, once. Every shard receives this version as a
  parameter, so a promotion in the middle of the job cannot split it across two models.
- `split_shards`: the ingested snapshot -> N parquet shards (contiguous row ranges).
- `score_shard`: one shard scored by exactly that version (the model file's sha256 is
  checked against the registry when it is loaded).
- `gather_scores`: the shard outputs -> one hive-partitioned parquet dataset
  (`shard=00000/part-0.parquet`, ...) plus `_summary.json` (rows, version, churn rate; the
  leading underscore keeps it out of the dataset for pyarrow / Spark readers),
  written to the pipeline root (MinIO on a cluster) and, with `output_uri=s3://...`, copied there.
"""

from pathlib import Path
from typing import List

from kfp.dsl import Artifact, Dataset, Input, Output

from kfct.errors import KfctError

MAX_SHARDS = 1000
SHARD_FILE = "shard-{:05d}.parquet"


class BatchScoringError(KfctError):
    """The batch job cannot go on (no champion, bad shard count, shards scored by different versions)."""


# -- cores ---------------------------------------------------------------------------------------


def registry_version(value: object) -> str:
    """An MLflow version number as a string. kfp 2.17's local runner hands a string parameter
    that looks numeric into a ParallelFor iteration as a float ("2" -> "2.0"); registry
    versions are integers, so a whole float can only be that."""
    import re

    text = str(value).strip()
    m = re.fullmatch(r"(\d+)\.0+", text)
    return m.group(1) if m else text


def plan_resolve(model_name: str, alias: str, version: str | None, tags: dict | None) -> dict:
    """The version the alias named (read beforehand, None when unset) and its registered sha256,
    fixed once for every shard; no version is one clear line."""
    if not version:
        raise BatchScoringError(f"model {model_name!r} has no version with alias {alias!r}: nothing to score with")
    return {"version": str(version), "model_sha256": (tags or {}).get("model_sha256", "")}


def resolve_batch_version(model_name: str, alias: str = "champion") -> dict:
    """Read the alias and its version's tags, then `plan_resolve`."""
    from kfct.governance import registry

    registry.setup()
    version = registry.alias_version(model_name, alias)
    tags = registry.client().get_model_version(model_name, version).tags if version else None
    return plan_resolve(model_name, alias, version, tags)


def split_core(dataset_path: str | Path, out_dir: str | Path, n_shards: int) -> list[int]:
    """Write contiguous row ranges as shard files; returns the shard indices (fewer when rows < n_shards)."""
    import pyarrow.parquet as pq

    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or not 1 <= n_shards <= MAX_SHARDS:
        raise BatchScoringError(f"n_shards must be an integer within 1..{MAX_SHARDS}, got {n_shards!r}")
    from kfct.data import parts

    rows = parts.count_rows(dataset_path)  # from the footer / manifest: the table is never read whole
    if rows == 0:
        raise BatchScoringError(f"{dataset_path} holds no rows: nothing to score")
    k = min(n_shards, rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bounds = [round(i * rows / k) for i in range(k + 1)]
    # Stream batches into the shard files in order: memory is one batch, not the dataset.
    shard, written, writer = 0, 0, None
    try:
        for batch in parts.iter_batches(dataset_path, batch_rows=65_536):
            start = 0
            while start < batch.num_rows:
                if writer is None:
                    writer = pq.ParquetWriter(out / SHARD_FILE.format(shard), batch.schema)
                take = min(bounds[shard + 1] - written, batch.num_rows - start)
                writer.write_batch(batch.slice(start, take))
                start += take
                written += take
                if written == bounds[shard + 1]:
                    writer.close()
                    writer, shard = None, shard + 1
    finally:
        if writer is not None:
            writer.close()
    return list(range(k))


def score_shard_file(
    shards_dir: str | Path, shard: int, model_name: str, version: str, out_path: str | Path, id_column: str | None = "customer_id"
) -> dict:
    from kfct.components.score import score_file
    from kfct.governance import registry

    version = registry_version(version)
    src = Path(shards_dir) / SHARD_FILE.format(int(shard))
    if not src.is_file():
        raise BatchScoringError(f"shard {shard} not found at {src}")
    registry.setup()
    try:
        lm = registry.load_version(model_name, version=str(version))  # sha256 verified against the registry tag
    except registry.ModelIntegrityError:
        raise
    except Exception as exc:
        raise BatchScoringError(
            f"model {model_name} v{version!r} cannot be loaded for shard {shard}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    summary = score_file(lm.model, src, out_path, lm.version, model_name, id_column)
    return summary.to_json()


def gather_core(
    score_dirs: list[tuple[int, str | Path]], version: str, model_name: str, out_dir: str | Path, dataset_sha256: str = ""
) -> dict:
    """Shard outputs -> out_dir/shard=NNNNN/part-0.parquet + out_dir/_summary.json; checks one version throughout."""
    import json
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    version = registry_version(version)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = positives = 0
    prob_sum = 0.0
    seen = sorted(score_dirs, key=lambda x: x[0])
    if not seen:
        raise BatchScoringError("no shard results to gather")
    for shard, d in seen:
        part = Path(d) / "scores.parquet"
        table = pq.read_table(part)
        versions = set(pc.unique(table.column("model_version").cast("string")).to_pylist())
        if versions != {str(version)}:
            raise BatchScoringError(
                f"shard {shard} was scored by version(s) {sorted(versions)}, expected {version}: "
                "every shard must use the version resolved at the start"
            )
        dest = out / f"shard={int(shard):05d}"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(part, dest / "part-0.parquet")
        rows += table.num_rows
        positives += int(pc.sum(table.column("label")).as_py() or 0)
        prob_sum += float(pc.sum(table.column("probability")).as_py() or 0.0)
    summary = {
        "model_name": model_name,
        "model_version": str(version),
        "rows": rows,
        "positives": positives,
        "churn_rate": round(positives / rows, 6) if rows else None,
        "mean_probability": round(prob_sum / rows, 6) if rows else None,
        "shards": len(seen),
        "dataset_sha256": dataset_sha256,
        "layout": "hive-partitioned parquet: shard=NNNNN/part-0.parquet",
    }
    (out / "_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def publish(out_dir: str | Path, output_uri: str) -> str:
    """Copy the gathered result (every file) under an s3:// prefix; returns the prefix."""
    from kfct.data import s3

    if not output_uri.startswith("s3://"):
        raise BatchScoringError(f"output_uri must be an s3:// prefix (or empty: pipeline root only), got {output_uri!r}")
    prefix = output_uri.rstrip("/")
    root = Path(out_dir)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.upload(f, f"{prefix}/{f.relative_to(root).as_posix()}")
    return prefix


# -- kfp components ------------------------------------------------------------------------------


def resolve_champion(model_name: str, alias: str, champion: Output[Artifact]) -> str:
    """Resolve the registry alias to one model version, once for the whole batch job; returns the version."""
    from kfct.runtime.stage import stage

    with stage("resolve-champion", model_name=model_name):
        import json
        from pathlib import Path

        from kfct.components.batch_score import resolve_batch_version

        out = resolve_batch_version(model_name, alias)
        with Path(champion.path).open("w") as fh:
            json.dump({"model_name": model_name, "alias": alias, **out}, fh)
        champion.metadata.update({"model_name": model_name, **out})
        return out["version"]


def split_shards(dataset: Input[Dataset], n_shards: int, shards: Output[Dataset]) -> List[int]:
    """Split the dataset snapshot into up to n_shards parquet shards; returns the shard indices to fan out over."""
    from kfct.runtime.stage import stage

    with stage("split-shards"):
        from kfct.components.batch_score import split_core

        idx = split_core(dataset.path, shards.path, n_shards)
        shards.metadata.update({"shards": len(idx), "source_sha256": dataset.metadata.get("sha256", "")})
        return idx


def score_shard(shards: Input[Dataset], shard: int, champion: Input[Artifact], scores: Output[Dataset]) -> str:
    """Score one shard with exactly the resolved model version (hash-verified); same core as `kfct score`."""
    from kfct.runtime.stage import stage

    with stage("score-shard", shard=shard) as st:
        import json
        from pathlib import Path

        from kfct.components.batch_score import score_shard_file
        from kfct.config import load_config

        with Path(champion.path).open() as fh:
            resolved = json.load(fh)
        model_name, version = resolved["model_name"], resolved["version"]
        st.context.update(model_name=model_name, version=version)

        Path(scores.path).mkdir(parents=True, exist_ok=True)
        out = score_shard_file(
            shards.path,
            shard,
            model_name,
            version,
            Path(scores.path) / "scores.parquet",
            id_column=load_config().dataset.id_column,
        )
        scores.metadata.update({"shard": int(shard), "rows": out["rows"], "model_version": out["model_version"]})
        return json.dumps(out)


def gather_scores(
    scores: Input[List[Dataset]], version: str, model_name: str, dataset_sha256: str, output_uri: str, result: Output[Dataset]
) -> str:
    """Gather shard scores into one partitioned parquet dataset + _summary.json (rows, version, churn rate)."""
    from kfct.runtime.stage import stage

    with stage("gather-scores", model_name=model_name):
        import json

        from kfct.components.batch_score import gather_core, publish

        dirs = [(int(a.metadata.get("shard", i)), a.path) for i, a in enumerate(scores)]
        summary = gather_core(dirs, version, model_name, result.path, dataset_sha256)
        if output_uri:
            summary["published"] = publish(result.path, output_uri)
        result.metadata.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
        return json.dumps(summary)
