"""The validation's HTML report is Great Expectations' own Data Docs, with kfct's summary and hints beside it.

Real GX (the installed 1.x: its SiteBuilder and page renderer), real suites run on real frames;
the browser checks use the installed Chromium (skipped, with the reason, where it is absent).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

SMALL = """
dataset:
  name: small
  label: outcome
  positive_label: yes
  min_rows: 50
  label_balance: [0.2, 0.8]
  columns:
    x: {dtype: float, min: 0, max: 10}
    colour: {dtype: category, categories: [red, blue]}
    outcome: {dtype: category, values: [yes, no]}
"""

PASS_ICON, FAIL_ICON = "fa-check-circle text-success", "fa-times text-danger"
ERROR_ICON = "fa-exclamation-triangle text-warning"  # GX's mark for an expectation that raised (missing column)


@pytest.fixture()
def small_cfg(tmp_path):
    from kfct.config import load_config

    p = tmp_path / "small.yaml"
    p.write_text(SMALL)
    return load_config(p)


def _frame(n=60):
    return pd.DataFrame(
        {"x": [float(i % 10) for i in range(n)], "colour": ["red", "blue"] * (n // 2), "outcome": ["yes", "no", "no"] * (n // 3)}
    )


def _report(df, cfg, out):
    from kfct.components.validate import validate_frame, write_report

    result = validate_frame(df, cfg)
    return result, write_report(result, out)


def _text(page: str) -> str:
    """The page's words as a reader sees them (tags and styles out, spaces collapsed)."""
    page = re.sub(r"<style\b.*?</style>", " ", page, flags=re.DOTALL)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _stat(page: str, name: str) -> str:
    """A value of GX's Statistics table: the cell after the named one."""
    m = re.search(re.escape(name) + r"</div></td><td[^>]*><div[^>]*>([^<]*)</div>", page)
    assert m, f"no {name!r} in GX's Statistics table"
    return m.group(1)


