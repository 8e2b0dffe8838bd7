"""What a run's samples show happened: how each breaker behaved and what clients saw.

Server-side series are preferred where the journal has them (``error_ratio``, ``p99`` in
seconds); older journals only have the load generator's (``client_fail_ratio``,
``client_p99`` in milliseconds).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from paychaos.probes.series import backlog_key, breaker_key, lag_key, names_in
from paychaos.reporting.journals import Run, end_of, fault_windows, first_after, measured, points


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    scale: float = 1.0  # multiply to get the unit the reports use (ms for latencies)
    reference: bool = False  # drawn dashed: a bound to read others against (a replica count), not a measurement


ERROR_RATIO = (Series("error_ratio", "server"), Series("client_fail_ratio", "client"))
P99_MS = (Series("p99", "server", 1000.0), Series("client_p99", "client"))


def preferred(run: Run, choices: tuple[Series, ...]) -> Series | None:
    """The first of ``choices`` the run measured."""
    return next((s for s in choices if measured(run, s.key)), None)


def scaled(run: Run, series: Series) -> list[tuple[float, float]]:
    return [(t, v * series.scale) for t, v in points(run, series.key)]


@dataclass(frozen=True)
class BreakerSeen:
    name: str
    opened_after: float | None  # first fault start -> any replica's breaker open
    open_everywhere_after: float | None  # first fault start -> every replica's breaker open
    closed_after: float | None  # last revert -> every replica's closed again (if one opened)
    replicas: int | None


@dataclass(frozen=True)
class Observations:
    windows: list[tuple[float, float]]
    breakers: list[BreakerSeen]  # every breaker the run sampled, by name
    error_ratio_source: str | None  # "server" | "client"
    error_ratio_before: float | None  # median before the first fault
    error_ratio_worst: float | None  # from the first fault to the end
    p99_source: str | None
    p99_ms_before: float | None
    p99_ms_worst: float | None
    lag_peaks: dict[str, int]  # consumer group -> peak lag from the first fault on
    backlog_peaks: dict[str, int]  # backlog (the outbox) -> peak from the first fault on


def sampled_names(run: Run, prefix: str) -> list[str]:
    """The names a run sampled under ``prefix`` (``breaker_open``): what its plots and text cover."""
    return names_in({k for sample in run.samples for k in sample}, prefix)


def observe(run: Run) -> Observations:
    windows = fault_windows(run)
    # Delays count from the schedule, as the engine's checks do, so the numbers agree with them.
    scheduled = [(f.at, f.at + f.for_) for f in run.faults] or windows
    start = min((s for s, _ in scheduled), default=0.0)
    revert = max((end for _, end in scheduled), default=end_of(run))
    errors = preferred(run, ERROR_RATIO)
    p99 = preferred(run, P99_MS)
    lags = {g: peak for g in sampled_names(run, "consumer_lag") if (peak := _peak_count(run, lag_key(g), start)) is not None}
    backlogs = {b: peak for b in sampled_names(run, "backlog") if (peak := _peak_count(run, backlog_key(b), start)) is not None}
    return Observations(
        windows=windows,
        breakers=[_breaker(run, name, start, revert) for name in sampled_names(run, "breaker_open")],
        error_ratio_source=errors.label if errors else None,
        error_ratio_before=_median_before(run, errors, start),
        error_ratio_worst=_worst_from(run, errors, start),
        p99_source=p99.label if p99 else None,
        p99_ms_before=_median_before(run, p99, start),
        p99_ms_worst=_worst_from(run, p99, start),
        lag_peaks=lags,
        backlog_peaks=backlogs,
    )


def _breaker(run: Run, name: str, start: float, revert: float) -> BreakerSeen:
    opened = points(run, breaker_key("open", name))
    replicas = [v for _, v in points(run, breaker_key("replicas", name))]
    total = int(max(replicas)) if replicas else None
    opened_after = first_after(opened, start, lambda v: v >= 1)
    everywhere_after = first_after(opened, start, lambda v: total is not None and v >= total) if total else None
    closed_after = first_after(opened, revert, lambda v: v == 0) if opened_after is not None else None
    return BreakerSeen(name, opened_after, everywhere_after, closed_after, total)


def _median_before(run: Run, series: Series | None, start: float) -> float | None:
    values = [v for t, v in scaled(run, series) if 0 <= t < start] if series else []
    return statistics.median(values) if values else None


def _worst_from(run: Run, series: Series | None, start: float) -> float | None:
    values = [v for t, v in scaled(run, series) if t >= start] if series else []
    return max(values, default=None)


def _peak_count(run: Run, key: str, start: float) -> int | None:
    values = [v for t, v in points(run, key) if t >= start]
    return round(max(values)) if values else None
