"""`paychaos run` end to end: faults at the times the spec says, reverted whatever happens,
a verdict read from the journal, stop conditions that abort, and plain `chaos run` on an export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from paychaos.targets.local.driver import IN_FLIGHT_HOLD

pytestmark = pytest.mark.integration

EXIT = {"passed": 0, "failed": 1, "aborted": 2, "error": 3, "inconclusive": 4}

SLOWDOWN = """
apiVersion: paychaos.io/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}, labels: {{severity: sev2}}}}
spec:
  description: The card acquirer slows down for a while.
  load: {{profile: steady, baselineRps: 10, paymentShare: 0.5, duration: {duration}}}
  steadyState:
    - slo: payments-availability
    - invariant: ledger-conservation
  faults:
    - {{at: {at}, for: {for_}, slowDownstream: {{proxy: acquirer, latency: 3000ms}}}}
  expect:
    - slo: {{name: balance-payments-availability, above: 0.9}}
    # Bounds inside the latency histogram's bucket (3, 5]: advice in the evidence, per window and per second.
    - slo: {{name: payments-latency-p99, below: 4s}}
    - slo: {{name: payments-latency-p99, below: 4s, for: 3s}}
  after:
    - breaker: {{name: acquirer, closesWithin: 40s}}
    - invariant: [ledger-conservation, no-double-charge, acknowledged-payments-durable]
  stopWhen: [{stop}]
