"""The targets seam, with a fake target of our own: how the engine finds a target, and what the
fault ledger does when an injection or a revert fails. No stack, no processes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from paychaos import targets
from paychaos.ctk import actions, timeline
from paychaos.experiments.compiling import compile_experiment
from paychaos.experiments.loading import load_experiment
from paychaos.faults import records
from paychaos.faults.driving import InjectionFailed, RevertFailed
from paychaos.faults.planning import FaultPlan, Observed, ObservedProxy, PartitionRef
from paychaos.faults.records import FaultRecord, LockHolder, Owner
from paychaos.probes.series import Vocabulary
from paychaos.targets import Endpoints, Inventory, UnsupportedTarget

ROOT = Path(__file__).resolve().parents[2]
SLOW = {"at": "0s", "for": "10s", "slowDownstream": {"proxy": "card", "latency": "2s"}}


class MemoryLedger:
    """A fault ledger in memory: the seam's contract without files."""

    where = "memory"

    def __init__(self) -> None:
        self.stored: dict[str, FaultRecord] = {}
        self.lock: LockHolder | None = None

    def write(self, record: FaultRecord) -> None:
        self.stored[record.id] = record

    def read(self, fault_id: str) -> FaultRecord | None:
        return self.stored.get(fault_id)

    def records(self) -> list[FaultRecord]:
        return list(self.stored.values())

    def forget(self, fault_id: str) -> None:
        self.stored.pop(fault_id, None)

    def read_lock(self) -> LockHolder | None:
        return self.lock

    def try_lock(self, holder: LockHolder) -> bool:
        if self.lock is not None:
            return False
        self.lock = holder
        return True

    def lock_just_taken(self) -> bool:
        return False

    def unlock(self) -> None:
        self.lock = None


class FakeDriver:
    name = "fake"

    def __init__(self) -> None:
        self.toxics: set[str] = set()
        self.fail_inject = False
        self.fail_revert = False

    def observe(self, partitions: Sequence[PartitionRef] = ()) -> Observed:
        return Observed(zones=("az-a",), replicas=(), proxies=(ObservedProxy("card", "127.0.0.1:1", tuple(self.toxics)),))

    def inject(self, plan: FaultPlan) -> dict[str, Any]:
        self.toxics.add(plan.id)
        if self.fail_inject:
            raise InjectionFailed("the toxic did not show up")
        return {"toxics": sorted(self.toxics)}

    def revert(self, record: FaultRecord) -> None:
        if self.fail_revert:
            raise RevertFailed("proxy API unreachable")
        self.toxics.discard(record.id)

    def verify_reverted(self, record: FaultRecord) -> bool:
        return record.id not in self.toxics


class FakeTarget:
    platform = "fake"
    where = "a fake stack"

    def __init__(self) -> None:
        self.fault_driver = FakeDriver()
        self.fault_ledger = MemoryLedger()

    def endpoints(self) -> Endpoints:
        return Endpoints("http://127.0.0.1:1", "http://127.0.0.1:2")

    def driver(self) -> FakeDriver:
        return self.fault_driver

    def ledger(self) -> MemoryLedger:
        return self.fault_ledger

    def not_ready(self) -> str | None:
        return None

    def unsettled(self, vocabulary: Vocabulary) -> list[str]:
        return []

    def calls_to_open(self, breaker: str) -> int | None:
        return None

    def vocabulary(self, catalogue: Vocabulary) -> Vocabulary:
        return catalogue

    def inventory(self) -> Inventory | None:
        return Inventory(replicas={}, zones=("az-a",), proxies=("card",), topics={}, brokers=())

    def arguments(self) -> dict[str, str]:
        return {"platform": self.platform, "location": "fake"}


@pytest.fixture
def fake() -> Iterator[FakeTarget]:
    target = FakeTarget()
    targets.register("fake", lambda location: target)
    timeline.mark_method_started()
    try:
        yield target
    finally:
        targets.unregister("fake")
        timeline.reset()


