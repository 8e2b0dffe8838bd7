"""The platform survives what it promises to: a killed replica, a dead broker, a slow card network.

And it shows why the breaker exists: switched off, a slow acquirer takes balance payments down too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta

import httpx
import pytest

from paychaos.faults.toxiproxy import Toxiproxy
from paychaos.platform.runtime import stacking
from paychaos.platform.runtime.balancing import servers_not_up
from paychaos.probes.verdicts import CheckResult

from .traffic import breakers_open, mixed_load, pay_with_retries, success_ratio

pytestmark = pytest.mark.integration


def test_killed_payment_replica_is_restarted_and_traffic_keeps_flowing(stack) -> None:
    victim = stack.state().process("payment-az-a-1")
    assert victim and victim.pid and victim.ready
    results: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=15) as client:
            i = 0
            while not stop.is_set():
                results.append(pay_with_retries(stack, client, f"u{1100 + i % 50:05d}", 150).status_code)
                i += 1

    worker = threading.Thread(target=traffic)
    worker.start()
    time.sleep(1)
    os.kill(victim.pid, signal.SIGKILL)
    back = stack.wait_for(
        "the supervisor to restart payment-az-a-1",
        lambda: (lambda p: p if p and p.pid not in (None, victim.pid) and p.ready else None)(stack.state().process("payment-az-a-1")),
        timeout=30,
    )
    # Traffic goes on through the restarted replica too, however slow this machine is today.
    after_restart = len(results)
    stack.wait_for("payments after the restart", lambda: len(results) >= after_restart + 10, timeout=60)
    stop.set()
    worker.join()
    assert back.restarts >= 1
    counts = Counter(results)
    assert counts[201] == len(results), counts


def test_one_kafka_node_down_payments_continue_and_no_event_is_lost(stack) -> None:
    node = stack.state().process("kafka-2")
    assert node and node.pid
    held = stack.run_dir.held / "kafka-2"
    held.touch()
    os.kill(node.pid, signal.SIGKILL)
    try:
        stack.wait_for("kafka-2 to be down", lambda: not stack.state().process("kafka-2").pid, timeout=15)
        payment_ids = []
        with httpx.Client(timeout=15) as client:
            for i in range(60):
                r = pay_with_retries(stack, client, f"u{1200 + i:05d}", 500)
                assert r.status_code == 201, r.text
                payment_ids.append(r.json()["payment_id"])
        stack.wait_for(
            "every payment's event to reach the campaign service",
            # Consumed, not granted: a user at the flash campaign's per-user cap (earlier tests' load
            # pays for random users) rightly gets no more cashback, and the full session saw that.
            lambda: stack.scalar(
                "SELECT count(*) FROM campaign.processed_events WHERE payment_id = ANY(%s)", payment_ids
            ) == len(payment_ids),
            timeout=90,
        )
        assert stack.scalar("SELECT count(*) FROM payment.outbox WHERE sent_at IS NULL AND payload->>'payment_id' = ANY(%s)", payment_ids) == 0
    finally:
        held.unlink(missing_ok=True)
    stack.wait_for("kafka-2 to come back", lambda: stack.state().process("kafka-2").ready, timeout=60)


TOXIC = {"latency": 3000, "jitter": 200}


def _not_permitted(client: httpx.Client, url: str) -> float:
    """The card calls one replica's acquirer breaker has refused, from its own /metrics (no scrape
    interval in between)."""
    for line in client.get(f"{url}/metrics").text.splitlines():
        if line.startswith("resilience4j_circuitbreaker_not_permitted_calls_total{") and 'name="acquirer"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_slow_acquirer_opens_the_breaker_card_fails_fast_balance_keeps_working(stack) -> None:
    with Toxiproxy(stack.topology.toxiproxy_url) as toxiproxy:
        toxiproxy.add_toxic("acquirer", "test-latency", "latency", TOXIC)
        try:
            # Balance users join once every replica's breaker is open: what is judged is how the
            # platform serves them while it protects itself, not how long the breakers took.
            outcomes = asyncio.run(mixed_load(stack, ready=breakers_open(stack)))
            stack.wait_for("the breaker to report OPEN", lambda: "open" in stack.acquirer_breakers().values(), timeout=15)
            assert outcomes["card"]["503 CARD_NETWORK_UNAVAILABLE"] > 0, outcomes
            assert success_ratio(outcomes["balance"]) > 0.95, outcomes
            # Card payments straight to one payment replica until its breaker refuses one, and that
            # one is judged. Through the edge a CI run met a half-open breaker, which rightly let the
            # payment through as a trial call that waited 1.52 s for the acquirer timeout; an idle
            # breaker stays half-open until calls come, so up to three trial calls (each failing on
            # the toxic, at the timeout) come before the breaker opens again and refuses.
            replica = stack.topology.replicas_of("payment")[0]
            url = f"http://{stack.topology.host}:{replica.port}"
            with httpx.Client(timeout=15) as client:
                for _ in range(10):
                    refused = _not_permitted(client, url)
                    started = time.monotonic()
                    r = client.post(f"{url}/v1/payments", json={"user_id": "u01600", "merchant_id": "m001", "amount": 100, "method": "card"},
                                    headers={"Idempotency-Key": uuid.uuid4().hex, "X-User-Id": "u01600"})
                    took = time.monotonic() - started
                    if _not_permitted(client, url) == refused + 1:
                        break
                else:
                    pytest.fail(f"{replica.name}'s breaker refused none of ten card payments under a 3 s acquirer")
                assert r.status_code == 503 and r.json()["error"]["code"] == "CARD_NETWORK_UNAVAILABLE", r.text
                assert "Retry-After" in r.headers
                # Failing fast: well inside the acquirer timeout, let alone the 3 s toxic.
                assert took < stack.topology.resilience.timeouts.acquirer.total_seconds(), took
        finally:
            toxiproxy.remove_toxic("acquirer", "test-latency")

    stack.close_acquirer_breakers([f"u{1610 + i:05d}" for i in range(6)], "the breaker to close once the acquirer is fast again")


def payment_tuned(topology, *, breaker: bool, workers: int, accept_queue: int, open_for: timedelta | None = None):
    """``topology`` with the breaker switched on or off (and held open ``open_for``, if given) and
    the payment worker pool resized."""
    resilience = topology.resilience
    services = dict(topology.services)
    services["payment"] = services["payment"].model_copy(update={"workers": workers, "accept_queue": accept_queue})
    held = {"wait_duration_in_open_state": open_for} if open_for is not None else {}
    breaker_spec = resilience.breaker.model_copy(update={"enabled": breaker, **held})
    return topology.model_copy(
        update={"services": services, "resilience": resilience.model_copy(update={"breaker": breaker_spec})}
    )


# The cascade needs card calls to outnumber the payment workers: with the acquirer timeout of 1.5 s,
# 25 card payments a second keep 37 workers busy, more than the 3 x 4 workers plus 3 x 4 queued
# of the narrowed pool. Narrowing the pool instead of sending more traffic keeps the machine's two
# cores out of the picture: with the full pool, the load needed to pin it saturates the CPU and
# both runs slow down alike.
CASCADE_CARD_RATE = 25
# Each replica needs five slow calls before its breaker opens, 3 s with four workers. With the
# breaker on, balance users join once every breaker reports open (6 s at least); with it off,
# after the same 6 s.
CASCADE_WARMUP = 6.0
CASCADE_POOL = {"workers": 4, "accept_queue": 4}
# While the balance users pay, no breaker may go half-open: its three trial calls would wait out
# the acquirer timeout on three of a replica's four workers, and balance payments would queue
# behind them. The first breaker can open well before the last, and the measurement starts only
# once every one is open (and drained): with the platform's 15 s in the open state, the first
# could go half-open inside the window. What this test compares is an open breaker against none.
CASCADE_OPEN_FOR = timedelta(seconds=120)


# The collateral probes need 100 balance payments in the window before a p99 or a 0.99 says
# anything (otherwise: inconclusive). Ten users with the breaker open made 120-160 in 10 s in one
# session and 211-417 in 20 s in others here, but only 64 in 20 s in one clean-clone run: the
# measurement runs until 150 were answered (at most 60 s), and the run without the breaker is
# measured for as long, so that the two counts compare.
CASCADE_ENOUGH, CASCADE_LONGEST = 150, 60.0
COLLATERAL_SLOS = ("balance-payments-availability", "balance-payments-latency-p99")


def collateral_slos(stack, seconds: float) -> dict[str, CheckResult]:
    """The collateral-damage probes: balance payments' SLOs at the gateway while balance users
    were paying (the last ``seconds``), once Prometheus has scraped their end."""
    ended = time.time()
    return {name: stack.slo(name, seconds, ended=ended) for name in COLLATERAL_SLOS}


def brief(checks: dict[str, CheckResult]) -> dict[str, tuple[object, ...]]:
    """What a failure message needs of each check, short (CI shows only part of a long one)."""
    return {name: (r.verdict, r.observed, r.margin, r.evidence.get("requests")) for name, r in checks.items()}


def test_without_the_breaker_a_slow_acquirer_takes_balance_payments_down_too(stack) -> None:
    """The same slow acquirer, the same users and the same worker pool, with the breaker on and then off."""
    healthy = stack.topology
    with Toxiproxy(stack.topology.toxiproxy_url) as toxiproxy:
        toxiproxy.add_toxic("acquirer", "test-latency", "latency", TOXIC)
        try:
            stacking.reconfigure(stack.run_dir, payment_tuned(healthy, breaker=True, open_for=CASCADE_OPEN_FOR, **CASCADE_POOL), ["payment"])
            protected = asyncio.run(mixed_load(
                stack, card_rate=CASCADE_CARD_RATE, warmup=CASCADE_WARMUP, seconds=CASCADE_LONGEST,
                ready=breakers_open(stack), enough_balance=CASCADE_ENOUGH,
            ))
            spared = collateral_slos(stack, protected.measured)
            stacking.reconfigure(stack.run_dir, payment_tuned(healthy, breaker=False, **CASCADE_POOL), ["payment"])
            stack.wait_for(
                "the breaker to report DISABLED", lambda: set(stack.acquirer_breakers().values()) == {"disabled"}, timeout=15
            )
            exposed = asyncio.run(
                mixed_load(stack, card_rate=CASCADE_CARD_RATE, warmup=CASCADE_WARMUP, seconds=protected.measured)
            )
            damaged = collateral_slos(stack, exposed.measured)
        finally:
            toxiproxy.remove_toxic("acquirer", "test-latency")
            stacking.reconfigure(stack.run_dir, healthy, ["payment"])
    # With the breaker, card payments fail fast and balance payments all go through. Without it,
    # card calls pin every payment worker: balance payments are refused with 503 OVERLOADED (most
    # runs: 18-24 % success) or wait behind the card calls so that far fewer complete in the same
    # window. Either is the cascade.
    outcomes = {
        "breaker on": (dict(protected), round(protected.measured, 1), brief(spared)),
        "breaker off": (dict(exposed), round(exposed.measured, 1), brief(damaged)),
    }
    assert success_ratio(protected["balance"]) >= 0.95, outcomes
    assert protected["card"]["503 CARD_NETWORK_UNAVAILABLE"] > 0, outcomes
    refused = success_ratio(exposed["balance"]) < 0.75
    starved = exposed["balance"]["201"] < 0.5 * protected["balance"]["201"]
    assert refused or starved, outcomes
    # The collateral-damage probes see the same from the server side: both hold with the breaker
    # on; with it off, refusals breach availability (measured 1.0 on, 0.29 off) or waiting behind
    # card calls breaches the p99.
    assert all(r.verdict == "passed" for r in spared.values()), outcomes["breaker on"]
    # Starved of workers, balance payments can also reach the gateway too seldom for its p99 or
    # availability to be judged (74 in one CI run, the probes needing 100): then they are
    # inconclusive, which a gate counts as not ready (and a ratio far enough off fails even so).
    failed = any(r.verdict == "failed" for r in damaged.values())
    too_thin = starved and all(r.verdict == "inconclusive" for r in damaged.values())
    assert failed or too_thin, outcomes["breaker off"]


def test_a_zone_marked_down_stays_down_until_restored_and_payments_continue(stack) -> None:
    zone = "az-c"
    victims = [p for p in stack.state().processes if p.zone == zone and p.pid]
    assert {p.kind for p in victims} == {"service", "kafka"}
    marker = stack.run_dir.zones_down / zone
    marker.touch()
    for p in victims:
        os.kill(p.pid, signal.SIGKILL)
    try:
        stack.wait_for("every process in the zone to be gone", lambda: not any(
            p.pid for p in stack.state().processes if p.zone == zone), timeout=15)
        # The load balancers' health checks take the zone's replicas out of rotation.
        zone_replicas = {p.name for p in victims if p.kind == "service"}
        stack.wait_for("HAProxy to mark the zone's replicas down",
                       lambda: zone_replicas <= set(servers_not_up(stack.topology)), timeout=10)
        with httpx.Client(timeout=15) as client:
            for i in range(20):
                r = pay_with_retries(stack, client, f"u{1700 + i:05d}", 300)
                assert r.status_code == 201, r.text
        # The supervisor has had many chances to restart them by now; the zone must still be down.
        state = stack.state()
        assert zone in state.zones_down
        assert not any(p.pid for p in state.processes if p.zone == zone)
    finally:
        marker.unlink(missing_ok=True)
    stack.wait_for(
        "the zone to come back ready",
        lambda: all(p.ready for p in stack.state().processes if p.zone == zone),
        timeout=90,
    )


def test_a_slow_database_keeps_its_replicas_ready_an_unreachable_one_takes_them_out(stack) -> None:
    """Readiness is about this replica, not about what every replica shares: the ledger's database
    1.5 s late on every round trip leaves each ledger replica ready (answering its check at once)
    and routed to; the same database unreachable takes them out, and they come back with it."""
    ledgers = stack.topology.replicas_of("ledger")
    names = {r.name for r in ledgers}

    def readiness(client: httpx.Client) -> dict[str, tuple[int, float]]:
        seen = {}
        for r in ledgers:
            started = time.monotonic()
            try:
                code = client.get(f"http://{stack.topology.host}:{r.port}/health/ready").status_code
            except httpx.TimeoutException:
                code = 0
            seen[r.name] = (code, time.monotonic() - started)
        return seen

    proxy = f"{stack.topology.toxiproxy_url}/proxies/ledger-db"
    with Toxiproxy(stack.topology.toxiproxy_url) as toxiproxy, httpx.Client(timeout=1.5) as client:
        toxiproxy.add_toxic("ledger-db", "test-brownout", "latency", {"latency": 1500})
        try:
            # Three of HAProxy's 2 s checks, each answered while SELECT 1 is still on its way.
            deadline = time.monotonic() + 7
            while time.monotonic() < deadline:
                seen = readiness(client)
                assert all(code == 200 and took < 1.0 for code, took in seen.values()), seen
                assert not names & set(servers_not_up(stack.topology)), servers_not_up(stack.topology)
                time.sleep(0.5)
        finally:
            toxiproxy.remove_toxic("ledger-db", "test-brownout")
        try:
            httpx.post(proxy, json={"enabled": False}, timeout=5).raise_for_status()
            stack.wait_for("every ledger replica to say it is not ready without its database",
                           lambda: all(code == 503 for code, _ in readiness(client).values()), timeout=20)
            stack.wait_for("HAProxy to take the ledger replicas out",
                           lambda: names <= set(servers_not_up(stack.topology)), timeout=20)
        finally:
            httpx.post(proxy, json={"enabled": True}, timeout=5).raise_for_status()
    stack.wait_for("the ledger replicas back in HAProxy with their database",
                   lambda: not names & set(servers_not_up(stack.topology)), timeout=60)
    # Back for good: 30 payments after it, none retried by the app, all go through (a saga may
    # still resend a transfer that met a connection the outage broke, as it would in production).
    user = stack.fresh_user()
    with httpx.Client(timeout=15) as client:
        codes = Counter(stack.pay(client, user, 100, "balance").status_code for _ in range(30))
    assert codes == {201: 30}, codes
