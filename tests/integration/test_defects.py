"""The probes fail when the resilience pattern they watch is switched off, and pass when it is on.

A stack of its own (ports shifted by 7000, beside the session's): switching idempotency off
leaves a double charge in its ledger for good, which the session's later tests must not see.
Each test judges the healthy configuration first, then the defective one, with the same traffic.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from paychaos.experiments.sampling import Sampler
from paychaos.experiments.spec import Breaker, KafkaLag, Recovery
from paychaos.faults.toxiproxy import Toxiproxy
from paychaos.platform.runtime import stacking
from paychaos.platform.services.outbox import DELIVERY_TIMEOUT
from paychaos.platform.topology import Topology
from paychaos.probes.invariants import InvariantResult, check_invariants, engine_for
from paychaos.probes.judging import GRACE, judge_breaker_closes, judge_fails_fast, judge_lag, judge_recovery
from paychaos.probes.prometheus import Prometheus
from paychaos.probes.series import lag_key
from paychaos.probes.verdicts import OPEN_SETTLE, CheckResult, Sample
from paychaos.runbooks.render import read_index_entry

from .conftest import CATALOGUE, Stack, keep_logs_if_failed, running_stack
from .traffic import mixed_load

pytestmark = pytest.mark.integration

DEFECTS_PORT_OFFSET = int(os.environ.get("PAYCHAOS_TEST_PORT_OFFSET", "5000")) + 2000


@pytest.fixture(scope="module")
def defects(request: pytest.FixtureRequest) -> Iterator[Stack]:
    run_dir = Path(tempfile.mkdtemp(prefix="paychaos-test-defects-"))
    env = {"PAYCHAOS_RUN_DIR": str(run_dir), "PAYCHAOS_PORT_OFFSET": str(DEFECTS_PORT_OFFSET)}
    try:
        with running_stack(env, run_dir) as stack:
            yield stack
    finally:
        keep_logs_if_failed(request, run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


def invariant(stack: Stack, name: str, acknowledged: list[tuple[str, str]] = ()) -> InvariantResult:
    engine = engine_for(stack.topology.postgres_dsn)
    try:
        (result,) = check_invariants(engine, {name: CATALOGUE.invariant(name)}, acknowledged)
    finally:
        engine.dispose()
    return result


def switched(stack: Stack, services: list[str], **resilience: object):
    """Roll ``services`` out with resilience settings changed; returns the healthy topology to restore."""
    healthy = stack.topology
    stacking.reconfigure(stack.run_dir, healthy.model_copy(update={"resilience": healthy.resilience.model_copy(update=resilience)}), services)
    return healthy


GATE_EXPERIMENT = """\
apiVersion: paychaos.io/v1alpha1
kind: ChaosExperiment
metadata:
  name: gate-slowdown
  labels: {severity: sev2}
spec:
  description: The card acquirer slows to 3 s for 25 s.
  # Four in ten requests are payments, three in ten of those by card: about 1.6 card calls a
  # second per payment replica, so each breaker sees its five failing calls within seconds. At
  # the app's ordinary one in twelve it is one every three seconds, and a breaker can take most
  # of the 20 s to open (a CI run saw none open in time).
  load: {profile: steady, baselineRps: 40, paymentShare: 0.4, duration: 45s}
  steadyState:
    - invariant: ledger-conservation
  faults:
    - {at: 5s, for: 25s, slowDownstream: {proxy: acquirer, latency: 3000ms}}
  expect:
    - breaker: {name: acquirer, opensWithin: 20s}
    - slo: {name: campaign-status-availability, above: 0.99}
  after:
    - invariant: [ledger-conservation, no-double-charge, acknowledged-payments-durable]
  runbook:
    summary: The card network is slow; the breaker must open and card payments fail fast.
    mitigation: ["Check the acquirer's status page."]
"""
GATE_SUITE = """\
apiVersion: paychaos.io/v1alpha1
kind: GameDay
metadata: {name: gate-test}
spec:
  description: One slow acquirer.
  settleWithin: 60s
  experiments:
    - experiment: gate-slowdown.yaml
      thresholds: {timeToDetect: 20s}
