"""`pytest -p tests.cputime` counts each test's CPU once, its children's included, under xdist too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts pytest processes

ROOT = Path(__file__).resolve().parents[2]
BURN = """
import subprocess, sys, time


def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_in_process():
    burn(0.4)


CHILD = "import time\\nend = time.process_time() + 0.4\\nwhile time.process_time() < end: pass"


def test_in_a_child():
    subprocess.run([sys.executable, "-c", CHILD], check=True)
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_files_cpu_is_its_tests_own_and_their_childrens_once(tmp_path, workers):
    (tmp_path / "test_burn.py").write_text(BURN)
    (tmp_path / "test_idle.py").write_text("import time\n\ndef test_sleeps():\n    time.sleep(0.5)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not this worker's xdist identity
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.cputime", "-p", "no:cacheprovider", "-q", *workers, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = {
        m["file"]: (float(m["cpu"]), float(m["wall"]), int(m["n"]))
        for m in re.finditer(
            r"^\s*(?P<cpu>[\d.]+) s CPU\s+(?P<wall>[\d.]+) s wall\s+(?P<n>\d+) tests\s+(?P<file>\S+)$", p.stdout, re.M
        )
    }
    burn, idle = rows["test_burn.py"], rows["test_idle.py"]
    assert burn[2] == 2 and idle[2] == 1, p.stdout[-2000:]
    assert 0.75 <= burn[0] < 1.3, burn  # 0.4 s in process + 0.4 s in a child, each counted once
    assert idle[0] < 0.3 and idle[1] >= 0.5, idle  # waiting is wall time, not CPU
    total = float(re.search(r"CPU per test file \(tests\.cputime\): (\d+) s in all", p.stdout)[1])
    floor = re.search(r"^floor: (\d+) s of CPU on (\d+) cores cannot take less than (\d+) s of wall time$", p.stdout, re.M)
    assert floor, p.stdout[-2000:]
    assert int(floor[1]) == total and int(floor[2]) == len(os.sched_getaffinity(0)), floor[0]
    assert abs(int(floor[3]) - total / int(floor[2])) <= 1, floor[0]  # both figures are rounded
