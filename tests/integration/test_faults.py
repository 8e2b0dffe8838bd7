"""Every fault injected on the real stack, its effect observed, and reverted; the safety net around them.

The safety net: faults are recorded before injection, so `paychaos halt` undoes what a run killed
with SIGKILL left behind; `paychaos plan` touches nothing; blast-radius limits refuse; one
experiment at a time per stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from paychaos.experiments.spec import Fault, Limits
from paychaos.faults import records
from paychaos.faults.driving import InjectionFailed
from paychaos.faults.kafka import partition_leader
from paychaos.faults.planning import BlastRadiusExceeded, FaultPlan, partitions_needed, plan_fault
from paychaos.faults.records import FileLedger
from paychaos.faults.toxiproxy import Toxiproxy
from paychaos.platform.runtime.state import alive, marker_names
from paychaos.targets.local.driver import LocalDriver

from .traffic import pay_with_retries

pytestmark = pytest.mark.integration


def fault(**kind: Any) -> Fault:
    return Fault.model_validate({"at": "0s", "for": "30s", **kind})


def plan(stack, f: Fault, index: int, limits: Limits | None = None) -> FaultPlan:
    driver = LocalDriver(stack.run_dir)
    observed = driver.observe(partitions_needed([f]))
    return plan_fault(f, observed, limits or Limits(), experiment="test-faults", index=index)


def pids(stack) -> dict[str, int | None]:
    return {p.name: p.pid for p in stack.state().processes}


def toxics(stack) -> dict[str, list[str]]:
    with Toxiproxy(stack.topology.toxiproxy_url) as api:
        return {name: [t["name"] for t in proxy.get("toxics", [])] for name, proxy in api.proxies().items()}


def whole(stack) -> bool:
    state = stack.state()
    return (all(p.ready for p in state.processes) and not state.zones_down
            and not marker_names(stack.run_dir.held) and not any(toxics(stack).values()))


def wait_whole(stack, timeout: float = 120) -> None:
    stack.wait_for("the stack to be whole again", lambda: whole(stack), timeout=timeout)


def health_latency(url: str, samples: int = 5) -> float:
    """The best of a few GETs: on a shared 2-core box the minimum is the honest figure."""
    best = float("inf")
    with httpx.Client(timeout=10) as client:
        for _ in range(samples):
            started = time.perf_counter()
            client.get(f"{url}/health/live", headers={"Connection": "close"}).raise_for_status()
            best = min(best, time.perf_counter() - started)
    return best


# -- each fault, in and out -------------------------------------------------------------------


def test_pod_kill_kills_the_planned_replica_and_revert_waits_until_it_is_back(stack) -> None:
    driver = LocalDriver(stack.run_dir)
    p = plan(stack, fault(podKill={"service": "payment", "zone": "az-b"}), 0)
    assert [r.name for r in p.replicas] == ["payment-az-b-1"]
    victim = p.replicas[0]
    assert victim.pid == pids(stack)["payment-az-b-1"]
    record = records.inject(FileLedger(stack.run_dir.root), driver, p)
    assert FileLedger(stack.run_dir.root).read(record.id) is not None
    stack.wait_for("the victim to die", lambda: not alive(victim.pid, victim.started), timeout=5, interval=0.05)
    assert records.revert(FileLedger(stack.run_dir.root), driver, record.id) == record
    now = stack.state().process("payment-az-b-1")
    assert now.ready and now.pid not in (None, victim.pid)
    assert driver.verify_reverted(record)
    # Reverting again is fine: through the ledger (nothing recorded) and by the driver itself.
    assert records.revert(FileLedger(stack.run_dir.root), driver, record.id) is None
    driver.revert(record)
    assert stack.state().process("payment-az-b-1").pid == now.pid


def payment_counter(stack, series: str, label: str, outside: str | None = None) -> int:
    """A counter's series with ``label`` (``step="reserve"``), summed over the payment replicas
    (those outside the zone ``outside``, whose replicas are down), read from their own metrics."""
    total = 0.0
    with httpx.Client(timeout=5) as client:
        for replica in stack.topology.replicas_of("payment"):
            if replica.zone == outside:
                continue
            text = client.get(f"http://{stack.topology.host}:{replica.port}/metrics").text
            total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith(f"{series}{{") and label in line)
    return int(total)


@contextlib.contextmanager
def paying(users: list[str], pay_one: Callable[[httpx.Client, str], int]) -> Iterator[list[int]]:
    """Each user paying over and over, on a thread of its own, until the block ends; the statuses."""
    statuses: list[int] = []
    stop = threading.Event()

    def loop(user: str) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                statuses.append(pay_one(client, user))

    payers = [threading.Thread(target=loop, args=(u,)) for u in users]
    for t in payers:
        t.start()
    try:
        yield statuses
    finally:
        stop.set()
        for t in payers:
            t.join()


def test_a_ledger_killed_while_applying_a_reserve_has_it_sent_again_and_no_payment_fails(stack) -> None:
    """The kill waits for a reserve in flight on the victim (its work_in_flight gauge), so the
    saga's retry of a cut reserve is what keeps the payment alive, every time."""
    driver = LocalDriver(stack.run_dir)
    ledger = FileLedger(stack.run_dir.root)
    users = [stack.fresh_user() for _ in range(4)]
    # The database 400 ms slower per round trip: a reserve is one statement, so at 30 ms it was
    # answered ~35 ms after it began, before the kill's 50 ms hold was up, and the kill could land
    # on a replica whose reserve had just been answered. At 150 ms a CI run once cut none: the
    # kill lands within 20 ms of the poll that saw the reserve (IN_FLIGHT_FRESH), and a reserve
    # seen late in its 150 ms could be answered in between.
    slow = records.inject(ledger, driver, plan(stack, fault(slowDownstream={"proxy": "ledger-db", "latency": "400ms"}), 7))
    before = payment_counter(stack, "payment_ledger_retries_total", 'step="reserve"')
    try:
        with paying(users, lambda client, user: stack.pay(client, user, 100).status_code) as statuses:
            p = plan(stack, fault(podKill={"service": "ledger", "zone": "az-b", "inFlightKind": "reserve"}), 8)
            assert p.in_flight_kind == "reserve" and "while applying a reserve" in p.headline()
            killed = records.inject(ledger, driver, p)
            ((victim,),) = [killed.effect["killed"]]
            assert victim["inFlightKind"] == "reserve" and victim["inFlight"] >= 1, victim
            assert victim["seenMsBeforeKill"] < 400, victim  # the kill came while the reserve seen was still out
            records.revert(ledger, driver, killed.id)
            time.sleep(2)  # the sagas of the cut reserves finish
    finally:
        records.revert(ledger, driver, slow.id)
    assert statuses and set(statuses) == {201}, sorted(set(statuses))
    assert payment_counter(stack, "payment_ledger_retries_total", 'step="reserve"') - before >= 1


