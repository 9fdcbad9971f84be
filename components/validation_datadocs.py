"""Great Expectations' own Data Docs for one validation, and a standalone copy of its page.

GX users look for validation results in Data Docs, so the report is GX's own: its
SiteBuilder (a local filesystem site: index page, one validation-results page, static
assets) renders the GX suite result that `validation_run` keeps (`gx_result`).

The Kubeflow UI shows one HTML file per HTML artifact, in a frame, and a cluster may have
no way out to the internet. GX's page pulls Bootstrap, jQuery, Vega and its logo from
CDNs, so `standalone_page` makes a copy that fetches nothing: every external
<link>/<script>/<img> is dropped, GX's own inline styles stay, and a few lines of CSS
stand in for the Bootstrap rules the page needs to read well (tables, status
icons); what needs GX's jQuery (filter buttons, "show more" toggles) is hidden or opened.
kfct's one-line summary, failure lines and hints are set above GX's page.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult

SITE_NAME = "kfct"
# GX copies its whole static/ folder into every site; these two animations (3.4 MB of the 4.2 MB)
# belong to GX's onboarding walkthrough, which no page of a site with a validation shows. Dropped,
# each run keeps about 0.8 MB of Data Docs in the pipeline root instead of 4.2 MB.
UNUSED_STATIC = ("images/glossary_scroller.gif", "images/validation_failed_unexpected_values.gif")
RUN_NAME = "kfct-validation"
BATCH = "dataset"

# The few Bootstrap 4 rules GX's validation page leans on, so it reads well offline.
_OFFLINE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;color:#222;margin:0}
.d-none,.modal,nav.navbar-expand-md,a[data-toggle=collapse],.card:has(.btn-group-toggle){display:none}
.d-md-block,.collapse{display:block}
.container-fluid{padding:1em 2em}.row{display:flex;flex-wrap:wrap;gap:1em}
.col-lg-2{flex:0 0 14%}.col-lg-10{flex:1 1 0;min-width:0}.col-12{width:100%}
table{border-collapse:collapse;width:100%;font-size:.9em;margin-bottom:1em}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
thead th{background:#f4f4f4}.card{border:1px solid #e3e3e3;border-radius:4px;margin-bottom:1em}
.card-header{background:#f7f7f7;padding:.5em 1em}.card-body{padding:.5em 1em}
.text-danger{color:#a50e0e}.text-success{color:#1e6b34}.badge{padding:0 .4em;border-radius:3px}
.badge-danger{background:#fce8e6;color:#a50e0e}.badge-success{background:#e6f4ea;color:#1e6b34}
ul.list-group{padding-left:1.2em}ul.nav{list-style:none;padding-left:.5em}.sticky{position:static}
.fa-check-circle::before{content:"\\2714"}.fa-times::before{content:"\\2716"}
.fa-exclamation-triangle::before{content:"\\26A0"}.text-warning{color:#8a5a00}
#kfct-summary{margin:1em 2em;padding:.6em 1em;border-radius:4px;border:1px solid #ddd}
#kfct-summary.ok{background:#e6f4ea;color:#1e6b34}#kfct-summary.bad{background:#fce8e6;color:#a50e0e}
#kfct-summary p{margin:.2em 0;font-weight:600}#kfct-summary ul{margin:.3em 0;color:#222;font-weight:400}
"""

_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL)
_LINK = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
_EXTERNAL_IMG = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)", re.IGNORECASE)


def _suite_result(gx_result: dict[str, Any]) -> ExpectationSuiteValidationResult:
    from great_expectations.core.expectation_validation_result import expectationSuiteValidationResultSchema

    # exception_info is left as it is: GX escapes exception messages itself.
    results = [
        {
            **r,
            "result": _escaped(r.get("result") or {}),
            "expectation_config": {**r["expectation_config"], "kwargs": _escaped(r["expectation_config"].get("kwargs") or {})},
        }
        for r in gx_result.get("results") or []
    ]
    suite: ExpectationSuiteValidationResult = expectationSuiteValidationResultSchema.load({**gx_result, "results": results})
    return suite


