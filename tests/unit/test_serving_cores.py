"""Pure serving cores: request parsing, split state, sticky hashing, the numpy tree walk,
rollout decisions, prediction-log tables, window stats, Arrow encoding, ISVC objects."""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest

from tests.predlogkit import FLUSH_BOUND_S

# -- request parsing --------------------------------------------------------------------------


def test_v1_records_structure_errors_name_the_part():
    from kfct.serving.schemas import BadRequest, v1_records

    rec = {"a": 1}
    assert v1_records({"instances": [rec]}) == [rec]
    assert v1_records(b'{"instances": [{"a": NaN}]}')[0]["a"] != v1_records(b'{"instances": [{"a": NaN}]}')[0]["a"]
    for body, field in [
        ([rec], "body"),
        ({"instances": []}, "instances"),
        ({"instances": "x"}, "instances"),
        ({"instances": [1]}, "instances"),
        ({"inputs": []}, "instances"),
        ({}, "instances"),
        (b"{oops", "body"),
    ]:
        with pytest.raises(BadRequest) as e:
            v1_records(body)
        assert e.value.field == field
        assert e.value.to_json()["field"] == field


def _inp(name, data, datatype="FP64", shape=None):
    return SimpleNamespace(name=name, data=data, datatype=datatype, shape=shape or [len(data)])


def test_v2_columnar_records_and_errors():
    from kfct.serving.schemas import BadRequest, v2_records

    req = SimpleNamespace(
        id="r1", inputs=[_inp("x", [1.0, 2.0]), _inp("c", ["a", "b"], "BYTES"), _inp("n", [[3], [4]], "INT64", [2, 1])]
    )
    recs, rid = v2_records(req)
    assert rid == "r1" and recs == [{"x": 1.0, "c": "a", "n": 3}, {"x": 2.0, "c": "b", "n": 4}]
    nan = v2_records(SimpleNamespace(id=None, inputs=[_inp("x", ["NaN", 1.0])]))[0]
    assert math.isnan(nan[0]["x"])
    one = v2_records(SimpleNamespace(id=None, inputs=[_inp("instances", [json.dumps({"x": 1})], "BYTES")]))[0]
    assert one == [{"x": 1}]
    bad = [
        (SimpleNamespace(id=None, inputs=[]), "inputs"),
        (SimpleNamespace(id=None, inputs=[_inp("x", [1.0]), _inp("y", [1.0, 2.0])]), "y"),
        (SimpleNamespace(id=None, inputs=[_inp("x", [1.0], shape=[2])]), "x"),
        (SimpleNamespace(id=None, inputs=[_inp("x", [1.0, 2.0], shape=[1, 2])]), "x"),
        (SimpleNamespace(id=None, inputs=[_inp("x", ["abc"])]), "x"),
        (SimpleNamespace(id=None, inputs=[_inp("x", [True], "BOOL")]), "x"),
        (SimpleNamespace(id=None, inputs=[_inp("x", [1.0]), _inp("x", [1.0])]), "x"),
        (SimpleNamespace(id=None, inputs=[_inp("instances", ["{not json"], "BYTES")]), "instances"),
        (SimpleNamespace(id=None, inputs=[_inp("x", [], shape=[0])]), "inputs"),
    ]
    for req, field in bad:
        with pytest.raises(BadRequest) as e:
            v2_records(req)
        assert e.value.field == field, (req, e.value)


# -- split state ----------------------------------------------------------------------------------


