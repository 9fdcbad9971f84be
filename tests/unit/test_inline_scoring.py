"""Which requests score on the event loop: a version earns it by being fast on its own thread,
and two inline calls in a row over the budget send it back to earn it again, twice as long each
time; one slow inline call (a preemption) does not."""

from kfct.serving.inline_scoring import InlinePolicy

FAST, SLOW = 0.0001, 0.06


def earn(p: InlinePolicy, calls: int, rows: int = 1) -> None:
    for _ in range(calls):
        p.observe(rows, FAST, inline=False)


def test_a_new_version_scores_on_its_thread_until_it_has_been_fast_enough_times():
    p = InlinePolicy(earn_after=50)
    assert not p.inline(1)
    earn(p, 49)
    assert not p.inline(1)
    earn(p, 1)
    assert p.inline(1)


def test_big_requests_always_go_to_the_thread_and_say_nothing_about_small_ones():
    p = InlinePolicy(max_rows=32, earn_after=5)
    for _ in range(10):
        p.observe(1000, SLOW, inline=False)  # a 1,000-row batch is slow and that is fine
    earn(p, 5)
    assert p.inline(32) and not p.inline(33)


def test_a_slow_call_on_the_thread_starts_the_count_again():
    p = InlinePolicy(earn_after=5)
    earn(p, 4)
    p.observe(1, SLOW, inline=False)
    earn(p, 4)
    assert not p.inline(1)
    earn(p, 1)
    assert p.inline(1)


def test_a_slow_version_holds_the_loop_twice_and_never_earns_it_back():
    p = InlinePolicy(earn_after=5)
    earn(p, 5)
    held = 0
    while p.inline(1):
        held += 1
        p.observe(1, SLOW, inline=True)
    assert held == 2
    for _ in range(1000):
        p.observe(1, SLOW, inline=False)  # on its thread, where it harms only its own clients
    assert not p.inline(1)


def test_one_slow_inline_call_between_fast_ones_is_a_preemption_not_a_slow_version():
    p = InlinePolicy(earn_after=5)
    earn(p, 5)
    for k in range(1000):
        p.observe(1, SLOW if k % 7 == 0 else FAST, inline=True)
        assert p.inline(1)
    assert p.demotions == 0


def test_each_time_it_held_the_loop_it_must_be_fast_twice_as_long():
    p = InlinePolicy(earn_after=5)
    demoted = 0
    for _ in range(2000):  # fast on its thread, slow whenever it is on the loop
        if p.inline(1):
            before = p.demotions
            p.observe(1, SLOW, inline=True)
            demoted += p.demotions > before
        else:
            p.observe(1, FAST, inline=False)
    assert p.demotions == demoted and demoted <= 9  # 5 + 10 + 20 + ... fast calls before each: log2(2000 / 5)


def test_earning_it_back_is_bounded():
    p = InlinePolicy(earn_after=5)
    for _ in range(100):
        earn(p, 5 << p.demotions)
        p.observe(1, SLOW, inline=True)
        p.observe(1, SLOW, inline=True)
    assert p.demotions == 8
    earn(p, 5 << 8)
    assert p.inline(1)
