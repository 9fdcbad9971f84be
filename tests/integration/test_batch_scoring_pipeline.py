"""The batch-scoring pipeline (issue 14): compiled IR (ParallelFor, one champion resolution,
no caching) and a real run with kfp.local's SubprocessRunner on small data."""

from __future__ import annotations

import pytest
import yaml

from tests.servingkit import MODEL_NAME, serving_env, serving_registry  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    from kfct.pipelines.compile import compile_all

    paths = compile_all(tmp_path_factory.mktemp("build"))
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

    from kfct.datagen import generate, write_frame
    from kfct.pipelines.batch_scoring import run_batch_local

    data = write_frame(generate(rows=900, seed=3), tmp_path / "customers.parquet")
    v_a = serving_env.versions["good_a"]
    out = run_batch_local(str(data), n_shards=3, model_name=MODEL_NAME)
    assert out["rows"] == 900 and out["shards"] == 3 and out["model_version"] == v_a
    assert 0.0 < out["churn_rate"] < 1.0
    ds = pads.dataset(out["result"].removeprefix("file://") if out["result"].startswith("file://") else out["result"],
                      format="parquet", partitioning="hive")
    table = ds.to_table()
    assert table.num_rows == 900
    assert set(table.column("model_version").cast("string").to_pylist()) == {v_a}
    assert sorted(set(table.column("shard").to_pylist())) == [0, 1, 2]
    assert len(set(table.column("customer_id").to_pylist())) == 900  # every customer exactly once
    assert round(sum(table.column("label").to_pylist()) / 900, 6) == out["churn_rate"]


def test_no_champion_is_one_clear_line(serving_env, tmp_path):
    from kfct.components.batch_score import BatchScoringError, resolve_core

    with pytest.raises(BatchScoringError, match="has no version with alias 'nonexistent'"):
        resolve_core(MODEL_NAME, "nonexistent")


def test_gather_refuses_shards_scored_by_another_version(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfct.components.batch_score import BatchScoringError, gather_core

    for shard, version in ((0, "3"), (1, "4")):
        d = tmp_path / f"s{shard}"
        d.mkdir()
        pq.write_table(pa.table({"customer_id": ["a"], "probability": [0.5], "label": pa.array([1], pa.int8()),
                                 "model_version": [version]}), d / "scores.parquet")
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
