"""What GX's Data Docs cost a validation step: the merged GX result and the site, per run.

    python -m bench.datadocs [ROWS] [PARTS]      # default 100000 rows in 4 parts

Validates ROWS generated rows part by part (as the parts pipeline's map step does), then
times the reduce (`merge_results`, which now builds the merged GX suite result) and
`write_report` (GX's SiteBuilder site + the standalone page), and prints the page's and the
kept site's size (what each run stores in the pipeline root). Not wired into `make bench`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def main(rows: int = 100_000, n_parts: int = 4) -> dict:
    from kfct.components import validation_merge as vm
    from kfct.components.validation_report import write_report
    from kfct.config import load_config
    from kfct.data.datagen import generate

    cfg = load_config()
    df = generate(rows, seed=1)
    step = rows // n_parts
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        parts = []
        for i in range(n_parts):
            part = df.iloc[i * step : (i + 1) * step].reset_index(drop=True)
            uri = tmp / f"p{i}.parquet"
            part.to_parquet(uri)
            out = vm.validate_part(part, cfg, tmp / f"p{i}")
            # through JSON, as part.json carries it between the map and the reduce pods
            parts.append({**json.loads(json.dumps(out, default=str)), "dir": str(tmp / f"p{i}"), "part_uri": str(uri)})
        t = time.perf_counter()
        merged = vm.merge_results(parts, cfg)
        merge_s = time.perf_counter() - t
        t = time.perf_counter()
        paths = write_report(merged, tmp / "report")
        report_s = time.perf_counter() - t
        site = tmp / "report" / "data_docs"
        return {
            "rows": rows,
            "parts": n_parts,
            "expectations": merged["n_expectations"],
            "merge_results_s": round(merge_s, 3),
            "write_report_s": round(report_s, 3),
            "page_kib": round(paths["html"].stat().st_size / 1024),
            "site_kib": round(sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 1024),
        }


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(main(*args)))
