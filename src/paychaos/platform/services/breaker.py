"""A circuit breaker with Resilience4j semantics, and its Resilience4j-compatible Prometheus metrics.

Why not a library: pybreaker, aiobreaker and purgatory open after N *consecutive* failures; none
has a count-based sliding window with failure-rate *and* slow-call-rate thresholds and a
half-open phase that judges a fixed number of trial calls. Those semantics are what the probes
(and a Java stack running Resilience4j) assume, so the state machine lives here, pure and
clock-injected; ``BreakerMetrics`` exports it under the names resilience4j-micrometer uses.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from paychaos.platform.topology import BreakerSpec

Clock = Callable[[], float]


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"
    FORCED_OPEN = "forced_open"
    METRICS_ONLY = "metrics_only"


class CallNotPermitted(Exception):
    """The breaker is open (or half-open with all trial calls taken): fail fast, do not call."""

    def __init__(self, name: str, state: State) -> None:
        super().__init__(f"circuit breaker {name!r} is {state.value}; call not permitted")
        self.name = name
        self.state = state


@dataclass(frozen=True)
class Outcome:
    failed: bool
    slow: bool


@dataclass(frozen=True)
class Snapshot:
    """What Resilience4j's ``CircuitBreaker.Metrics`` reports; rates are -1 below the minimum calls."""

    failure_rate: float
    slow_call_rate: float
    successful: int
    failed: int
    slow_successful: int
    slow_failed: int


class _Window:
    """A count-based sliding window over the last ``size`` outcomes."""

    def __init__(self, size: int, minimum: int) -> None:
        self.outcomes: deque[Outcome] = deque(maxlen=size)
        # Resilience4j caps the minimum at the window size, or a small window could never trip.
        self.minimum = min(minimum, size)

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def snapshot(self) -> Snapshot:
        n = len(self.outcomes)
        failed = sum(o.failed for o in self.outcomes)
        slow_failed = sum(o.failed and o.slow for o in self.outcomes)
        slow_successful = sum((not o.failed) and o.slow for o in self.outcomes)
        if n < self.minimum:
            failure_rate = slow_rate = -1.0
        else:
            failure_rate = failed * 100.0 / n
            slow_rate = (slow_failed + slow_successful) * 100.0 / n
        return Snapshot(failure_rate, slow_rate, n - failed, failed, slow_successful, slow_failed)