def _escaped(value: object) -> object:
    """Every string HTML-escaped. GX 1.24's page templates put observed values, sampled bad values
    and kwargs into the page as they are, so a cell holding `<script>` would run; escaped first, the
    browser shows it as text."""
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def build_site(gx_result: dict[str, Any], site_dir: str | Path) -> Path:
    """GX's Data Docs site for one validation under `site_dir`; returns the validation-results page.

    An ephemeral GX context with one local SiteBuilder site (as `great_expectations.yml`
    would configure it); the result goes into the context's validation results store, its
    suite into the expectations store, and `build_data_docs` writes index.html,
    validations/<suite>/.../dataset.html, expectations/<suite>.html, static/.
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from kfct.components.validation_plan import custom_expectations
    from kfct.components.validation_run import _ephemeral_context

    # kfct's own expectations (whole numbers, timestamps) must be known to GX to load and render their
    # results, also in a process that never ran the suite (the parts pipeline's merge step).
    custom_expectations()
    site = Path(site_dir)
    result = _suite_result(gx_result)
    ctx = _ephemeral_context()
    ctx.add_data_docs_site(
        SITE_NAME,
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    run_id = RunIdentifier(run_name=RUN_NAME)
    # What `ValidationDefinition.run` adds to the meta; the page shows it as the run's name and time.
    result.meta = {**(result.meta or {}), "run_id": run_id, "validation_time": run_id.run_time}
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=result.suite_name), run_id=run_id, batch_identifier=BATCH
    )
    ctx.validation_results_store.set(key, result)
    # The suite too: the index links every validation to its suite's page (expectations/<suite>.html).
    suite_key = ExpectationSuiteIdentifier(name=ctx.suites.add(_suite_of(result)).name)
    ctx.build_data_docs(site_names=[SITE_NAME], resource_identifiers=[key, suite_key])  # type: ignore[arg-type]  # GX's annotation is narrower than its code (it takes both kinds)
    for name in UNUSED_STATIC:
        (site / "static" / name).unlink(missing_ok=True)
    [url] = [u["site_url"] for u in ctx.get_docs_sites_urls(resource_identifier=key, site_name=SITE_NAME)]
    page = Path(url2pathname(str(urlparse(url).path)))
    if not page.is_file():
        raise RuntimeError(f"GX Data Docs did not write the validation page {page}")
    return page


def _suite_of(result: Any) -> Any:
    """The expectation suite a validation ran, from its results' configurations (kwargs already escaped)."""
    from great_expectations.core.expectation_suite import ExpectationSuite

    return ExpectationSuite(name=result.suite_name, expectations=[r.expectation_config.to_domain_obj() for r in result.results])


def kfct_header(result: dict[str, Any]) -> str:
    """kfct's one-line summary, one line per failure and the hints, escaped, as an HTML section."""
    from kfct.components.validation_report import failure_lines, summary_line

    e = html.escape
    ok = bool(result["passed"])
    lines = [
        f'<section id="kfct-summary" class="{"ok" if ok else "bad"}">',
        f"<p>{e(summary_line(result))}</p>",
        f"<div>{int(result['rows'])} rows, schema version {e(str(result['schema_version']))}; "
        f"the expectations below are Great Expectations' Data Docs for this validation.</div>",
    ]
    details = failure_lines(result)
    if details:
        lines += ["<ul>"] + [f"<li>{e(line)}</li>" for line in details] + ["</ul>"]
    lines.append("</section>")
    return "\n".join(lines)


def standalone_page(page_html: str, header_html: str) -> str:
    """GX's page that fetches nothing (no external link/script/img, no remote CSS url) with kfct's header."""
    text = _SCRIPT.sub("", page_html)
    text = _LINK.sub("", text)
    text = _EXTERNAL_IMG.sub("", text)
    text = _CSS_URL.sub("none", text)
    text = text.replace("</head>", f"<style>{_OFFLINE_CSS}</style>\n</head>", 1)
    body = re.search(r"<body\b[^>]*>", text, re.IGNORECASE)
    if body is None:
        raise RuntimeError("GX's Data Docs page has no <body>")
    return text[: body.end()] + "\n" + header_html + "\n" + text[body.end() :]