def _fetches_nothing(page: str) -> None:
    """No tag that makes a browser fetch: no <link>, no <script>, no remote src=, no remote CSS url()."""
    assert "<link" not in page.lower() and "<script" not in page.lower()
    assert not re.search(r"""\bsrc\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page, re.IGNORECASE)


def test_passed_report_is_gx_data_docs_with_one_row_per_expectation(small_cfg, tmp_path):
    result, paths = _report(_frame(), small_cfg, tmp_path / "ok")
    assert result["passed"]
    page = paths["html"].read_text()
    # GX's validation-results page: its overview, its statistics, one status-marked row per expectation
    assert "Expectation Validation Result" in page and "Expectation Suite:" in page and "small.v1" in page
    assert _stat(page, "Evaluated Expectations") == str(result["n_expectations"])
    assert _stat(page, "Success Percent") == "100%"
    assert "Succeeded" in page and FAIL_ICON not in page
    assert page.count(PASS_ICON) == result["n_expectations"] + 1  # + the overview's status
    assert "Must have greater than or equal to 50 rows." in _text(page)  # GX's own wording of the min_rows expectation
    # kfct's one-line summary beside it
    assert '<section id="kfct-summary" class="ok">' in page
    assert "validation: 16 expectations, 0 failed (passed)" in page
    _fetches_nothing(page)
    # GX's own site, kept whole beside it
    index = paths["data_docs"].read_text()
    assert paths["data_docs_page"].relative_to(paths["data_docs"].parent).as_posix() in index
    assert (paths["data_docs"].parent / "static" / "styles" / "data_docs_default_styles.css").is_file()
    assert "gx_result" not in json.loads(paths["json"].read_text())  # kfct's JSON stays lean


def test_failing_validation_shows_gx_failures_and_kfct_hints(small_cfg, tmp_path):
    df = _frame()
    df.loc[3, "x"] = 99.0
    df.loc[4, "colour"] = "green"
    result, paths = _report(df, small_cfg, tmp_path / "bad")
    page = paths["html"].read_text()
    assert not result["passed"] and result["n_failed"] == 2
    assert "Status:" in page and "Failed" in page
    assert _stat(page, "Unsuccessful Expectations") == "2"
    assert page.count(FAIL_ICON) == result["n_failed"] + 1  # two failed rows + the overview's status
    assert page.count(PASS_ICON) == result["n_expectations"] - result["n_failed"]
    assert "values must be greater than or equal to 0.0 and less than or equal to 10.0 ." in _text(page)
    assert "Sampled Unexpected Values" in page and "99.0" in page and "green" in page  # pass 2's samples
    header = page[page.index('<section id="kfct-summary"') : page.index("</section>")]
    assert 'class="bad"' in header
    assert "validation: 16 expectations, 2 failed (FAILED) - x: range (1 bad); colour: categories (1 bad)" in header
    assert "observed 1 of 60 values out of range" in header and "expected values between 0 and 10" in header
    assert header_index(page) < page.index("Expectation Validation Result")  # beside (above) GX's page


def header_index(page: str) -> int:
    return page.index('<section id="kfct-summary"')


def test_wrong_delimiter_hint_is_beside_gx_page(small_cfg, tmp_path):
    from kfct.data.datasource import read_dataset

    path = tmp_path / "semi.csv"
    _frame().to_csv(path, sep=";", index=False)
    from kfct.components.validate import validate_frame, write_report

    result = validate_frame(read_dataset(str(path)), small_cfg)
    page = write_report(result, tmp_path / "semi")["html"].read_text()
    assert "hint: the data has one column &#x27;x;colour;outcome&#x27;" in page
    # the missing columns are GX rows too: failed, or raised (GX's exception shown)
    assert page.count(FAIL_ICON) + page.count(ERROR_ICON) == result["n_failed"] + 1
    assert page.count(ERROR_ICON) > 0 and "raised an exception" in page


def test_the_validate_step_html_artifact_is_the_gx_page(kfct_home, small_cfg, tmp_path):
    """validate_data as kfp calls it: real artifacts on disk; the HTML artifact (what the KFP UI shows)."""
    from kfp.dsl import HTML, Artifact, Dataset, Markdown

    from kfct.components.validate import validate_data
    from kfct.config import config_to_json

    df = _frame()
    df.loc[0, "x"] = -5.0
    df.to_parquet(tmp_path / "snap.parquet")
    arts = [
        HTML(uri=str(tmp_path / "report")),
        Artifact(uri=str(tmp_path / "report.json")),
        Markdown(uri=str(tmp_path / "report.md")),
        Artifact(uri=str(tmp_path / "data_docs")),
    ]
    assert validate_data(Dataset(uri=str(tmp_path / "snap.parquet")), config_to_json(small_cfg), "small", "run-1", *arts) is False
    page = (tmp_path / "report").read_text()
    assert "Expectation Validation Result" in page and page.count(FAIL_ICON) == 2
    assert "validation: 16 expectations, 1 failed (FAILED) - x: range (1 bad)" in page
    _fetches_nothing(page)
    assert json.loads((tmp_path / "report.json").read_text())["n_failed"] == 1
    # GX's whole Data Docs site is an artifact of the step too, kept with the run
    site_page = _site_page(arts[3])
    assert "Expectation Validation Result" in site_page and site_page.count(FAIL_ICON) == 2
    assert "kfct-summary" not in site_page  # the site is GX's as GX writes it
    assert {a.metadata["n_failed"] for a in arts} == {1} and {a.metadata["passed"] for a in arts} == {False}


def _site_page(data_docs) -> str:
    """The data_docs artifact is a GX Data Docs site: its index.html links (relatively) to the validation page,
    which opens from disk with its static assets beside it; returns that page."""
    site = Path(data_docs.path)
    index = (site / "index.html").read_text()
    # GX's index table links each row to its validation page (bootstrap-table's row link) and to its suite's page
    links = set(re.findall(r"'_table_row_link_path': '(validations/[^']+\.html)'", index))
    assert len(links) == 1, links
    suite_pages = set(re.findall(r'href="(expectations/[^"]+\.html)"', index))
    assert suite_pages and all((site / p).is_file() for p in suite_pages), suite_pages
    page = site / links.pop()
    assert page.is_file() and page.relative_to(site).as_posix() == data_docs.metadata["page"]
    assert (site / "static" / "styles" / "data_docs_default_styles.css").is_file()
    # every local file a page or stylesheet of the site refers to is there (the pruned onboarding GIFs are not used)
    for f in [*site.rglob("*.html"), *site.rglob("*.css")]:
        for ref in re.findall(r"""(?:href|src)=["']([^"'#]+)["']|url\(['"]?([^)'"]+)""", f.read_text()):
            ref = ref[0] or ref[1]
            # (GX 1.24 links the favicon one level short from validation pages: its own slip, a missing icon only)
            if not re.match(r"^(https?:|//|data:|mailto:)", ref) and not ref.endswith("favicon.ico"):
                assert (f.parent / ref).resolve().is_file(), (f, ref)
    assert sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) < 1.5 * 2**20
    return page.read_text()


def _validated_parts(frames, cfg, tmp_path):
    """validate_part as kfp calls it, once per part (real parquet parts, real stats artifacts)."""
    from kfp.dsl import Artifact

    from kfct.components.parts_stages import validate_part
    from kfct.config import config_to_json

    stats = []
    for i, df in enumerate(frames):
        uri = tmp_path / f"part{i}.parquet"
        df.to_parquet(uri, index=False)
        art = Artifact(uri=str(tmp_path / f"stats{i}"))
        validate_part(str(uri), config_to_json(cfg), art)
        stats.append(art)
    return stats


def test_the_merge_step_publishes_gx_data_docs_of_the_merged_result(kfct_home, small_cfg, tmp_path):
    """merge_validation (the reduce of the parts pipeline) as kfp calls it: the same artifacts as validate_data,
    its page GX's Data Docs of the merged result, with the global checks from the merged statistics."""
    from kfp.dsl import HTML, Artifact, Dataset, Markdown

    from kfct.components.parts_stages import merge_validation
    from kfct.config import config_to_json

    frames = [_frame(30), _frame(30)]  # 30 rows each: under min_rows (50) alone, 60 together
    frames[1].loc[2, "x"] = 42.0
    arts = [
        HTML(uri=str(tmp_path / "report")),
        Artifact(uri=str(tmp_path / "report.json")),
        Markdown(uri=str(tmp_path / "report.md")),
        Artifact(uri=str(tmp_path / "data_docs")),
    ]
    dataset = Dataset(uri=str(tmp_path / "parts"))
    dataset.metadata["sha256"] = "abc"
    passed = merge_validation(
        _validated_parts(frames, small_cfg, tmp_path), config_to_json(small_cfg), "small", "run-1", dataset, *arts
    )
    assert passed is False
    page = (tmp_path / "report").read_text()
    assert "Expectation Validation Result" in page and "Expectation Suite:" in page and "small.v1" in page
    assert _stat(page, "Evaluated Expectations") == "16" and _stat(page, "Unsuccessful Expectations") == "1"
    assert page.count(FAIL_ICON) == 2  # the range row + the overview's status
    text = _text(page)
    assert "Must have greater than or equal to 50 rows." in text
    # the row-count expectation observed the whole dataset's rows, not one part's (30 < 50 would have failed)
    row_count = text[text.index("Must have greater than or equal to 50 rows.") :][:200]
    assert " 60 " in row_count, row_count
    assert "Sampled Unexpected Values" in page and "42.0" in page
    assert "validation: 16 expectations, 1 failed (FAILED) - x: range (1 bad)" in page
    _fetches_nothing(page)
    site_page = _site_page(arts[3])
    assert _stat(site_page, "Unsuccessful Expectations") == "1"
    assert {a.metadata["parts"] for a in arts} == {2} and {a.metadata["n_failed"] for a in arts} == {1}


def test_publish_report_fills_every_artifact_of_a_validation_step(small_cfg, tmp_path):
    """The one helper both validation steps use: four artifacts, the same metadata on each."""
    from kfp.dsl import HTML, Artifact, Markdown

    from kfct.components.validation_report import publish_report
    from kfct.components.validation_run import validate_frame

    result = validate_frame(_frame(), small_cfg)
    arts = [
        HTML(uri=str(tmp_path / "r")),
        Artifact(uri=str(tmp_path / "r.json")),
        Markdown(uri=str(tmp_path / "r.md")),
        Artifact(uri=str(tmp_path / "site")),
    ]
    meta = publish_report(result, *arts, parts=3)
    assert meta == {"passed": True, "n_expectations": 16, "n_failed": 0, "parts": 3}
    assert all(meta.items() <= a.metadata.items() for a in arts)
    assert "validation: 16 expectations, 0 failed (passed)" in (tmp_path / "r").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["n_expectations"] == 16
    assert (tmp_path / "r.md").read_text().startswith("# Data validation: small.v1")
    assert "Succeeded" in _site_page(arts[3])


def _chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    return browser


# Chromium's own background calls (time sync, account checks) are not the page's.
_BROWSER_OWN = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gstatic\.com)/")


