"""The saga's decisions on ledger answers it got, lost or could not trust, against a scripted
ledger and acquirer (our own ServiceClient seam): which transfers it sends, and how it ends.

What really happens to the money on a real ledger is tested in test_ledger_payment_smoke.py and
judged by the ledger-db-hang experiment; these pin the branches that are hard to time there.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from paychaos.platform.services.breaker import CircuitBreaker
from paychaos.platform.services.calling import CallFailed, Reply
from paychaos.platform.services.saga import Ending, PaymentFacts, Saga
from paychaos.platform.topology import BreakerSpec

Answer = tuple[int, str | None] | None  # (status, error code), or None: no answer at all


class Scripted:
    """A dependency that answers each call with the next scripted answer for its (path, step)."""

    def __init__(self, script: dict[tuple[str, str], list[Answer]]) -> None:
        self.script = script
        self.calls: list[tuple[str, str]] = []

    async def post(self, path: str, *, json: Any = None) -> Reply:  # noqa: A002 - the client's own keyword
        step = str((json or {}).get("id", "")).rsplit(":", 1)[-1] or path
        self.calls.append((path, step))
        answer = self.script[(path, step)].pop(0)
        if answer is None:
            raise CallFailed("no answer in time")
        status, code = answer
        body = {"error": {"code": code}} if code else {"authorization_id": "auth-1"}
        return Reply(status, _dumps(body), CIMultiDictProxy(CIMultiDict()))


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


T, V = "/v1/transfers", "/v1/voids"
BALANCE = PaymentFacts("p1", "u1", "m1", 500, "balance", "start")
CARD = PaymentFacts("p2", "u1", "m1", 500, "card", "start")
BREAKER = BreakerSpec.model_validate({
    "enabled": True, "slidingWindowSize": 10, "minimumNumberOfCalls": 5, "failureRateThreshold": 50,
    "slowCallRateThreshold": 50, "slowCallDuration": "1s", "waitDurationInOpenState": "5s",
    "permittedCallsInHalfOpenState": 3,
})


def run(p: PaymentFacts, ledger: dict[tuple[str, str], list[Answer]],
        acquirer: dict[tuple[str, str], list[Answer]] | None = None) -> tuple[Ending, list[tuple[str, str]], list[str | None]]:
    """The saga's ending, the ledger calls it made, and what it marked compensating (if it did)."""
    scripted = Scripted(ledger)
    marked: list[str | None] = []

    async def mark(authorization_id: str | None) -> None:
        marked.append(authorization_id)

    saga = Saga(scripted, Scripted(acquirer or {}), CircuitBreaker("acquirer", BREAKER))  # type: ignore[arg-type]
    ending = asyncio.run(saga.run(p, mark))
    return ending, scripted.calls, marked


def test_a_first_refusal_is_a_decline_and_nothing_is_fenced() -> None:
    ending, calls, marked = run(BALANCE, {(T, "reserve"): [(422, "INSUFFICIENT_FUNDS")]})
    assert ending == Ending("declined", "INSUFFICIENT_FUNDS")
    assert calls == [(T, "reserve")] and marked == []


def test_a_refusal_after_an_unanswered_copy_is_not_taken_for_a_decline() -> None:
    """The unanswered first copy may land after the refusal of the second (the account changed in
    between): the saga fences the reserve instead, and refunds it when the fence finds it."""
    ending, calls, marked = run(BALANCE, {
        (T, "reserve"): [None, (422, "INSUFFICIENT_FUNDS")],
        (V, "reserve"): [(409, "TRANSFER_APPLIED")],
        (T, "refund"): [(201, None)],
    })
    assert ending == Ending("failed", "PAYMENT_FAILED")
    assert calls == [(T, "reserve"), (T, "reserve"), (V, "reserve"), (T, "refund")] and marked == [None]


def test_an_unanswered_reserve_that_never_landed_is_voided_and_nothing_refunded() -> None:
    ending, calls, _ = run(BALANCE, {(T, "reserve"): [None, None, None], (V, "reserve"): [(201, None)]})
    assert ending == Ending("failed", "PAYMENT_FAILED")
    assert (T, "refund") not in calls


def test_an_unanswered_reserve_that_landed_is_refunded() -> None:
    ending, calls, _ = run(BALANCE, {
        (T, "reserve"): [None, None, None], (V, "reserve"): [(409, "TRANSFER_APPLIED")], (T, "refund"): [(201, None)],
    })
    assert ending == Ending("failed", "PAYMENT_FAILED") and calls[-1] == (T, "refund")


def test_with_the_ledger_still_unreachable_the_payment_stays_pending_for_the_recovery_loop() -> None:
    ending, calls, _ = run(BALANCE, {(T, "reserve"): [None, None, None], (V, "reserve"): [None, None, None]})
    assert ending == Ending("pending", "PAYMENT_IN_PROGRESS")
    assert (T, "refund") not in calls


def test_a_settle_that_failed_after_a_reserve_is_fenced_and_refunded() -> None:
    ending, calls, _ = run(BALANCE, {
        (T, "reserve"): [(201, None)], (T, "settle"): [None, None, None],
        (V, "reserve"): [(409, "TRANSFER_APPLIED")], (T, "refund"): [(409, "TRANSFER_EXCLUDED")],
    })
    assert ending == Ending("completed")  # the refund found the settle had landed after all
    assert calls[-2:] == [(V, "reserve"), (T, "refund")]


def test_a_card_settle_found_landed_completes_the_payment_and_keeps_its_authorization() -> None:
    acquirer: dict[tuple[str, str], list[Answer]] = {("/v1/authorizations", "/v1/authorizations"): [(201, None)]}
    ending, calls, marked = run(CARD, {(T, "settle"): [None, None, None], (V, "settle"): [(409, "TRANSFER_APPLIED")]}, acquirer)
    assert ending == Ending("completed", authorization_id="auth-1")
    assert marked == ["auth-1"] and calls[-1] == (V, "settle")


def test_a_card_settle_voided_voids_the_authorization() -> None:
    acquirer: dict[tuple[str, str], list[Answer]] = {
        ("/v1/authorizations", "/v1/authorizations"): [(201, None)],
        ("/v1/authorizations/auth-1/void", "/v1/authorizations/auth-1/void"): [(200, None)],
    }
    ending, calls, _ = run(CARD, {(T, "settle"): [None, None, None], (V, "settle"): [(201, None)]}, acquirer)
    assert ending == Ending("failed", "PAYMENT_FAILED")
    assert calls[-1] == (V, "settle")  # the settle fenced out before the authorization was voided
