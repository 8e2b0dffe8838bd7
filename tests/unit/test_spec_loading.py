"""Experiment files: the catalogue validates, and every user mistake is one precise line, never a traceback."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from paychaos.cli.app import app
from paychaos.cli.experiments import experiment_schema
from paychaos.experiments.loading import SpecError, load_experiment, load_experiments, parse_experiment
from paychaos.experiments.spec import FAULT_KINDS, ChaosExperiment, SloBound
from paychaos.platform.services.serving import LATENCY_BUCKETS
from paychaos.platform.topology import load_topology
from paychaos.probes.catalogue import CatalogueError, load_catalogue
from paychaos.targets.local import inventory_of

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = sorted((ROOT / "experiments").glob("*.yaml"))
TOPOLOGY = inventory_of(load_topology())

# Line numbers matter below: the tests name the line each mistake is on.
VALID = """\
apiVersion: paychaos.io/v1alpha1
kind: ChaosExperiment
metadata:
  name: acquirer-slowdown
  labels: {severity: sev2, owner: payments-sre}
spec:
  description: The card acquirer slows to 3 s during the noon rush.
  load: {profile: noon-spike, baselineRps: 20, peakMultiplier: 5, duration: 90s}
  steadyState:
    - slo: payments-availability
  faults:
    - at: 15s
      for: 30s
      slowDownstream: {proxy: acquirer, latency: 3000ms, jitter: 200ms}
  expect:
    - breaker: {name: acquirer, opensWithin: 5s}
  after:
    - invariant: [ledger-conservation, no-double-charge]
  stopWhen:
    - slo: {name: payments-error-ratio, above: 0.5, for: 10s}