"""


def run_gate(stack: Stack, folder: Path) -> tuple[subprocess.CompletedProcess[str], ET.Element]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gate-slowdown.yaml").write_text(GATE_EXPERIMENT, encoding="utf-8")
    (folder / "suite.yaml").write_text(GATE_SUITE, encoding="utf-8")
    result = stack.cli("gate", str(folder / "suite.yaml"), "--out", str(folder / "out"), "--runbooks", str(folder / "runbooks"),
                       "--run-dir", str(stack.run_dir.root), timeout=400)
    assert (folder / "out" / "junit.xml").exists(), result.stderr
    return result, ET.parse(folder / "out" / "junit.xml").getroot()


def failures(junit: ET.Element) -> dict[str, str]:
    return {case.get("name", ""): failure.get("message", "") for case in junit.iter("testcase") for failure in case.findall("failure")}


def test_the_gate_passes_a_healthy_stack_and_leaves_report_junit_and_runbook(defects: Stack) -> None:
    folder = Path(tempfile.mkdtemp(prefix="paychaos-gate-"))
    try:
        result, junit = run_gate(defects, folder)
        assert result.returncode == 0, result.stderr
        assert failures(junit) == {}
        assert len(list(junit.iter("testcase"))) >= 6  # the verdict, the checks, a threshold
        report = (folder / "out" / "report.html").read_text(encoding="utf-8")
        assert 'id="plot-throughput-gate-slowdown"' in report and "<svg" in report
        runbook = (folder / "runbooks" / "gate-slowdown.md").read_text(encoding="utf-8")
        assert "passed" in runbook and "not rehearsed yet" not in runbook
        rehearsed = read_index_entry(runbook)
        assert rehearsed is not None and rehearsed.verdict == "passed"
        assert "gate-slowdown" in (folder / "runbooks" / "index.md").read_text(encoding="utf-8")
        assert "gate gate-test: the experiment passed" in result.stderr
        summary = json.loads((folder / "out" / "summary.json").read_text(encoding="utf-8"))
        assert summary["verdict"] == "passed" and [e["name"] for e in summary["experiments"]] == ["gate-slowdown"], summary
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_with_the_breaker_off_the_gate_fails_and_junit_names_the_breaker_check(defects: Stack) -> None:
    folder = Path(tempfile.mkdtemp(prefix="paychaos-gate-"))
    healthy = switched(defects, ["payment"], breaker=defects.topology.resilience.breaker.model_copy(update={"enabled": False}))
    try:
        result, junit = run_gate(defects, folder)
        summary = json.loads((folder / "out" / "summary.json").read_text(encoding="utf-8"))
    finally:
        stacking.reconfigure(defects.run_dir, healthy, ["payment"])
        shutil.rmtree(folder, ignore_errors=True)
    assert result.returncode == 1, result.stderr
    assert summary["verdict"] == "failed" and "expect/breaker/acquirer.opens" in summary["experiments"][0]["failedChecks"], summary
    failed = failures(junit)
    opens = [message for name, message in failed.items() if "acquirer.opens" in name]
    assert opens and "observed" in opens[0] and "expected <= 20s" in opens[0], failed
    assert "gate gate-test: 1 of 1 experiments did not pass" in result.stderr


def test_idempotency_off_double_charge_is_caught(defects: Stack) -> None:
    def pay_twice(user: str) -> str:
        key = uuid.uuid4().hex
        with httpx.Client(timeout=15) as client:
            for _ in range(2):  # the app retrying after a timeout, with the same key
                r = defects.pay(client, user, 400, key=key)
                assert r.status_code == 201, r.text
        return key

    pay_twice("u01800")
    assert invariant(defects, "no-double-charge").holds

    healthy = switched(defects, ["payment"], idempotency=False)
    try:
        key = pay_twice("u01801")
    finally:
        stacking.reconfigure(defects.run_dir, healthy, ["payment"])
    caught = invariant(defects, "no-double-charge")
    assert not caught.holds
    assert caught.sample == [{"idempotency_key": key, "charges": 2}]


def republish(stack: Stack) -> str:
    """A fresh user pays once; wait for the cashback, then deliver the payment's event a second time."""
    user = stack.fresh_user()
    with httpx.Client(timeout=15) as client:
        r = stack.pay(client, user, 1000)
    assert r.status_code == 201, r.text
    payment_id = r.json()["payment_id"]
    count = "SELECT count(*) FROM ledger.transfers WHERE kind = 'cashback' AND payment_id = %s"
    stack.wait_for("the cashback", lambda: stack.scalar(count, payment_id) == 1, timeout=30,
                   explain=lambda: cashback_pipeline(stack, payment_id))
    payload = stack.scalar("SELECT payload FROM payment.outbox WHERE payload->>'payment_id' = %s", payment_id)
    producer = Producer({"bootstrap.servers": stack.topology.bootstrap_servers, "acks": "all"})
    producer.produce("payments", key=user, value=json.dumps(payload).encode())
    assert producer.flush(10) == 0
    return payment_id