def test_a_kill_waiting_for_work_the_replica_does_not_report_is_refused_naming_what_it_does(stack) -> None:
    driver = LocalDriver(stack.run_dir)
    p = plan(stack, fault(podKill={"service": "ledger", "zone": "az-b", "inFlightKind": "reserv"}), 9)
    pid = pids(stack)["ledger-az-b-1"]
    with pytest.raises(InjectionFailed) as refused:
        records.inject(FileLedger(stack.run_dir.root), driver, p)
    assert "reports no reserv work in flight" in str(refused.value) and "reserve" in str(refused.value)
    assert pids(stack)["ledger-az-b-1"] == pid, "nothing was killed"


def test_zone_loss_holds_every_process_of_the_zone_down_until_reverted(stack) -> None:
    """The zone goes down while its payment replica has a card authorization out (card calls
    300 ms slower), so it cuts a payment in half: a surviving zone's recovery loop resumes it, and
    the app's retry under the same key gets its answer."""
    driver = LocalDriver(stack.run_dir)
    ledger = FileLedger(stack.run_dir.root)
    p = plan(stack, fault(zoneLoss={"zone": "az-b", "inFlight": {"service": "payment", "kind": "authorization"}}), 1)
    in_zone = {x.name for x in stack.state().processes if x.zone == "az-b"}
    assert {r.name for r in p.replicas} | {b.name for b in p.brokers} == in_zone
    assert [b.id for b in p.brokers] == [2]
    assert p.in_flight_on == "payment-az-b-1" and "while payment-az-b-1 is applying a authorization" in p.headline()
    slow = records.inject(ledger, driver, plan(stack, fault(slowDownstream={"proxy": "acquirer", "latency": "300ms"}), 10))

    def takeovers() -> int:  # by the replicas left: az-b's are down, their counters with them
        return payment_counter(stack, "payment_takeovers_total", 'reason="abandoned"', outside="az-b")

    before = takeovers()
    users = [stack.fresh_user() for _ in range(4)]
    record = None
    try:
        with paying(users, lambda client, user: pay_with_retries(stack, client, user, 100, "card").status_code) as answers:
            record = records.inject(ledger, driver, p)
            cut = record.effect["cut"]
            assert cut["replica"] == "payment-az-b-1" and cut["inFlightKind"] == "authorization" and cut["inFlight"] >= 1, cut
            time.sleep(2)  # several supervisor ticks and restart back-offs: nothing may come back
            state = stack.state()
            assert state.zones_down == ["az-b"]
            assert not any(x.pid for x in state.processes if x.zone == "az-b")
            assert all(x.ready for x in state.processes if x.zone == "az-a")
            assert not driver.verify_reverted(record)
            stack.wait_for("the cut payment to be resumed in another zone", lambda: takeovers() > before,
                           timeout=15, interval=0.5)
    finally:
        if record is not None:
            records.revert(ledger, driver, record.id)
        records.revert(ledger, driver, slow.id)
    # Every payment answered in the end, the cut ones included (the simulator declines about 2 %).
    assert answers and set(answers) <= {201, 402}, sorted(set(answers))
    assert not (stack.run_dir.zones_down / "az-b").exists()
    stack.wait_for("az-b to come back", lambda: driver.verify_reverted(record), timeout=120)
    driver.revert(record)
    assert driver.verify_reverted(record)
    wait_whole(stack)