def _render(browser, page, tmp_path, name):
    """The DOM Chromium builds for `page`, and every http(s) URL the page made it request (its net log)."""
    netlog = tmp_path / f"{name}.netlog.json"
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / ('profile-' + name)}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--log-net-log={netlog}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    urls = set(re.findall(r'"url":"(https?://[^"]+)"', netlog.read_text()))
    return dom, {u for u in urls if not _BROWSER_OWN.match(u)}


@pytest.mark.slow  # renders in a Chromium process
def test_html_report_renders_in_chromium_fetching_nothing_and_escapes_data(small_cfg, tmp_path):
    browser = _chromium()
    df = _frame()
    df.loc[3, "colour"] = "<script>alert(1)</script>"
    df.loc[5, "colour"] = '<img src="http://127.0.0.1:9/x.png">'
    _, paths = _report(df, small_cfg, tmp_path / "report")
    assert paths["html"].suffix == ".html"
    dom, fetched = _render(browser, paths["html"], tmp_path, "kfct")
    assert fetched == set(), fetched
    summary = dom[dom.index('<section id="kfct-summary" class="bad">') :]
    assert "validation: 16 expectations, 1 failed (FAILED) - colour: categories (2 bad)" in summary
    assert "Expectation Validation Result" in dom and "values must belong to this set" in dom
    gx_part = dom[dom.index("Expectation Validation Result") :]  # GX's page, below kfct's header
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in gx_part and "<script>alert" not in dom  # shown as text
    assert "&lt;img src=" in gx_part and '<img src="http://127.0.0.1:9' not in dom
    # The check sees fetches when there are some: GX's site page as GX writes it pulls its CDN assets.
    _, gx_fetched = _render(browser, paths["data_docs_page"], tmp_path, "gx")
    assert any("bootstrap" in u for u in gx_fetched), gx_fetched