def cashback_pipeline(stack: Stack, payment_id: str) -> str:
    """Where a payment's cashback is on its way: outbox, consumer, grant."""
    sent = stack.sql("SELECT sent_at IS NOT NULL FROM payment.outbox WHERE payload->>'payment_id' = %s", payment_id)
    grants = stack.sql("SELECT status, amount FROM campaign.grants WHERE payment_id = %s", payment_id)
    return f"outbox row sent: {sent}; consumer lag: {consumer_lag(stack)}; grants: {grants}"


def consumer_lag(stack: Stack) -> float | None:
    """The campaign consumer's lag as Prometheus last scraped it; None before any scrape."""
    lags = stack.prometheus("sum(campaign_consumer_lag)")
    return float(lags[0]["value"][1]) if lags else None


def consumed_everything(stack: Stack) -> bool:
    return consumer_lag(stack) == 0


def test_consumer_dedupe_off_duplicate_cashback_is_caught(defects: Stack) -> None:
    count = "SELECT count(*) FROM ledger.transfers WHERE kind = 'cashback' AND payment_id = %s"
    deduped = republish(defects)
    defects.wait_for("the redelivery to be consumed", lambda: consumed_everything(defects), timeout=30)
    assert defects.scalar(count, deduped) == 1
    assert invariant(defects, "cashback-exactly-once").holds

    healthy = switched(defects, ["campaign"], consumer_dedupe=False)
    try:
        paid_twice = republish(defects)
        defects.wait_for("the second grant", lambda: defects.scalar(count, paid_twice) == 2, timeout=30)
    finally:
        stacking.reconfigure(defects.run_dir, healthy, ["campaign"])
    caught = invariant(defects, "cashback-exactly-once")
    assert not caught.holds
    assert {"payment_id": paid_twice, "grants": 2} in caught.sample


def payments_while_kafka_is_down(stack: Stack, users: list[str]) -> list[tuple[str, str]]:
    """Every Kafka node down for longer than the producer's delivery timeout while payments
    complete; then the cluster comes back. (With a node or two left, a send the producer gave up
    on may still sit in the leader's log and be committed later: not a loss.)"""
    held = [stack.run_dir.held / f"kafka-{n}" for n in (1, 2, 3)]
    acknowledged = []
    try:
        for marker in held:
            marker.touch()
            proc = stack.state().process(marker.name)
            if proc and proc.pid:
                os.kill(proc.pid, signal.SIGKILL)
        stack.wait_for("every Kafka node to be down", lambda: not any(
            stack.state().process(m.name).pid for m in held), timeout=15)
        with httpx.Client(timeout=15) as client:
            for user in users:
                key = uuid.uuid4().hex
                r = stack.pay(client, user, 300, key=key)
                assert r.status_code == 201, r.text  # payments do not wait for Kafka
                acknowledged.append((key, r.json()["payment_id"]))
        # Past the producer's delivery timeout: a direct send has given up by now.
        time.sleep(DELIVERY_TIMEOUT + 1)
    finally:
        for marker in held:
            marker.unlink(missing_ok=True)
    stack.wait_for("Kafka to be whole again", lambda: all(stack.state().process(m.name).ready for m in held), timeout=90)
    return acknowledged


