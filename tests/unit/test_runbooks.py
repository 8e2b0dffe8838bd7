"""Runbooks: the spec's runbook section joined with the evidence of the last rehearsal."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from paychaos.experiments.loading import load_experiment, load_experiments
from paychaos.experiments.spec import ChaosExperiment
from paychaos.probes.catalogue import Slo, load_catalogue
from paychaos.reporting.alerts import alert_name, alert_rules
from paychaos.reporting.journals import JournalError, experiment_of
from paychaos.runbooks.render import IndexEntry, read_index_entry, render_index, render_runbook, write_runbooks

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.fixture(scope="module")
def slos() -> dict[str, Slo]:
    return load_catalogue(ROOT / "probes").slos


def experiment(name: str) -> ChaosExperiment:
    return load_experiment(ROOT / "experiments" / f"{name}.yaml")


def test_a_rehearsed_runbook_says_what_was_observed(journal: dict[str, Any], slos: dict[str, Slo]) -> None:
    text = render_runbook(experiment_of(journal), journal, slos)
    assert text.startswith("<!-- paychaos-runbook ")
    assert "# Runbook: acquirer-slowdown\n" in text
    assert "**Last rehearsed:** 2026-11-23 13:03 UTC — verdict **passed** (16 checks passed)" in text
    assert "**Severity:** sev2 · **Owner:** payments-sre" in text
    assert "- **Time to detect:** 2.8 s after the fault started" in text
    assert "- **Recovery time:** 21.6 s after the fault was reverted" in text
    assert (
        "- The acquirer circuit breaker opened 5.8 s after the fault started, on all 3 replicas after 7.8 s; "
        "it closed on every replica 21.6 s after the revert." in text
    )
    assert "- Consumer group campaign's lag peaked at 7 messages; the outbox backlog at 6." in text
    assert "- p99 latency (client-side): 170 ms before the fault, at worst 1800 ms." in text
    assert "| `after/breaker/acquirer.closes` | passed | 21.61 | <= 30s | breaker closed on every replica after 21.6s |" in text


def test_the_spec_runbook_section_is_all_there(journal: dict[str, Any]) -> None:
    spec = experiment("acquirer-slowdown")
    runbook = spec.spec.runbook
    assert runbook is not None
    text = render_runbook(spec, journal)
    assert runbook.summary in text and runbook.users_see is not None and runbook.users_see in text
    assert runbook.escalation is not None and runbook.escalation in text
    for i, step in enumerate(runbook.mitigation, 1):
        assert f"{i}. {step}\n" in text
    for i, step in enumerate(runbook.rollback, 1):
        assert f"{i}. {step}\n" in text
    kubernetes = text.split("### On Kubernetes\n\n```sh\n", 1)[1].split("```", 1)[0]
    assert kubernetes.splitlines() == runbook.kubernetes_mitigation
    assert "- slowDownstream (proxy acquirer, latency 3s, jitter 200ms) at 15s for 30s" in text


def test_alerts_are_named_as_the_generated_rules_name_them(journal: dict[str, Any], slos: dict[str, Slo]) -> None:
    rules = yaml.safe_load(alert_rules(slos, load_experiments(CATALOGUE)))["groups"][0]["rules"]
    text = render_runbook(experiment_of(journal), journal, slos)
    named = set(re.findall(r"^\| `(\w+Breached)` \|", text, flags=re.MULTILINE))
    assert named == {alert_name(s) for s in ("payments-availability", "payments-error-ratio", "balance-payments-latency-p99",
                                             "balance-payments-availability", "campaign-status-availability")}
    assert named <= {rule["alert"] for rule in rules}
    assert "| `PaymentsAvailabilityBreached` | payments-availability | above 0.99 | worst 0.5; outside the objective in 42 of 87" in text
    assert "| `BalancePaymentsLatencyP99Breached` | balance-payments-latency-p99 | below 1 s | held (worst 489 ms) |" in text


def test_failed_checks_are_named_with_their_observed_values(failed_journal: dict[str, Any]) -> None:
    text = render_runbook(experiment_of(failed_journal), failed_journal)
    assert "verdict **failed** (expect breaker acquirer.opens: observed 40.2, expected <= 15s)" in text
    assert "- 15 of 16 checks passed: expect/breaker/acquirer.opens observed 40.2, expected <= 15s." in text


def test_a_runbook_before_any_rehearsal(slos: dict[str, Slo]) -> None:
    text = render_runbook(experiment("zone-loss-az-a"), None, slos)
    assert "**Last rehearsed:** not rehearsed yet." in text
    assert "Not rehearsed yet: no time to detect or recovery time observed." in text
    assert "| `PaymentsAvailabilityBreached` | payments-availability | above 0.99 | — |" in text
    assert "**Severity:** sev1" in text


@pytest.mark.parametrize("path", CATALOGUE, ids=lambda p: p.stem)
def test_every_catalogue_experiment_renders_with_strict_templates(path: Path) -> None:
    text = render_runbook(load_experiment(path), None)
    assert f"# Runbook: {path.stem}" in text and "## Mitigation" in text and "No mitigation" not in text


def test_an_experiment_without_a_runbook_section_says_what_to_add() -> None:
    data = yaml.safe_load((ROOT / "experiments" / "pod-kill-payment.yaml").read_text(encoding="utf-8"))
    del data["spec"]["runbook"]
    data["metadata"]["labels"] = {}
    text = render_runbook(ChaosExperiment.model_validate(data), None)
    assert "The experiment has no `spec.runbook` section yet" in text
    assert "No mitigation steps written yet" in text and "No escalation path written yet" in text
    assert "**Severity:**" not in text


def test_the_journal_must_be_of_the_experiment(journal: dict[str, Any]) -> None:
    with pytest.raises(JournalError, match="the journal is of experiment 'acquirer-slowdown', not 'zone-loss-az-a'"):
        render_runbook(experiment("zone-loss-az-a"), journal)


def test_the_index_entry_travels_in_the_runbook(journal: dict[str, Any]) -> None:
    spec = experiment_of(journal)
    spec = spec.model_copy(update={"metadata": spec.metadata.model_copy(update={"labels": {"severity": "sev--2 -->"}})})
    text = render_runbook(spec, journal)
    marker = text.split("\n", 1)[0]
    assert "--" not in marker.removeprefix("<!--").removesuffix("-->")  # a "--" would end the comment early
    entry = read_index_entry(text)
    assert entry is not None
    assert (entry.experiment, entry.severity, entry.verdict, entry.date) == ("acquirer-slowdown", "sev--2 -->", "passed", "2026-11-23 13:03 UTC")
    assert entry.alerts[0] == "PaymentsAvailabilityBreached"
    assert read_index_entry("# A runbook written by hand\n") is None


def test_the_index_lists_runbooks_and_the_alerts_that_link_to_it() -> None:
    text = render_index([
        IndexEntry("zone-loss-az-a", "sev1", None, None, ("PaymentsAvailabilityBreached",)),
        IndexEntry("acquirer-slowdown", "sev2", "failed", "2026-11-23 13:03 UTC", ("PaymentsAvailabilityBreached", "BalancePaymentsAvailabilityBreached")),
    ])
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert rows == [
        "| [acquirer-slowdown](acquirer-slowdown.md) | sev2 | ❌ failed | 2026-11-23 13:03 UTC |",
        "| [zone-loss-az-a](zone-loss-az-a.md) | sev1 | not rehearsed yet | — |",
    ]
    # The rules' runbook_url for an alert several failure modes fire is index.md#<alert in lower case>.
    section = text.split("### PaymentsAvailabilityBreached\n", 1)[1].split("###", 1)[0]
    assert "- [acquirer-slowdown](acquirer-slowdown.md) (sev2): last verdict failed on 2026-11-23 13:03 UTC" in section
    assert "- [zone-loss-az-a](zone-loss-az-a.md) (sev1): not rehearsed yet" in section


def test_writing_one_runbook_keeps_the_others_in_the_index(tmp_path: Path, journal: dict[str, Any]) -> None:
    first = write_runbooks([(experiment("zone-loss-az-a"), None), (experiment("pod-kill-payment"), None)], tmp_path)
    assert [p.name for p in first] == ["zone-loss-az-a.md", "pod-kill-payment.md", "index.md"]
    (tmp_path / "notes.md").write_text("# Notes by hand\n", encoding="utf-8")
    second = write_runbooks([(experiment_of(journal), journal)], tmp_path)
    assert [p.name for p in second] == ["acquirer-slowdown.md", "index.md"]
    index = (tmp_path / "index.md").read_text(encoding="utf-8")
    assert "| [acquirer-slowdown](acquirer-slowdown.md) | sev2 | ✅ passed | 2026-11-23 13:03 UTC |" in index
    assert "| [pod-kill-payment](pod-kill-payment.md) | sev3 | not rehearsed yet | — |" in index
    assert "| [zone-loss-az-a](zone-loss-az-a.md) | sev1 | not rehearsed yet | — |" in index
    assert "notes" not in index
