"""The time-series plots of one run, as inline SVG with the fault windows shaded.

Figures are made with matplotlib's object API (no pyplot, so no GUI backend and no global
figure state) and saved as SVG text; ids inside each SVG are prefixed with the plot's id so
that several plots can live in one HTML page.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from paychaos.probes.series import backlog_key, breaker_key, lag_key
from paychaos.reporting.journals import Run, fault_windows
from paychaos.reporting.observations import ERROR_RATIO, P99_MS, Series, sampled_names, scaled


@dataclass(frozen=True)
class PlotSpec:
    slug: str  # the id is plot-<slug>-<experiment>
    title: str
    lines: tuple[Series, ...] | Callable[[Run], tuple[Series, ...]]  # fixed, or by the names the run sampled
    percent: bool = False
    steps: bool = False


def _breaker_lines(run: Run) -> tuple[Series, ...]:
    """Each breaker's replicas open, with its replica count as a reference line."""
    return tuple(line for name in sampled_names(run, "breaker_open") for line in (
        Series(breaker_key("open", name), f"{name} open"), Series(breaker_key("replicas", name), f"{name} replicas", reference=True)))


def _lag_lines(run: Run) -> tuple[Series, ...]:
    return (*(Series(lag_key(g), f"{g} lag") for g in sampled_names(run, "consumer_lag")),
            *(Series(backlog_key(b), f"{b} backlog") for b in sampled_names(run, "backlog")))


PLOTS = (
    PlotSpec("throughput", "Request rate (req/s)", (Series("rps", "gateway"), Series("client_rps", "client"))),
    PlotSpec("error-ratio", "Error ratio", ERROR_RATIO, percent=True),
    PlotSpec("p99", "p99 latency (ms)", P99_MS),
    PlotSpec("breaker", "Circuit breakers: replicas open", _breaker_lines, steps=True),
    PlotSpec("consumer-lag", "Consumer lag and backlogs (messages)", _lag_lines),
)

FAULT_COLOUR = "#f4a261"
LINE_COLOURS = ("#1d4e89", "#7a9cc6")


@dataclass(frozen=True)
class Plot:
    id: str
    title: str
    svg: str


def plot_id(slug: str, experiment: str) -> str:
    return f"plot-{slug}-{experiment}"


def run_plots(run: Run) -> list[Plot]:
    windows = fault_windows(run)
    times = [t for s in run.samples if (t := s.get("t")) is not None] + [t for w in windows for t in w]
    span = (min(times), max(times)) if times else None
    plots = []
    for spec in PLOTS:
        svg_id = plot_id(spec.slug, run.name)
        plots.append(Plot(svg_id, spec.title, _svg(run, spec, windows, span, svg_id)))
    return plots


def _svg(run: Run, spec: PlotSpec, windows: list[tuple[float, float]], span: tuple[float, float] | None, svg_id: str) -> str:
    figure = Figure(figsize=(7.5, 1.9))
    # Fixed margins and one time span for every plot of a run, so their time axes line up.
    figure.subplots_adjust(left=0.075, right=0.99, top=0.86, bottom=0.24)
    ax = figure.add_subplot()
    if span is not None and span[0] < span[1]:
        ax.set_xlim(*span)
    ax.set_title(spec.title, loc="left", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    for i, (start, end) in enumerate(windows):
        ax.axvspan(start, end, color=FAULT_COLOUR, alpha=0.3, linewidth=0, label="fault" if i == 0 else None)
    drawn = 0
    for series in spec.lines(run) if callable(spec.lines) else spec.lines:
        data = scaled(run, series)
        if not data:
            continue
        ts, vs = zip(*data)
        dashed = series.reference
        ax.plot(
            ts, vs, label=series.label, color=LINE_COLOURS[drawn % len(LINE_COLOURS)], linewidth=1.2,
            drawstyle="steps-post" if spec.steps else "default", linestyle="--" if dashed else "-",
        )
        drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, "not measured in this run", transform=ax.transAxes, ha="center", va="center", fontsize=9, color="grey")
    else:
        ax.set_ylim(bottom=0)
    if spec.percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
    ax.set_xlabel("seconds since the method started", fontsize=8)
    if drawn or windows:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, ncols=3, borderaxespad=0.2)
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": svg_id}):
        figure.savefig(out, format="svg", metadata={"Date": None})
    return _inline(out.getvalue(), svg_id, spec.title)


_ID = re.compile(r'\bid="([^"]+)"')
_URL_REF = re.compile(r"url\(#([^)]+)\)")
_HREF = re.compile(r'(xlink:href|href)="#([^"]+)"')


def _inline(svg: str, svg_id: str, title: str) -> str:
    """The <svg> element alone (no XML prolog), with our id, class and label, and its own ids made unique."""
    svg = svg[svg.index("<svg") :]
    svg = _ID.sub(lambda m: f'id="{svg_id}-{m.group(1)}"', svg)
    svg = _URL_REF.sub(lambda m: f"url(#{svg_id}-{m.group(1)})", svg)
    svg = _HREF.sub(lambda m: f'{m.group(1)}="#{svg_id}-{m.group(2)}"', svg)
    return svg.replace("<svg", f'<svg id="{svg_id}" class="plot" role="img" aria-label="{html.escape(title)}"', 1)
