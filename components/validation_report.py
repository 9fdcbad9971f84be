"""The validation result as a person reads it: one summary line, a Markdown and an HTML report.

The HTML report is Great Expectations' own Data Docs page (`validation_datadocs`) with
kfct's summary line and hints above it, whenever the result carries GX's suite result
(`gx_result`, from `validate_frame`, or merged from parts by `validation_merge_gx`); a result
without it gets the plain report below. `publish_report` puts them all into a validation
step's output artifacts (the single-pass and the merged step share it). Each failure names
the expectation, what was observed and what was expected (the limit that was broken), with
a short sample of bad values; lists stop with
"... and N more" rather than silently. The HTML is self-contained (inline CSS, no
scripts, every value escaped) and saved with an `.html` name so a browser opens it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from kfct.components.validation_records import short as _short


def _where(rec: dict[str, Any]) -> str:
    return rec.get("column") or "(table)"


def failure_text(f: dict[str, Any]) -> str:
    """`churned: label_balance (expect_column_mean_to_be_between) observed 0.0, expected positive share ...`"""
    text = (
        f"{_where(f)}: {f['check']} ({f['expectation']}) observed {_short(f.get('observed'), 120)}, expected {f.get('expected')}"
    )
    if f.get("sample_bad_values"):
        text += f"; e.g. {_samples_text(f['sample_bad_values'], 120)}"
    return text


def summary_line(result: dict[str, Any], max_listed: int = 5) -> str:
    """`validation: 95 expectations, 0 failed (passed)`, or the failed checks named with observed and expected."""
    n, k = result["n_expectations"], result["n_failed"]
    line = f"validation: {n} expectations, {k} failed ({'passed' if result['passed'] else 'FAILED'})"
    fails = result.get("failures") or []
    if fails and max_listed > 0:
        parts = []
        for f in fails[:max_listed]:
            part = f"{_where(f)}: {f['check']}"
            if f.get("unexpected_count"):
                part += f" ({f['unexpected_count']} bad)"
            parts.append(part)
        line += " - " + "; ".join(parts) + more_text(len(fails), max_listed, sep="; ")
    return line


def more_text(total: int, shown: int, sep: str = " ") -> str:
    return f"{sep}\u2026 and {total - shown} more" if total > shown else ""


def failure_lines(result: dict[str, Any], limit: int = 20) -> list[str]:
    """One line per failure (expectation, observed, expected, sample), then "... and N more", then hints."""
    fails = result.get("failures") or []
    lines = [failure_text(f) for f in fails[:limit]]
    if len(fails) > limit:
        lines.append(more_text(len(fails), limit, sep=""))
    return lines + [f"hint: {h}" for h in result.get("hints") or []]


def _samples_text(values: list[Any], limit: int = 400) -> str:
    """`"lifetime", 7.5` style: JSON per value, so strings and numbers stay distinguishable."""
    return _short(", ".join(json.dumps(v, default=str) for v in values or []), limit)


def _md_cell(v: Any, limit: int = 160) -> str:
    return _short(v, limit).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Data validation: {result['suite']}",
        "",
        f"**{summary_line(result, max_listed=0)}** on {result['rows']} rows, schema version {result['schema_version']}.",
        "",
    ]
    lines += [f"> **Hint:** {_md_cell(h, 400)}" for h in result.get("hints") or []]
    lines += [""] if result.get("hints") else []
    if result["failures"]:
        lines += [
            "## Failed expectations",
            "",
            "| # | column | check | expected | observed | unexpected | sample bad values |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, f in enumerate(result["failures"], 1):
            lines.append(
                f"| {i} | {_md_cell(_where(f))} | {_md_cell(f['check'])} `{f['expectation']}` | {_md_cell(f['expected'])} "
                f"| {_md_cell(f['observed'])} | {_md_cell(f.get('unexpected_count'))} "
                f"| {_md_cell(_samples_text(f['sample_bad_values'], 240), 240)} |"
            )
        lines.append("")
    else:
        lines += ["All expectations passed.", ""]
    lines += [
        "## All expectations",
        "",
        "| # | result | column | check | expected | observed |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["results"], 1):
        lines.append(
            f"| {i} | {'pass' if r['success'] else '**FAIL**'} | {_md_cell(_where(r))} | {_md_cell(r['check'])} "
            f"| {_md_cell(r['expected'])} | {_md_cell(r['observed'])} |"
        )
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.summary{padding:.6em 1em;border-radius:4px;font-weight:600}
.ok{background:#e6f4ea;color:#1e6b34}.bad{background:#fce8e6;color:#a50e0e}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}tr.fail td{background:#fff4f4}code{font-size:.95em}
"""


