"""The payment saga: reserve or authorize, settle, complete, or compensate.

Every step is idempotent by a key derived from the payment id (ledger transfer ids
``pay:<pid>:reserve|settle|refund``, the acquirer's payment id), so a saga interrupted anywhere
can be run again from the top by whichever replica takes the payment over. A compensation first
voids the transfer whose outcome it does not know (the reserve of a balance payment, the settle
of a card payment): the void and the transfer claim one id, so exactly one of them ever lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from paychaos.platform.services.breaker import CallNotPermitted, CircuitBreaker
from paychaos.platform.services.calling import CallFailed, Reply, ServiceClient
from paychaos.platform.services.ledger import escrow_of
from paychaos.platform.services.payment_rules import (
    Card,
    Ledger,
    breaker_counts_as_failure,
    classify_authorization,
    classify_ledger,
    classify_void,
)

LEDGER_ATTEMPTS = 3
#: Answers that refuse a transfer on the state of an account, which may change: a refusal of a
#: copy sent again does not say an earlier copy, unanswered, will not land.
REFUSALS = frozenset({Ledger.INSUFFICIENT_FUNDS, Ledger.UNKNOWN_ACCOUNT})
REFUSED_RETRY_DELAY = 0.1  # seconds between two tries of a refused card call, fallback off


@dataclass(frozen=True)
class PaymentFacts:
    id: str
    user_id: str
    merchant_id: str
    amount: int
    method: str
    step: str
    authorization_id: str | None = None


@dataclass(frozen=True)
class Ending:
    """How the saga ended: the payment's status and the error code for people and clients."""

    status: str  # completed | declined | failed | aborted | pending (compensation left to a retry)
    code: str | None = None
    authorization_id: str | None = None


#: Persist "compensating" (with the card authorization to void) before compensating, so a replica
#: taking the payment over compensates too instead of settling.
MarkCompensating = Callable[[str | None], Awaitable[None]]


class _AcquirerDown(Exception):
    """No usable answer from the acquirer: counts as a failure for the breaker."""


def transfer_id(payment_id: str, step: str) -> str:
    return f"pay:{payment_id}:{step}"