"""


def write_spec(tmp_path: Path, name: str, *, at: str = "8s", for_: str = "12s", duration: str = "40s", stop: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SLOWDOWN.format(name=name, at=at, for_=for_, duration=duration, stop=stop))
    return path


@pytest.fixture(autouse=True)
def steady(stack) -> None:
    """Each experiment starts from a steady stack: every acquirer breaker closed, and the previous
    one's errors out of the SLO window. A breaker the previous run left open or half-open (its
    fault ended with the load) would refuse this run's first card payments and fail its steady
    state, and an idle stack never closes it."""
    stack.close_acquirer_breakers(["u00001"] * 6, "every acquirer breaker to close", timeout=90)
    query = (
        'sum(rate(http_server_requests_seconds_count{service="gateway",route="/v1/payments",status=~"5.."}[30s]))'
        ' or vector(0)'
    )
    stack.wait_for("the last 30 s to be free of 5xx", lambda: stack.prometheus(query) and
                   float(stack.prometheus(query)[0]["value"][1]) == 0.0, timeout=90, interval=2)


def toxics(stack) -> list[dict]:
    return httpx.get(f"{stack.topology.toxiproxy_url}/proxies/acquirer/toxics", timeout=5).json()


def events(journal: dict, name: str) -> list[dict]:
    return [e for e in journal["paychaos"]["timeline"] if e["event"] == name]


def test_run_injects_and_reverts_on_time_and_exits_by_verdict(stack, tmp_path: Path) -> None:
    journal_path = tmp_path / "journal.json"
    result = stack.cli("run", str(write_spec(tmp_path, "slowdown-on-time")), "--journal", str(journal_path), timeout=300)
    journal = json.loads(journal_path.read_text())
    verdict = journal["paychaos"]["verdict"]["result"]
    assert result.returncode == EXIT[verdict], (verdict, result.stderr[-2000:])
    assert verdict in ("passed", "failed"), journal["paychaos"]["verdict"]
    (injected,), (reverted,) = events(journal, "fault-injected"), events(journal, "fault-reverted")
    assert abs(injected["t"] - 8.0) <= 0.5, injected
    assert abs(reverted["t"] - 20.0) <= 0.5, reverted
    # The standard Chaos Toolkit journal is all there, with the paychaos section beside it.
    assert journal["status"] == "completed" and journal["steady_states"]["before"]["steady_state_met"] is True
    assert {c["phase"] for c in journal["paychaos"]["checks"]} >= {"steadyState.before", "expect", "after"}
    assert len(journal["paychaos"]["samples"]) > 30
    assert toxics(stack) == []
    # A bound histogram_quantile can only interpolate at is said so, whatever the verdict and the
    # way the check reads the window, with the boundary to add. (At 5 payments a second both 12 s
    # windows are usually too thin for a p99: inconclusive, with the advice in the evidence only.)
    inside = [c for c in journal["paychaos"]["checks"] if c["name"] == "payments-latency-p99"]
    assert len(inside) == 2 and all("bucket (3, 5]" in c["evidence"].get("bucket", "") for c in inside), inside
    assert all("boundary at 4 s" in c["detail"] for c in inside if c["verdict"] != "inconclusive"), inside


def test_stop_condition_aborts_and_reverts_within_two_seconds(stack, tmp_path: Path) -> None:
    # Card payments wait out the 1.5 s acquirer timeout, so the p99 crosses 1 s soon after the fault.
    stop = "{slo: {name: payments-latency-p99, above: 1s, for: 2s}}"
    spec = write_spec(tmp_path, "slowdown-abort", at="5s", for_="60s", duration="80s", stop=stop)
    journal_path = tmp_path / "journal.json"
    result = stack.cli("run", str(spec), "--journal", str(journal_path), timeout=300)
    journal = json.loads(journal_path.read_text())
    assert journal["paychaos"]["verdict"]["result"] == "aborted", journal["paychaos"]["verdict"]
    assert result.returncode == EXIT["aborted"]
    (met,) = events(journal, "stop-condition-met")
    (reverted,) = events(journal, "fault-reverted")
    done = reverted["detail"].get("completedT", reverted["t"])  # a rollback has no schedule: t is when it finished
    assert done - met["t"] <= 2.0, (met, reverted)
    assert toxics(stack) == []


def test_a_killed_run_leaves_nothing_that_halt_cannot_revert(stack, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "slowdown-killed", at="3s", for_="60s", duration="80s")
    run = subprocess.Popen(
        [sys.executable, "-m", "paychaos.cli", "run", str(spec), "--journal", str(tmp_path / "j.json")],
        env={**os.environ, **stack.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        stack.wait_for("the toxic to be injected", lambda: toxics(stack), timeout=60)
        load = psutil.Process(run.pid).children(recursive=True)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert load, "the run drives its load from a child process"
    # The orphaned load generator notices and stops itself: no traffic outlives the run.
    stack.wait_for("the orphaned load to stop", lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in load), timeout=30)
    assert toxics(stack), "the fault must still be there: nothing reverted it"
    halted = stack.cli("halt")
    assert halted.returncode == 0, halted.stderr
    assert toxics(stack) == []
    again = stack.cli("halt")
    assert again.returncode == 0


def test_exported_experiment_runs_under_plain_chaos_run(stack, tmp_path: Path) -> None:
    exported = tmp_path / "exported.json"
    # A long tail: the final steady state must not see the breaker's refusals in its 30 s window.
    spec = write_spec(tmp_path, "slowdown-exported", at="5s", for_="8s", duration="70s")
    result = stack.cli("export", "--format", "chaostoolkit", str(spec), "--output", str(exported),
                       "--run-dir", str(stack.run_dir.root))
    assert result.returncode == 0, result.stderr
    journal = tmp_path / "chaos-journal.json"
    chaos = Path(sys.executable).parent / "chaos"
    # No PAYCHAOS_* variable: the export alone says where to inject, as it says where to sample
    # (its fault actions carry the target). Before they did, this injected into the default run
    # directory, where no stack runs.
    bare = {k: v for k, v in os.environ.items() if not k.startswith("PAYCHAOS_")}
    assert all(k not in bare for k in stack.env)
    ran = subprocess.run(
        [str(chaos), "--no-version-check", "run", "--journal-path", str(journal), "--rollback-strategy", "always", str(exported)],
        env=bare, capture_output=True, text=True, timeout=240,
    )
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    data = json.loads(journal.read_text())
    names = [r["activity"]["name"] for r in data["run"]]
    assert names[:2] == ["inject-slowDownstream-0", "revert-slowDownstream-0"]
    # the paychaos control set the method start, so the faults kept their schedule
    assert [round(r["output"]["offset"]) for r in data["run"][:2]] == [5, 13]
    assert data["run"][0]["output"]["plan"]["proxy"] == "acquirer"
    judged = [r for r in data["run"] if r["activity"]["type"] == "probe"]
    assert judged and all(r["status"] == "succeeded" for r in judged)
    assert toxics(stack) == []


def test_chaos_discover_lists_the_paychaos_activities(stack, tmp_path: Path) -> None:
    chaos = Path(sys.executable).parent / "chaos"
    out = tmp_path / "discovery.json"
    ran = subprocess.run(
        [str(chaos), "--no-version-check", "discover", "--no-system-info", "--no-install", "--discovery-path", str(out), "paychaos"],
        capture_output=True, text=True, timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    names = {a["name"] for a in json.loads(out.read_text())["activities"]}
    assert {"inject_fault", "revert_fault"} <= names


KILL = """
apiVersion: paychaos.io/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  description: A payment replica in az-a is killed mid-saga, a card authorization out.
  load: {{profile: steady, baselineRps: 20, paymentShare: 0.5, duration: 30s}}
  exercise: {exercise}
  faults:
    - {{at: 8s, for: 10s, podKill: {{service: payment, zone: az-a, inFlightKind: authorization}}}}
    # Card calls at 200 ms, as pod-kill-payment has them: a saga lasts long enough to be cut in
    # half (balance payments alone finish in milliseconds, too fast for a kill to land inside one).
    - {{at: 5s, for: 15s, slowDownstream: {{proxy: acquirer, latency: 200ms}}}}
  expect:
    - traffic: {{successRatioAbove: 0.5}}
  after:
    - invariant: [no-double-charge, acknowledged-payments-durable]