def test_split_state_validation_generation_and_atomic_updates(tmp_path):
    from kfct.contracts.split_state import SplitState, SplitStateError, read_state, update_state, write_state

    p = tmp_path / "split.json"
    for bad in [
        dict(canary_percent=101, canary_version="2"),
        dict(canary_percent=-1, canary_version="2"),
        dict(mode="blue-green", canary_version="2"),
        dict(canary_percent=10),
        dict(mode="shadow"),
        dict(canary_percent="ten", canary_version="2"),
    ]:
        with pytest.raises(SplitStateError):
            write_state(SplitState(model_name="m", **bad), p)
    assert not p.exists()
    a = write_state(SplitState(model_name="m", champion_version=1, canary_version=2, canary_percent=10), p)
    b = update_state("m", p, canary_percent=50)
    assert (a.generation, b.generation) == (1, 2)
    st = read_state(p)
    assert st.champion_version == "1" and st.canary_version == "2" and st.canary_percent == 50.0
    assert st.active_canary == "2"
    assert update_state("m", p, canary_percent=0).active_canary is None
    assert update_state("m", p, mode="shadow").active_canary == "2"
    p.write_text(json.dumps({"model_name": "m", "surprise": 1}))
    with pytest.raises(SplitStateError, match="surprise"):
        read_state(p)
    with pytest.raises(SplitStateError):
        update_state("m", p, nonsense=1)


# -- sticky hashing --------------------------------------------------------------------------------


def test_sticky_hash_is_uniform_monotonic_and_salted():
    from kfct.serving.router import to_canary

    ids = [f"C-{i:06d}" for i in range(20000)]
    for pct in (1, 10, 50, 90):
        k = sum(to_canary(i, pct, "s") for i in ids)
        sd = math.sqrt(len(ids) * pct / 100 * (1 - pct / 100))
        assert abs(k - len(ids) * pct / 100) < 4.5 * sd, (pct, k)
    at10 = {i for i in ids if to_canary(i, 10, "s")}
    at50 = {i for i in ids if to_canary(i, 50, "s")}
    assert at10 <= at50  # growing the canary never moves a customer back
    assert {i for i in ids if to_canary(i, 10, "other")} != at10
    assert not any(to_canary(i, 0, "s") for i in ids[:500]) and all(to_canary(i, 100, "s") for i in ids[:500])


# -- numpy tree walk ---------------------------------------------------------------------------------


@pytest.mark.parametrize("depth,trees", [(2, 5), (5, 60), (7, 30)])
def test_compiled_trees_match_the_booster(depth, trees):
    import xgboost as xgb

    from kfct.serving.fasttrees import compile_booster, probe_matrix

    rng = np.random.default_rng(depth)
    X = rng.normal(size=(1500, 12)).astype(np.float32)
    X[:, 3] = rng.integers(0, 5, size=1500)  # integer-valued feature: ties with thresholds
    y = ((X[:, 0] + X[:, 3] * 0.3 + rng.normal(size=1500)) > 0.5).astype(int)
    booster = xgb.XGBClassifier(n_estimators=trees, max_depth=depth, tree_method="hist", n_jobs=1).fit(X, y).get_booster()
    ens = compile_booster(booster, 12)
    assert ens is not None and ens.depth <= depth
    test = np.vstack([rng.normal(size=(300, 12)).astype(np.float32), probe_matrix(ens, 12, rows=300, seed=3)])
    ref = booster.inplace_predict(test)
    np.testing.assert_allclose(ens.predict_proba(test), ref, atol=1e-6)
    np.testing.assert_allclose([ens.predict_proba(test[i : i + 1])[0] for i in range(50)], ref[:50], atol=1e-6)
    sliced = booster[: trees // 2 or 1]
    ens2 = compile_booster(sliced, 12)
    np.testing.assert_allclose(ens2.predict_proba(test), sliced.inplace_predict(test), atol=1e-6)


def test_compiled_trees_refuse_what_they_cannot_reproduce():
    import xgboost as xgb

    from kfct.serving.fasttrees import compile_booster

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    reg = xgb.XGBRegressor(n_estimators=5, max_depth=3).fit(X, X[:, 0]).get_booster()
    assert compile_booster(reg, 4) is None  # not a binary:logistic model
    clf = xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(X, (X[:, 0] > 0).astype(int)).get_booster()
    assert compile_booster(clf, 4, reference=lambda M: np.zeros(len(M))) is None  # disagrees with the model


def _booster(X, y, **params):
    import xgboost as xgb

    return xgb.XGBClassifier(tree_method="hist", n_jobs=1, **params).fit(X, y).get_booster()


def _assert_both_paths_match(ens, booster, X, atol=1e-6):
    """The batch walk on all rows and the one-row table on the first 40 agree with the booster."""
    ref = booster.inplace_predict(X)
    np.testing.assert_allclose(ens.predict_proba(X), ref, atol=atol)
    np.testing.assert_allclose([ens.predict_proba(X[i : i + 1])[0] for i in range(40)], ref[:40], atol=atol)


def test_compiled_trees_route_missing_values_as_the_booster_does():
    from kfct.serving.fasttrees import compile_booster

    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 6)).astype(np.float32)
    y = ((X[:, 0] + X[:, 1] + rng.normal(size=3000) * 0.5) > 0).astype(int)
    # missing mostly where the label is 1 in one column and 0 in another: both default directions get learned
    X[(y == 1) & (rng.random(3000) < 0.4), 0] = np.nan
    X[(y == 0) & (rng.random(3000) < 0.4), 1] = np.nan
    booster = _booster(X, y, n_estimators=40, max_depth=4)
    ens = compile_booster(booster, 6)
    assert ens is not None
    assert ens.default_right.any() and (~ens.default_right[ens.threshold != np.inf]).any()
    test = rng.normal(size=(300, 6)).astype(np.float32)
    test[rng.random((300, 6)) < 0.3] = np.nan
    test[:5] = np.nan  # all missing
    _assert_both_paths_match(ens, booster, test)
    # rows without NaN but with infinities take the same routes as XGBoost too
    test = np.where(np.isnan(test), np.float32(np.inf), test)
    test[::2, 2] = -np.inf
    _assert_both_paths_match(ens, booster, test)