class Saga:
    """Runs a payment's steps against the ledger and the acquirer; ``mark_compensating`` persists intent."""

    def __init__(
        self,
        ledger: ServiceClient,
        acquirer: ServiceClient,
        breaker: CircuitBreaker,
        *,
        retry_refused_for: float = 0.0,
        on_ledger_retry: Callable[[str], None] = lambda step: None,
        on_void: Callable[[str, Ledger], None] = lambda step, found: None,
        on_unanswered: Callable[[str], None] = lambda step: None,
        authorizing: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.ledger = ledger
        self.acquirer = acquirer
        self.breaker = breaker
        # Held while a card authorization is in flight, the saga's state written and leased: what
        # a podKill waiting for `authorization` work cuts (the replica's work_in_flight gauge).
        self.authorizing = authorizing
        # Told the step each time a ledger transfer whose outcome is unknown is sent again.
        self.on_ledger_retry = on_ledger_retry
        # Told each fence a compensation puts up: the step voided, and what it found (VOIDED:
        # the transfer never landed; APPLIED: it had).
        self.on_void = on_void
        # Told each transfer the saga gave up on without learning whether it landed.
        self.on_unanswered = on_unanswered
        # Seconds a call the breaker refuses is tried again before giving up: 0 is the fallback
        # (fail fast); more is the defect the failsFast probe must catch.
        self.retry_refused_for = retry_refused_for

    async def run(self, p: PaymentFacts, mark_compensating: MarkCompensating) -> Ending:
        if p.method == "balance":
            return await self._balance(p, mark_compensating)
        return await self._card(p, mark_compensating)

    async def _call_ledger(self, path: str, body: dict[str, object], classify: Callable[[int | None, str | None], Ledger]) -> Ledger:
        try:
            response = await self.ledger.post(path, json=body)
        except CallFailed:
            return Ledger.UNAVAILABLE
        code = None
        if response.status_code >= 400:
            try:
                code = response.json().get("error", {}).get("code")
            except ValueError:
                code = None
        return classify(response.status_code, code)

    async def _retrying(self, step: str, path: str, body: dict[str, object],
                        classify: Callable[[int | None, str | None], Ledger], attempts: int = LEDGER_ATTEMPTS) -> Ledger:
        # Same transfer id each time, so a retry after an unknown outcome cannot apply it twice.
        for attempt in range(attempts):
            if attempt:
                self.on_ledger_retry(step)
            outcome = await self._call_ledger(path, body, classify)
            if outcome is not Ledger.UNAVAILABLE:
                if attempt and outcome in REFUSALS:
                    # An earlier copy may still be on its way (waiting for a ledger connection)
                    # and land after this refusal, once the account has changed: this one's
                    # refusal settles nothing about it.
                    return Ledger.UNAVAILABLE
                return outcome
            if attempt + 1 < attempts:
                await asyncio.sleep(0.05 * 2**attempt)
        return Ledger.UNAVAILABLE

    async def _transfer_retrying(self, p: PaymentFacts, step: str, kind: str, postings: list[tuple[str, int]],
                                 excludes: list[str], attempts: int = LEDGER_ATTEMPTS) -> Ledger:
        body: dict[str, object] = {
            "id": transfer_id(p.id, step),
            "kind": kind,
            "user_id": p.user_id,
            "payment_id": p.id,
            "postings": [{"account": a, "amount": m} for a, m in postings],
            "excludes": excludes,
        }
        return await self._retrying(step, "/v1/transfers", body, classify_ledger, attempts)

    async def _fence(self, p: PaymentFacts, step: str) -> Ledger:
        """Void the transfer of ``step`` unless it landed: VOIDED (it never applied and now never
        will, however late a copy of it still in flight arrives), APPLIED (it had), or
        UNAVAILABLE. A compensation puts this up before it decides anything from the transfer:
        an answer lost on the way (a ledger database that stopped answering) says nothing."""
        body: dict[str, object] = {"id": transfer_id(p.id, step), "user_id": p.user_id, "payment_id": p.id}
        found = await self._retrying(f"void-{step}", "/v1/voids", body, classify_void)
        if found is not Ledger.UNAVAILABLE:
            self.on_void(step, found)
        return found

    async def _balance(self, p: PaymentFacts, mark_compensating: MarkCompensating) -> Ending:
        wallet, merchant, escrow = f"wallet:{p.user_id}", f"merchant:{p.merchant_id}", escrow_of(p.user_id)
        undone = Ending("failed", "PAYMENT_FAILED")  # what the payment ends as once compensated
        if p.step != "compensating":
            # Retried like every step: a ledger replica that died mid-transfer left its outcome
            # unknown, and the same transfer id sent again applies it at most once.
            reserved = await self._transfer_retrying(p, "reserve", "reserve", [(wallet, -p.amount), (escrow, p.amount)], [])
            if reserved is Ledger.INSUFFICIENT_FUNDS:
                return Ending("declined", "INSUFFICIENT_FUNDS")
            if reserved is Ledger.UNKNOWN_ACCOUNT:
                return Ending("declined", "UNKNOWN_ACCOUNT")
            if reserved is Ledger.APPLIED:
                settled = await self._transfer_retrying(
                    p, "settle", "payment", [(escrow, -p.amount), (merchant, p.amount)], [transfer_id(p.id, "refund")]
                )
                if settled is Ledger.APPLIED:
                    return Ending("completed")
                if settled is Ledger.EXCLUDED:
                    return Ending("failed", "PAYMENT_FAILED")
                if settled is Ledger.UNKNOWN_ACCOUNT:  # the client's mistake (no such merchant), not ours
                    undone = Ending("declined", "UNKNOWN_ACCOUNT")
            else:
                # The reserve's outcome is unknown: the ledger may have applied it and lost the
                # answer. Ending "aborted" here left the user's money in escrow for good unless
                # the app retried the same key; it is compensated like a failed settle instead.
                self.on_unanswered("reserve")
            await mark_compensating(None)
        fenced = await self._fence(p, "reserve")
        if fenced is Ledger.VOIDED:  # nothing was reserved, and nothing will be
            return undone
        if fenced is not Ledger.APPLIED:
            return Ending("pending", "PAYMENT_IN_PROGRESS")
        refunded = await self._transfer_retrying(
            p, "refund", "refund", [(escrow, -p.amount), (wallet, p.amount)], [transfer_id(p.id, "settle")]
        )
        if refunded is Ledger.APPLIED:
            return undone
        if refunded is Ledger.EXCLUDED:  # the settle landed after all: the payment went through
            return Ending("completed")
        return Ending("pending", "PAYMENT_IN_PROGRESS")

    async def _authorize_once(self, p: PaymentFacts) -> Reply:
        """One call through the breaker; raises ``CallNotPermitted`` or ``_AcquirerDown``."""
        with self.breaker.guard():
            try:
                with self.authorizing():
                    response = await self.acquirer.post("/v1/authorizations", json={"payment_id": p.id, "amount": p.amount})
            except CallFailed as exc:
                raise _AcquirerDown(str(exc)) from exc
            if breaker_counts_as_failure(response.status_code):
                raise _AcquirerDown(f"acquirer answered {response.status_code}")
        return response

    async def authorize(self, p: PaymentFacts) -> tuple[Card, str | None]:
        give_up = time.monotonic() + self.retry_refused_for
        while True:
            try:
                response = await self._authorize_once(p)
                break
            except _AcquirerDown:
                return Card.UNAVAILABLE, None
            except CallNotPermitted:
                if time.monotonic() >= give_up:
                    return Card.UNAVAILABLE, None
                await asyncio.sleep(REFUSED_RETRY_DELAY)
        outcome = classify_authorization(response.status_code)
        auth = response.json().get("authorization_id") if outcome is Card.APPROVED else None
        return outcome, auth

    async def _card(self, p: PaymentFacts, mark_compensating: MarkCompensating) -> Ending:
        outcome, auth = await self.authorize(p) if p.step != "compensating" else (Card.APPROVED, p.authorization_id)
        if outcome is Card.DECLINED:
            return Ending("declined", "CARD_DECLINED")
        if outcome is Card.UNAVAILABLE:
            return Ending("aborted", "CARD_NETWORK_UNAVAILABLE")
        undone = Ending("failed", "PAYMENT_FAILED")  # what the payment ends as once voided
        if p.step != "compensating":
            settled = await self._transfer_retrying(
                p, "settle", "payment", [("acquirer:clearing", -p.amount), (f"merchant:{p.merchant_id}", p.amount)], []
            )
            if settled is Ledger.APPLIED:
                return Ending("completed", authorization_id=auth)
            if settled is Ledger.UNKNOWN_ACCOUNT:  # the client's mistake (no such merchant), not ours
                undone = Ending("declined", "UNKNOWN_ACCOUNT")
            else:
                self.on_unanswered("settle")
            await mark_compensating(auth)
        # A settle whose answer was lost may have paid the merchant from clearing: voiding the
        # authorization then would leave the card uncharged for it. Fence it first.
        fenced = await self._fence(p, "settle")
        if fenced is Ledger.APPLIED:  # it landed: the payment went through
            return Ending("completed", authorization_id=auth)
        if fenced is not Ledger.VOIDED:
            return Ending("pending", "PAYMENT_IN_PROGRESS")
        if auth is None or await self._void(auth):
            return undone
        return Ending("pending", "PAYMENT_IN_PROGRESS")

    async def _void(self, authorization_id: str) -> bool:
        try:
            response = await self.acquirer.post(f"/v1/authorizations/{authorization_id}/void")
        except CallFailed:
            return False
        return response.status_code == 200
