"""The rate limiter: no more than the ceiling in any second, and time left unused in the last second made up
instead of lost. On a fake clock: `wait` advances it by the time it would sleep."""

from __future__ import annotations

import random
import threading

import pytest

from sync.http import HEADROOM, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _limiter(per_second: float) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(per_second, clock=clock, sleep=clock.sleep), clock


def _starts(limiter: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    starts = []
    for _ in range(n):
        limiter.wait()
        starts.append(clock.now)
    return starts


def _most_in_a_window(starts: list[float], seconds: float) -> int:
    return max(sum(1 for s in starts[i:] if s - start < seconds) for i, start in enumerate(starts))


@pytest.mark.parametrize("per_second", [25, 50, 100])
def test_a_fresh_limiter_lets_a_seconds_requests_go_at_twice_the_pace(per_second):
    """Before the first page of a backfill arrives, the setup's round trips leave the last second unused: the
    history reads then make it up, instead of starting at the even pace and losing it."""
    limiter, clock = _limiter(per_second)
    began = clock.now
    starts = _starts(limiter, clock, per_second)
    assert starts[-1] - began < 0.55  # even spacing would take (per_second - 1) / (per_second × HEADROOM) ≈ 1 s
    assert _most_in_a_window(starts, 1.0) == per_second


@pytest.mark.parametrize("per_second", [25, 100])
def test_a_pause_is_made_up_within_the_window(per_second):
    limiter, clock = _limiter(per_second)
    _starts(limiter, clock, 5 * per_second)  # busy: at the average rate now
    clock.now += 0.3  # nobody asked for 0.3 s (the main thread held the GIL, say)
    resumed = clock.now
    _starts(limiter, clock, per_second)
    # A second's requests after the pause take one window from the pause's start, not a window after it.
    assert clock.now - resumed <= limiter.window - 0.3 + 0.01


@pytest.mark.parametrize("per_second", [0.1, 0.5, 1, 2.5, 25, 50.5, 100])
def test_no_second_holds_more_than_the_ceiling_and_the_rate_stays_under_it(per_second):
    limiter, clock = _limiter(per_second)
    rng = random.Random(7)
    starts: list[float] = []
    for _ in range(int(per_second * 30) + 20):
        if rng.random() < 0.05:
            clock.now += rng.uniform(0, 1.5)  # callers come and go
        limiter.wait()
        starts.append(clock.now)
    # With HEADROOM: the ceiling holds even if jitter carries a request 20 ms late.
    assert _most_in_a_window(starts, 1.0 + (1 / HEADROOM - 1) * 0.99) <= max(1, int(per_second))
    # Kept busy, it goes at HEADROOM of the ceiling: `count` per window of count / (per_second × HEADROOM) s.
    busy = _starts(limiter, clock, int(per_second * 20) + 10)
    windows = (busy[-1] - busy[0]) / limiter.window + 1e-6
    assert len(busy) <= limiter.count * (windows + 1)
    assert limiter.count / limiter.window <= per_second * HEADROOM * 1.0001


class SteppedClock:
    """A clock the test moves; `sleep` blocks the calling thread until the clock has moved that far."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers = 0
        self.turn = threading.Condition()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.turn:
            until = self.now + seconds
            self.sleepers += 1
            self.turn.notify_all()
            assert self.turn.wait_for(lambda: self.now >= until, timeout=10)
            self.sleepers -= 1
            self.turn.notify_all()

    def move_to(self, moment: float) -> None:
        with self.turn:
            self.now = moment
            self.turn.notify_all()

    def until_sleeping(self, n: int) -> None:
        with self.turn:
            assert self.turn.wait_for(lambda: self.sleepers == n, timeout=10)


def test_an_urgent_request_takes_the_earliest_start_given_to_a_waiting_one():
    """A batch's lookups go ahead of the history reads queued for the limiter: the run waits for them."""
    clock = SteppedClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)  # 2 per 1.02 s, 0.255 s apart at least
    limiter.wait()  # starts at 0
    done: list[str] = []

    def request(name: str, urgent: bool = False) -> threading.Thread:
        thread = threading.Thread(target=lambda: (limiter.wait(urgent), done.append(name)))
        thread.start()
        return thread

    reads = [request("read 1"), None]
    clock.until_sleeping(1)  # read 1 waits for 0.255
    reads[1] = request("read 2")
    clock.until_sleeping(2)  # read 2 waits for 1.02
    lookup = request("lookup", urgent=True)  # would wait for 1.275; takes read 1's 0.255
    clock.until_sleeping(3)
    clock.move_to(0.3)
    lookup.join(timeout=10)
    clock.until_sleeping(2)  # read 1 sleeps again, until 1.275
    assert done == ["lookup"]
    clock.move_to(1.1)
    clock.until_sleeping(1)
    assert done == ["lookup", "read 2"]
    clock.move_to(1.4)  # read 1's 1.275, and a window after the lookup really started (0.3)
    for thread in reads:
        assert thread is not None
        thread.join(timeout=10)
    assert done == ["lookup", "read 2", "read 1"]