def test_compiled_trees_on_one_hot_columns_single_trees_and_stumps():
    from kfct.serving.fasttrees import compile_booster, probe_matrix

    rng = np.random.default_rng(9)
    cat = rng.integers(0, 4, size=2000)
    X = np.column_stack([np.eye(4, dtype=np.float32)[cat], rng.normal(size=(2000, 2)).astype(np.float32)])
    y = ((cat == 2) | (X[:, 4] > 1.0)).astype(int)
    for params in (
        {"n_estimators": 1, "max_depth": 3},  # a single tree
        {"n_estimators": 30, "max_depth": 5},  # one-hot 0/1 values sit on the thresholds
        {"n_estimators": 3, "max_depth": 4, "gamma": 1e9},
    ):  # no split is worth it: depth-0 trees
        booster = _booster(X, y, **params)
        ens = compile_booster(booster, 6)
        assert ens is not None, params
        if "gamma" in params:
            assert ens.depth == 0
        test = np.vstack([X[:200], probe_matrix(ens, 6, rows=100, seed=1)])
        _assert_both_paths_match(ens, booster, test)


def test_compiled_trees_pad_shallow_trees_to_the_forest_depth(monkeypatch):
    """Trees that stop early (leaves above the deepest level) are padded; a deep model keeps the walk
    for one row when the next-slot table would be large, and a huge padded forest is refused."""
    import xgboost as xgb

    from kfct.serving import fasttrees
    from kfct.serving.fasttrees import compile_booster

    rng = np.random.default_rng(2)
    X = rng.normal(size=(2000, 5)).astype(np.float32)
    y = ((X[:, 0] > 0.3) ^ (X[:, 1] * X[:, 2] > 0)).astype(int)
    booster = (
        xgb.XGBClassifier(n_estimators=20, max_depth=0, max_leaves=12, grow_policy="lossguide", tree_method="hist", n_jobs=1)
        .fit(X, y)
        .get_booster()
    )
    ens = compile_booster(booster, 5)
    assert ens is not None and ens.depth >= 5
    dumps = booster.get_dump()
    assert min(d.count("leaf=") for d in dumps) < 2**ens.depth  # some trees really are padded
    _assert_both_paths_match(ens, booster, rng.normal(size=(300, 5)).astype(np.float32))
    monkeypatch.setattr(fasttrees, "ONE_ROW_TABLE_MAX", 0)  # one row goes through the walk instead
    walk_only = compile_booster(booster, 5)
    assert walk_only is not None and walk_only._left_of is None
    _assert_both_paths_match(walk_only, booster, rng.normal(size=(50, 5)).astype(np.float32))
    monkeypatch.setattr(fasttrees, "MAX_SLOTS", 20 << 2)
    assert compile_booster(booster, 5) is None


