"""`pytest -p tests.cputime`: where the suite's CPU goes, per test file.

`--durations` reports wall time, and on a busy 2-core machine wall time is mostly waiting for
the other workers. This plugin records the CPU of each test phase: the test process's own,
plus its children's (stage processes, servers, pods) once they are reaped. At the end it prints
the files that used the most CPU. It works under pytest-xdist: each worker sets the figure on
its reports (an attribute, which xdist carries to the controller with the report's fields), and
the controller adds them up.

The summary's first line is the floor this CPU sets: spread perfectly over the cores this
process may use, the tests could not take less wall time than their CPU divided by that number
(collection and worker start come on top). On 2 cores that floor, not the scheduling, is what
bounds `make test`.

A child that is not waited for (a daemon left running, a grandchild that outlives its parent)
is not counted.
"""

from __future__ import annotations

import os
from collections import defaultdict

import pytest

_STARTED = pytest.StashKey[float]()
_TOTALS: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
TOP = 25


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity: a container's cpuset), as `nproc` counts them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_STARTED] = _cpu()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    item.stash[_STARTED] = _cpu()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    item.stash[_STARTED] = _cpu()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    started = item.stash.get(_STARTED, None)
    if started is not None:
        outcome.get_result().cpu_seconds = _cpu() - started


def pytest_runtest_logreport(report):
    cpu = getattr(report, "cpu_seconds", 0.0)
    row = _TOTALS[report.nodeid.split("::")[0]]
    row[0] += cpu
    row[1] += report.duration
    row[2] += report.when == "call"


def pytest_terminal_summary(terminalreporter):
    if not _TOTALS or hasattr(terminalreporter.config, "workerinput"):  # an xdist worker: the controller reports
        return
    total = sum(r[0] for r in _TOTALS.values())
    tr = terminalreporter
    tr.section(f"CPU per test file (tests.cputime): {total:.0f} s in all")
    cores = usable_cores()
    tr.write_line(f"floor: {total:.0f} s of CPU on {cores} cores cannot take less than {total / cores:.0f} s of wall time")
    for path, (cpu, wall, n) in sorted(_TOTALS.items(), key=lambda kv: -kv[1][0])[:TOP]:
        tr.write_line(f"{cpu:8.1f} s CPU {wall:8.1f} s wall {n:4d} tests  {path}")
