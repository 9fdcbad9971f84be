"""Stage stamps: what the local runner reads a stage's wall time from (no log parsing)."""

from kfct.runtime.stageclock import ENDED, STARTED, StageClock, duration


def test_stamp_writes_start_and_end_into_each_metadata_dict():
    ticks = iter([100.0, 103.25])
    clock = StageClock(clock=lambda: next(ticks))
    a, b = {"rows": 5}, {}
    times = clock.stamp(a, b)
    assert times == {STARTED: 100.0, ENDED: 103.25} and a == {"rows": 5, **times} and b == times
    assert duration(a) == 3.25


def test_duration_is_none_without_stamps_or_with_garbage():
    assert duration({}) is None
    assert duration({STARTED: "x", ENDED: 1}) is None
    assert duration({STARTED: 1.0}) is None


def test_across_midnight_is_just_a_difference_of_epoch_seconds():
    # 23:59:59.5 -> 00:00:01.0 (UTC) the next day: 1.5 s, no `% 86400` needed.
    assert duration({STARTED: 1_700_006_399.5, ENDED: 1_700_006_401.0}) == 1.5
