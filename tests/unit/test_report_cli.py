"""``paychaos runbook`` and ``paychaos alerts`` through CliRunner, on an app of their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from paychaos.cli import reports
from paychaos.probes.catalogue import PROBES_DIR_ENV

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
JOURNAL = ROOT / "tests" / "data" / "journal-acquirer-slowdown.json"

app = typer.Typer(pretty_exceptions_enable=False)
app.command()(reports.runbook)
app.command()(reports.alerts)
runner = CliRunner()


@pytest.fixture(autouse=True)
def _catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROBES_DIR_ENV, str(ROOT / "probes"))


def invoke(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def said(result: Any) -> str:
    """What the command printed, as one line: the console wraps long lines at the terminal width."""
    return " ".join(result.output.split())


@pytest.mark.parametrize("command", ["runbook", "alerts"])
def test_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage" in said(result)


def test_an_experiment_without_a_journal_is_not_rehearsed_yet(tmp_path: Path) -> None:
    result = invoke("runbook", EXPERIMENTS / "zone-loss-az-a.yaml", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "**Last rehearsed:** not rehearsed yet." in (tmp_path / "zone-loss-az-a.md").read_text(encoding="utf-8")
    assert "[zone-loss-az-a](zone-loss-az-a.md)" in (tmp_path / "index.md").read_text(encoding="utf-8")


def test_a_journal_alone_brings_its_experiment(tmp_path: Path) -> None:
    result = invoke("runbook", JOURNAL, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "acquirer-slowdown.md").read_text(encoding="utf-8")
    assert "verdict **passed** (16 checks passed)" in text and "above 0.99" in text  # objectives from the catalogue


@pytest.mark.parametrize("journal_args", [["--journal", JOURNAL], [JOURNAL]], ids=["--journal", "as a target"])
def test_an_experiment_with_its_journal(tmp_path: Path, journal_args: list[Path | str]) -> None:
    result = invoke("runbook", EXPERIMENTS, *journal_args, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "acquirer-brownout.md", "acquirer-hang.md", "acquirer-slowdown.md", "campaign-redelivery.md", "index.md",
        "kafka-broker-failure.md", "kafka-majority-loss.md", "ledger-db-brownout.md", "ledger-db-hang.md", "ledger-kill-slow-db.md", "noon-admission.md", "pod-kill-payment.md", "zone-loss-az-a.md",
    ]
    assert "verdict **passed**" in (tmp_path / "acquirer-slowdown.md").read_text(encoding="utf-8")
    assert "not rehearsed yet" in (tmp_path / "pod-kill-payment.md").read_text(encoding="utf-8")


def test_a_journal_of_another_experiment_is_one_clear_line(tmp_path: Path) -> None:
    result = invoke("runbook", EXPERIMENTS / "pod-kill-payment.yaml", "--journal", JOURNAL, "-o", tmp_path)
    assert result.exit_code == 1
    assert "a --journal ran experiment 'acquirer-slowdown'" in said(result) and "Traceback" not in result.output
    assert not tmp_path.joinpath("pod-kill-payment.md").exists()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing.json", "cannot read missing.json"),
        ("README.md", "expected an experiment (*.yaml) or a run journal (*.json)"),
    ],
)
def test_bad_targets_are_one_clear_line(tmp_path: Path, target: str, message: str) -> None:
    result = invoke("runbook", target, "-o", tmp_path)
    assert result.exit_code == 1 and message in said(result)
    assert "Traceback" not in result.output


def test_an_invalid_experiment_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: paychaos.io/v1alpha1\nkind: ChaosExperiment\nmetadata: {name: bad}\nspec: {description: x}\n", encoding="utf-8")
    result = invoke("runbook", bad, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "bad.yaml" in said(result) and "faults" in said(result)


def test_a_journal_that_is_not_one(tmp_path: Path) -> None:
    other = tmp_path / "journal.json"
    other.write_text(json.dumps({"status": "completed"}), encoding="utf-8")
    result = invoke("runbook", other, "-o", tmp_path)
    assert result.exit_code == 1 and "not a paychaos run journal" in said(result)


def test_alerts_writes_the_committed_rules(tmp_path: Path) -> None:
    out = tmp_path / "alerts" / "rules.yaml"
    result = invoke("alerts", "--slo", ROOT / "probes" / "slo.yaml", "--experiments", EXPERIMENTS, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == (ROOT / "platform" / "alerts" / "paychaos-slo.rules.yaml").read_text(encoding="utf-8")


def test_alerts_with_a_runbook_base_url(tmp_path: Path) -> None:
    out = tmp_path / "rules.yaml"
    base = "https://git.example.com/payments/paychaos/blob/main/runbooks"
    result = invoke("alerts", "--slo", ROOT / "probes" / "slo.yaml", "--experiments", EXPERIMENTS, "--out", out, "--runbook-url", base)
    assert result.exit_code == 0, result.output
    assert f"runbook_url: {base}/index.md#paymentsavailabilitybreached" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the SLO catalogue"),
        ("slos: [", "not valid YAML"),
        ("slos: {x: {description: d, query: q, objective: {}, unit: ratio}}", "slos.x.objective"),
    ],
)
def test_alerts_with_a_bad_catalogue_is_one_clear_line(tmp_path: Path, content: str | None, message: str) -> None:
    slo = tmp_path / "slo.yaml"
    if content is not None:
        slo.write_text(content, encoding="utf-8")
    result = invoke("alerts", "--slo", slo, "--experiments", EXPERIMENTS, "--out", tmp_path / "rules.yaml")
    assert result.exit_code == 1 and message in said(result) and "Traceback" not in result.output


def test_alerts_without_experiments(tmp_path: Path) -> None:
    result = invoke("alerts", "--slo", ROOT / "probes" / "slo.yaml", "--experiments", tmp_path, "--out", tmp_path / "rules.yaml")
    assert result.exit_code == 1 and "no experiment files" in said(result)