def test_kafka_broker_failure_takes_down_the_partition_leader_until_reverted(stack) -> None:
    driver = LocalDriver(stack.run_dir)
    f = fault(kafkaBrokerFailure={"leaderOf": {"topic": "payments", "partition": 0}})
    leader = partition_leader(stack.topology.bootstrap_servers, "payments", 0)
    p = plan(stack, f, 2)
    assert [b.id for b in p.brokers] == [leader]
    name = f"kafka-{leader}"
    record = records.inject(FileLedger(stack.run_dir.root), driver, p)
    try:
        assert (stack.run_dir.held / name).exists()
        assert stack.state().process(name).pid is None
        # The cluster notices: another node takes over the partition.
        stack.wait_for("a new leader for payments-0", lambda: partition_leader(stack.topology.bootstrap_servers, "payments", 0) != leader,
                       timeout=60, interval=1)
        assert stack.state().process(name).pid is None
    finally:
        records.revert(FileLedger(stack.run_dir.root), driver, record.id)
    stack.wait_for(f"{name} to come back", lambda: driver.verify_reverted(record), timeout=120)
    driver.revert(record)


def stopped(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def test_a_leader_killed_after_its_followers_stalled_dies_while_they_are_stopped(stack) -> None:
    wait_whole(stack)
    driver = LocalDriver(stack.run_dir)
    p = plan(stack, fault(kafkaBrokerFailure={"leaderOf": {"topic": "payments", "partition": 1}, "followersStalled": "2s"}), 5)
    leader = p.brokers[0].name
    followers = sorted(b.name for b in p.stalled)
    assert len(followers) == 2 and leader not in followers
    record = records.inject(FileLedger(stack.run_dir.root), driver, p)
    try:
        effect = record.effect
        assert sorted(s["name"] for s in effect["stalled"]) == followers
        assert effect["stalledSeconds"] >= 2.0, effect
        assert effect["down"] == [leader] and stack.state().process(leader).pid is None
        # Resumed once the leader was dead: running again, and still in the cluster.
        state = stack.state()
        assert not any(stopped(state.process(name).pid) for name in followers)
        stack.wait_for("a follower to lead payments-1", lambda: f"kafka-{partition_leader(stack.topology.bootstrap_servers, 'payments', 1)}" in followers,
                       timeout=60, interval=1)
    finally:
        records.revert(FileLedger(stack.run_dir.root), driver, record.id)
    stack.wait_for(f"{leader} to come back", lambda: driver.verify_reverted(record), timeout=120)


def test_halt_resumes_the_nodes_a_run_killed_mid_stall_left_stopped(stack) -> None:
    wait_whole(stack)
    f = fault(kafkaBrokerFailure={"broker": 1, "followersStalled": "60s"}, **{"for": "90s"})
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(f.model_dump(by_alias=True, mode="json")), "11"],
        env={**os.environ, **stack.env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        stack.wait_for("kafka-2 and kafka-3 to be stopped",
                       lambda: child.poll() is None and all(stopped(stack.state().process(n).pid) for n in ("kafka-2", "kafka-3")),
                       timeout=30, interval=0.2)
    finally:
        child.kill()  # SIGKILL mid-stall: nothing resumes them but halt
        child.wait()
        stderr = child.stderr.read()
        child.stderr.close()
    assert all(stopped(stack.state().process(n).pid) for n in ("kafka-2", "kafka-3")), stderr
    halted = stack.cli("halt", timeout=300)
    assert halted.returncode == 0 and "reverted killed-run-11" in halted.stderr, halted.stderr
    assert not any(stopped(stack.state().process(n).pid) for n in ("kafka-2", "kafka-3"))
    assert stack.state().process("kafka-1").pid is not None  # killed only at the stall's end
    wait_whole(stack)


def test_slow_downstream_adds_latency_through_the_proxy_until_reverted(stack) -> None:
    driver = LocalDriver(stack.run_dir)
    url = stack.topology.internal_url("acquirer")
    before = health_latency(url)
    p = plan(stack, fault(slowDownstream={"proxy": "acquirer", "latency": "300ms"}), 3)
    assert [t.name for t in p.toxics] == ["paychaos-test-faults-3-latency"]
    record = records.inject(FileLedger(stack.run_dir.root), driver, p)
    try:
        assert toxics(stack)["acquirer"] == ["paychaos-test-faults-3-latency"]
        during = health_latency(url)
    finally:
        records.revert(FileLedger(stack.run_dir.root), driver, record.id)
    after = health_latency(url)
    assert during - before >= 0.25, (before, during)
    assert during - after >= 0.25, (during, after)
    assert toxics(stack)["acquirer"] == []
    assert driver.verify_reverted(record)
    driver.revert(record)  # the toxic is gone already: fine


def admission_of(stack) -> dict[str, dict[str, Any]]:
    with httpx.Client(timeout=5) as client:
        return {r.name: client.get(f"http://{stack.topology.host}:{r.port}/admin/admission").json()
                for r in stack.topology.replicas_of("gateway")}


def refusal_reasons(stack, devices: int) -> list[str | None]:
    """One status read for each of ``devices`` phones never seen before: why each was refused."""
    reasons = []
    with httpx.Client(base_url=stack.topology.edge_url, timeout=10) as client:
        for _ in range(devices):
            r = client.get("/v1/campaign/status", params={"user_id": "u00001"}, headers={"X-Device-Id": os.urandom(8).hex()})
            reasons.append(r.json()["error"].get("reason") if r.status_code == 429 else None)
    return reasons


def test_admission_restriction_restricts_every_gateway_until_reverted(stack) -> None:
    driver = LocalDriver(stack.run_dir)
    assert refusal_reasons(stack, 20) == [None] * 20  # the topology admits every group
    p = plan(stack, fault(admissionRestriction={"allowedPercent": 30, "rotation": "10s", "flowTtl": "20s"}), 6)
    assert sorted(r.name for r in p.replicas) == sorted(r.name for r in stack.topology.replicas_of("gateway"))
    record = records.inject(FileLedger(stack.run_dir.root), driver, p)
    try:
        assert {a["restricted"] for a in record.effect["replicas"].values()} == {True}
        assert {(a["allowedPercent"], a["rotation"], a["flowTtl"]) for a in admission_of(stack).values()} == {(30, 10.0, 20.0)}
        reasons = refusal_reasons(stack, 60)
        # About 70 % of new phones are out of turn; each refusal says which rule refused it.
        assert 20 <= reasons.count("rotated_out") <= 58 and set(reasons) <= {None, "rotated_out"}, reasons
        # Operators' endpoints are not reachable through the edge.
        assert httpx.get(f"{stack.topology.edge_url}/admin/admission", timeout=5).status_code == 404
    finally:
        records.revert(FileLedger(stack.run_dir.root), driver, record.id)
    assert {a["restricted"] for a in admission_of(stack).values()} == {False}
    assert driver.verify_reverted(record)
    assert refusal_reasons(stack, 20) == [None] * 20


def test_poison_events_land_in_every_partition_and_are_skipped(stack) -> None:
    driver = LocalDriver(stack.run_dir)
    record = records.inject(FileLedger(stack.run_dir.root), driver, plan(stack, fault(poisonEvents={"topic": "payments", "count": 2}), 7))
    assert record.effect["total"] == 2 * stack.topology.kafka.topics["payments"].partitions
    records.revert(FileLedger(stack.run_dir.root), driver, record.id)
    def skipped() -> float:
        result = stack.prometheus("sum(campaign_poison_skipped_total)")
        return float(result[0]["value"][1]) if result else 0.0

    # Each record is skipped once: the consumer goes on past it (a stalled partition never gets there).
    stack.wait_for("the consumer to skip every poison record", lambda: skipped() >= record.effect["total"], timeout=60)


# -- the safety net ---------------------------------------------------------------------------


def test_blast_radius_is_refused_before_anything_is_touched(stack) -> None:
    from paychaos.ctk.actions import FaultNotInjected, inject_fault

    before = pids(stack)
    with pytest.raises(BlastRadiusExceeded, match="would hit 2 of 3 replicas"):
        plan(stack, fault(podKill={"service": "payment", "count": 2}), 4)
    # As a Chaos Toolkit action the refusal names the fault and says it was refused.
    too_big = fault(podKill={"service": "ledger", "percent": 100}).model_dump(by_alias=True, mode="json")
    with pytest.raises(FaultNotInjected, match="podKill-4 refused: .*3 of 3 replicas"):
        inject_fault(too_big, "test-faults", 4)
    with pytest.raises(FaultNotInjected, match="zoneLoss-4 refused: .*allowZoneLoss is false"):
        inject_fault(fault(zoneLoss={"zone": "az-a"}).model_dump(by_alias=True, mode="json"), "test-faults", 4,
                     limits={"allowZoneLoss": False})
    assert records.active_records(FileLedger(stack.run_dir.root)) == []
    assert pids(stack) == before


CHILD = """
import json, sys, time
from paychaos.ctk.actions import inject_fault
print(json.dumps(inject_fault(json.loads(sys.argv[1]), "killed-run", int(sys.argv[2]))), flush=True)
time.sleep(600)
"""


def test_halt_reverts_what_runs_killed_with_sigkill_left_behind(stack) -> None:
    wait_whole(stack)
    faults = [
        fault(podKill={"service": "payment", "zone": "az-a"}),
        fault(zoneLoss={"zone": "az-c"}),
        fault(kafkaBrokerFailure={"broker": 3}),  # in the lost zone too: two holds on one node
        fault(slowDownstream={"proxy": "acquirer", "latency": "300ms", "timeout": "20s"}),
        fault(admissionRestriction={"allowedPercent": 10, "rotation": "10s", "flowTtl": "20s"}),
    ]
    for index, f in enumerate(faults):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(f.model_dump(by_alias=True, mode="json")), str(index)],
            env={**os.environ, **stack.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.poll() is not None else "no output"
            assert json.loads(line)["id"] == f"killed-run-{index}"
        finally:
            child.kill()  # SIGKILL: no handler, no finally, no revert
            child.wait()
            child.stdout.close()
            child.stderr.close()
    state = stack.state()
    assert state.zones_down == ["az-c"] and marker_names(stack.run_dir.held) == ["kafka-3"]
    assert len(toxics(stack)["acquirer"]) == 2
    with httpx.Client(timeout=5) as client:
        port = next(r.port for r in stack.topology.replicas_of("gateway", "az-a"))
        assert client.get(f"http://{stack.topology.host}:{port}/admin/admission").json()["restricted"]
    assert [r.id for r in records.active_records(FileLedger(stack.run_dir.root))] == [f"killed-run-{i}" for i in range(5)]

    halted = stack.cli("halt", timeout=300)
    assert halted.returncode == 0, halted.stderr
    assert {a["restricted"] for a in admission_of(stack).values()} == {False}
    for i in range(5):
        assert f"reverted killed-run-{i}" in halted.stderr
    assert "whole again" in halted.stderr
    wait_whole(stack, timeout=30)
    assert records.active_records(FileLedger(stack.run_dir.root)) == []

    again = stack.cli("halt")
    assert again.returncode == 0 and "nothing to revert" in again.stderr


def test_halt_leaves_a_live_runs_faults_alone_unless_forced(stack) -> None:
    f = fault(slowDownstream={"proxy": "acquirer", "latency": "100ms"})
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(f.model_dump(by_alias=True, mode="json")), "9"],
        env={**os.environ, **stack.env}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert child.stdout.readline()
        polite = stack.cli("halt")
        assert polite.returncode == 0 and "left killed-run-9 to its live run" in polite.stderr
        assert toxics(stack)["acquirer"] == ["paychaos-killed-run-9-latency"]
        forced = stack.cli("halt", "--force")
        assert forced.returncode == 0 and "reverted killed-run-9" in forced.stderr, forced.stderr
        assert toxics(stack)["acquirer"] == []
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


