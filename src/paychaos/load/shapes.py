"""Load profiles as pure functions of run time: a target request rate, and the users that carry it.

Locust shapes steer *users*; a campaign is described by a *request rate* (baseline × multiplier).
The bridge is pacing: every CampaignUser makes one request per ``pace`` seconds, so a rate of R
requests/s needs ``ceil(R × pace)`` users. ``tick()`` keeps Locust's ``LoadTestShape`` signature,
but this module does not import Locust (importing it monkey-patches the process with gevent).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from paychaos.experiments import spec

#: Seconds between two requests of one user when the spec does not fix the number of users:
#: about how often a person in a campaign app taps or refreshes.
DEFAULT_PACE = 1.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class Target:
    rps: float
    users: int
    spawn_rate: float


class Shape:
    """A load profile: ``rate(t)`` (requests/s at ``t`` seconds into the run, None once over)."""

    def __init__(self, baseline_rps: float, duration: float, peak_multiplier: float, users: int | None = None) -> None:
        self.baseline_rps = baseline_rps
        self.duration = duration
        self.peak_rps = baseline_rps * max(peak_multiplier, 1e-9)
        # A fixed pool of users (spec ``users``) is sized for the peak; otherwise users follow the rate.
        self.pace = users / self.peak_rps if users else DEFAULT_PACE
        self.peak_users = max(1, math.ceil(self.peak_rps * self.pace - 1e-9))
        self._clock: Clock = time.monotonic
        self._started = self._clock()

    # -- Locust's LoadTestShape protocol, with the clock injected -----------------------------

    def use_clock(self, clock: Clock) -> Shape:
        self._clock = clock
        self._started = clock()
        return self

    def reset_time(self) -> None:
        self._started = self._clock()

    def get_run_time(self) -> float:
        return self._clock() - self._started

    def tick(self) -> tuple[int, float] | None:
        target = self.target(self.get_run_time())
        return None if target is None else (target.users, target.spawn_rate)

    # -- the profile --------------------------------------------------------------------------

    def multiplier(self, t: float) -> float:
        raise NotImplementedError

    def rate(self, t: float) -> float | None:
        if t < 0 or t >= self.duration:
            return None
        return self.baseline_rps * self.multiplier(t)

    def target(self, t: float) -> Target | None:
        rps = self.rate(t)
        if rps is None:
            return None
        users = max(1, math.ceil(rps * self.pace - 1e-9))
        # Any change of users completes within about one tick: a spike must not wait for a ramp.
        return Target(rps=rps, users=users, spawn_rate=float(self.peak_users))


class Steady(Shape):
    def multiplier(self, t: float) -> float:
        return 1.0


class NoonSpike(Shape):
    """Quiet, then ×N within ``rise`` seconds (the banner goes live), hold, decay to a plateau.

    Proportions follow the sample campaign trace: 10 % quiet, hold until 40 %, decay until 80 %,
    then an elevated plateau at a fifth of the peak (never below the baseline).
    """

    def __init__(self, baseline_rps: float, duration: float, peak_multiplier: float, users: int | None = None, rise: float = 8.0) -> None:
        super().__init__(baseline_rps, duration, peak_multiplier, users)
        self.peak = peak_multiplier
        self.plateau = max(1.0, peak_multiplier / 5)
        self.spike_at = 0.1 * duration
        self.rise = min(rise, 0.1 * duration)
        self.hold_until = 0.4 * duration
        self.decay_until = 0.8 * duration

    def multiplier(self, t: float) -> float:
        if t < self.spike_at:
            return 1.0
        if t < self.spike_at + self.rise:
            return 1.0 + (self.peak - 1.0) * (t - self.spike_at) / self.rise
        if t < self.hold_until:
            return self.peak
        if t < self.decay_until:
            # Exponential decay from the peak reaching the plateau at decay_until.
            frac = (t - self.hold_until) / (self.decay_until - self.hold_until)
            return self.peak * (self.plateau / self.peak) ** frac
        return self.plateau


class Step(Shape):
    """Equal-length stairs from ×1 to ×N: ``steps`` of them (fewer when N is small)."""

    def __init__(self, baseline_rps: float, duration: float, peak_multiplier: float, users: int | None = None, steps: int = 5) -> None:
        super().__init__(baseline_rps, duration, peak_multiplier, users)
        self.peak = peak_multiplier
        self.steps = max(1, min(steps, math.ceil(peak_multiplier)))

    def multiplier(self, t: float) -> float:
        if self.steps == 1:
            return self.peak
        index = min(self.steps - 1, int(t / (self.duration / self.steps)))
        return 1.0 + (self.peak - 1.0) * index / (self.steps - 1)


class Replay(Shape):
    """A recorded trace, second by second; past its end the last multiplier holds."""

    def __init__(self, baseline_rps: float, duration: float, multipliers: list[float], users: int | None = None) -> None:
        if not multipliers:
            raise ValueError("the trace has no rows")
        super().__init__(baseline_rps, duration, max(multipliers), users)
        self.multipliers = multipliers

    def multiplier(self, t: float) -> float:
        return self.multipliers[min(int(t), len(self.multipliers) - 1)]


class TraceError(ValueError):
    """The replay trace cannot be used; the message says which file and row, and what is wrong."""


def read_trace(path: Path) -> list[float]:
    """Read a ``second,multiplier`` CSV into one multiplier per second (gaps hold the last value)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise TraceError(f"cannot read the trace {path}: {exc.strerror}") from None
    points: list[tuple[int, float]] = []
    for number, row in enumerate(rows, start=1):
        if not row or row[0].strip().startswith("#") or (number == 1 and not _is_number(row[0])):
            continue
        try:
            second, multiplier = int(row[0]), float(row[1])
        except (ValueError, IndexError):
            raise TraceError(f"{path}:{number}: expected 'second,multiplier', got {','.join(row)!r}") from None
        if second < 0 or multiplier < 0:
            raise TraceError(f"{path}:{number}: second and multiplier must not be negative")
        points.append((second, multiplier))
    if not points:
        raise TraceError(f"{path}: no 'second,multiplier' rows")
    points.sort()
    out: list[float] = []
    for second, multiplier in points:
        while len(out) < second:
            out.append(out[-1] if out else multiplier)
        if len(out) == second:
            out.append(multiplier)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def shape_for(load: spec.Load, base_dir: Path | None = None) -> Shape:
    """The shape a spec's ``load`` section describes; a relative trace is read from ``base_dir``."""
    duration = load.duration.total_seconds()
    if load.profile == "steady":
        return Steady(load.baseline_rps, duration, 1, load.users)
    if load.profile == "noon-spike":
        return NoonSpike(load.baseline_rps, duration, load.peak_multiplier, load.users)
    if load.profile == "step":
        return Step(load.baseline_rps, duration, load.peak_multiplier, load.users)
    assert load.trace is not None  # the spec validates it for replay
    trace = Path(load.trace)
    if not trace.is_absolute() and base_dir is not None:
        trace = base_dir / trace
    return Replay(load.baseline_rps, duration, read_trace(trace), load.users)
