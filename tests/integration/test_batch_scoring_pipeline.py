"""The batch-scoring pipeline (issue 14): compiled IR (ParallelFor, one champion resolution,
no caching) and a real run with kfp.local's SubprocessRunner on small data."""

from __future__ import annotations

import pytest
import yaml

from tests.faultkit.servers import moto_s3
from tests.servingkit import MODEL_NAME, serving_env, serving_registry  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ir(compiled_pipelines):
    paths = compiled_pipelines  # `kfct compile`'s output, once per session (tests/conftest.py)
    batch = [p for p in paths if p.name == "batch_scoring_pipeline.yaml"]
    assert batch, f"`kfct compile` writes the batch pipeline beside CT and monitoring: {paths}"
    return [d for d in yaml.safe_load_all(batch[0].read_text()) if d]


def test_ir_fans_out_with_parallel_for_and_resolves_the_champion_once(ir):
    spec = ir[0]
    root = spec["root"]["dag"]["tasks"]
    resolvers = [n for n, t in root.items() if t["componentRef"]["name"] == "comp-resolve-champion"]
    assert resolvers == ["resolve-champion"], "one resolution, outside the fan-out"
    (loop_name,) = [n for n, t in root.items() if "parameterIterator" in t]
    loop = root[loop_name]
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("split-shards-Output")
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    (score,) = [t for t in inner.values() if t["componentRef"]["name"] == "comp-score-shard"]
    # the version every shard uses is the resolver's `champion` artifact, handed into the loop
    assert "version" not in score["inputs"].get("parameters", {}) and "model_name" not in score["inputs"].get("parameters", {})
    champ_in = score["inputs"]["artifacts"]["champion"]["componentInputArtifact"]
    assert loop["inputs"]["artifacts"][champ_in]["taskOutputArtifact"]["producerTask"] == "resolve-champion"
    assert gather_version_from(root) == "resolve-champion"
    gather = root["gather-scores"]
    assert gather["inputs"]["artifacts"]["scores"]["taskOutputArtifact"]["producerTask"] == loop_name
    assert all(t.get("cachingOptions", {}).get("enableCache") is not True for t in root.values())
    assert "n_shards" in spec["root"]["inputDefinitions"]["parameters"]


def gather_version_from(root):
    return root["gather-scores"]["inputs"]["parameters"]["version"]["taskOutputParameter"]["producerTask"]


def test_ir_pods_get_the_cluster_wiring(ir):
    execs = ir[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-resolve-champion", "exec-score-shard", "exec-gather-scores"):
        assert execs[name]["secretAsEnv"][0]["secretName"] == "kfct-s3-credentials", name


def test_runs_locally_end_to_end_with_one_version_for_every_shard(serving_env, tmp_path):
    import pyarrow.dataset as pads

    from kfct.data.datagen import generate, write_frame
    from kfct.pipelines.batch_scoring import run_batch_local

    data = write_frame(generate(rows=900, seed=3), tmp_path / "customers.parquet")
    v_a = serving_env.versions["good_a"]
    out = run_batch_local(str(data), n_shards=3, model_name=MODEL_NAME)
    assert out["rows"] == 900 and out["shards"] == 3 and out["model_version"] == v_a
    assert 0.0 < out["churn_rate"] < 1.0
    ds = pads.dataset(
        out["result"].removeprefix("file://") if out["result"].startswith("file://") else out["result"],
        format="parquet",
        partitioning="hive",
    )
    table = ds.to_table()
    assert table.num_rows == 900
    assert set(table.column("model_version").cast("string").to_pylist()) == {v_a}
    assert sorted(set(table.column("shard").to_pylist())) == [0, 1, 2]
    assert len(set(table.column("customer_id").to_pylist())) == 900  # every customer exactly once
    assert round(sum(table.column("label").to_pylist()) / 900, 6) == out["churn_rate"]


def test_no_champion_is_one_clear_line(serving_env, tmp_path):
    from kfct.components.batch_score import BatchScoringError, resolve_batch_version

    with pytest.raises(BatchScoringError, match="has no version with alias 'nonexistent'"):
        resolve_batch_version(MODEL_NAME, "nonexistent")


def test_gather_refuses_shards_scored_by_another_version(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfct.components.batch_score import BatchScoringError, gather_core

    for shard, version in ((0, "3"), (1, "4")):
        d = tmp_path / f"s{shard}"
        d.mkdir()
        pq.write_table(
            pa.table({"customer_id": ["a"], "probability": [0.5], "label": pa.array([1], pa.int8()), "model_version": [version]}),
            d / "scores.parquet",
        )
    with pytest.raises(BatchScoringError, match="shard 1 was scored by version"):
        gather_core([(0, tmp_path / "s0"), (1, tmp_path / "s1")], "3", MODEL_NAME, tmp_path / "out")


@pytest.mark.parametrize("n", [0, -1, 1001, True])
def test_bad_shard_counts_are_refused(tmp_path, n):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfct.components.batch_score import BatchScoringError, split_core

    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "d.parquet")
    with pytest.raises(BatchScoringError, match="n_shards must be"):
        split_core(tmp_path / "d.parquet", tmp_path / "out", n)


def test_gathered_result_is_published_to_s3(tmp_path, monkeypatch):
    """`output_uri=s3://...`: every file of the gathered result lands under the prefix (moto's S3 server)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfct.components.batch_score import BatchScoringError, gather_core, publish
    from kfct.data import s3
    from kfct.runtime.settings import reset_settings

    for shard in (0, 1):
        d = tmp_path / f"s{shard}"
        d.mkdir()
        pq.write_table(
            pa.table(
                {
                    "customer_id": [f"c{shard}a", f"c{shard}b"],
                    "probability": [0.9, 0.1],
                    "label": pa.array([1, 0], pa.int8()),
                    "model_version": ["7", "7"],
                }
            ),
            d / "scores.parquet",
        )
    summary = gather_core([(1, tmp_path / "s1"), (0, tmp_path / "s0")], "7", MODEL_NAME, tmp_path / "out", "ab12")
    assert summary["rows"] == 4 and summary["churn_rate"] == 0.5 and summary["shards"] == 2

    try:
        with moto_s3() as (host, port):
            monkeypatch.setenv("KFCT_S3_ENDPOINT", f"{host}:{port}")
            monkeypatch.setenv("KFCT_S3_ACCESS_KEY", "test")
            monkeypatch.setenv("KFCT_S3_SECRET_KEY", "test")
            monkeypatch.delenv("KFCT_S3_SECURE", raising=False)
            reset_settings()
            s3.ensure_bucket("kfct", create=True)
            prefix = publish(tmp_path / "out", "s3://kfct/scores/2026-11/")
            assert prefix == "s3://kfct/scores/2026-11"
            keys = sorted(o.object_name for o in s3.client().list_objects("kfct", prefix="scores/2026-11/", recursive=True))
            assert keys == [
                "scores/2026-11/_summary.json",
                "scores/2026-11/shard=00000/part-0.parquet",
                "scores/2026-11/shard=00001/part-0.parquet",
            ]
            resp = s3.client().get_object("kfct", "scores/2026-11/shard=00001/part-0.parquet")
            try:
                assert pq.read_table(io.BytesIO(resp.read())).column("customer_id").to_pylist() == ["c1a", "c1b"]
            finally:
                resp.close()
                resp.release_conn()
            with pytest.raises(BatchScoringError, match="output_uri must be an s3:// prefix"):
                publish(tmp_path / "out", "/tmp/somewhere")
    finally:
        reset_settings()