def test_server_switches_from_the_compiled_trees_to_the_model_above_small_batch(trained, monkeypatch):
    from kfct.serving.predictor import SMALL_BATCH, _prepare, score_loaded
    from tests.servingkit import records

    model = trained[0]
    lv = _prepare(model, "m", "1", "sha", "run", "customer_id")
    assert lv.ensemble is not None
    calls = []
    compiled = lv.ensemble.predict_proba
    monkeypatch.setattr(lv.ensemble, "predict_proba", lambda M: calls.append(len(M)) or compiled(M))
    recs = records(SMALL_BATCH + 1, seed=21)
    for n in (1, SMALL_BATCH, SMALL_BATCH + 1):
        got = score_loaded(lv, recs[:n]).probabilities
        own = model.proba_from_matrix(model.encoder.transform_records(recs[:n]))
        np.testing.assert_allclose(got, own, atol=1e-6)
    assert calls == [1, SMALL_BATCH]  # 257 rows went to the model itself


# -- rollout decisions --------------------------------------------------------------------------------


def W(
    version,
    requests=1000,
    errors=0,
    positives=250,
    p99=0.004,
    shift=0.0,
    se=0.01,
    per_row=2e-5,
    champion_per_row=2e-5,
    customers=64,
    slower=None,
):
    """A window; its paired figures (the canary against the champion on the same requests) are what
    the step judges: label shift +- se over `customers`, p99 model time per row of both versions."""
    from kfct.components.rollout import Window

    return Window(
        version=version,
        requests=requests,
        instances=requests - errors,
        server_errors=errors,
        positives=positives,
        p99_latency_s=p99,
        paired_requests=requests,
        paired_rows=requests,
        paired_customers=customers,
        label_shift=shift,
        label_shift_se=se,
        paired_p99_instance_s=per_row,
        paired_champion_p99_instance_s=champion_per_row,
        paired_slower=requests // 2 if slower is None else slower,
    )


def test_rollout_step_verdicts():
    from kfct.components.rollout import FAIL, PASS, WAIT, Thresholds, evaluate_step

    thr = Thresholds(min_requests=200)
    champ = W("1")
    assert evaluate_step(champ, W("2", requests=400), thr)[0] == PASS
    assert evaluate_step(champ, W("2", requests=100), thr)[0] == WAIT
    v, why = evaluate_step(champ, W("2", requests=400, errors=40), thr)
    assert v == FAIL and "error rate" in why[0]
    v, why = evaluate_step(champ, W("2", requests=400, per_row=0.050, slower=390), thr)
    assert v == FAIL and "p99 latency per row" in why[0]
    # a p99 over the limit while the canary is slower on about half the requests: a stall of the machine
    assert evaluate_step(champ, W("2", requests=400, per_row=0.050, slower=210), thr)[0] == PASS
    # sub-millisecond p99s: a big ratio with a tiny absolute delta is noise, not a failure
    assert evaluate_step(champ, W("2", requests=400, per_row=0.0009, champion_per_row=0.0004), thr)[0] == PASS
    # the per-version figures a client chooses (its rows' positive rate, its batches' p99) judge nothing
    assert evaluate_step(champ, W("2", requests=400, positives=380, p99=0.5), thr)[0] == PASS
    v, why = evaluate_step(champ, W("2", requests=400, shift=0.3), thr)
    assert v == FAIL and "churn rate shift" in why[0]
    # over the limit but not statistically clear yet: keep baking
    v, why = evaluate_step(champ, W("2", requests=400, shift=0.12, se=0.05), thr)
    assert v == WAIT and "not yet clear" in why[0]
    # too few customers (or customer shards) scored by both versions: wait
    v, why = evaluate_step(champ, W("2", requests=400, customers=5), thr)
    assert v == WAIT and "5 of 20 customer shards" in why[0]
    # at 100% the champion has no traffic: compare with the earlier step
    assert evaluate_step(W("1", requests=0, positives=0), W("2", requests=400), thr)[0] == WAIT
    assert evaluate_step(W("1", requests=0, positives=0), W("2", requests=400), thr, baseline=champ)[0] == PASS


