"""`python -m bench.trees`: the serving tree evaluator against the alternatives, in isolation.

The model server scores small requests with `kfct.serving.fasttrees` (the XGBoost trees
walked with numpy) instead of the booster. This measures that choice on the same model
and the same encoded rows, one row and 256 rows per call (the server's switch to the
booster is above 256), against:

- the booster itself (`inplace_predict`, one thread, as the server configures it);
- treelite 4 + tl2cgen: the trees compiled to C with gcc and loaded as a shared library,
  and treelite's own interpreter (GTIL);
- ONNX Runtime on the model converted by onnxmltools (one intra-op thread).

Each contender's probabilities are checked against the booster's first. The model is
trained like the pipeline's train stage (default config, CPU) on generated customers.
Rounds are interleaved (each round times every contender in turn), so a load spike on a
shared machine hits them all alike; the median and the best round are reported.
`--also FILE` adds another fasttrees.py (e.g. a previous version, `git show REV:serving/fasttrees.py`)
as a contender. Needs `pip install -c requirements.lock 'kfct[bench-trees]'`; a contender
that cannot be installed or built is reported as such.

    python -m bench.trees [--rows 50000] [--seconds 1.5] [--rounds 9] [--also FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def train_model(rows: int, seed: int = 42):
    from kfct.components.featurize import featurize_core
    from kfct.components.train import train_core
    from kfct.config import load_config
    from kfct.data.datagen import generate

    cfg = load_config()
    tr, va, te, encoder = featurize_core(generate(rows, seed=seed), cfg)
    model, _, _, info = train_core(tr, va, cfg, encoder=encoder, device="cpu")
    label = cfg.dataset.label
    return model, np.ascontiguousarray(model.encoder.transform(te.drop(columns=[label])), dtype=np.float32), info


def calls_per_round(fn: Callable[[np.ndarray], np.ndarray], X: np.ndarray, seconds: float) -> int:
    """How many calls take about `seconds`."""
    fn(X)
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(X)
        elapsed = time.perf_counter() - t0
        if elapsed > seconds / 4:
            return max(1, int(n * seconds / elapsed))
        n *= 2


def interleaved_us(fns: dict[str, Callable], X: np.ndarray, seconds: float, rounds: int) -> dict[str, list[float]]:
    """Microseconds per call of each function, one figure per round; every round times them all in turn."""
    calls = {name: calls_per_round(fn, X, seconds / rounds) for name, fn in fns.items()}
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn(X)
            out[name].append((time.perf_counter() - t0) / calls[name] * 1e6)
    return out


def load_file_evaluator(path: str, model, width: int) -> Callable | str:
    """predict_proba of the TreeEnsemble that another fasttrees.py compiles from the same model."""
    spec = importlib.util.spec_from_file_location("fasttrees_also", path)
    if spec is None or spec.loader is None:
        return f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ens = module.compile_booster(model._booster(), width, reference=model.proba_from_matrix)
    return ens.predict_proba if ens is not None else "did not compile"


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
    except Exception as exc:  # noqa: BLE001 - report, do not fail the other contenders
        out["treelite + tl2cgen (compiled C)"] = f"unavailable: {type(exc).__name__}: {exc}"
    try:
        import onnxmltools
        import onnxruntime as ort
        from onnxmltools.convert.common.data_types import FloatTensorType
        from xgboost import XGBClassifier

        clf = XGBClassifier()
        clf._Booster = booster
        clf.n_classes_ = 2
        onx = onnxmltools.convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, width]))], target_opset=15)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(onx.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        out_name = sess.get_outputs()[1].name  # probabilities

        def onnx_predict(X):
            probs = sess.run([out_name], {"input": X})[0]
            return np.asarray([p[1] for p in probs] if isinstance(probs, list) else probs[:, 1])

        out["ONNX Runtime (onnxmltools)"] = onnx_predict
    except Exception as exc:  # noqa: BLE001 - report, do not fail the other contenders
        out["ONNX Runtime (onnxmltools)"] = f"unavailable: {type(exc).__name__}: {exc}"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.trees", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000, help="generated customers to train on")
    p.add_argument("--seconds", type=float, default=1.5, help="measuring time per contender and batch size")
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median and best reported)")
    p.add_argument("--also", default=None, help="another fasttrees.py to measure alongside (e.g. a previous version)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    model, X, info = train_model(args.rows)
    booster = model._booster()
    n_trees = len(booster.get_dump())
    print(f"model: {info['model']}, {n_trees} trees, {X.shape[1]} encoded features; test rows {len(X):,}")
    results: dict[str, dict] = {}
    load = {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        cands = contenders(model, X.shape[1], Path(tmp))
        if args.also:
            cands[f"fasttrees from {args.also}"] = load_file_evaluator(args.also, model, X.shape[1])
        expected = np.asarray(booster.inplace_predict(X[:256]), dtype=np.float64)
        fns = {}
        for name, fn in cands.items():
            if isinstance(fn, str):
                results[name] = {"error": fn}
                print(f"{name:34s} {fn}")
                continue
            fns[name] = fn
            diff = float(np.max(np.abs(np.asarray(fn(X[:256]), dtype=np.float64) - expected)))
            results[name] = {"max_abs_diff": diff}
        load["measuring"] = os.getloadavg()
        for label, rows in (("one_row", 1), ("rows256", 256)):
            times = interleaved_us(fns, np.ascontiguousarray(X[:rows]), args.seconds, args.rounds)
            for name, t in times.items():
                results[name][f"{label}_us"] = round(statistics.median(t), 1)
                results[name][f"{label}_best_us"] = round(min(t), 1)
        load["end"] = os.getloadavg()
    for name in fns:
        r = results[name]
        print(
            f"{name:34s} 1 row {r['one_row_us']:9.1f} us (best {r['one_row_best_us']:7.1f})   "
            f"256 rows {r['rows256_us']:9.1f} us (best {r['rows256_best_us']:7.1f})   "
            f"max |diff| vs booster {r['max_abs_diff']:.1e}"
        )
    print("1-min load average: " + ", ".join(f"{k} {v[0]:.2f}" for k, v in load.items()))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"trees": n_trees, "features": int(X.shape[1]), "rounds": args.rounds, "load_average": load, "results": results},
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