def render_html(result: dict[str, Any]) -> str:
    """Self-contained HTML (inline CSS, no scripts, every value escaped)."""
    e = html.escape
    ok = result["passed"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Data validation: {e(result['suite'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Data validation: {e(result['suite'])}</h1>",
        f'<p class="summary {"ok" if ok else "bad"}">{e(summary_line(result, max_listed=0))}</p>',
        f"<p>{result['rows']} rows, schema version {e(str(result['schema_version']))}, "
        f"Great Expectations {e(str(result.get('gx_version', '')))}.</p>",
    ]
    parts += [f'<p class="summary bad">Hint: {e(h)}</p>' for h in result.get("hints") or []]
    if result["failures"]:
        parts += [
            "<h2>Failed expectations</h2>",
            "<table><thead><tr><th>#</th><th>column</th><th>check</th><th>expected</th><th>observed</th>"
            "<th>unexpected</th><th>sample bad values</th></tr></thead><tbody>",
        ]
        for i, f in enumerate(result["failures"], 1):
            parts.append(
                f'<tr class="fail"><td>{i}</td><td>{e(_where(f))}</td>'
                f"<td>{e(f['check'])}<br><code>{e(f['expectation'])}</code></td>"
                f"<td>{e(f['expected'])}</td><td>{e(_short(f['observed'], 400))}</td>"
                f"<td>{e(_short(f.get('unexpected_count')))}</td>"
                f"<td>{e(_samples_text(f['sample_bad_values']))}</td></tr>"
            )
        parts.append("</tbody></table>")
    else:
        parts.append("<p>All expectations passed.</p>")
    parts += [
        "<h2>All expectations</h2>",
        "<table><thead><tr><th>#</th><th>result</th><th>column</th><th>check</th><th>expected</th>"
        "<th>observed</th></tr></thead><tbody>",
    ]
    for i, r in enumerate(result["results"], 1):
        cls = "" if r["success"] else ' class="fail"'
        parts.append(
            f"<tr{cls}><td>{i}</td><td>{'pass' if r['success'] else '<b>FAIL</b>'}</td><td>{e(_where(r))}</td>"
            f"<td>{e(r['check'])}</td><td>{e(r['expected'])}</td><td>{e(_short(r['observed'], 400))}</td></tr>"
        )
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts) + "\n"


def write_report(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write validation.json / .md / .html (and GX's Data Docs site) under out_dir; return their paths by kind.

    With `gx_result`: data_docs/ is GX's site (index.html, the validation page, static/),
    and validation.html is that page standalone (fetches nothing) under kfct's summary.
    validation.json is kfct's result without the GX blob (the site renders it).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "validation.json",
        "markdown": out / "validation.md",
        "html": out / "validation.html",
    }
    gx_result = result.get("gx_result")
    plain = {k: v for k, v in result.items() if k != "gx_result"}
    paths["json"].write_text(json.dumps(plain, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(plain), encoding="utf-8")
    if gx_result:
        from kfct.components.validation_datadocs import build_site, kfct_header, standalone_page

        page = build_site(gx_result, out / "data_docs")
        paths["data_docs"] = out / "data_docs" / "index.html"
        paths["data_docs_page"] = page
        paths["html"].write_text(standalone_page(page.read_text(encoding="utf-8"), kfct_header(plain)), encoding="utf-8")
    else:
        paths["html"].write_text(render_html(plain), encoding="utf-8")
    return paths


def publish_report(
    result: dict[str, Any], report: Any, report_json: Any, report_md: Any, data_docs: Any, **metadata: Any
) -> dict[str, Any]:
    """Write the validation's reports into a validation step's kfp output artifacts; return their metadata.

    `report` (HTML, what the Kubeflow UI shows in the step's frame) is the standalone Data Docs
    page; `data_docs` is a directory holding GX's whole Data Docs site (index.html, the
    validation page, the suite page, static/), stored with the run like every output artifact: kfp.local
    keeps it under the run's pipeline root, and on a cluster the launcher uploads a directory artifact
    file by file (`UploadBlob` in kubeflow/pipelines backend/src/v2/objectstore/object_store.go, read at
    commit 031e8f93). Each artifact gets the same metadata:
    passed, n_expectations, n_failed and `metadata` (e.g. parts).
    """
    import shutil
    import tempfile

    meta = {"passed": result["passed"], "n_expectations": result["n_expectations"], "n_failed": result["n_failed"], **metadata}
    site = Path(data_docs.path)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_report(result, tmp)
        shutil.copyfile(paths["html"], report.path)
        shutil.copyfile(paths["markdown"], report_md.path)
        shutil.copyfile(paths["json"], report_json.path)
        site.mkdir(parents=True, exist_ok=True)
        if "data_docs" in paths:
            shutil.copytree(paths["data_docs"].parent, site, dirs_exist_ok=True)
            data_docs.metadata["page"] = paths["data_docs_page"].relative_to(paths["data_docs"].parent).as_posix()
        else:  # no GX result to render: the plain report is the site's one page
            shutil.copyfile(paths["html"], site / "index.html")
    data_docs.metadata["index"] = "index.html"
    for art in (report, report_json, report_md, data_docs):
        art.metadata.update(meta)
    return meta
