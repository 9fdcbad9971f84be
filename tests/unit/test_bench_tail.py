"""`python -m bench --only tail`'s machinery: interleaved wrk cells against a loopback server, the
medians, the per-round ratios to MLServer, the targets' verdicts and the section's tables.

Behaviour only: no benchmark figure is asserted (a benchmark reports, tests assert behaviour).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench/` is a top-level folder run with `python -m bench`
    sys.path.insert(0, str(ROOT))

from tests.unit.test_bench_smoke import _tables, echo_server  # noqa: E402,F401  (the loopback fixture)


@pytest.mark.slow  # runs wrk against a loopback server
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_tail_cells_are_interleaved_and_reported(echo_server, tmp_path):
    from bench import predlog_tail

    ctx = SimpleNamespace(workdir=tmp_path, log=lambda m: None)
    started = {name: SimpleNamespace(predict_url=echo_server) for name in predlog_tail.VARIANTS}
    bodies = {name: {"instances": [{"x": 1}]} for name in predlog_tail.VARIANTS}
    cells = predlog_tail._measure(ctx, started, bodies, rounds=2, duration=1)
    assert {n: [c["round"] for c in cs] for n, cs in cells.items()} == {n: [1, 2] for n in predlog_tail.VARIANTS}
    assert all(c["requests"] > 0 and c["errors"] == 0 and c["load_1m"] is not None for cs in cells.values() for c in cs)
    data = predlog_tail.summarize(
        cells, rounds=2, duration=1, warmup=0, wrk_version="4.1", log_status=None, model={"name": "m", "version": "1"}
    )
    assert len(data["ratios"]["log-on"]["per_round"]) == 2 and data["ratios"]["log-off"]["median"] > 0
    assert data["targets"]["tail"]["cells"] == 2 and data["targets"]["rps_ratio"]["met"] in (True, False)
    paths = predlog_tail.write(data, tmp_path / "out")
    md = paths["md"].read_text()
    for table in _tables(md):
        assert len({line.count("|") for line in table}) == 1, table
    cell_table = next(t for t in _tables(md) if t[0].startswith("| round | server"))
    assert [r.split("|")[1].strip() for r in cell_table[2:]] == ["1"] * 3 + ["2"] * 3
    assert "p99 ≤ 3.0 × p50" in md and "MLServer" in md
