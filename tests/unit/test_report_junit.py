"""JUnit XML: one testsuite per gate run, a testcase per experiment verdict and per check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from junitparser import Error, Failure, JUnitXml, TestCase

from paychaos.reporting.junit import junit_xml, write_junit


def parse(text: str) -> dict[str, TestCase]:
    document = JUnitXml.fromstring(text)
    return {f"{case.classname}::{case.name}": case for suite in document for case in suite}


def test_a_passed_run_is_a_green_suite(journal: dict[str, Any]) -> None:
    text = junit_xml([("acquirer-slowdown", journal)], "pre-campaign")
    document = JUnitXml.fromstring(text)
    (suite,) = list(document)
    assert suite.name == "pre-campaign"
    assert (suite.tests, suite.failures, suite.errors) == (17, 0, 0)
    assert suite.time == pytest.approx(110.41, abs=0.01)  # the journal's duration
    assert suite.timestamp == "2026-11-23T13:03:13+00:00"
    cases = parse(text)
    verdict = cases["paychaos.acquirer-slowdown::verdict"]
    assert verdict.is_passed and verdict.time == pytest.approx(110.41, abs=0.01)
    opens = cases["paychaos.acquirer-slowdown::expect/breaker/acquirer.opens"]
    assert opens.is_passed and opens.system_out.startswith("breaker open after 5.8s")


def test_a_failed_check_says_observed_against_expected(failed_journal: dict[str, Any]) -> None:
    cases = parse(junit_xml([("acquirer-slowdown", failed_journal)], "pre-campaign"))
    (failure,) = cases["paychaos.acquirer-slowdown::expect/breaker/acquirer.opens"].result
    assert isinstance(failure, Failure)
    assert failure.message == "observed 40.2, expected <= 15s"
    assert failure.type == "breaker"
    assert "breaker open after 5.8s" in failure.text and '{"fault_start": 15.0}' in failure.text
    (verdict,) = cases["paychaos.acquirer-slowdown::verdict"].result
    assert isinstance(verdict, Failure)
    assert verdict.message == "expect breaker acquirer.opens: observed 40.2, expected <= 15s"


def test_a_check_in_error_is_a_junit_error(journal: dict[str, Any], fail_check: Callable[..., dict[str, Any]]) -> None:
    fail_check(journal, "ledger-conservation", "database unreachable", verdict="error")
    cases = parse(junit_xml([("acquirer-slowdown", journal)], "gate"))
    (error,) = cases["paychaos.acquirer-slowdown::steadyState.before/invariant/ledger-conservation"].result
    assert isinstance(error, Error) and error.message == "observed database unreachable, expected 0 violating rows"


@pytest.mark.parametrize("result", ["aborted", "error"])
def test_an_aborted_or_broken_run_is_an_error(journal: dict[str, Any], result: str) -> None:
    journal["paychaos"]["verdict"] = {"result": result, "reason": "stop condition met: payments-error-ratio > 0.5 for 10s"}
    (error,) = parse(junit_xml([("acquirer-slowdown", journal)], "gate"))["paychaos.acquirer-slowdown::verdict"].result
    assert isinstance(error, Error) and error.type == result
    assert error.message == "stop condition met: payments-error-ratio > 0.5 for 10s"


def test_every_experiment_of_the_gate_is_in_one_suite(journal: dict[str, Any], failed_journal: dict[str, Any]) -> None:
    failed_journal["paychaos"]["experiment"] = "acquirer-slowdown-again"
    text = junit_xml([("acquirer-slowdown", journal), ("acquirer-slowdown-again", failed_journal), ("zone-loss-az-a", None)], "pre-campaign")
    (suite,) = list(JUnitXml.fromstring(text))
    assert (suite.tests, suite.failures, suite.errors) == (17 + 17 + 1, 2, 1)
    (error,) = parse(text)["paychaos.zone-loss-az-a::verdict"].result
    assert "no journal" in error.message


def test_written_to_a_path(tmp_path: Path, journal: dict[str, Any]) -> None:
    path = tmp_path / "reports" / "junit.xml"
    write_junit([("acquirer-slowdown", journal)], "pre-campaign", path)
    assert JUnitXml.fromfile(str(path)).tests == 17