SPEC = """
apiVersion: paychaos.io/v1alpha1
kind: ChaosExperiment
metadata: {{name: plan-only}}
spec:
  description: Every kind of fault, planned and never injected.
  limits: {{allowZoneLoss: {allow_zone_loss}}}
  faults:
    - {{at: 5s, for: 20s, podKill: {{service: gateway, zone: az-b}}}}
    - {{at: 10s, for: 20s, zoneLoss: {{zone: az-c}}}}
    - {{at: 15s, for: 20s, kafkaBrokerFailure: {{leaderOf: {{topic: payments, partition: 1}}}}}}
    - {{at: 20s, for: 20s, slowDownstream: {{proxy: acquirer, latency: 3000ms, jitter: 200ms}}}}
"""


def plan_while_leadership_stands(stack, path: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """`paychaos plan`, and the leader of payments-1 it was taken under (unchanged before and after)."""
    for _ in range(5):
        leader = partition_leader(stack.topology.bootstrap_servers, "payments", 1)
        shown = stack.cli("plan", str(path), *flags)
        if partition_leader(stack.topology.bootstrap_servers, "payments", 1) == leader:
            break
        time.sleep(2)
    return shown, leader


def test_plan_shows_exactly_what_would_be_hit_and_changes_nothing(stack, tmp_path) -> None:
    wait_whole(stack)
    path = tmp_path / "plan-only.yaml"
    path.write_text(SPEC.format(allow_zone_loss="true"))
    before = pids(stack)
    # Leadership may still move back to a preferred replica after earlier tests restarted brokers:
    # compare each plan with the leader it was taken under, while it stood still (a CI run saw it
    # move between the text plan and the JSON one).
    shown, leader = plan_while_leadership_stands(stack, path)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "faults[0] at 5s for 20s — podKill" in out
    assert f"replica   gateway-az-b-1  zone az-b  pid {before['gateway-az-b-1']}" in out
    assert "zone      az-c" in out and f"replica   ledger-az-c-1  zone az-c  pid {before['ledger-az-c-1']}" in out
    assert f"broker    {leader} (kafka-{leader})" in out and "leader of payments-1" in out, out
    assert "proxy     acquirer" in out and "paychaos-plan-only-3-latency: latency +3000ms ±200ms" in out

    as_json, leader = plan_while_leadership_stands(stack, path, "--json")
    assert as_json.returncode == 0, as_json.stderr
    planned = json.loads(as_json.stdout)["faults"]
    assert [f["kind"] for f in planned] == ["podKill", "zoneLoss", "kafkaBrokerFailure", "slowDownstream"]
    assert planned[0]["replicas"][0]["pid"] == before["gateway-az-b-1"]
    assert planned[2]["brokers"][0]["id"] == leader

    path.write_text(SPEC.format(allow_zone_loss="false"))
    refused = stack.cli("plan", str(path))
    assert refused.returncode == 1 and "allowZoneLoss" in refused.stderr and "Traceback" not in refused.stderr

    assert pids(stack) == before
    assert whole(stack) and records.active_records(FileLedger(stack.run_dir.root)) == []


def test_one_experiment_at_a_time_and_a_dead_runs_lock_is_taken_over(stack) -> None:
    driver = LocalDriver(stack.run_dir)
    with records.acquire_lock(FileLedger(stack.run_dir.root), "first", driver):
        with pytest.raises(records.ExperimentLocked) as locked:
            records.acquire_lock(FileLedger(stack.run_dir.root), "second", driver)
        assert f"experiment 'first' (pid {os.getpid()}" in str(locked.value) and " since " in str(locked.value)
    assert not FileLedger(stack.run_dir.root).lock_path.exists()

    # A run that died holding the lock, with a fault still in: the next run halts it and goes on.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner = records.Owner(pid=dead.pid, started=psutil.Process(dead.pid).create_time())
    dead.wait()
    p = plan(stack, fault(slowDownstream={"proxy": "acquirer", "latency": "100ms"}), 5)
    record = records.inject(FileLedger(stack.run_dir.root), driver, p)
    FileLedger(stack.run_dir.root).write(record.model_copy(update={"owner": dead_owner}))
    FileLedger(stack.run_dir.root).lock_path.write_text(
        records.LockHolder(experiment="died", started=time.time(), owner=dead_owner).model_dump_json())
    with records.acquire_lock(FileLedger(stack.run_dir.root), "next", driver) as lock:
        assert lock.holder.pid == os.getpid()
        assert records.active_records(FileLedger(stack.run_dir.root)) == []
        assert toxics(stack)["acquirer"] == []
    assert not FileLedger(stack.run_dir.root).lock_path.exists()