def test_compiled_activities_carry_their_target() -> None:
    arguments = {"platform": "local", "location": "/srv/paychaos/run"}
    compiled = compile_experiment(load_experiment(ROOT / "experiments" / "acquirer-slowdown.yaml"), arguments, "out")
    faults = [a for a in compiled["method"] if a["name"].startswith(("inject-", "revert-"))] + compiled["rollbacks"]
    assert faults and all(a["provider"]["arguments"]["target"] == arguments for a in faults)
    assert compiled["controls"][0]["provider"]["arguments"]["target"] == arguments


def test_an_unknown_platform_is_refused_and_a_registered_one_resolves(fake: FakeTarget, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    with pytest.raises(UnsupportedTarget, match=r"no driver for target platform 'nomad' yet: supported are external, fake, kubernetes, local"):
        targets.resolve("nomad", "payments")
    assert targets.resolve("kubernetes", "payments").where == "namespace payments"  # no cluster is reached until used
    assert targets.from_arguments(fake.arguments()) is fake
    # An export from before activities carried their target: the local stack of PAYCHAOS_RUN_DIR.
    monkeypatch.setenv("PAYCHAOS_RUN_DIR", str(tmp_path / "elsewhere"))
    local = targets.from_arguments(None)
    assert local.platform == "local" and local.arguments()["location"] == str(tmp_path / "elsewhere")


def test_a_fault_is_injected_and_reverted_on_the_target_its_arguments_name(fake: FakeTarget) -> None:
    out = actions.inject_fault(SLOW, "x", 0, target=fake.arguments())
    assert out["effect"] == {"toxics": ["x-0"]} and fake.fault_ledger.read("x-0") is not None
    assert actions.revert_fault("x", 0, target=fake.arguments())["reverted"] is True
    assert fake.fault_driver.toxics == set() and fake.fault_ledger.records() == []


def test_a_failed_injection_is_reverted_and_forgotten_before_the_error(fake: FakeTarget) -> None:
    fake.fault_driver.fail_inject = True
    with pytest.raises(actions.FaultNotInjected, match=r"slowDownstream-0 failed: .*the toxic did not show up"):
        actions.inject_fault(SLOW, "x", 0, target=fake.arguments())
    assert fake.fault_driver.toxics == set() and fake.fault_ledger.records() == []


def test_a_failed_revert_keeps_the_record_for_halt_which_says_what_is_left(fake: FakeTarget) -> None:
    actions.inject_fault(SLOW, "x", 0, target=fake.arguments())
    fake.fault_driver.fail_revert = True
    with pytest.raises(RevertFailed):
        records.revert(fake.fault_ledger, fake.fault_driver, "x-0")
    assert fake.fault_ledger.read("x-0") is not None
    with pytest.raises(records.HaltIncomplete, match=r"1 fault\(s\) not reverted \(x-0: proxy API unreachable\)") as caught:
        records.halt(fake.fault_ledger, fake.fault_driver)
    assert caught.value.reverted == [] and [r.id for r, _ in caught.value.failures] == ["x-0"]
    fake.fault_driver.fail_revert = False
    assert [r.id for r in records.halt(fake.fault_ledger, fake.fault_driver)] == ["x-0"]
    assert fake.fault_driver.toxics == set() and fake.fault_ledger.records() == []


def test_the_lock_is_one_run_at_a_time_and_a_dead_runs_lock_is_taken_over(fake: FakeTarget) -> None:
    ledger, driver = fake.fault_ledger, fake.fault_driver
    with records.acquire_lock(ledger, "first", driver):
        with pytest.raises(records.ExperimentLocked, match=r"memory is locked by experiment 'first'"):
            records.acquire_lock(ledger, "second", driver)
    assert ledger.read_lock() is None
    # A run that died holding the lock, with a fault still injected: the next run reverts it first.
    dead = Owner(pid=2**22 + 12345, started=1.0)
    actions.inject_fault(SLOW, "died", 0, target=fake.arguments())
    ledger.write(ledger.stored["died-0"].model_copy(update={"owner": dead}))
    ledger.lock = LockHolder(experiment="died", started=1.0, owner=dead)
    with records.acquire_lock(ledger, "next", driver) as lock:
        assert lock.holder.experiment == "next" and driver.toxics == set() and ledger.records() == []


def test_every_fault_kind_has_a_planner_a_headline_and_a_local_driver_and_every_check_kind_a_judge() -> None:
    # Adding a kind means one model in the spec plus one entry in each registry: nothing else
    # dispatches on the kind, so a missing entry is the only way to forget one.
    from paychaos.experiments.spec import CHECK_KINDS, FAULT_KINDS
    from paychaos.faults.planning import HEADLINES, PLANNERS
    from paychaos.probes.judging import JUDGES
    from paychaos.targets.local.driver import FAULT_KINDS as LOCAL

    assert set(PLANNERS) == set(HEADLINES) == set(LOCAL) == set(FAULT_KINDS)
    assert set(JUDGES) == set(CHECK_KINDS)


def _context(target: FakeTarget, vocabulary: Vocabulary | None = None) -> Any:
    """A run of acquirer-slowdown on the fake target, its method started long enough ago that no
    check waits for its window."""
    import time

    from paychaos.experiments.context import RunContext
    from paychaos.probes.catalogue import load_catalogue

    catalogue = load_catalogue(ROOT / "probes")
    if vocabulary is not None:
        catalogue = type(catalogue)(catalogue.root, catalogue.slos, catalogue.invariants, catalogue.exercises, vocabulary)
    ctx = RunContext(experiment=load_experiment(ROOT / "experiments" / "acquirer-slowdown.yaml"), target=target,
                     endpoints=Endpoints("http://127.0.0.1:9", "http://127.0.0.1:9"), catalogue=catalogue, out_dir=Path("out"))
    ctx.method_started = time.time() - 300
    return ctx


def test_a_check_that_cannot_reach_its_evidence_is_an_error_that_says_where(fake: FakeTarget) -> None:
    from paychaos.experiments.spec import Check
    from paychaos.probes.judging import judge

    ctx = _context(fake)
    # No sample showed the breaker open, and the target's Prometheus cannot say whether it had the chance.
    [opens] = judge(ctx, Check.model_validate({"breaker": {"name": "acquirer", "opensWithin": "5s"}}), "expect")
    assert opens.verdict == "error" and "Prometheus at http://127.0.0.1:9 is unreachable" in opens.detail
    [slo] = judge(ctx, Check.model_validate({"slo": {"name": "payments-availability", "above": 0.99}}), "expect")
    assert slo.verdict == "error" and "127.0.0.1:9" in slo.detail


def test_a_breaker_whose_vocabulary_cannot_tell_if_it_had_the_chance_is_inconclusive_not_failed(fake: FakeTarget) -> None:
    from paychaos.experiments.spec import Check
    from paychaos.probes.judging import judge

    bare = Vocabulary.model_validate({"traffic": {"rps": "r", "errorRatio": "e", "p99": "p"},
                                      "breakers": {"names": {"acquirer": {"open": "o"}}}})
    [opens] = judge(_context(fake, bare), Check.model_validate({"breaker": {"name": "acquirer", "opensWithin": "5s"}}), "expect")
    assert opens.verdict == "inconclusive" and "no calls or states series for breaker 'acquirer'" in opens.detail


def test_a_stop_condition_that_holds_records_why_and_stops_the_run_once(fake: FakeTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    from paychaos.ctk import control
    from paychaos.probes.verdicts import Sample

    class Samples:
        def __init__(self, samples: list[Sample]) -> None:
            self.samples = samples

        def snapshot(self) -> list[Sample]:
            return self.samples

    stopped: list[bool] = []
    monkeypatch.setattr(control, "exit_gracefully", lambda: stopped.append(True))
    ctx = _context(fake)  # acquirer-slowdown stops on payments-error-ratio above 0.5 for 10s
    start = ctx.method_started
    calm = [Sample(start + t, {"slo:payments-error-ratio": 0.2}) for t in range(30)]
    ctx.sampler = Samples(calm)
    control._watch_stop_conditions(ctx)
    assert (ctx.stop_reason, stopped) == (None, [])
    ctx.sampler = Samples(calm + [Sample(start + 30 + t, {"slo:payments-error-ratio": 0.8}) for t in range(12)])
    control._watch_stop_conditions(ctx)
    control._watch_stop_conditions(ctx)  # already stopping: not again
    assert ctx.stop_reason == "payments-error-ratio above 0.5 for 10s (at t=40.0s)" and stopped == [True]
    assert [e.event for e in ctx.timeline] == ["stop-condition-met"]