def test_rollout_steps_and_thresholds_from_config():
    from kfct.components.rollout import RolloutError, Thresholds, parse_steps
    from kfct.config import load_config

    assert parse_steps("10, 50,100") == [10, 50, 100] and parse_steps([25, 100]) == [25, 100]
    for bad in ("", "50,10", "0,100", "10,150", "ten"):
        with pytest.raises(RolloutError):
            parse_steps(bad)
    t = Thresholds.from_config(load_config())
    assert (t.min_requests, t.max_p99_latency_ratio, t.max_churn_rate_shift) == (200, 1.5, 0.10)
    t = Thresholds.from_config(load_config(overrides={"rollout": {"min_requests": 7, "min_p99_latency_delta_ms": 2}}))
    assert t.min_requests == 7 and t.min_p99_latency_delta_ms == 2.0


# -- window stats ---------------------------------------------------------------------------------------


def test_version_stats_window():
    from kfct.serving.metrics import CLIENT_ERROR, SERVER_ERROR, VersionStats

    st = VersionStats("3")
    t0 = 1000.0
    for i in range(100):
        st.ok(t0 + i, latency=0.001 * (i + 1), instances=2, positives=i % 2, prob_sum=1.0)
    st.error(t0 + 100, CLIENT_ERROR, 0.0005)
    st.error(t0 + 101, SERVER_ERROR, 0.2)
    w = st.window()
    assert (w.requests, w.instances, w.client_errors, w.server_errors, w.positives) == (102, 200, 1, 1, 50)
    assert w.error_rate == pytest.approx(2 / 102) and w.positive_rate == 0.25 and w.mean_probability == 0.5
    assert w.p99_latency_s > 0.099
    late = st.window(since=t0 + 90)
    assert late.requests == 12 and late.instances == 20


# -- prediction log --------------------------------------------------------------------------------------


def test_prediction_log_writes_rolling_parquet_and_reads_since(tmp_path):
    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.serving.prediction_log import PredictionLogger, build_table

    recs = [{"customer_id": "a", "x": 1, "c": "u", "n": None}, {"customer_id": "b", "x": 2.5, "c": "v", "n": 3.0}]
    t = build_table([(1_700_000_000.0, "r1", "m", "7", "champion", recs, np.array([0.1, 0.9]), np.array([0, 1]), 0.5)])
    assert t.schema.field("x").type == "double" and t.schema.field("c").type == "string"
    assert t.column("customer_id").to_pylist() == ["a", "b"] and t.column("n").to_pylist() == [None, 3.0]

    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=60)
    now = time.time()
    log.log(now - 3600, "old", "m", "7", "champion", recs[:1], np.array([0.2]), np.array([0]), 0.5)
    assert log.flush(FLUSH_BOUND_S)
    log.log(now, "new", "m", "8", "canary", recs, np.array([0.3, 0.7]), np.array([0, 1]), 0.5)
    log.close()
    assert log.files_written == 2 and log.rows_written == 3
    all_rows = read_prediction_log(root=tmp_path, s3=False)
    assert all_rows["request_id"].tolist() == ["old", "new", "new"]
    recent = read_prediction_log(since=now - 60, root=tmp_path, s3=False)
    assert recent["model_version"].tolist() == ["8", "8"] and recent["role"].tolist() == ["canary"] * 2
    assert read_prediction_log(root=tmp_path / "nothing", s3=False).empty


def test_prediction_log_drops_instead_of_blocking(tmp_path):
    from kfct.serving.prediction_log import PredictionLogger

    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=60, max_queue=2)
    log._stop.set()  # writer still alive but we fill faster than it drains
    for i in range(50):
        log.log(time.time(), str(i), "m", "1", "champion", [{"x": 1}], np.array([0.5]), np.array([1]), 0.5)
    assert log.dropped > 0
    log.close()


# -- Arrow encoding for batch scoring ---------------------------------------------------------------------


