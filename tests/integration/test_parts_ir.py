"""The compiled IR of the CT pipeline for datasets in parts: the fan-out and the memory each pod gets."""

import pytest
import yaml

from tests.homekit import off_the_stack


def test_parts_ir_fans_out_over_parts_with_bounded_pods(tmp_path):
    from kfct.pipelines.compile import compile_ct_parts

    path = off_the_stack(compile_ct_parts, tmp_path)
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = docs[0]
    assert spec["pipelineInfo"]["name"] == "kfct-ct-parts"
    text = path.read_text()
    # validate and featurize run once per part: two ParallelFor loops over ingest-parts' list of part URIs
    dags = [spec["root"], *spec["components"].values()]
    loops = [t for c in dags for t in (c.get("dag") or {}).get("tasks", {}).values() if "parameterIterator" in t]
    items = {t["parameterIterator"]["items"]["inputParameter"] for t in loops}
    assert len(loops) >= 2 and all("ingest-parts" in i for i in items), items
    assert "dsl.Collected" not in text
    # every executor but train gets the 2 GiB limit the scale bench measured the steps under
    execs = spec["deploymentSpec"]["executors"]
    limits = {name: (e["container"].get("resources") or {}).get("resourceMemoryLimit") for name, e in execs.items()}
    for name, limit in limits.items():
        want = "8Gi" if name == "exec-train-model" else "2Gi"
        assert limit == want, (name, limit)
    for step in (
        "exec-validate-part",
        "exec-merge-validation",
        "exec-featurize-part",
        "exec-merge-featurize",
        "exec-ingest-parts",
        "exec-evaluate-model",
    ):
        assert step in execs


@pytest.mark.slow  # builds GX Data Docs: seconds of CPU
def test_both_validation_steps_keep_gx_data_docs_with_the_run(tmp_path):
    """validate-data (one file) and merge-validation (parts) declare the same output artifacts: the HTML page the
    Kubeflow UI shows, kfct's JSON and Markdown, and `data_docs`, GX's Data Docs site as a directory artifact,
    which the cluster's launcher stores in the pipeline root (MinIO) like every output artifact."""
    from kfct.pipelines.compile import compile_ct, compile_ct_parts

    outputs = {}
    for compile_fn, comp in ((compile_ct, "comp-validate-data"), (compile_ct_parts, "comp-merge-validation")):
        spec = next(yaml.safe_load_all(compile_fn(tmp_path / comp).read_text()))
        arts = spec["components"][comp]["outputDefinitions"]["artifacts"]
        outputs[comp] = {name: a["artifactType"]["schemaTitle"] for name, a in arts.items()}
    assert (
        outputs["comp-validate-data"]
        == outputs["comp-merge-validation"]
        == {
            "report": "system.HTML",
            "report_json": "system.Artifact",
            "report_md": "system.Markdown",
            "data_docs": "system.Artifact",
        }
    )
