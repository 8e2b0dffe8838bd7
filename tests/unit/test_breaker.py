"""The circuit breaker's state machine, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from paychaos.platform.services.breaker import BreakerMetrics, CallNotPermitted, CircuitBreaker, State
from paychaos.platform.topology import BreakerSpec


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(**overrides: object) -> BreakerSpec:
    data: dict[str, object] = {
        "enabled": True,
        "slidingWindowSize": 10,
        "minimumNumberOfCalls": 5,
        "failureRateThreshold": 50,
        "slowCallRateThreshold": 50,
        "slowCallDuration": "1s",
        "waitDurationInOpenState": "5s",
        "permittedCallsInHalfOpenState": 3,
    }
    data.update(overrides)
    return BreakerSpec.model_validate(data)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("acquirer", spec(), clock)


def call(breaker: CircuitBreaker, *, ok: bool, seconds: float = 0.02) -> None:
    breaker.acquire()
    (breaker.on_success if ok else breaker.on_error)(seconds)


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(5):
        call(breaker, ok=False)
    assert breaker.state is State.OPEN


class TestClosed:
    def test_stays_closed_below_minimum_calls_even_if_all_fail(self, breaker: CircuitBreaker) -> None:
        for _ in range(4):
            call(breaker, ok=False)
        assert breaker.state is State.CLOSED
        assert breaker.snapshot().failure_rate == -1.0

    def test_opens_when_failure_rate_reaches_threshold(self, breaker: CircuitBreaker) -> None:
        for ok in (True, True, True, False, False):
            call(breaker, ok=ok)
        assert breaker.state is State.CLOSED  # 40 %
        call(breaker, ok=False)  # 3 of 6 = 50 %
        assert breaker.state is State.OPEN

    def test_opens_on_slow_calls_even_when_they_succeed(self, breaker: CircuitBreaker) -> None:
        for _ in range(5):
            call(breaker, ok=True, seconds=1.0)  # exactly slowCallDuration counts as slow
        assert breaker.state is State.OPEN

    def test_window_forgets_calls_older_than_its_size(self, breaker: CircuitBreaker) -> None:
        for _ in range(2):
            call(breaker, ok=False)
        for _ in range(10):
            call(breaker, ok=True)
        snap = breaker.snapshot()
        assert (snap.successful, snap.failed, snap.failure_rate) == (10, 0, 0.0)
        assert breaker.state is State.CLOSED

    def test_minimum_is_capped_at_window_size(self, clock: FakeClock) -> None:
        small = CircuitBreaker("x", spec(slidingWindowSize=2, minimumNumberOfCalls=10), clock)
        call(small, ok=False)
        call(small, ok=False)
        assert small.state is State.OPEN


class TestOpen:
    def test_rejects_calls_until_wait_has_passed(self, breaker: CircuitBreaker, clock: FakeClock) -> None:
        open_it(breaker)
        clock.advance(4.9)
        with pytest.raises(CallNotPermitted):
            breaker.acquire()
        clock.advance(0.1)
        breaker.acquire()
        assert breaker.state is State.HALF_OPEN

    def test_late_result_of_a_call_started_before_opening_is_not_counted(self, breaker: CircuitBreaker) -> None:
        open_it(breaker)
        breaker.on_success(0.01)
        assert breaker.state is State.OPEN
        assert breaker.snapshot().successful == 0


class TestHalfOpen:
    def enter(self, breaker: CircuitBreaker, clock: FakeClock) -> None:
        open_it(breaker)
        clock.advance(5)

    def test_permits_only_the_trial_calls(self, breaker: CircuitBreaker, clock: FakeClock) -> None:
        self.enter(breaker, clock)
        for _ in range(3):
            assert breaker.try_acquire()
        assert not breaker.try_acquire()

    def test_closes_when_trials_are_healthy(self, breaker: CircuitBreaker, clock: FakeClock) -> None:
        self.enter(breaker, clock)
        for ok in (True, False, True):
            call(breaker, ok=ok)
        assert breaker.state is State.CLOSED
        assert breaker.snapshot().failure_rate == -1.0  # a fresh window

    def test_reopens_when_trials_fail(self, breaker: CircuitBreaker, clock: FakeClock) -> None:
        self.enter(breaker, clock)
        for ok in (False, True, False):
            call(breaker, ok=ok)
        assert breaker.state is State.OPEN
        with pytest.raises(CallNotPermitted):
            breaker.acquire()

    def test_reopens_when_trials_are_slow(self, breaker: CircuitBreaker, clock: FakeClock) -> None:
        self.enter(breaker, clock)
        for _ in range(3):
            call(breaker, ok=True, seconds=2.0)
        assert breaker.state is State.OPEN

    def test_decides_only_after_all_trials(self, breaker: CircuitBreaker, clock: FakeClock) -> None:
        self.enter(breaker, clock)
        call(breaker, ok=False)
        call(breaker, ok=False)
        assert breaker.state is State.HALF_OPEN

    def test_ignored_call_returns_its_permit(self, breaker: CircuitBreaker, clock: FakeClock) -> None:
        self.enter(breaker, clock)
        for _ in range(3):
            breaker.acquire()
        breaker.on_ignored(0.01)
        assert breaker.try_acquire()


class TestGuard:
    def test_exception_counts_as_failure_and_propagates(self, breaker: CircuitBreaker) -> None:
        with pytest.raises(RuntimeError), breaker.guard():
            raise RuntimeError("5xx")
        assert breaker.snapshot().failed == 1

    def test_normal_exit_counts_as_success(self, breaker: CircuitBreaker) -> None:
        with breaker.guard():
            pass
        assert breaker.snapshot().successful == 1

    def test_refuses_when_open(self, breaker: CircuitBreaker) -> None:
        open_it(breaker)
        with pytest.raises(CallNotPermitted), breaker.guard():
            pytest.fail("must not run")


def test_disabled_breaker_permits_everything(clock: FakeClock) -> None:
    b = CircuitBreaker("acquirer", spec(enabled=False), clock)
    for _ in range(50):
        call(b, ok=False, seconds=5.0)
    assert b.state is State.DISABLED


def test_metrics_use_resilience4j_names(breaker: CircuitBreaker) -> None:
    registry = CollectorRegistry()
    BreakerMetrics(breaker, registry, {"service": "payment", "zone": "az-a"})
    open_it(breaker)
    assert not breaker.try_acquire()
    labels = {"name": "acquirer", "service": "payment", "zone": "az-a"}

    def value(metric: str, **extra: str) -> float | None:
        return registry.get_sample_value(metric, {**labels, **extra})

    assert value("resilience4j_circuitbreaker_state", state="open") == 1.0
    assert value("resilience4j_circuitbreaker_state", state="closed") == 0.0
    assert value("resilience4j_circuitbreaker_calls_seconds_count", kind="failed") == 5.0
    assert value("resilience4j_circuitbreaker_not_permitted_calls_total", kind="not_permitted") == 1.0
    assert value("resilience4j_circuitbreaker_failure_rate") == -1.0  # the window restarts on opening
    assert value("resilience4j_circuitbreaker_buffered_calls", kind="failed") == 0.0
    assert value("resilience4j_circuitbreaker_slow_calls", kind="successful") == 0.0
    assert value("resilience4j_circuitbreaker_slow_call_rate") == -1.0


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"slidingWindowSize": 20, "minimumNumberOfCalls": 5},
        {"slidingWindowSize": 10, "minimumNumberOfCalls": 10, "failureRateThreshold": 30},
        {"slidingWindowSize": 4, "minimumNumberOfCalls": 100},
        {"slidingWindowSize": 50, "minimumNumberOfCalls": 10, "failureRateThreshold": 80, "slowCallRateThreshold": 60},
    ],
)
def test_calls_to_open_trips_a_breaker_whatever_its_window_held_and_no_fewer_would(clock: FakeClock, overrides: dict) -> None:
    # What the opensWithin check needs some replica to have seen before a closed breaker counts
    # against it: that many failing calls trip the breaker from any window (empty, full of
    # successes, anything between); for some window, one call fewer does not.
    settings = spec(**overrides)
    needed = settings.calls_to_open

    def trips(successes: int, failures: int) -> bool:
        b = CircuitBreaker("acquirer", settings, clock)
        for _ in range(successes):
            call(b, ok=True)
        for _ in range(failures):
            if b.state is State.OPEN:
                break
            call(b, ok=False, seconds=2.0)  # failed and slow: the lower of the two thresholds trips
        return b.state is State.OPEN

    before = range(settings.sliding_window_size + 1)
    assert all(trips(m, needed) for m in before), (overrides, needed)
    assert not all(trips(m, needed - 1) for m in before), (overrides, needed)