"""
SLOW = "slowDownstream: {proxy: acquirer, latency: 3000ms, jitter: 200ms}"


def problems(text: str, source: str = "experiments/x.yaml") -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_experiment(text, source, TOPOLOGY)
    return str(caught.value).splitlines()


# -- the catalogue ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", CATALOGUE, ids=lambda p: p.name)
def test_every_catalogue_experiment_validates(path: Path) -> None:
    experiment = load_experiment(path, TOPOLOGY, probes=load_catalogue(ROOT / "probes"))
    assert experiment.name == path.stem
    spec = experiment.spec
    assert spec.load is not None and spec.runbook is not None
    assert {"severity", "owner"} <= set(experiment.metadata.labels)
    assert spec.steady_state and spec.expect and spec.after and spec.stop_when
    runbook = spec.runbook
    assert runbook.users_see and runbook.mitigation and runbook.kubernetes_mitigation and runbook.rollback and runbook.escalation
    # Short enough for the test gate, and every fault ends while the load still runs.
    assert spec.load.duration.total_seconds() <= 120
    assert all(f.ends_at <= spec.load.duration for f in spec.faults)


def seconds(bound: object) -> float:
    return bound.total_seconds() if isinstance(bound, timedelta) else float(bound)  # type: ignore[arg-type]


def test_every_latency_bound_the_catalogue_judges_is_a_boundary_of_the_platforms_histograms() -> None:
    """histogram_quantile interpolates inside a bucket, so a quantile bound inside one is judged on
    a guess: in (2.5, 5] a p99 of 3.05 s read 2.57 s and passed "below 3 s" (a payment lease of
    15 s went unnoticed so). Every bound a quantile SLO is held to must sit on a boundary."""
    probes = load_catalogue(ROOT / "probes")
    bounds = {seconds(slo.objective.below) for slo in probes.slos.values() if slo.quantile and slo.objective.below}
    for experiment in load_experiments(CATALOGUE, TOPOLOGY):
        for check in [*experiment.spec.steady_state, *experiment.spec.expect, *experiment.spec.after]:
            ref = check.slo
            if isinstance(ref, SloBound) and probes.slo(ref.name).quantile and ref.below is not None:
                bounds.add(seconds(ref.below))
    assert {1.0, 3.0} <= bounds  # the objectives and the catalogue's p99 bounds were read
    assert bounds <= set(LATENCY_BUCKETS), f"bounds off a bucket boundary: {sorted(bounds - set(LATENCY_BUCKETS))}"


def test_the_catalogue_loads_together_with_unique_names() -> None:
    names = [e.name for e in load_experiments(CATALOGUE, TOPOLOGY)]
    assert {"pod-kill-payment", "zone-loss-az-a", "kafka-broker-failure", "acquirer-slowdown"} <= set(names)


def test_the_catalogue_covers_every_fault_kind() -> None:
    kinds = {f.kind for e in load_experiments(CATALOGUE) for f in e.spec.faults}
    assert kinds == set(FAULT_KINDS)


def test_the_shipped_schema_is_up_to_date() -> None:
    shipped = json.loads((ROOT / "experiments" / "schema.json").read_text(encoding="utf-8"))
    assert shipped == experiment_schema(), "regenerate with: paychaos schema -o experiments/schema.json"


def test_the_valid_example_is_valid() -> None:
    experiment = parse_experiment(VALID, "x.yaml", TOPOLOGY)
    assert experiment.spec.faults[0].kind == "slowDownstream"


# -- precise errors for realistic mistakes ------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "latency: 3000ms", "latency: fast",
            "experiments/x.yaml:14: spec.faults[0].slowDownstream.latency: expected a duration such as '300ms', '45s' or '2m', got 'fast'",
            id="bad-duration",
        ),
        pytest.param(
            "jitter: 200ms", "jiter: 200ms",
            "experiments/x.yaml:14: spec.faults[0].slowDownstream.jiter: unknown field 'jiter' (did you mean 'jitter'?)",
            id="unknown-key-with-suggestion",
        ),
        pytest.param(
            "baselineRps", "baselineRPS",
            "experiments/x.yaml:8: spec.load.baselineRPS: unknown field 'baselineRPS' (did you mean 'baselineRps'?)",
            id="wrong-case",
        ),
        pytest.param(
            "      " + SLOW, "      podKill: {service: payment, count: 1}\n      " + SLOW,
            "experiments/x.yaml:15: spec.faults[0].slowDownstream: a fault has exactly one kind and this one also has podKill: split it in two",
            id="two-fault-kinds",
        ),
        pytest.param(
            "      for: 30s\n", "",
            "experiments/x.yaml:12: spec.faults[0]: missing required field 'for'",
            id="missing-for",
        ),
        pytest.param(
            "paychaos.io/v1alpha1", "paychaos.io/v1",
            "experiments/x.yaml:1: apiVersion: expected 'paychaos.io/v1alpha1', got 'paychaos.io/v1'",
            id="wrong-api-version",
        ),
        pytest.param(
            SLOW, "podKill: {service: payment, count: 1, percent: 10}",
            "experiments/x.yaml:14: spec.faults[0].podKill.percent: give count or percent, not both",
            id="count-and-percent",
        ),
        pytest.param(
            "for: 30s", "for: 80s",
            "experiments/x.yaml:12: spec.faults[0]: ends at 95s (at + for), after the load ends at 90s: "
            "lengthen load.duration or end the fault sooner",
            id="fault-after-load-end",
        ),
        pytest.param(
            SLOW, "podKill: {service: paymnt, count: 1}",
            "experiments/x.yaml:14: spec.faults[0].podKill.service: unknown service 'paymnt' (did you mean 'payment'?): "
            "expected one of gateway, payment, ledger, campaign, acquirer",
            id="unknown-service",
        ),
        pytest.param(
            SLOW, "zoneLoss: {zone: az-d}",
            "experiments/x.yaml:14: spec.faults[0].zoneLoss.zone: unknown zone 'az-d': expected one of az-a, az-b, az-c",
            id="unknown-zone",
        ),
        pytest.param(
            SLOW, "kafkaBrokerFailure: {leaderOf: {topic: payments, partition: 6}}",
            "experiments/x.yaml:14: spec.faults[0].kafkaBrokerFailure.leaderOf.partition: payments has partitions 0 to 5, got 6",
            id="partition-out-of-range",
        ),
        pytest.param(
            SLOW, "kafkaBrokerFailure: {broker: 1, count: 2, followersStalled: 4s}",
            "experiments/x.yaml:14: spec.faults[0].kafkaBrokerFailure.followersStalled: stalls every other node "
            "while one dies; give count 1",
            id="stall-with-count",
        ),
        pytest.param(
            "duration: 90s}", "duration: 90s",
            "experiments/x.yaml:9: invalid YAML: did not find expected ',' or '}' (while parsing a flow mapping started at line 8)",
            id="yaml-syntax",
        ),
        pytest.param(
            "kind: ChaosExperiment", "kind: GameDay",
            "experiments/x.yaml:2: kind: expected 'ChaosExperiment', got 'GameDay': this file is not an experiment",
            id="wrong-kind",
        ),
        pytest.param(
            "  name: acquirer-slowdown", "  name: Acquirer_Slowdown",
            "experiments/x.yaml:4: metadata.name: expected a lowercase name of letters, digits and '-' such as 'acquirer-slowdown', "
            "got 'Acquirer_Slowdown'",
            id="bad-name",
        ),
        pytest.param(
            "severity: sev2", "severity: 2",
            "experiments/x.yaml:5: metadata.labels.severity: expected text, got 2: quote it if you mean the text '2'",
            id="number-label",
        ),
        pytest.param(
            "- slo: payments-availability", "- slo: 99",
            "experiments/x.yaml:10: spec.steadyState[0].slo: expected an SLO name, or a mapping {name, below or above, for}, got 99",
            id="slo-not-a-name",
        ),
        pytest.param(
            "    - breaker: {name: acquirer, opensWithin: 5s}", "    - traffic: {}",
            "experiments/x.yaml:16: spec.expect[0].traffic: give successRatioAbove, flowsCutAtMost, paymentsAnsweredWithin, or several",
            id="traffic-check-without-a-bound",
        ),
        pytest.param(
            "    - breaker: {name: acquirer, opensWithin: 5s}", "    - traffic: {paymentsAnsweredWithin: 4s}",
            "experiments/x.yaml:16: spec.expect[0].traffic.paymentsAnsweredWithin: judged from the load's record of every "
            "payment, which is complete only once the load has stopped: put it under after",
            id="payments-answered-judged-before-the-load-stopped",
        ),
        pytest.param(
            SLOW, "admissionRestriction: {allowedPercent: 100, rotation: 10s, flowTtl: 20s}",
            "experiments/x.yaml:14: spec.faults[0].admissionRestriction.allowedPercent: expected a number at most 99, got 100",
            id="restriction-that-restricts-nothing",
        ),
        pytest.param(
            SLOW, "poisonEvents: {topic: refunds}",
            "experiments/x.yaml:14: spec.faults[0].poisonEvents.topic: unknown topic 'refunds': expected one of payments",
            id="poison-on-an-unknown-topic",
        ),
        pytest.param(
            "  stopWhen:", "  stopWhen:\n    - {}\n  ",
            "experiments/x.yaml:20: spec.stopWhen[0]: a stop condition needs slo: {name, above or below, for} or traffic: {successRatioBelow, for}",
            id="empty-stop-condition",
        ),
        pytest.param(
            "  load:", "  target: {platform: local}\n  target: {platform: local}\n  load:",
            "experiments/x.yaml:9: spec.target: duplicate key 'target' (first at line 8): YAML would keep only the last",
            id="duplicate-key",
        ),
        pytest.param(
            "baselineRps: 20", "baselineRps: 20, baseline_rps: 30",
            "experiments/x.yaml:8: spec.load.baseline_rps: 'baseline_rps' is the same field as 'baselineRps', given twice: keep one",
            id="camel-and-snake",
        ),
    ],
)
def test_a_mistake_is_one_line_with_file_line_path_and_expectation(old: str, new: str, expected: str) -> None:
    assert VALID.count(old) == 1, old
    assert problems(VALID.replace(old, new)) == [expected]


def test_snake_case_keys_are_accepted_and_reported_as_written() -> None:
    text = VALID.replace("baselineRps: 20", "baseline_rps: lots")
    assert problems(text) == ["experiments/x.yaml:8: spec.load.baseline_rps: expected a whole number, got 'lots'"]


def test_a_key_at_the_wrong_level_says_where_it_belongs() -> None:
    assert problems(VALID + "faults: []\n") == ["experiments/x.yaml:21: faults: unknown field 'faults' at the top level: it belongs under spec"]


def test_every_problem_of_a_file_is_reported_in_line_order() -> None:
    text = VALID.replace("latency: 3000ms", "latency: fast").replace("  name: acquirer-slowdown", "  name: X").replace("5s}", "soon}")
    lines = problems(text)
    assert [line.split(":")[1] for line in lines] == ["4", "14", "16"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "experiments/x.yaml:1: the file is empty: expected an experiment (apiVersion, kind, metadata, spec)"),
        ("# only a comment\n", "experiments/x.yaml:1: the file is empty: expected an experiment (apiVersion, kind, metadata, spec)"),
        ("- a\n- b\n", "experiments/x.yaml:1: expected a mapping with apiVersion, kind, metadata and spec, got a list"),
        ("spec:\n\tfaults: []\n", "experiments/x.yaml:2: invalid YAML: found character that cannot start any token; indent with spaces, not tabs"),
        ("a: 1\n---\nb: 2\n", "experiments/x.yaml:2: one experiment per file: a second document starts here"),
        ("when: 2024-13-01\n", "experiments/x.yaml:1: invalid date or time: month must be in 1..12"),
        ("apiVersion: paychaos.io/v1alpha1\nkind: ChaosExperiment\nmetadata: {name: x}\n", "experiments/x.yaml:1: missing required field 'spec'"),
    ],
)
def test_documents_that_are_not_experiments(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_absurd_documents_are_refused_before_they_exhaust_anything(tmp_path: Path) -> None:
    assert problems("a: " + "[" * 5000 + "]" * 5000) == ["experiments/x.yaml:1: nested more than 64 levels deep: is this the right file?"]
    (tmp_path / "huge.yaml").write_text("# " + "x" * 2_000_000, encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_experiment(tmp_path / "huge.yaml")
    assert str(caught.value) == f"{tmp_path / 'huge.yaml'}: over 1 MB, far too big for an experiment: is this the right file?"


def test_a_flood_of_problems_is_cut_short() -> None:
    lines = problems("".join(f"key{i}: {i}\n" for i in range(80)))
    assert len(lines) == 51
    assert lines[-1] == "experiments/x.yaml: 34 more problems not shown: fix these first"


def test_topology_references_are_checked_only_when_a_topology_is_given() -> None:
    text = VALID.replace("proxy: acquirer", "proxy: ledger")
    assert parse_experiment(text).spec.faults[0].slow_downstream is not None
    assert problems(text) == [
        "experiments/x.yaml:14: spec.faults[0].slowDownstream.proxy: unknown proxy 'ledger' (did you mean 'ledger-db'?): expected one of acquirer, ledger-db"
    ]


def test_probe_names_are_checked_against_the_catalogue() -> None:
    text = VALID.replace("- slo: payments-availability", "- slo: payments-availabilty")
    with pytest.raises(SpecError) as caught:
        parse_experiment(text, "x.yaml", probes=load_catalogue(ROOT / "probes"))
    assert str(caught.value).startswith("x.yaml:10: spec.steadyState[0].slo: unknown SLO 'payments-availabilty' (did you mean 'payments-availability'?)")


def test_an_eventual_invariant_has_a_bound_and_a_known_name() -> None:
    eventual = "    - invariant: {name: acknowledged-events-consumed, within: 30s}\n  stopWhen:"
    experiment = parse_experiment(VALID.replace("  stopWhen:", eventual), "x.yaml", probes=load_catalogue(ROOT / "probes"))
    check = experiment.spec.after[1].invariant
    assert (check.name, check.within.total_seconds()) == ("acknowledged-events-consumed", 30)
    assert problems(VALID.replace("  stopWhen:", "    - invariant: {name: ledger-conservation}\n  stopWhen:")) == [
        "experiments/x.yaml:19: spec.after[1].invariant: missing required field 'within'"
    ]
    typo = VALID.replace("  stopWhen:", "    - invariant: {name: acknowledged-event-consumed, within: 30s}\n  stopWhen:")
    with pytest.raises(SpecError) as caught:
        parse_experiment(typo, "x.yaml", probes=load_catalogue(ROOT / "probes"))
    assert str(caught.value).startswith("x.yaml:19: spec.after[1].invariant.name: unknown invariant 'acknowledged-event-consumed'")


def test_an_invariant_that_holds_vacuously_needs_the_exercise_that_guards_it() -> None:
    # cashback-exactly-once holds on a stack that pays no cashback (budget spent, users at their
    # cap), whatever the consumer does: a spec that checks it must ask for cashback to be booked.
    probes = load_catalogue(ROOT / "probes")
    unguarded = VALID.replace("[ledger-conservation, no-double-charge]", "[ledger-conservation, cashback-exactly-once]")
    with pytest.raises(SpecError) as caught:
        parse_experiment(unguarded, "x.yaml", probes=probes)
    assert str(caught.value).splitlines() == [
        "x.yaml:18: spec.after[0].invariant[1]: invariant 'cashback-exactly-once' holds whether or not a run does what it "
        "guards: declare how often it must happen, `exercise: {cashback-booked: N}` (probes/exercises.yaml)"
    ]
    guarded = unguarded.replace("  steadyState:", "  exercise: {cashback-booked: 20}\n  steadyState:")
    assert parse_experiment(guarded, "x.yaml", probes=probes).spec.exercise == {"cashback-booked": 20}


def test_an_exercise_guarding_an_invariant_the_catalogue_lacks_is_refused(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "probes", tmp_path / "probes")
    exercises = tmp_path / "probes" / "exercises.yaml"
    exercises.write_text(exercises.read_text().replace("guards: [cashback-exactly-once,", "guards: [cashback-exactly-one,"))
    with pytest.raises(CatalogueError, match=r"exercise 'cashback-booked' guards 'cashback-exactly-one', which .* does not hold"):
        load_catalogue(tmp_path / "probes")


def test_breakers_and_consumer_groups_are_the_ones_the_series_vocabulary_lists() -> None:
    # The engine samples and judges a breaker by the name the spec gives: a name the stack does
    # not expose (probes/series.yaml) would be judged on nothing, so it is refused up front.
    catalogue = load_catalogue(ROOT / "probes")
    with pytest.raises(SpecError) as caught:
        parse_experiment(VALID.replace("breaker: {name: acquirer,", "breaker: {name: acquirr,"), "x.yaml", probes=catalogue)
    assert str(caught.value) == ("x.yaml:16: spec.expect[0].breaker.name: unknown breaker 'acquirr' (did you mean 'acquirer'?): "
                                 "expected one of acquirer (the breakers in series.yaml)")
    lag = VALID.replace("  after:\n", "    - kafka: {group: payments, lagBelow: 10, within: 30s}\n  after:\n")
    with pytest.raises(SpecError) as caught:
        parse_experiment(lag, "x.yaml", probes=catalogue)
    assert str(caught.value).startswith("x.yaml:17: spec.expect[1].kafka.group: unknown consumer group 'payments'")
    assert parse_experiment(lag.replace("group: payments", "group: campaign"), "x.yaml", probes=catalogue).spec.expect[1].kafka.group == "campaign"


def test_the_slos_that_time_a_run_are_named_from_the_catalogue() -> None:
    timed = VALID.replace("spec:\n", "spec:\n  times: {detect: [payments-error-ratio], recover: [payments-availabilty]}\n")
    with pytest.raises(SpecError) as caught:
        parse_experiment(timed, "x.yaml", probes=load_catalogue(ROOT / "probes"))
    assert str(caught.value).startswith("x.yaml:7: spec.times.recover[0]: unknown SLO 'payments-availabilty'")
    experiment = parse_experiment(timed.replace("availabilty", "availability"), "x.yaml", probes=load_catalogue(ROOT / "probes"))
    assert (experiment.spec.times.detect, experiment.spec.times.recover) == (["payments-error-ratio"], ["payments-availability"])


def test_exercises_are_named_from_the_catalogue_with_a_count_of_at_least_one() -> None:
    declared = VALID.replace("spec:\n", "spec:\n  exercise: {retried-payments: 3, breaker-refusals: 20}\n")
    experiment = parse_experiment(declared, "x.yaml", probes=load_catalogue(ROOT / "probes"))
    assert experiment.spec.exercise == {"retried-payments": 3, "breaker-refusals": 20}
    typo = VALID.replace("spec:\n", "spec:\n  exercise: {retried-payment: 3}\n")
    with pytest.raises(SpecError) as caught:
        parse_experiment(typo, "x.yaml", probes=load_catalogue(ROOT / "probes"))
    assert "spec.exercise.retried-payment: unknown exercise 'retried-payment' (did you mean 'retried-payments'?)" in str(caught.value)
    zero = VALID.replace("spec:\n", "spec:\n  exercise: {takeovers: 0}\n")
    assert problems(zero) == ["experiments/x.yaml:7: spec.exercise.takeovers: expected a number at least 1, got 0"]


def test_blast_radius_limits_are_checked() -> None:
    text = VALID.replace(SLOW, "podKill: {service: gateway, count: 3}").replace("spec:\n", "spec:\n  limits: {maxReplicas: 2}\n")
    assert problems(text) == [
        "experiments/x.yaml:15: spec.faults[0].podKill.count: 3 replicas is over limits.maxReplicas (2): raise the limit if you mean it"
    ]


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"description: caf\xe9\n")
    with pytest.raises(SpecError) as caught:
        load_experiments([tmp_path / "missing.yaml", tmp_path, tmp_path / "latin1.yaml"])
    assert str(caught.value).splitlines() == [
        f"{tmp_path / 'missing.yaml'}: no such file",
        f"{tmp_path}: is a directory: give the experiment files in it (*.yaml)",
        f"{tmp_path / 'latin1.yaml'}:1: not UTF-8 text: save the file as UTF-8",
    ]


def test_two_files_with_one_name(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(VALID, encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_experiments([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert str(caught.value) == f"{tmp_path / 'b.yaml'}:4: metadata.name: experiment name 'acquirer-slowdown' is also used by {tmp_path / 'a.yaml'}"


# -- garbage in, one clear SpecError out ---------------------------------------------------------

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(text: str) -> ChaosExperiment | SpecError:
    try:
        return parse_experiment(text, "g.yaml", TOPOLOGY)
    except SpecError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.startswith("g.yaml") and len(line) > len("g.yaml: ") for line in lines)
        assert len(lines) == len(exc.problems)
        return exc


yamlish = st.text(alphabet=st.sampled_from(list(":-[]{}#&*!|>'\"%@`?,. \n\t\\abcxyz019") + ["\u00e9", "\x07"]), max_size=80)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
nested = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@FAST
@given(st.one_of(yamlish, st.text(max_size=80)))
def test_random_text_gives_a_spec_error(text: str) -> None:
    assert isinstance(outcome(text), SpecError)


@FAST
@given(nested)
def test_random_data_gives_a_spec_error(data: Any) -> None:
    assert isinstance(outcome(dump(data)), SpecError)


ORIGINAL = yaml.safe_load(VALID)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def _mutate(data: Any, draw: st.DrawFn) -> Any:
    if isinstance(data, dict) and data and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(data, key=str)))
        action = draw(st.sampled_from(["descend", "replace", "delete", "rename", "add"]))
        out = dict(data)
        if action == "descend":
            out[key] = _mutate(data[key], draw)
        elif action == "replace":
            out[key] = draw(nested)
        elif action == "delete":
            del out[key]
        elif action == "rename":
            out[draw(st.text(min_size=1, max_size=12))] = out.pop(key)
        else:
            out[draw(st.text(max_size=12))] = draw(nested)
        return out
    if isinstance(data, list) and data and draw(st.booleans()):
        index = draw(st.integers(0, len(data) - 1))
        out_list = list(data)
        out_list[index] = _mutate(data[index], draw)
        return out_list
    return draw(nested)


@FAST
@given(st.data())
def test_mutations_of_a_valid_spec_validate_or_give_a_spec_error(data: st.DataObject) -> None:
    mutated = _mutate(ORIGINAL, data.draw)
    outcome(dump(mutated))


@FAST
@given(st.integers(0, len(VALID) - 1), st.text(max_size=6))
def test_text_edits_of_a_valid_spec_validate_or_give_a_spec_error(at: int, inserted: str) -> None:
    outcome(VALID[:at] + inserted + VALID[at + 1 :])


# -- the commands ------------------------------------------------------------------------------

runner = CliRunner()


def test_validate_the_catalogue() -> None:
    result = runner.invoke(app, ["validate", *map(str, CATALOGUE)])
    assert result.exit_code == 0, result.output
    for path in CATALOGUE:
        assert f"✓ {path.stem}" in result.output


def test_validate_a_folder() -> None:
    result = runner.invoke(app, ["validate", str(ROOT / "experiments")])
    assert result.exit_code == 0, result.output
    assert result.output.count("✓") == len(CATALOGUE)


def test_validate_reports_every_problem_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(VALID.replace("latency: 3000ms", "latency: fast").replace("  name: acquirer-slowdown", "  name: X"), encoding="utf-8")
    (tmp_path / "good.yaml").write_text(VALID, encoding="utf-8")
    result = runner.invoke(app, ["validate", str(tmp_path / "bad.yaml"), str(tmp_path / "good.yaml"), str(tmp_path / "none.yaml")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{tmp_path / 'bad.yaml'}:4: metadata.name:" in result.output
    assert f"{tmp_path / 'bad.yaml'}:14: spec.faults[0].slowDownstream.latency: expected a duration" in result.output
    assert f"{tmp_path / 'none.yaml'}: no such file" in result.output
    assert "✓ acquirer-slowdown" in result.output
    assert "2 of 3 files invalid" in result.output


def test_validate_json(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(VALID.replace("for: 30s", "for: soon"), encoding="utf-8")
    result = runner.invoke(app, ["validate", "--json", str(tmp_path / "bad.yaml"), str(CATALOGUE[0])])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report[0] == {
        "file": str(tmp_path / "bad.yaml"),
        "valid": False,
        "name": None,
        "problems": [
            {"line": 13, "path": "spec.faults[0].for", "message": "expected a duration such as '300ms', '45s' or '2m', got 'soon'"}
        ],
    }
    assert report[1]["valid"] is True and report[1]["name"] == CATALOGUE[0].stem


def test_validate_needs_a_file() -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 2


def test_schema_on_stdout() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema["title"] == "ChaosExperiment"
    assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"])
    assert "for" in schema["$defs"]["Fault"]["properties"] and "slowDownstream" in schema["$defs"]["Fault"]["properties"]


def test_schema_to_a_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema", "--output", str(tmp_path / "schema.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "schema.json").read_text(encoding="utf-8")) == experiment_schema()


def test_schema_to_an_unwritable_place(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema", "--output", str(tmp_path / "no" / "such" / "schema.json")])
    assert result.exit_code == 1
    assert "cannot write" in result.output and "Traceback" not in result.output