@pytest.mark.slow  # renders in a Chromium process
def test_merged_parts_page_renders_in_chromium_with_the_summary_fetching_nothing(kfct_home, small_cfg, tmp_path):
    """The merge step's HTML artifact (the page the Kubeflow UI shows) rendered headless: summary, GX's page, no fetch."""
    from kfct.components.validation_merge import merge_results
    from kfct.components.validation_report import write_report

    browser = _chromium()
    frames = [_frame(30), _frame(30)]
    frames[0].loc[1, "colour"] = "green"
    parts = [
        {**json.loads(Path(art.path, "part.json").read_text()), "dir": art.path}
        for art in _validated_parts(frames, small_cfg, tmp_path)
    ]
    paths = write_report(merge_results(parts, small_cfg), tmp_path / "merged")
    dom, fetched = _render(browser, paths["html"], tmp_path, "merged")
    assert fetched == set(), fetched
    assert "validation: 16 expectations, 1 failed (FAILED) - colour: categories (1 bad)" in dom
    assert "Expectation Validation Result" in dom and "values must belong to this set" in dom


@pytest.mark.slow  # builds the site in a fresh Python process
def test_data_docs_build_in_a_process_that_never_ran_the_suite(small_cfg, tmp_path):
    """The parts pipeline's merge step renders results it did not compute (its process never built the suite,
    so kfct's own expectations, e.g. whole numbers, were never defined there): a fresh interpreter must build
    the site from the result's JSON alone."""
    import sys

    from kfct.components.validation_run import validate_frame

    df = _frame()
    df["n"] = 3
    small_cfg.dataset.columns["n"] = small_cfg.dataset.columns["x"].model_copy(update={"dtype": "int", "min": 0, "max": 9})
    result = validate_frame(df, small_cfg)
    kinds = {r["expectation_config"]["type"] for r in result["gx_result"]["results"]}
    assert "expect_column_values_to_be_whole_numbers" in kinds
    (tmp_path / "gx.json").write_text(json.dumps(result["gx_result"], default=str))
    code = (
        "import json, sys; from kfct.components.validation_datadocs import build_site; "
        "print(build_site(json.load(open(sys.argv[1])), sys.argv[2]))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "gx.json"), str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    page = Path(p.stdout.strip()).read_text()
    assert "expect_column_values_to_be_whole_numbers" in page or "whole number" in page.lower()