"""


def run_kill(stack, tmp_path: Path, name: str, exercise: str = "{retried-payments: 1}") -> tuple[subprocess.CompletedProcess[str], dict]:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(KILL.format(name=name, exercise=exercise))
    journal_path = tmp_path / f"{name}.json"
    result = stack.cli("run", str(spec), "--journal", str(journal_path), timeout=300)
    return result, json.loads(journal_path.read_text())


def fault_check(journal: dict) -> dict:
    """The podKill's fault check (the slow acquirer beside it has its own)."""
    (check,) = [c for c in journal["paychaos"]["checks"] if c["kind"] == "fault" and c["name"].startswith("podKill")]
    return check


def test_a_fault_the_planner_refuses_makes_the_run_an_error_and_the_same_spec_runs_where_it_can(stack, tmp_path: Path) -> None:
    from paychaos.experiments.spec import Fault, Limits
    from paychaos.faults import records
    from paychaos.faults.planning import plan_fault
    from paychaos.faults.records import FileLedger
    from paychaos.targets.local.driver import LocalDriver

    # az-a is already down (another fault, as during a real outage): no payment replica to kill there.
    driver = LocalDriver(stack.run_dir)
    zone = Fault.model_validate({"at": "0s", "for": "120s", "zoneLoss": {"zone": "az-a"}})
    held = records.inject(FileLedger(stack.run_dir.root), driver, plan_fault(zone, driver.observe(), Limits(max_percent=100),
                                                            experiment="test-outage", index=0))
    try:
        result, journal = run_kill(stack, tmp_path, "kill-refused")
    finally:
        records.revert(FileLedger(stack.run_dir.root), driver, held.id)
    verdict = journal["paychaos"]["verdict"]
    assert verdict["result"] == "error" and result.returncode == EXIT["error"], verdict
    assert "podKill-0 refused" in verdict["reason"] and "nothing was tested" in verdict["reason"], verdict
    check = fault_check(journal)
    assert check["verdict"] == "error" and "0 of 1 are ready" in check["detail"], check
    assert events(journal, "fault-refused")
    assert not [e for e in events(journal, "fault-injected") if "podKill" in e.get("activity", "")]
    assert journal["paychaos"]["samples"][-1]["t"] < 20, "the run stops at the refusal, it does not play out"
    stack.wait_for("az-a to be back", lambda: all(p.ready for p in stack.state().processes), timeout=120)

    result, journal = run_kill(stack, tmp_path, "kill-injected")
    verdict = journal["paychaos"]["verdict"]
    assert verdict["result"] == "passed" and result.returncode == EXIT["passed"], verdict
    check = fault_check(journal)
    (killed,) = check["evidence"]["effect"]["killed"]
    assert check["verdict"] == "passed" and killed["name"] == "payment-az-a-1" and killed["inFlight"] >= 1, check
    assert killed["inFlightKind"] == "authorization", killed
    assert killed["busyForMs"] >= IN_FLIGHT_HOLD * 1000, killed  # inside a long call, not after a quick one
    (retried,) = [c for c in journal["paychaos"]["checks"] if c["kind"] == "exercise"]
    assert retried["verdict"] == "passed" and retried["observed"] >= 1, retried


def test_a_run_that_never_provokes_what_it_must_exercise_is_inconclusive(stack, tmp_path: Path) -> None:
    # Nothing in this run writes a poison record: the skip it must see never comes. (Not a
    # duplicate delivery: a payment replica killed between Kafka's ack and marking its outbox rows
    # sent does make another replica send them again, and a CI run once saw one.)
    result, journal = run_kill(stack, tmp_path, "kill-no-poison", exercise="{poison-skipped: 1}")
    verdict = journal["paychaos"]["verdict"]
    assert verdict["result"] == "inconclusive" and result.returncode == EXIT["inconclusive"], verdict
    (exercise,) = [c for c in journal["paychaos"]["checks"] if c["kind"] == "exercise"]
    assert exercise["verdict"] == "inconclusive" and exercise["observed"] == 0 and exercise["margin"] == -1, exercise
    assert "poison-skipped" in verdict["reason"]
