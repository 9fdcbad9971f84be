"""The monitoring pipeline compiles for the cluster with the right shape (IR inspected, nothing run)."""

import pytest
import yaml

from tests.homekit import off_the_stack


@pytest.mark.slow  # compiles the monitoring pipeline (seconds of CPU): make test, not make test-fast
def test_monitoring_pipeline_compiles_with_its_uncached_stages(tmp_path, kfct_home):
    from kfct.pipelines.compile import compile_monitoring

    path = off_the_stack(compile_monitoring, tmp_path)
    assert path.name == "monitoring_pipeline.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    spec = docs[0]
    assert spec["pipelineInfo"]["name"] == "kfct-monitoring"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"current_uri", "since", "config_json", "model_name", "ct_data_uri", "force", "dry_run", "mode"} <= set(params)
    assert params["force"]["defaultValue"] is False and params["mode"]["defaultValue"] == "auto"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"prepare-drift-data", "check-drift", "trigger-retrain", "report-realized-performance", "decide-ab-test"}
    # Outcomes close the loop; the realized-performance retrain comes after the drift trigger (one cooldown).
    assert tasks["report-realized-performance"]["dependentTasks"] == ["trigger-retrain"]
    assert {"outcomes_retrain", "ab_act"} <= set(params)
    for t in ("report-realized-performance", "decide-ab-test"):
        assert "retryPolicy" not in tasks[t]  # a retry could promote or retrain twice
    assert tasks["check-drift"]["dependentTasks"] == ["prepare-drift-data"]
    assert tasks["trigger-retrain"]["dependentTasks"] == ["check-drift"]
    # A new window with the same parameters is new data: never served from cache.
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    # The trigger must not retry (a retry could submit a second CT run); the others may.
    assert "retryPolicy" not in tasks["trigger-retrain"]
    assert "retryPolicy" in tasks["check-drift"]
    # Reports are typed artifacts the KFP UI renders.
    outs = spec["components"]["comp-check-drift"]["outputDefinitions"]["artifacts"]
    assert outs["report_html"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outs["summary"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert outs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    # Secrets come from a Kubernetes Secret by name; no key material in the package.
    text = path.read_text()
    assert "secretAsEnv" in text or "secretName" in text
    assert "AWS_SECRET_ACCESS_KEY:" not in text.replace(" ", "")