def test_arrow_matrix_equals_the_encoder(cfg):
    import pyarrow as pa

    from kfct.components.featurize import build_encoder
    from kfct.components.score import arrow_matrix
    from kfct.data.datagen import generate
    from kfct.evidence.model import FeatureError

    df = generate(3000, seed=31)
    enc = build_encoder(cfg).fit(df)
    table = pa.Table.from_pandas(df, preserve_index=False)
    np.testing.assert_array_equal(arrow_matrix(enc, table), enc.transform(df))
    dict_table = table.cast(
        pa.schema(
            [f.with_type(pa.dictionary(pa.int32(), pa.string())) if f.name in enc.categorical_ else f for f in table.schema]
        )
    )
    np.testing.assert_array_equal(arrow_matrix(enc, dict_table), enc.transform(df))
    bad = df.copy()
    bad.loc[5, "region"] = "atlantis"
    with pytest.raises(FeatureError, match="atlantis"):
        arrow_matrix(enc, pa.Table.from_pandas(bad, preserve_index=False))


# -- InferenceService object ------------------------------------------------------------------------------


def test_inference_service_object():
    from kubernetes.client import ApiClient

    from kfct.components.deploy import build_inference_service
    from kfct.runtime.settings import Settings

    isvc = build_inference_service(
        "churn-classifier",
        "4",
        namespace="kfct",
        canary_percent=10,
        storage_uri="s3://kfct/mlartifacts/1/models/m-1/artifacts",
        sha256="ab" * 32,
        settings=Settings(),
        mode="Serverless",
    )
    d = ApiClient().sanitize_for_serialization(isvc)
    pred = d["spec"]["predictor"]
    assert d["apiVersion"] == "serving.kserve.io/v1beta1" and pred["canaryTrafficPercent"] == 10
    assert d["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"  # the name KServe keeps
    assert pred["model"]["storageUri"].startswith("s3://") and pred["model"]["runtime"] == "kfct-predictor"
    assert {"name": "KFCT_MODEL_SHA256", "value": "ab" * 32} in pred["model"]["env"]
    assert pred["serviceAccountName"] == "kfct-serving"
    # Standard mode (KServe's default) ignores canaryTrafficPercent: asking for one there is an error
    from kfct.components.deploy import DeployError

    with pytest.raises(DeployError, match="Standard mode ignores canaryTrafficPercent"):
        build_inference_service(
            "churn-classifier",
            "4",
            canary_percent=10,
            storage_uri="s3://x/y",
            sha256="ab" * 32,
            settings=Settings(),
            mode="Standard",
        )


def test_bulk_histogram_exports_what_prometheus_clients_histogram_does():
    """Same buckets, counts and sum as prometheus_client's own Histogram, without touching its
    private fields (the old bulk path wrote into `_buckets` / `_sum`)."""
    from prometheus_client import CollectorRegistry, Histogram

    from kfct.serving.metrics import PROBABILITY_BUCKETS, BulkHistogram

    reg = CollectorRegistry()
    h = Histogram("t_prob", "t", ["v"], buckets=PROBABILITY_BUCKETS, registry=reg)
    bulk = BulkHistogram("t_bulk", "t", ["v"], buckets=PROBABILITY_BUCKETS, registry=reg)
    vals = [*np.random.default_rng(0).random(500).tolist(), 0.05, 0.1, 1.0, 0.0]
    for v in vals:
        h.labels("x").observe(v)
    bulk.labels("x").observe_many(vals[:300])
    bulk.labels("x").observe_many(vals[300:302])  # the small-request path
    for v in vals[302:]:
        bulk.labels("x").observe(v)

    def samples(name):
        return [
            (s.name.replace(name, ""), s.labels.get("le"), round(s.value, 9))
            for m in reg.collect()
            for s in m.samples
            if s.name.startswith(name) and not s.name.endswith("_created")
        ]

    assert samples("t_prob") == samples("t_bulk") and len(samples("t_bulk")) == len(PROBABILITY_BUCKETS) + 3
    with pytest.raises(ValueError, match="t_bulk: 1 label values expected, got 2"):
        bulk.labels("a", "b")