class CircuitBreaker:
    """COUNT_BASED Resilience4j circuit breaker. Not thread-safe: one event loop owns it."""

    def __init__(self, name: str, spec: BreakerSpec, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.spec = spec
        self.clock = clock
        self._slow_after = spec.slow_call_duration.total_seconds()
        self._wait = spec.wait_duration_in_open_state.total_seconds()
        self._opened_at = 0.0
        self._trials_left = 0
        self._listeners: list[Callable[[str, float], None]] = []
        self._state = State.CLOSED if spec.enabled else State.DISABLED
        self._window = self._closed_window()

    def _closed_window(self) -> _Window:
        return _Window(self.spec.sliding_window_size, self.spec.minimum_number_of_calls)

    @property
    def state(self) -> State:
        return self._state

    def snapshot(self) -> Snapshot:
        return self._window.snapshot()

    def subscribe(self, listener: Callable[[str, float], None]) -> None:
        """Call ``listener(kind, seconds)`` for every successful, failed, ignored or not_permitted call."""
        self._listeners.append(listener)

    def _emit(self, kind: str, seconds: float) -> None:
        for listener in self._listeners:
            listener(kind, seconds)

    def _transition(self, state: State) -> None:
        self._state = state
        if state is State.OPEN:
            self._opened_at = self.clock()
            self._window = self._closed_window()
        elif state is State.HALF_OPEN:
            n = self.spec.permitted_calls_in_half_open_state
            self._trials_left = n
            self._window = _Window(n, n)
        elif state is State.CLOSED:
            self._window = self._closed_window()

    def try_acquire(self) -> bool:
        """Whether a call may go ahead now; a refusal is counted as not permitted."""
        if self._state is State.OPEN and self.clock() - self._opened_at >= self._wait:
            self._transition(State.HALF_OPEN)
        if self._state is State.OPEN or (self._state is State.HALF_OPEN and self._trials_left <= 0):
            self._emit("not_permitted", 0.0)
            return False
        if self._state is State.HALF_OPEN:
            self._trials_left -= 1
        return True

    def acquire(self) -> None:
        if not self.try_acquire():
            raise CallNotPermitted(self.name, self._state)

    def on_success(self, seconds: float) -> None:
        self._record(Outcome(failed=False, slow=seconds >= self._slow_after), "successful", seconds)

    def on_error(self, seconds: float) -> None:
        self._record(Outcome(failed=True, slow=seconds >= self._slow_after), "failed", seconds)

    def on_ignored(self, seconds: float) -> None:
        """The call ended in a way that says nothing about the dependency; give back its trial permit."""
        if self._state is State.HALF_OPEN:
            self._trials_left += 1
        self._emit("ignored", seconds)

    def _record(self, outcome: Outcome, kind: str, seconds: float) -> None:
        self._emit(kind, seconds)
        if self._state not in (State.CLOSED, State.HALF_OPEN):
            # A call permitted before the breaker opened finishes late: it no longer counts.
            return
        self._window.record(outcome)
        snap = self._window.snapshot()
        if snap.failure_rate < 0:
            return
        tripped = (
            snap.failure_rate >= self.spec.failure_rate_threshold
            or snap.slow_call_rate >= self.spec.slow_call_rate_threshold
        )
        if tripped:
            self._transition(State.OPEN)
        elif self._state is State.HALF_OPEN:
            self._transition(State.CLOSED)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run a block as one protected call: an exception out of it is a failure, else a success.

        Raises ``CallNotPermitted`` on entry when the breaker refuses the call.
        """
        self.acquire()
        started = self.clock()
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.on_error(self.clock() - started)
            else:
                self.on_ignored(self.clock() - started)  # cancellation says nothing about the dependency
            raise
        self.on_success(self.clock() - started)


class BreakerMetrics:
    """Exports a breaker under resilience4j-micrometer's names (TaggedCircuitBreakerMetrics).

    Micrometer's Prometheus registry renders ``resilience4j.circuitbreaker.calls`` (a Timer) as
    ``resilience4j_circuitbreaker_calls_seconds_{count,sum}``: a Histogram gives the same series.
    """

    def __init__(self, breaker: CircuitBreaker, registry: CollectorRegistry, labels: dict[str, str]) -> None:
        base = ["name", *labels]
        tags = {"name": breaker.name, **labels}
        state = Gauge(
            "resilience4j_circuitbreaker_state", "The states of the circuit breaker", [*base, "state"], registry=registry
        )
        for s in State:
            state.labels(state=s.value, **tags).set_function(lambda s=s: 1.0 if breaker.state is s else 0.0)
        Gauge(
            "resilience4j_circuitbreaker_failure_rate", "The failure rate of the circuit breaker", base, registry=registry
        ).labels(**tags).set_function(lambda: breaker.snapshot().failure_rate)
        Gauge(
            "resilience4j_circuitbreaker_slow_call_rate", "The slow call rate of the circuit breaker", base, registry=registry
        ).labels(**tags).set_function(lambda: breaker.snapshot().slow_call_rate)
        buffered = Gauge(
            "resilience4j_circuitbreaker_buffered_calls",
            "The number of buffered calls stored in the sliding window",
            [*base, "kind"],
            registry=registry,
        )
        buffered.labels(kind="successful", **tags).set_function(lambda: breaker.snapshot().successful)
        buffered.labels(kind="failed", **tags).set_function(lambda: breaker.snapshot().failed)
        slow = Gauge(
            "resilience4j_circuitbreaker_slow_calls",
            "The number of slow calls, slower than slowCallDuration",
            [*base, "kind"],
            registry=registry,
        )
        slow.labels(kind="successful", **tags).set_function(lambda: breaker.snapshot().slow_successful)
        slow.labels(kind="failed", **tags).set_function(lambda: breaker.snapshot().slow_failed)
        calls = Histogram(
            "resilience4j_circuitbreaker_calls_seconds",
            "Calls through the circuit breaker by outcome",
            [*base, "kind"],
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0),
        )
        not_permitted = Counter(
            "resilience4j_circuitbreaker_not_permitted_calls",
            "Total number of not permitted calls",
            [*base, "kind"],
            registry=registry,
        )
        by_kind = {k: calls.labels(kind=k, **tags) for k in ("successful", "failed", "ignored")}
        refused = not_permitted.labels(kind="not_permitted", **tags)

        def listen(kind: str, seconds: float) -> None:
            if kind == "not_permitted":
                refused.inc()
            else:
                by_kind[kind].observe(seconds)

        breaker.subscribe(listen)