def test_outbox_off_events_lost_while_kafka_is_down_are_caught(defects: Stack) -> None:
    # The healthy half (the invariant holds with the outbox on) is in test_probes.py, on the
    # session's stack; test_resilience.py shows the outbox carrying events through a dead broker.
    healthy = switched(defects, ["payment"], outbox=False)
    try:
        lost = payments_while_kafka_is_down(defects, [f"u0183{i}" for i in range(4)])
    finally:
        stacking.reconfigure(defects.run_dir, healthy, ["payment"])
    # Everything that was going to arrive has arrived once the relay and the consumers are idle.
    defects.wait_for("the consumers to catch up", lambda: consumed_everything(defects), timeout=60)
    caught = invariant(defects, "acknowledged-events-consumed", lost)
    assert caught.violations == len(lost), caught


LAG_PROBE = KafkaLag(lag_below=0, within=timedelta(seconds=10))


def poison_then_pay(stack: Stack, user: str) -> tuple[float, list[Sample], list[str]]:
    """An undecodable event on ``user``'s partition, then two payments queued behind it; the
    per-second samples until the lag probe's deadline."""
    producer = Producer({"bootstrap.servers": stack.topology.bootstrap_servers, "acks": "all"})
    with Prometheus(stack.topology.prometheus_url) as prometheus:
        sampler = Sampler(prometheus, CATALOGUE, [])
        sampler.start()
        try:
            producer.produce("payments", key=user, value=b"\x00 not a payment event")
            assert producer.flush(10) == 0
            injected = time.time()
            with httpx.Client(timeout=15) as client:
                paid = [stack.pay(client, user, 500) for _ in range(2)]
            assert all(r.status_code == 201 for r in paid), [r.text for r in paid]
            time.sleep(max(0.0, injected + LAG_PROBE.within.total_seconds() + GRACE - time.time()))
        finally:
            sampler.stop()
    return injected, sampler.snapshot(), [r.json()["payment_id"] for r in paid]


def cashback_count(stack: Stack, payment_ids: list[str]) -> int:
    return int(stack.scalar("SELECT count(*) FROM ledger.transfers WHERE kind = 'cashback' AND payment_id = ANY(%s)", payment_ids))


def test_poison_skip_off_consumer_lag_never_recovers_and_is_caught(defects: Stack) -> None:
    injected, samples, behind = poison_then_pay(defects, defects.fresh_user())
    healthy_lag = judge_lag(samples, injected, LAG_PROBE, "after", CATALOGUE.vocabulary)
    assert healthy_lag.verdict == "passed", healthy_lag
    defects.wait_for("the cashback behind the skipped poison", lambda: cashback_count(defects, behind) == 2, timeout=30)

    healthy = switched(defects, ["campaign"], skip_poison=False)
    try:
        injected, samples, stuck = poison_then_pay(defects, defects.fresh_user())
        stalled_lag = judge_lag(samples, injected, LAG_PROBE, "after", CATALOGUE.vocabulary)
        assert cashback_count(defects, stuck) == 0  # stuck behind the poison message
    finally:
        stacking.reconfigure(defects.run_dir, healthy, ["campaign"])
    assert stalled_lag.verdict == "failed", stalled_lag
    lags = [v for s in samples if s.t >= injected and (v := s.values.get(lag_key(LAG_PROBE.group))) is not None]
    # Still behind at the deadline: not drained. Only the last sample: the campaign replicas,
    # just restarted with skipPoison off, rebalance for some seconds, and a replica that holds
    # no partition for that while reports a lag of 0, so the sum dips (runs saw [1, 1, 0, 0, 0,
    # 3, ...] and [0, ..., 0, 3, 3, 3]; the lag probe above judged both failed, as it should).
    assert lags and lags[-1] >= 1, lags
    # Switched back on, the consumer skips the poison and the payments behind it get their cashback.
    defects.wait_for("the stalled partition to drain", lambda: cashback_count(defects, stuck) == 2, timeout=60)


