"""Alert rules from the SLO catalogue: names, expressions, runbook links, and promtool's word.

promtool ships with the Debian prometheus package that `paychaos stack install` installs; a
missing promtool fails these tests, it never skips them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from paychaos.experiments.loading import load_experiment, load_experiments
from paychaos.experiments.spec import ChaosExperiment
from paychaos.probes.catalogue import Slo, load_catalogue
from paychaos.reporting.alerts import alert_name, alert_rules, referenced_slos, runbook_url

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "platform" / "alerts" / "paychaos-slo.rules.yaml"


@pytest.fixture(scope="module")
def slos() -> dict[str, Slo]:
    return load_catalogue(ROOT / "probes").slos


@pytest.fixture(scope="module")
def experiments() -> list[ChaosExperiment]:
    return load_experiments(sorted((ROOT / "experiments").glob("*.yaml")))


@pytest.fixture(scope="module")
def rules(slos: dict[str, Slo], experiments: list[ChaosExperiment]) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(alert_rules(slos, experiments))
    (group,) = document["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is needed to check the alert rules: apt-get install prometheus (or `paychaos stack install`)")
    return found


@pytest.mark.parametrize(
    ("slo", "alert"),
    [
        ("payments-availability", "PaymentsAvailabilityBreached"),
        ("payments-latency-p99", "PaymentsLatencyP99Breached"),
        ("payments-burn-rate-1h", "PaymentsBurnRate1hBreached"),
        ("3ds-availability", "Slo3dsAvailabilityBreached"),
    ],
)
def test_alert_names_are_camel_case_from_the_slo_name(slo: str, alert: str) -> None:
    assert alert_name(slo) == alert


def test_an_experiment_references_slos_from_every_section() -> None:
    experiment = load_experiment(ROOT / "experiments" / "acquirer-slowdown.yaml")
    assert referenced_slos(experiment) == [
        "payments-availability",  # steady state and recovery, once
        "balance-payments-latency-p99",
        "balance-payments-availability",
        "campaign-status-availability",
        "payments-error-ratio",  # stop condition
    ]


def test_one_alert_per_slo(rules: dict[str, dict[str, Any]], slos: dict[str, Slo]) -> None:
    assert list(rules) == [alert_name(name) for name in slos]
    for rule in rules.values():
        assert rule["for"] == "2m"
        assert "$window" not in rule["expr"] and "[5m]" in rule["expr"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}


def test_the_expression_breaches_the_objective(rules: dict[str, dict[str, Any]]) -> None:
    assert rules["PaymentsAvailabilityBreached"]["expr"].rstrip().endswith(") <= 0.99")  # objective above: the check passes above it
    assert rules["PaymentsErrorRatioBreached"]["expr"].rstrip().endswith(") >= 0.01")  # objective below
    assert rules["PaymentsLatencyP99Breached"]["expr"].rstrip().endswith(") >= 1")  # a duration, in seconds
    assert "{{ $value | humanizeDuration }}" in rules["PaymentsLatencyP99Breached"]["annotations"]["description"]


def test_labels_and_runbook_links(slos: dict[str, Slo], experiments: list[ChaosExperiment],
                                  rules: dict[str, dict[str, Any]]) -> None:
    # An SLO only one experiment rehearses links straight to its runbook, with its severity.
    (slowdown,) = [e for e in experiments if e.name == "acquirer-slowdown"]
    (group,) = yaml.safe_load(alert_rules(slos, [slowdown]))["groups"]
    only_acquirer = next(r for r in group["rules"] if r["alert"] == "BalancePaymentsAvailabilityBreached")
    assert only_acquirer["labels"] == {"severity": "sev2", "slo": "balance-payments-availability"}
    assert only_acquirer["annotations"]["runbook_url"] == "runbooks/acquirer-slowdown.md"
    everyone = rules["PaymentsAvailabilityBreached"]
    assert everyone["labels"]["severity"] == "sev1"  # the most severe experiment that rehearses it (a hanging acquirer)
    assert everyone["annotations"]["runbook_url"] == "runbooks/index.md#paymentsavailabilitybreached"
    nobody = rules["PaymentsBurnRate1hBreached"]
    assert nobody["labels"]["severity"] == "sev3"
    assert nobody["annotations"]["runbook_url"] == "runbooks/index.md#paymentsburnrate1hbreached"
    assert "No experiment rehearses it yet" in nobody["annotations"]["description"]


def test_the_runbook_base_url_is_a_parameter(slos: dict[str, Slo], experiments: list[ChaosExperiment]) -> None:
    base = "https://git.example.com/payments/paychaos/blob/main/runbooks/"
    assert runbook_url(["acquirer-slowdown"], "X", base) == base + "acquirer-slowdown.md"
    text = alert_rules(slos, experiments, runbook_base=base)
    assert f"runbook_url: {base}index.md#paymentsavailabilitybreached" in text


def test_promtool_accepts_the_generated_rules(tmp_path: Path, slos: dict[str, Slo], experiments: list[ChaosExperiment]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(alert_rules(slos, experiments), encoding="utf-8")
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(slos)} rules found" in result.stdout


def test_promtool_accepts_the_committed_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(COMMITTED)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_committed_rules_are_what_the_generator_makes_now(slos: dict[str, Slo], experiments: list[ChaosExperiment]) -> None:
    assert COMMITTED.read_text(encoding="utf-8") == alert_rules(slos, experiments), (
        "platform/alerts/paychaos-slo.rules.yaml is stale: run `paychaos alerts` and commit the result"
    )


def test_the_availability_alert_fires_on_errors_and_not_without(
    tmp_path: Path, rules: dict[str, dict[str, Any]], slos: dict[str, Slo], experiments: list[ChaosExperiment]
) -> None:
    """promtool's rule unit tests: 10 % server errors for 10 minutes page; none do not."""
    (tmp_path / "rules.yaml").write_text(alert_rules(slos, experiments), encoding="utf-8")
    payments = 'http_server_requests_seconds_count{{service="gateway",route="/v1/payments",status="{}"}}'
    annotations = dict(rules["PaymentsAvailabilityBreached"]["annotations"])
    annotations["description"] = annotations["description"].replace('{{ $value | printf "%.4g" }}', "0.9")
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": payments.format("200"), "values": "0+540x20"},
                    {"series": payments.format("503"), "values": "0+60x20"},
                ],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "PaymentsAvailabilityBreached", "exp_alerts": []},  # pending since 1m, not yet for 2m
                    {
                        "eval_time": "10m",
                        "alertname": "PaymentsAvailabilityBreached",
                        "exp_alerts": [{"exp_labels": {"severity": "sev1", "slo": "payments-availability"}, "exp_annotations": annotations}],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [{"series": payments.format("200"), "values": "0+600x20"}],
                "alert_rule_test": [{"eval_time": "10m", "alertname": "PaymentsAvailabilityBreached", "exp_alerts": []}],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run([promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