def test_requests_that_woke_late_do_not_put_more_than_the_ceiling_in_a_second():
    """A thread that wakes late (it waited for the GIL) starts close to the next ones: the starts themselves,
    not only the times given out, stay under the ceiling, or the server counts one too many and answers 429."""
    clock = FakeClock()
    late = iter([0.745])  # the second request (the first sleeps no time) wakes at 1.0 instead of 0.255

    def oversleeping(seconds: float) -> None:
        clock.sleep(seconds + next(late, 0.0))

    limiter = RateLimiter(2, clock=clock, sleep=oversleeping)
    began = clock.now
    starts = [s - began for s in _starts(limiter, clock, 4)]
    assert starts[:3] == pytest.approx([0, 1.0, limiter.window], abs=1e-3)
    # Given 1.275, the fourth waits until a window has passed since the late one really started.
    assert starts[3] == pytest.approx(starts[1] + limiter.window)
    assert _most_in_a_window(starts, 1.0) <= 2


def test_an_urgent_request_with_nobody_waiting_earlier_leaves_no_start_time_to_take():
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    limiter.wait(urgent=True)
    limiter.wait(urgent=True)  # sleeps until its own time: nobody waits
    assert not limiter._waiting


@pytest.mark.parametrize("per_second", [25, 100])
def test_after_a_429_the_limiter_leaves_a_wider_margin_up_to_a_tenth(per_second):
    """A 429 means requests reached Attio later than the margin allows (or another client spends the same
    budget): the next ones go a little slower, for the rest of the run, and never below 90% of the first pace."""
    limiter, clock = _limiter(per_second)
    first = limiter.window
    _starts(limiter, clock, 3 * per_second)
    limiter.slow_down()
    assert limiter.window == pytest.approx(first * 1.02)
    after = _starts(limiter, clock, 5 * per_second)
    # No window of the wider width holds more than the ceiling, once the starts given before it have passed.
    settled = after[per_second:]
    assert limiter.window == pytest.approx(first * 1.02)  # still: no ten windows without a 429 yet
    assert _most_in_a_window(settled, limiter.window * 0.999) <= limiter.count
    for _ in range(50):
        clock.now += limiter.window * 1.01  # 429s more than a window apart: each widens
        limiter.slow_down()
    assert limiter.window == pytest.approx(first * 1.10)
    busy = _starts(limiter, clock, 8 * per_second)[2 * per_second:]  # once the narrower windows have passed
    # `count` starts per widest window: 10% under the first pace, not slower.
    gaps = {round(busy[i + limiter.count] - busy[i], 6) for i in range(len(busy) - limiter.count)}
    assert gaps == {round(first * 1.10, 6)}


def test_the_429s_of_one_overfull_second_widen_the_window_once():
    """The server refuses every request past its limit in that second: several come back 429 at once."""
    limiter, clock = _limiter(50)
    first = limiter.window
    for _ in range(5):
        limiter.slow_down()
        clock.now += 0.01
    assert limiter.window == pytest.approx(first * 1.02)
    clock.now += limiter.window * 1.01
    limiter.slow_down()  # a later second over the limit: once more
    assert limiter.window == pytest.approx(first * 1.02 ** 2)


def test_the_window_narrows_back_after_ten_windows_without_a_429():
    limiter, clock = _limiter(50)
    first = limiter.window
    for _ in range(3):
        clock.now += limiter.window * 1.01
        limiter.slow_down()
    _starts(limiter, clock, 10 * 50 - 1)
    assert limiter.window == pytest.approx(first * 1.02 ** 3)  # not yet
    _starts(limiter, clock, 1)
    assert limiter.window == pytest.approx(first * 1.02 ** 2)
    clock.now += limiter.window * 1.01
    limiter.slow_down()  # another 429: the count starts again
    _starts(limiter, clock, 10 * 50 - 1)
    assert limiter.window == pytest.approx(first * 1.02 ** 3)
    _starts(limiter, clock, 10 * 50 * 5)
    assert limiter.window == pytest.approx(first)  # and never narrower than it began