# A spike the payment replicas cannot take: card payments held 200 ms each by a slow (not broken:
# under the breaker's 1 s slow-call bar) acquirer, on 3 replicas of 2 workers and 2 queued, serve
# at most 30 a second (fewer on a busy machine); 60 arrive. Admission lets 3 gateways x 3 a second
# through, a third of that, and asks the rest to come back later (429 with Retry-After), which is
# not a server error. (At 3 x 5 a second, a full test session on 2 cores once saw the admitted
# payments' p99 over its bound: the client, starved, sent the spike over twice its 8 s and the
# buckets let through 283 payments, near what the loaded replicas could serve.)
SPIKE_RATE, SPIKE_SECONDS = 60, 8.0
SPIKE_ACQUIRER = {"latency": 200, "jitter": 0}
SPIKE_SLOS = ("payments-availability", "payments-latency-p99")


def admission_tuned(topology: Topology, *, enabled: bool) -> Topology:
    services = dict(topology.services)
    services["payment"] = services["payment"].model_copy(update={"workers": 2, "accept_queue": 2})
    admission = topology.resilience.admission.model_copy(update={"enabled": enabled, "tokens_per_second": 3, "burst": 2})
    resilience = topology.resilience.model_copy(update={"admission": admission})
    return topology.model_copy(update={"services": services, "resilience": resilience})


def spike(stack: Stack) -> tuple[Counter, dict[str, CheckResult]]:
    """The spike's answers as the app saw them, and the payment SLOs over its window."""
    started = time.time()
    outcomes = asyncio.run(mixed_load(stack, card_rate=SPIKE_RATE, warmup=0.0, seconds=SPIKE_SECONDS, balance_clients=0))
    ended = time.time()  # the last answer: a starved client may take longer than SPIKE_SECONDS
    return outcomes["card"], {name: stack.slo(name, ended - started, ended=ended) for name in SPIKE_SLOS}


def test_admission_off_a_spike_breaches_the_payment_slos(defects: Stack) -> None:
    healthy = defects.topology
    with Toxiproxy(healthy.toxiproxy_url) as toxiproxy:
        toxiproxy.add_toxic("acquirer", "spike-latency", "latency", SPIKE_ACQUIRER)
        try:
            stacking.reconfigure(defects.run_dir, admission_tuned(healthy, enabled=True), ["gateway", "payment"])
            admitted, guarded = spike(defects)
            stacking.reconfigure(defects.run_dir, admission_tuned(healthy, enabled=False), ["gateway"])
            flooded, breached = spike(defects)
        finally:
            toxiproxy.remove_toxic("acquirer", "spike-latency")
            stacking.reconfigure(defects.run_dir, healthy, ["gateway", "payment"])
    outcomes = {phase: (dict(answers), {n: (r.verdict, r.observed, r.threshold, r.detail) for n, r in slos.items()})
                for phase, answers, slos in (("admission on", admitted, guarded), ("admission off", flooded, breached))}
    # On: the excess is told to come back later, and what is let in is served within the SLOs.
    assert admitted["429 TRY_AGAIN_SHORTLY"] > 0, outcomes
    assert all(r.verdict == "passed" for r in guarded.values()), outcomes
    # Off: everyone is let in, the payment replicas refuse what they cannot hold: 503s breach the SLO.
    assert flooded["503 OVERLOADED"] > 0, outcomes
    assert any(r.verdict == "failed" for r in breached.values()), outcomes


# The breaker probes and the recovery probe on one episode of a slow acquirer, under card traffic:
# the breaker opens on every replica, stays open OPEN_HOLD seconds more with the acquirer still
# slow (refused calls must fail fast), then the acquirer is fast again and card payments keep
# coming (half-open trial calls need calls) until the breaker has closed and the availability of
# payments is back, or the probes' deadlines have passed.
AFTER_BOUND = timedelta(seconds=25)  # closesWithin and recovery within, after the revert
BREAKER_PROBE = Breaker(name="acquirer", fails_fast_below=timedelta(milliseconds=100), closes_within=AFTER_BOUND)
RECOVERY_PROBE = Recovery(slo="payments-availability", within=AFTER_BOUND)
SLOW_ACQUIRER = {"latency": 3000, "jitter": 0}
OPEN_HOLD = OPEN_SETTLE + 3.0  # enough seconds open everywhere for refused calls alone to fill the rate window
AFTER_DEADLINE = AFTER_BOUND.total_seconds() + GRACE  # and the samples a deadline allows past it


