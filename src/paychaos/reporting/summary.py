"""Short summaries of a gate run: Markdown for a CI job summary, plain text for the terminal,
JSON for scripts (and the operator's GameDay status).

All say the same thing: each experiment's verdict with its detection and recovery times,
then every check that did not pass with what was observed against what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from paychaos.reporting import formatting
from paychaos.reporting.journals import Journals, Run, read_runs

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def markdown_summary(journals: Journals, suite: str) -> str:
    runs = read_runs(journals)
    lines = [
        f"## paychaos gate `{suite}`: {headline(runs)}",
        "",
        "| Experiment | Verdict | Time to detect | Recovery time | Checks |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        mark = formatting.VERDICT_MARKS[run.verdict.result]
        lines.append(
            f"| {_cell(run.name)} | {mark} {run.verdict.result} | {formatting.seconds(run.times.time_to_detect)} "
            f"| {formatting.seconds(run.times.recovery_time)} | {checks_passed(run)} |"
        )
    not_passed = [run for run in runs if not run.passed]
    if not_passed:
        lines += ["", "### What did not pass"]
    for run in not_passed:
        lines += ["", f"**{_cell(run.name)}**: {_cell(run.verdict.reason)}"]
        if run.failed_checks:
            lines += ["", "| Check | Verdict | Observed | Expected | Detail |", "|---|---|---|---|---|"]
            lines += [
                f"| `{_cell(c.label)}` | {c.verdict} | {_cell(formatting.number(c.observed))} | {_cell(c.threshold)} | {_cell(c.detail)} |"
                for c in run.failed_checks
            ]
    return "\n".join(lines) + "\n"


def text_summary(journals: Journals, suite: str) -> str:
    runs = read_runs(journals)
    width = max((len(run.name) for run in runs), default=0)
    lines = [f"gate {suite}: {headline(runs)}"]
    for run in runs:
        mark = "✓" if run.passed else "✗"
        times = f"detect {formatting.seconds(run.times.time_to_detect):>7}  recover {formatting.seconds(run.times.recovery_time):>7}"
        lines.append(f"  {mark} {run.name:<{width}}  {run.verdict.result:<12}  {times}  checks {checks_passed(run)}")
        if not run.passed:
            lines.append(f"      {run.verdict.reason}")
        for check in run.failed_checks:
            lines.append(f"      {check.verdict} {check.label}: {formatting.expectation(check.observed, check.threshold)}")
    return "\n".join(lines) + "\n"


def write_step_summary(markdown: str, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Append to the CI job summary when running under GitHub Actions; None elsewhere."""
    target = environ.get(STEP_SUMMARY_ENV)
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as out:
        out.write(markdown)
    return path


# The verdict of a whole suite is its worst run's: a failure first (the stack is broken), then an
# error or an abort (the gate could not judge), then inconclusive (it ran but did not see enough).
WORST_FIRST = ("failed", "error", "aborted", "inconclusive", "passed")


def json_summary(journals: Journals, suite: str) -> dict[str, object]:
    runs = read_runs(journals)
    verdict = min((run.verdict.result for run in runs), key=WORST_FIRST.index, default="error")
    return {
        "suite": suite,
        "verdict": verdict,
        "reason": headline(runs),
        "experiments": [
            {"name": run.name, "verdict": run.verdict.result, "reason": run.verdict.reason,
             "timeToDetect": run.times.time_to_detect, "recoveryTime": run.times.recovery_time,
             "failedChecks": [c.label for c in run.failed_checks]}
            for run in runs
        ],
    }


def headline(runs: list[Run]) -> str:
    passed = sum(run.passed for run in runs)
    if passed == len(runs):
        return f"all {len(runs)} experiments passed" if len(runs) != 1 else "the experiment passed"
    return f"{len(runs) - passed} of {len(runs)} experiments did not pass"


def checks_passed(run: Run) -> str:
    if not run.checks:
        return "none judged"
    return f"{len(run.checks) - len(run.failed_checks)}/{len(run.checks)} passed"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")
