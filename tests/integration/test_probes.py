"""Every money invariant holds on the healthy stack and catches the defect it exists for.

Planted defects are written inside a transaction that is rolled back, through the same
connection the invariant runs on: the session's ledger stays clean for the tests after these.
Defects produced by switching a resilience pattern off live in test_defects.py, on a stack of
their own.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from sqlalchemy import text

from paychaos.probes.invariants import (
    LEDGER_DSN_ENV,
    LEDGER_DSN_FILE_ENV,
    LedgerUnavailable,
    check_invariants,
    engine_for,
    ledger_dsn,
    run_invariants,
)

from .conftest import CATALOGUE

pytestmark = pytest.mark.integration

EVENTUAL = {"acknowledged-events-consumed", "campaign-aggregates-converged", "no-payment-left-pending"}

# What a broken stack would leave behind, one per invariant: SQL run before the invariant in the
# same transaction, and payment ids to add to the acknowledged record. ":paid" is a completed
# payment of this test (with its key and user, ":user"), ":ghost" a payment id nobody ever stored.
PLANTED: dict[str, tuple[list[str], list[str]]] = {
    "ledger-conservation": (
        [
            "INSERT INTO ledger.transfers (id, kind, request_hash) VALUES ('planted:created-money', 'seed', 'x')",
            "INSERT INTO ledger.entries (transfer_id, account_id, amount) VALUES ('planted:created-money', 'wallet:u01990', 500)",
            "UPDATE ledger.accounts SET balance = balance + 500 WHERE id = 'wallet:u01990'",
        ],
        [],
    ),
    "balance-equals-entries": (["UPDATE ledger.accounts SET balance = balance + 1 WHERE id = 'wallet:u01991'"], []),
    "no-negative-wallet": (
        ["UPDATE ledger.accounts SET allow_negative = true, balance = -100 WHERE id = 'wallet:u01992'"],
        [],
    ),
    "budget-not-overspent": (
        ["UPDATE ledger.accounts SET allow_negative = true, balance = -1 WHERE kind = 'budget'"],
        [],
    ),
    "no-double-charge": (
        [
            "INSERT INTO payment.payments (id, idempotency_key, request_hash, user_id, merchant_id, amount, method, status)"
            " SELECT 'planted-' || id, idempotency_key, request_hash, user_id, merchant_id, amount, method, status"
            " FROM payment.payments WHERE id = :paid"
        ],
        [],
    ),
    "acknowledged-payments-durable": ([], [":ghost"]),
    # Its replica died mid-saga a minute ago and nobody took it over.
    "no-payment-left-pending": (
        ["UPDATE payment.payments SET status = 'pending', lease_until = now() - interval '1 minute' WHERE id = :paid"],
        [],
    ),
    # A reserve landed that the saga never saw: the payment ended with its money in escrow.
    "escrow-released": (
        [
            "INSERT INTO ledger.transfers (id, kind, user_id, payment_id, request_hash)"
            " VALUES ('planted:reserve-unseen', 'reserve', :user, :paid, 'x')",
            "INSERT INTO ledger.entries (transfer_id, account_id, amount) VALUES"
            " ('planted:reserve-unseen', 'wallet:' || :user, -300), ('planted:reserve-unseen', 'escrow:' || :user, 300)",
        ],
        [],
    ),
    # The platform lost the client's key (stored another, as a retry under a fresh key would):
    # no-double-charge, grouping by the stored key, sees nothing wrong.
    "acknowledged-charged-once": (["UPDATE payment.payments SET idempotency_key = 'planted-other-key' WHERE id = :paid"], []),
    "acknowledged-events-consumed": (
        [
            "DELETE FROM campaign.processed_events WHERE payment_id = :paid",
            "DELETE FROM campaign.grants WHERE payment_id = :paid",
        ],
        [":paid"],
    ),
    "cashback-exactly-once": (
        [
            "INSERT INTO ledger.transfers (id, kind, user_id, payment_id, request_hash)"
            " VALUES ('planted:cashback-again', 'cashback', :user, :paid, 'x')",
        ],
        [],
    ),
    "campaign-aggregates-converged": (
        ["UPDATE campaign.step_progress SET payments = payments + 1 WHERE user_id = (SELECT user_id FROM payment.payments WHERE id = :paid)"],
        [],
    ),
}


def test_every_invariant_in_the_catalogue_has_a_planted_defect() -> None:
    assert set(PLANTED) == set(CATALOGUE.invariants)


@pytest.fixture(scope="module")
def paid(stack) -> tuple[str, str, str]:
    """A completed payment whose cashback is booked: (idempotency key, payment id, user).

    Its user is one nobody has paid for: a user the session's load had already paid up to the
    flash campaign's per-user cap earns no cashback, and a CI run waited for one in vain."""
    key, user = uuid.uuid4().hex, stack.fresh_user()
    with httpx.Client(timeout=15) as client:
        r = stack.pay(client, user, 700, key=key)
    assert r.status_code == 201, r.text
    payment_id = r.json()["payment_id"]
    stack.wait_for(
        "the payment's event to be consumed",
        lambda: stack.scalar("SELECT count(*) FROM campaign.processed_events WHERE payment_id = %s", payment_id) == 1,
        timeout=30,
    )
    # Its cashback is booked in the ledger just after: cashback-exactly-once's planted second
    # transfer only counts once the first is there.
    stack.wait_for(
        "the payment's cashback to be booked",
        lambda: stack.scalar("SELECT count(*) FROM ledger.transfers WHERE kind = 'cashback' AND payment_id = %s",
                             payment_id) == 1,
        timeout=30,
        explain=lambda: (f"grants {stack.sql('SELECT status, amount FROM campaign.grants WHERE payment_id = %s', payment_id)},"
                         f" flash granted {stack.sql('SELECT granted FROM campaign.flash_users WHERE user_id = %s', user)}"),
    )
    return key, payment_id, user


