"""When a version scores on the event loop itself instead of on its own thread.

Each version scores on its own executor thread so that a slow version (a canary that takes
60 ms a call) queues only its own requests, not the champion's clients or the health checks.
That hop costs more than the scoring it protects: handing a request to the thread and waking
the event loop with the answer took about 0.2 ms per request on a 2-core machine, where the
compiled trees score a row in microseconds (wrk, one connection, `kfct serve
--no-prediction-log`: p50 0.60 -> 0.38 ms and 1,560 -> 2,480 req/s with small requests
inline; bench/results.md, "Serving tail").

So a version earns the inline path: its small requests (at most `max_rows` rows) go to its
thread until `earn_after` of them in a row each scored within `budget_s`; from then on they are
scored on the event loop. Two inline calls in a row over the budget send the version back to
its thread, to earn the loop again with twice as many fast calls as last time. Two, because on
a busy machine a fast call's wall time is sometimes over budget for reasons not its own (the
process was preempted mid-call, about once in a few thousand calls here), and twice in a row
almost never: a preempted fast version stays on the loop. A slow version holds the loop twice,
then stays on its thread; one that is sometimes slow holds it a logarithmic number of times.
Requests over `max_rows` always go to the thread. Pure: the caller times the calls.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ROWS = 32  # a request this small scores in well under the budget with the compiled trees
BUDGET_S = 0.002  # a call slower than this would be seen by every other client of the loop
EARN_AFTER = 50  # consecutive calls within budget on the thread before the first inline one
STRIKES = 2  # inline calls in a row over the budget that send a version back to its thread
MAX_DOUBLINGS = 8  # earning the loop back never takes more than EARN_AFTER * 256 fast calls


@dataclass
class InlinePolicy:
    """Per loaded version: may its next request of `rows` rows score on the event loop?"""

    max_rows: int = MAX_ROWS
    budget_s: float = BUDGET_S
    earn_after: int = EARN_AFTER
    strikes_to_demote: int = STRIKES
    fast_calls: int = 0
    strikes: int = 0  # inline calls in a row over the budget
    demotions: int = 0

    def inline(self, rows: int) -> bool:
        return rows <= self.max_rows and self.fast_calls >= self.earn_after << self.demotions

    def observe(self, rows: int, seconds: float, inline: bool) -> None:
        """Record one small call's scoring time (calls over `max_rows` say nothing about small ones)."""
        if rows > self.max_rows:
            return
        if seconds <= self.budget_s:
            self.fast_calls += 1
            self.strikes = 0
        elif not inline:
            self.fast_calls = 0  # earned again from scratch
        else:
            self.strikes += 1
            if self.strikes >= self.strikes_to_demote:  # not a preemption: back to the thread
                self.fast_calls = self.strikes = 0
                self.demotions = min(self.demotions + 1, MAX_DOUBLINGS)