@dataclass
class Episode:
    fails_fast: CheckResult
    closes: CheckResult
    recovery: CheckResult


def breakers_open(stack: Stack) -> int:
    series = stack.prometheus('count(resilience4j_circuitbreaker_state{name="acquirer",state="open"} == 1)')
    return int(float(series[0]["value"][1])) if series else 0


def breaker_episode(stack: Stack) -> Episode:
    slo = CATALOGUE.slo(RECOVERY_PROBE.slo)
    with Prometheus(stack.topology.prometheus_url) as prometheus, Toxiproxy(stack.topology.toxiproxy_url) as toxiproxy:
        sampler = Sampler(prometheus, CATALOGUE, [RECOVERY_PROBE.slo])
        sampler.start()
        try:
            toxiproxy.add_toxic("acquirer", "episode-latency", "latency", SLOW_ACQUIRER)
            injected = time.time()
            try:
                for _ in range(6):  # each replica judges its own five slow calls
                    asyncio.run(mixed_load(stack, card_rate=10, warmup=0.0, seconds=3.0, balance_clients=0))
                    if breakers_open(stack) == 3:
                        break
                assert breakers_open(stack) == 3, "the slow acquirer did not open every replica's breaker"
                asyncio.run(mixed_load(stack, card_rate=5, warmup=0.0, seconds=OPEN_HOLD, balance_clients=0))
            finally:
                toxiproxy.remove_toxic("acquirer", "episode-latency")
            reverted = time.time()
            deadline = reverted + AFTER_DEADLINE

            def after() -> tuple[CheckResult, CheckResult]:
                samples = sampler.snapshot()
                return (judge_breaker_closes(samples, reverted, BREAKER_PROBE, "after", CATALOGUE.vocabulary),
                        judge_recovery(samples, reverted, RECOVERY_PROBE, slo, "after"))

            while time.time() < deadline and not all(r.verdict == "passed" for r in after()):
                asyncio.run(mixed_load(stack, card_rate=4, warmup=0.0, seconds=1.0, balance_clients=0))
        finally:
            sampler.stop()
    closes, recovery = after()
    return Episode(judge_fails_fast(sampler.snapshot(), injected, reverted, BREAKER_PROBE, "expect", CATALOGUE.vocabulary), closes, recovery)


def test_breaker_probes_and_recovery_pass_on_the_healthy_breaker(defects: Stack) -> None:
    healthy = breaker_episode(defects)
    assert healthy.fails_fast.verdict == "passed", healthy
    assert healthy.closes.verdict == "passed", healthy
    assert healthy.recovery.verdict == "passed", healthy


def test_without_the_fallback_refused_card_calls_wait_and_fail_the_fails_fast_probe(defects: Stack) -> None:
    # A Retry decorated outside the breaker: each refused call is tried again until the acquirer
    # timeout (1.5 s) has passed, holding a worker as long as a slow call would.
    healthy = switched(defects, ["payment"], fallback=False)
    try:
        slow_refusals = breaker_episode(defects)
    finally:
        stacking.reconfigure(defects.run_dir, healthy, ["payment"])
    assert slow_refusals.fails_fast.verdict == "failed", slow_refusals
    assert slow_refusals.fails_fast.observed is not None and slow_refusals.fails_fast.observed >= 1.0, slow_refusals


def test_a_breaker_left_open_for_minutes_fails_the_closes_and_recovery_probes(defects: Stack) -> None:
    # waitDurationInOpenState of minutes: say, raised during an incident to stop flapping, and
    # left. The breaker refuses card payments long after the acquirer recovered.
    breaker = defects.topology.resilience.breaker
    healthy = switched(defects, ["payment"], breaker=breaker.model_copy(update={"wait_duration_in_open_state": timedelta(minutes=2)}))
    try:
        stuck = breaker_episode(defects)
    finally:
        stacking.reconfigure(defects.run_dir, healthy, ["payment"])
    assert stuck.fails_fast.verdict == "passed", stuck  # the breaker itself works: only its wait is wrong
    assert stuck.closes.verdict == "failed", stuck
    assert stuck.recovery.verdict == "failed", stuck
