"""A stack described only by a target file: the session's reference stack, on its own port offset,
reached through the URLs and the ledger secret a user would write down for theirs, with no run
directory to read (``PAYCHAOS_RUN_DIR`` points at an empty folder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import paychaos

pytestmark = pytest.mark.integration

# The stack's breaker around the card network, under the name this "other" stack gives it, with
# every query spelled out (the catalogue's conventions would look for name="card-network").
TARGET = """
apiVersion: paychaos.io/v1alpha1
kind: Target
metadata: {{name: second-stack}}
spec:
  prometheus: {prometheus}
  edge: {edge}
  toxiproxy: {toxiproxy}
  ledger: {{dsnFile: secrets/ledger.dsn}}
  breakers:
    card-network: {{callsToOpen: {calls_to_open}}}
  series:
    breakers:
      names:
        card-network:
          open: count(resilience4j_circuitbreaker_state{{name="acquirer",state="open"}} == 1) or vector(0)
          replicas: count(resilience4j_circuitbreaker_state{{name="acquirer",state="open"}})
          calls: sum without (kind) (increase(resilience4j_circuitbreaker_calls_seconds_count{{name="acquirer",kind=~"successful|failed"}}[$window]))
          states: resilience4j_circuitbreaker_state{{name="acquirer"}} == 1
"""

SPEC = """
apiVersion: paychaos.io/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  description: The card network slows down on a stack known only by its target file.
  target: {{platform: local}}
  load: {{profile: noon-spike, baselineRps: 20, peakMultiplier: 5, paymentShare: 0.2, duration: {duration}}}
  steadyState:
    - slo: payments-availability
  faults:
    - {{at: 15s, for: {for_}, {fault}}}
  expect:
    - breaker: {{name: card-network, opensWithin: 15s}}
  after:
    - invariant: [ledger-conservation, no-double-charge]
"""

SLOW_CARDS = "slowDownstream: {proxy: acquirer, latency: 3000ms}"


@pytest.fixture
def described(stack, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The target file of the session's stack, and an environment in which no run dir leads to it."""
    topology = stack.topology
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "ledger.dsn").write_text(topology.postgres_dsn + "\n")
    target = tmp_path / "second-stack.yaml"
    target.write_text(TARGET.format(prometheus=topology.prometheus_url, edge=topology.edge_url,
                                    toxiproxy=topology.toxiproxy_url,
                                    calls_to_open=topology.resilience.breaker.calls_to_open))
    nowhere = tmp_path / "no-stack-here"
    nowhere.mkdir()
    return target, {"PAYCHAOS_RUN_DIR": str(nowhere), "PAYCHAOS_PORT_OFFSET": "0"}


# The load runs on 55 s after the revert: the breaker stays open 15 s past it (its wait in the
# open state) and the steady state after is judged over the last 30 s.
def write_spec(tmp_path: Path, name: str, *, fault: str = SLOW_CARDS, for_: str = "20s", duration: str = "90s") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, fault=fault, for_=for_, duration=duration))
    return path


def toxics(stack) -> list[dict]:
    return httpx.get(f"{stack.topology.toxiproxy_url}/proxies/acquirer/toxics", timeout=5).json()


def test_an_experiment_runs_on_a_stack_known_only_by_its_target_file(stack, described, tmp_path: Path) -> None:
    target, env = described
    spec = write_spec(tmp_path, "card-network-slow")
    # The breaker's name is the target's: the catalogue's own vocabulary does not know it ...
    alone = paychaos("validate", str(spec), env=env)
    assert alone.returncode == 1 and "card-network" in alone.stderr, alone.stderr
    # ... the target file's does, and the proxy is checked against its Toxiproxy.
    checked = paychaos("validate", "--target", str(target), str(spec), env=env)
    assert checked.returncode == 0, checked.stderr
    planned = paychaos("plan", str(spec), "--target", str(target), "--json", env=env)
    assert planned.returncode == 0, planned.stderr
    (fault,) = json.loads(planned.stdout)["faults"]
    assert fault["proxy"] == "acquirer" and [t["type"] for t in fault["toxics"]] == ["latency"], fault
    # A fault a Toxiproxy cannot inject is refused before anything runs, naming what it can.
    kill = write_spec(tmp_path, "kill-on-target", fault="podKill: {service: payment, count: 1}")
    refused = paychaos("run", str(kill), "--target", str(target), "--journal", str(tmp_path / "k.json"), env=env)
    assert refused.returncode == 3, refused.stderr  # nothing was run: error, not a failed verdict
    assert "cannot inject podKill" in refused.stderr and "slowDownstream" in refused.stderr, refused.stderr
    assert not (tmp_path / "k.json").exists()

    journal_path = tmp_path / "journal.json"
    result = paychaos("run", str(spec), "--target", str(target), "--journal", str(journal_path), env=env, timeout=300)
    journal = json.loads(journal_path.read_text())
    section = journal["paychaos"]
    assert result.returncode == 0, (section["verdict"], result.stderr[-3000:])
    # The toxic went on through the target's Toxiproxy, and its evidence is the proxy's own listing.
    (injected,) = [e for e in section["timeline"] if e["event"] == "fault-injected"]
    assert injected["detail"]["status"] == "succeeded", injected
    checks = {(c["phase"], c["name"]): c for c in section["checks"]}
    opened = next(c for (phase, name), c in checks.items() if phase == "expect" and c["kind"] == "breaker")
    assert "card-network" in opened["name"] and opened["verdict"] == "passed", opened
    # The samples are keyed by the target's name for the breaker, read through the file's queries.
    assert any(s.get("breaker_open:card-network") for s in section["samples"]), "the file's breaker queries were never sampled"
    # The money invariants read the ledger through the secret file.
    assert {c["name"] for c in section["checks"] if c["kind"] == "invariant"} >= {"ledger-conservation", "no-double-charge"}
    assert all(c["verdict"] == "passed" for c in section["checks"] if c["kind"] == "invariant")
    assert toxics(stack) == []
    # The fault ledger lives beside the target file, and nothing is left in it.
    ledger = target.parent / ".paychaos" / "second-stack"
    assert ledger.is_dir() and list((ledger / "faults").glob("*.json")) == []


def test_halt_with_the_target_file_reverts_what_a_killed_run_left(stack, described, tmp_path: Path) -> None:
    target, env = described
    spec = write_spec(tmp_path, "card-network-killed", for_="60s")
    run = subprocess.Popen(
        [sys.executable, "-m", "paychaos.cli", "run", str(spec), "--target", str(target), "--journal", str(tmp_path / "j.json")],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        stack.wait_for("the toxic to be injected", lambda: toxics(stack), timeout=90)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert toxics(stack), "the fault must still be there: nothing reverted it"
    halted = paychaos("halt", "--target", str(target), env=env)
    assert halted.returncode == 0, halted.stderr
    assert "reverted card-network-killed-0" in halted.stderr, halted.stderr
    assert toxics(stack) == []
    again = paychaos("halt", "--target", str(target), env=env)
    assert again.returncode == 0 and "nothing to revert" in again.stderr
