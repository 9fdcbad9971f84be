"""The kfp faces of the map -> reduce stages for a dataset in parts (thin adapters).

    validate_part     (one pod per part, dsl.ParallelFor)  GX suite + statistics of one part
    merge_validation  (one pod)                            the merged verdict and reports (validation_merge),
                                                           GX's Data Docs of it (validation_merge_gx)
    featurize_part    (one pod per part)                   labels 0/1, split by id hash (featurize_merge)
    merge_featurize   (one pod)                            train/val/test as parts datasets, encoder fitted
                                                           from the train parts

Every pod holds one part (or one hash bucket, or one column batch) at a time, so its memory
is bounded by the part size. The cores live in `validation_merge` and `featurize_merge`.
"""

from __future__ import annotations

from typing import List, get_type_hints

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output


def validate_part(part: str, config_json: str, stats: Output[Artifact]):
    """Validate one part with the schema's GX suite; keep its result and the statistics global checks need."""
    from kfct.runtime.stage import stage

    with stage("validate-part", config_json, part=part) as st:
        import json
        from pathlib import Path

        from kfct.components.validation_merge import validate_part as validate_one
        from kfct.data import parts

        cfg = st.config
        df = parts.read_part(part).to_pandas()
        out = validate_one(df, cfg, stats.path)
        del df
        (Path(stats.path) / "part.json").write_text(json.dumps({**out, "part_uri": part}, default=str))
        stats.metadata.update({"rows": out["stats"]["rows"], "passed": out["result"]["passed"]})


def merge_validation(
    stats: Input[List[Artifact]],
    config_json: str,
    model_name: str,
    pipeline_run: str,
    dataset: Input[Dataset],
    report: Output[HTML],
    report_json: Output[Artifact],
    report_md: Output[Markdown],
    data_docs: Output[Artifact],
) -> bool:
    """Merge the parts' validation into one verdict (global checks from merged statistics); returns passed.

    The reports are those of the single-pass step: GX's Data Docs of the merged result (`data_docs`, the site;
    `report`, its page standalone, shown in the Kubeflow UI), kfct's JSON and Markdown."""
    from kfct.runtime.stage import stage

    with stage(
        "merge-validation", config_json, stamp=report_json.metadata, model_name=model_name, pipeline_run=pipeline_run
    ) as st:
        import json
        from pathlib import Path

        from kfct.components.validation_merge import merge_results
        from kfct.components.validation_report import publish_report
        from kfct.governance import audit

        cfg = st.config
        dataset_sha256 = dataset.metadata.get("sha256", "")
        per_part = []
        for art in stats:
            rec = json.loads((Path(art.path) / "part.json").read_text())
            per_part.append({**rec, "dir": art.path})
        result = merge_results(per_part, cfg)
        publish_report(result, report, report_json, report_md, data_docs, parts=result["parts"])
        audit.record(
            "validation",
            model_name=model_name,
            pipeline_run=pipeline_run,
            passed=result["passed"],
            dataset_sha256=dataset_sha256,
            n_expectations=result["n_expectations"],
            n_failed=result["n_failed"],
            parts=result["parts"],
            failed=[f"{f.get('expectation')}[{f.get('column') or ''}]" for f in result["failures"]][:50],
        )
        st.log.info(
            "validation of %d parts %s: %d of %d expectations failed",
            result["parts"],
            "passed" if result["passed"] else "FAILED",
            result["n_failed"],
            result["n_expectations"],
        )
        return bool(result["passed"])


def featurize_part(part: str, config_json: str, train: Output[Dataset], val: Output[Dataset], test: Output[Dataset]):
    """Labels to 0/1 and the train/val/test split of one part, by a keyed hash of each id."""
    from kfct.runtime.stage import stage

    with stage("featurize-part", config_json, part=part) as st:
        from kfct.components.featurize import with_binary_label
        from kfct.components.featurize_merge import split_by_id
        from kfct.data import parts

        cfg = st.config
        df = with_binary_label(parts.read_part(part).to_pandas(), cfg)
        for art, frame in zip((train, val, test), split_by_id(df, cfg)):
            frame.to_parquet(art.path, index=False)
            art.metadata.update({"rows": len(frame)})


def merge_featurize(
    train_parts: Input[List[Dataset]],
    val_parts: Input[List[Dataset]],
    test_parts: Input[List[Dataset]],
    config_json: str,
    dataset: Input[Dataset],
    train: Output[Dataset],
    val: Output[Dataset],
    test: Output[Dataset],
    preprocessor: Output[Model],
) -> str:
    """Gather each split's parts into a parts dataset and fit the encoder from the train parts; returns the
    data version (the manifest's sha256) for the steps after it."""
    from kfct.runtime.stage import stage

    with stage("merge-featurize", config_json, stamp=preprocessor.metadata) as st:
        import joblib

        from kfct.components.featurize_merge import EVAL_MAX_ROWS, fit_encoder_on_parts, gather_parts

        cfg = st.config
        dataset_sha256 = dataset.metadata.get("sha256", "")
        label = cfg.dataset.label
        for out, ins in ((train, train_parts), (val, val_parts), (test, test_parts)):
            # the gate's test set is bounded (EVAL_MAX_ROWS, id-hash thinning): evaluate holds it in one pod
            manifest, positives = gather_parts(
                [a.path for a in ins], out.path, label, max_rows=EVAL_MAX_ROWS if out is test else None, cfg=cfg
            )
            if "rows_before_thinning" in manifest:
                out.metadata["rows_before_thinning"] = manifest["rows_before_thinning"]
            out.metadata.update(
                {
                    "rows": manifest["rows"],
                    "parts": len(manifest["parts"]),
                    "positive_share": round(positives / manifest["rows"], 4) if manifest["rows"] else None,
                    "dataset_sha256": dataset_sha256,
                }
            )
        encoder = fit_encoder_on_parts(cfg, [train.path])
        joblib.dump(encoder, preprocessor.path)
        preprocessor.metadata.update({"features_in": len(encoder.input_features), "features_out": len(encoder.output_names_)})
        st.log.info(
            "split %s/%s/%s rows (train/val/test) in parts; encoder fitted from the train parts",
            train.metadata["rows"],
            val.metadata["rows"],
            test.metadata["rows"],
        )
        return dataset_sha256


for _fn in (validate_part, merge_validation, featurize_part, merge_featurize):
    # postponed annotations: kfp reads the signature, so give it the real types
    _fn.__annotations__ = get_type_hints(_fn, include_extras=True)