@pytest.fixture(scope="module")
def engine(stack):
    engine = engine_for(stack.topology.postgres_dsn)
    yield engine
    engine.dispose()


def check(engine, name: str, acknowledged: list[tuple[str, str]], planted: list[str] = (), params: dict | None = None):
    """Run one invariant, after ``planted`` statements, in a transaction that is rolled back."""
    with engine.connect() as conn:
        with conn.begin() as tx:
            for statement in planted:
                conn.execute(text(statement), params or {})
            (result,) = run_invariants(conn, {name: CATALOGUE.invariant(name)}, acknowledged)
            tx.rollback()
    return result


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_invariant_holds_on_the_healthy_stack_and_catches_its_defect(stack, engine, paid, name: str) -> None:
    key, payment_id, user = paid
    acknowledged = [(key, payment_id)]
    # Read models catch up with the ledger asynchronously: give them the bound experiments give.
    deadline = time.monotonic() + (30 if name in EVENTUAL else 0)
    while not (healthy := check(engine, name, acknowledged)).holds and time.monotonic() < deadline:
        time.sleep(1)
    assert healthy.holds, healthy

    statements, extra = PLANTED[name]
    ids = {":paid": payment_id, ":ghost": f"ghost-{uuid.uuid4().hex}"}
    broken = check(engine, name, acknowledged + [("planted", ids[e]) for e in extra], statements, {"paid": payment_id, "user": user})
    assert not broken.holds, f"{name} did not catch its planted defect"
    assert broken.sample, "a failed invariant shows the rows that violate it"
    # The planted rows are gone: the invariant holds again.
    assert check(engine, name, acknowledged).holds


def test_the_ledger_dsn_comes_from_a_secret_and_is_never_printed(stack, tmp_path, monkeypatch) -> None:
    secret = tmp_path / "ledger-dsn"
    secret.write_text(stack.topology.postgres_dsn.replace("postgres@", "postgres:s3cret-pw@") + "\n", encoding="utf-8")
    monkeypatch.setenv(LEDGER_DSN_FILE_ENV, str(secret))
    monkeypatch.setenv(LEDGER_DSN_ENV, "postgresql://ignored@127.0.0.1:1/x")  # the secret file wins
    dsn = ledger_dsn("postgresql://default@127.0.0.1:1/x")
    engine = engine_for(dsn)
    try:
        (result,) = check_invariants(engine, {"ledger-conservation": CATALOGUE.invariant("ledger-conservation")})
    finally:
        engine.dispose()
    assert result.holds  # the session's own ledger, reached through the secret (trust auth ignores the password)

    # Nothing listens on port 1: one line naming the ledger, without its password.
    unreachable = engine_for(dsn.replace(f":{stack.topology.ports.postgres}/", ":1/"))
    try:
        with pytest.raises(LedgerUnavailable) as caught:
            check_invariants(unreachable, {"ledger-conservation": CATALOGUE.invariant("ledger-conservation")})
    finally:
        unreachable.dispose()
    message = str(caught.value)
    assert "s3cret-pw" not in message and "***" in message and "unreachable" in message and "\n" not in message, message
