"""`python -m bench.trees`: the serving tree evaluator against the alternatives, in isolation.

The model server scores small requests with `kfct.serving.fasttrees` (the XGBoost trees
walked with numpy) instead of the booster. This measures that choice on the same model
and the same encoded rows, one row and 256 rows per call, against:

- the booster itself (`inplace_predict`, one thread, as the server configures it);
- treelite 4 + tl2cgen: the trees compiled to C with gcc and loaded as a shared library,
  and treelite's own interpreter (GTIL);
- ONNX Runtime on the model converted by onnxmltools (one intra-op thread).

Each contender's probabilities are checked against the booster's first. The model is
trained like the pipeline's train stage (default config, CPU) on generated customers.
Needs `pip install -c requirements.lock 'kfct[bench-trees]'`; a contender that cannot be
installed or built is reported as such.

    python -m bench.trees [--rows 50000] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np


def train_model(rows: int, seed: int = 42):
    from kfct.components.featurize import featurize_core
    from kfct.components.train import train_core
    from kfct.config import load_config
    from kfct.datagen import generate

    cfg = load_config()
    tr, va, te, encoder = featurize_core(generate(rows, seed=seed), cfg)
    model, _, _, info = train_core(tr, va, cfg, encoder=encoder, device="cpu")
    label = cfg["dataset"]["label"]
    return model, np.ascontiguousarray(model.encoder.transform(te.drop(columns=[label])), dtype=np.float32), info


def per_call_us(fn: Callable[[np.ndarray], np.ndarray], X: np.ndarray, seconds: float) -> float:
    """Median of 5 rounds of (time per call, microseconds), each round about seconds/5."""
    fn(X)
    n = 1
    while True:  # calibrate: calls per round
        t0 = time.perf_counter()
        for _ in range(n):
            fn(X)
        if time.perf_counter() - t0 > seconds / 20:
            break
        n *= 2
    rounds = []
    per_round = max(1, int(n * (seconds / 5) / max(time.perf_counter() - t0, 1e-9)))
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn(X)
        rounds.append((time.perf_counter() - t0) / per_round * 1e6)
    return statistics.median(rounds)


def contenders(model, width: int, workdir: Path) -> dict[str, Callable | str]:
    """name -> predict(X) -> probabilities, or a string saying why it is not available."""
    from kfct.serving.fasttrees import compile_booster

    booster = model._booster()
    booster.set_param({"nthread": 1})
    out: dict[str, Callable | str] = {}
    ens = compile_booster(booster, width, reference=model.proba_from_matrix)
    out["kfct fasttrees (numpy)"] = ens.predict_proba if ens is not None else "did not compile"
    out["xgboost inplace_predict"] = lambda X: booster.inplace_predict(X)
    try:
        import tl2cgen
        import treelite

        tl = treelite.frontend.from_xgboost(booster)
        lib = workdir / "trees.so"
        tl2cgen.export_lib(tl, toolchain="gcc", libpath=str(lib), params={"parallel_comp": 8}, nthread=2)
        pred = tl2cgen.Predictor(str(lib), nthread=1)
        out["treelite + tl2cgen (compiled C)"] = lambda X: pred.predict(tl2cgen.DMatrix(X)).reshape(-1)
        out["treelite GTIL"] = lambda X: treelite.gtil.predict(tl, X, nthread=1).reshape(-1)
    except Exception as exc:  # report, do not fail the other contenders
        out["treelite + tl2cgen (compiled C)"] = f"unavailable: {type(exc).__name__}: {exc}"
    try:
        import onnxmltools
        import onnxruntime as ort
        from onnxmltools.convert.common.data_types import FloatTensorType
        from xgboost import XGBClassifier

        clf = XGBClassifier()
        clf._Booster = booster
        clf.n_classes_ = 2
        onx = onnxmltools.convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, width]))],
                                          target_opset=15)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(onx.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        out_name = sess.get_outputs()[1].name  # probabilities

        def onnx_predict(X):
            probs = sess.run([out_name], {"input": X})[0]
            return np.asarray([p[1] for p in probs] if isinstance(probs, list) else probs[:, 1])

        out["ONNX Runtime (onnxmltools)"] = onnx_predict
    except Exception as exc:
        out["ONNX Runtime (onnxmltools)"] = f"unavailable: {type(exc).__name__}: {exc}"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.trees", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000, help="generated customers to train on")
    p.add_argument("--seconds", type=float, default=1.5, help="measuring time per contender and batch size")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    model, X, info = train_model(args.rows)
    booster = model._booster()
    n_trees = len(booster.get_dump())
    print(f"model: {info['model']}, {n_trees} trees, {X.shape[1]} encoded features; test rows {len(X):,}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cands = contenders(model, X.shape[1], Path(tmp))
        expected = np.asarray(booster.inplace_predict(X[:256]), dtype=np.float64)
        for name, fn in cands.items():
            if isinstance(fn, str):
                results[name] = {"error": fn}
                print(f"{name:34s} {fn}")
                continue
            diff = float(np.max(np.abs(np.asarray(fn(X[:256]), dtype=np.float64) - expected)))
            one = per_call_us(fn, np.ascontiguousarray(X[:1]), args.seconds)
            batch = per_call_us(fn, np.ascontiguousarray(X[:256]), args.seconds)
            results[name] = {"one_row_us": round(one, 1), "rows256_us": round(batch, 1), "max_abs_diff": diff}
            print(f"{name:34s} 1 row {one:9.1f} us   256 rows {batch:9.1f} us   max |diff| vs booster {diff:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"trees": n_trees, "features": int(X.shape[1]), "results": results},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
