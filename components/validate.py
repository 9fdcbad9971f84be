"""validate: the data-validation gate, a Great Expectations 1.x suite built from the schema config.

The work is split by what it does; this module is the stage's face:
- `validation_plan`: which checks the schema asks for, and the GX suite (`build_suite`);
- `validation_run`: the suite run on a DataFrame (`validate_frame`), plain JSON-able result;
- `validation_records`: one short record per GX result (observed, expected, limit, sample);
- `validation_report`: the summary line, Markdown and HTML reports (`write_report`), and the step's
  artifacts filled from them (`publish_report`, shared with the parts pipeline's merge step);
- `validation_datadocs`: GX's own Data Docs site, and its page standalone with kfct's summary above it;
- `validate_data` below: the thin kfp component (reads the snapshot, writes reports, audits).
"""

from __future__ import annotations

from typing import get_type_hints

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from kfct.components.validation_plan import build_suite, plan_checks, suite_name  # noqa: F401  (the stage's API)
from kfct.components.validation_report import (  # noqa: F401
    failure_lines,
    publish_report,
    render_html,
    render_markdown,
    summary_line,
    write_report,
)
from kfct.components.validation_run import validate_frame  # noqa: F401


# --- kfp component (thin adapter; written by the pipeline owner) -------------------------------
def validate_data(
    dataset: Input[Dataset],
    config_json: str,
    model_name: str,
    pipeline_run: str,
    report: Output[HTML],
    report_json: Output[Artifact],
    report_md: Output[Markdown],
    data_docs: Output[Artifact],
) -> bool:
    """Validate the snapshot with the Great Expectations suite built from the schema config; returns passed.

    `report` is the page the Kubeflow UI shows; `data_docs` is GX's whole Data Docs site (a directory)."""
    from kfct.runtime.stage import stage

    with stage("validate-data", config_json, stamp=report_json.metadata, model_name=model_name, pipeline_run=pipeline_run) as st:
        import pandas as pd

        from kfct.components.validate import validate_frame
        from kfct.components.validation_report import publish_report
        from kfct.governance import audit

        cfg = st.config
        result = validate_frame(pd.read_parquet(dataset.path), cfg)
        publish_report(result, report, report_json, report_md, data_docs)
        audit.record(
            "validation",
            model_name=model_name,
            pipeline_run=pipeline_run,
            passed=result["passed"],
            dataset_sha256=dataset.metadata.get("sha256", ""),
            n_expectations=result["n_expectations"],
            n_failed=result["n_failed"],
            failed=[f"{f.get('expectation')}[{f.get('column') or ''}]" for f in result["failures"]][:50],
        )
        st.log.info(
            "validation %s: %d of %d expectations failed%s",
            "passed" if result["passed"] else "FAILED",
            result["n_failed"],
            result["n_expectations"],
            "".join(f"; {f.get('expectation')}[{f.get('column') or ''}]" for f in result["failures"][:5]),
        )
        return bool(result["passed"])


# This module uses postponed annotations; kfp reads the signature, so give it the real types.
validate_data.__annotations__ = get_type_hints(validate_data, include_extras=True)
