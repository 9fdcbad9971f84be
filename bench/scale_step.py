"""One CT step on one slice of a dataset in parts, in a fresh process (for `bench.scale`).

    python -m bench.scale_step <step> '<json args>'

Each step calls the code the pipeline runs: the kfp component functions themselves for the
map and reduce steps (`validate_part`, `merge_validation`, `featurize_part`, `merge_featurize`,
given local artifacts), the evaluate core with the model card's evidence (`evaluate_core` +
`card_evidence`; the MLflow logging and registry reads of the component are left out), the
batch-scoring core (`score_file`, the same as a shard pod's) and the train core. Its peak RSS
is read by the caller (`/usr/bin/time -v`), which also puts it in a memory cgroup.
"""

from __future__ import annotations

import json
import sys


def _art(cls, uri: str, metadata: dict | None = None):
    a = cls(uri=uri)
    a.metadata.update(metadata or {})
    return a


def main(step: str, args: dict) -> None:
    from kfp.dsl import HTML, Artifact, Dataset, Markdown, Model

    from kfct.components import parts_stages as ps

    cfg_json = args.get("config_json", "")
    if step == "validate-part":
        ps.validate_part(part=args["part"], config_json=cfg_json, stats=_art(Artifact, args["out"]))
    elif step == "merge-validation":
        out = args["out"]
        __import__("os").makedirs(out, exist_ok=True)
        ps.merge_validation(
            stats=[_art(Artifact, d) for d in args["stats"]],
            config_json=cfg_json,
            model_name="bench-scale",
            pipeline_run="bench-scale",
            dataset=_art(Dataset, args["dataset"], {"sha256": args["sha256"]}),
            report=_art(HTML, f"{out}/report.html"),
            report_json=_art(Artifact, f"{out}/report.json"),
            report_md=_art(Markdown, f"{out}/report.md"),
            data_docs=_art(Artifact, f"{out}/data_docs"),
        )
    elif step == "featurize-part":
        out = args["out"]
        ps.featurize_part(
            part=args["part"],
            config_json=cfg_json,
            train=_art(Dataset, f"{out}/train"),
            val=_art(Dataset, f"{out}/val"),
            test=_art(Dataset, f"{out}/test"),
        )
    elif step == "merge-featurize":
        out, dirs = args["out"], args["parts"]
        ps.merge_featurize(
            train_parts=[_art(Dataset, f"{d}/train") for d in dirs],
            val_parts=[_art(Dataset, f"{d}/val") for d in dirs],
            test_parts=[_art(Dataset, f"{d}/test") for d in dirs],
            config_json=cfg_json,
            dataset=_art(Dataset, args["dataset"], {"sha256": args["sha256"]}),
            train=_art(Dataset, f"{out}/train"),
            val=_art(Dataset, f"{out}/val"),
            test=_art(Dataset, f"{out}/test"),
            preprocessor=_art(Model, f"{out}/preprocessor"),
        )
    elif step == "evaluate":
        import joblib
        import pandas as pd

        from kfct.components.evaluate import card_evidence, evaluate_core
        from kfct.config import config_from_json

        cfg = config_from_json(cfg_json)
        model = joblib.load(args["model"])
        test = pd.read_parquet(args["test"])
        result = evaluate_core(model, test, cfg, None, None)
        card_evidence(model, test, cfg, result["y"], result["proba"])
        print(json.dumps({"rows": len(test), "roc_auc": result["metrics"]["roc_auc"]}))
    elif step == "score-shard":
        import joblib

        from kfct.components.score import score_file

        score_file(joblib.load(args["model"]), args["part"], args["out"], version="1", model_name="bench-scale")
    elif step == "train":
        import joblib
        import pandas as pd

        from kfct.components.train import train_core
        from kfct.config import config_from_json

        cfg = config_from_json(cfg_json)
        tr, va = pd.read_parquet(args["train"]), pd.read_parquet(args["val"])
        train_core(tr, va, cfg, encoder=joblib.load(args["preprocessor"]), device="cpu", tune_trials=0)
    elif step == "validate-single":  # the single-file stage, for comparison (before parts)
        from pathlib import Path

        from kfct.components.validate import validate_data

        out = args["out"]
        Path(out).mkdir(parents=True, exist_ok=True)
        validate_data(
            dataset=_art(Dataset, args["file"]),
            config_json=cfg_json,
            model_name="bench-scale",
            pipeline_run="bench-scale",
            report=_art(HTML, f"{out}/report.html"),
            report_json=_art(Artifact, f"{out}/report.json"),
            report_md=_art(Markdown, f"{out}/report.md"),
            data_docs=_art(Artifact, f"{out}/data_docs"),
        )
    elif step == "featurize-single":
        from pathlib import Path

        from kfct.components.featurize import featurize_split

        out = args["out"]
        Path(out).mkdir(parents=True, exist_ok=True)
        featurize_split(
            dataset=_art(Dataset, args["file"]),
            config_json=cfg_json,
            train=_art(Dataset, f"{out}/train"),
            val=_art(Dataset, f"{out}/val"),
            test=_art(Dataset, f"{out}/test"),
            preprocessor=_art(Model, f"{out}/preprocessor"),
        )
    else:
        raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
