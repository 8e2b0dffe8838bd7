"""JUnit XML for CI: one testsuite per gate run, one testcase per experiment verdict and per check.

CI tools show a failure's message in their test list, so it says what was observed against
what was expected; the detail and evidence go in the failure's text.
"""

from __future__ import annotations

import io
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, TestCase, TestSuite

from paychaos.reporting import formatting
from paychaos.experiments.journal import CheckRecord
from paychaos.reporting.journals import Journals, Run, read_runs


def junit_xml(journals: Journals, suite: str) -> str:
    """The JUnit XML document of a gate run: ``journals`` are (experiment name, journal or None)."""
    runs = read_runs(journals)
    testsuite = TestSuite(suite)
    started = [run.started for run in runs if run.started is not None]
    if started:
        testsuite.timestamp = min(started).isoformat(timespec="seconds")
    for run in runs:
        testsuite.add_testcase(_verdict_case(run))
        for check in run.checks:
            testsuite.add_testcase(_check_case(run, check))
    testsuite.update_statistics()
    document = JUnitXml()
    document.add_testsuite(testsuite)
    document.update_statistics()
    out = io.BytesIO()
    document.write(out, pretty=True)
    return out.getvalue().decode("utf-8")


def write_junit(journals: Journals, suite: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(journals, suite), encoding="utf-8")


def _verdict_case(run: Run) -> TestCase:
    case = TestCase("verdict", _classname(run), round(run.duration, 3))
    result = run.verdict.result
    if result == "failed":
        case.result = [Failure(run.verdict.reason, "failed")]
    elif result in ("error", "aborted", "inconclusive"):
        case.result = [Error(run.verdict.reason, result)]
    else:
        case.system_out = run.verdict.reason
    return case


def _check_case(run: Run, check: CheckRecord) -> TestCase:
    case = TestCase(check.label, _classname(run), 0.0)
    text = "\n".join(line for line in (check.detail, formatting.evidence(check.evidence)) if line)
    if check.verdict == "passed":
        if text:
            case.system_out = text
        return case
    outcome = Failure if check.verdict == "failed" else Error
    message = f"inconclusive: {check.detail}" if check.verdict == "inconclusive" else formatting.expectation(check.observed, check.threshold)
    result = outcome(message, check.kind)
    result.text = text
    case.result = [result]
    return case


def _classname(run: Run) -> str:
    return f"paychaos.{run.name}"
