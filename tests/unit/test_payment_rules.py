"""The payment service's pure decisions: idempotency-key claims, downstream replies, fingerprints."""

from __future__ import annotations

import pytest

from paychaos.platform.services.fingerprints import fingerprint, per_mille
from paychaos.platform.services.payment_rules import (
    Card,
    Claim,
    Existing,
    Ledger,
    breaker_counts_as_failure,
    classify_authorization,
    classify_ledger,
    classify_void,
    decide_claim,
)


class TestClaims:
    def test_other_request_with_the_key_is_refused_whatever_its_state(self) -> None:
        assert decide_claim(Existing("h1", "completed"), "h2") is Claim.REUSED
        assert decide_claim(Existing("h1", "pending"), "h2") is Claim.REUSED

    @pytest.mark.parametrize("status", ["completed", "declined", "failed"])
    def test_terminal_payment_is_replayed(self, status: str) -> None:
        assert decide_claim(Existing("h", status), "h") is Claim.REPLAY

    def test_aborted_payment_is_retried_by_a_new_request(self) -> None:
        assert decide_claim(Existing("h", "aborted"), "h") is Claim.TAKE_OVER

    def test_aborted_payment_answers_the_requests_that_waited_for_it(self) -> None:
        assert decide_claim(Existing("h", "aborted"), "h", waited=True) is Claim.REPLAY

    def test_pending_payment_is_waited_for_even_when_its_owner_died(self) -> None:
        # Its owner's, or the recovery loop's once the lease ran out: never the retry's own.
        assert decide_claim(Existing("h", "pending"), "h") is Claim.WAIT
        assert decide_claim(Existing("h", "pending"), "h", waited=True) is Claim.WAIT


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (201, None, Ledger.APPLIED),
        (200, None, Ledger.APPLIED),
        (422, "INSUFFICIENT_FUNDS", Ledger.INSUFFICIENT_FUNDS),
        (404, "UNKNOWN_ACCOUNT", Ledger.UNKNOWN_ACCOUNT),
        (409, "TRANSFER_EXCLUDED", Ledger.EXCLUDED),
        (409, "TRANSFER_VOIDED", Ledger.VOIDED),
        (409, "TRANSFER_ID_REUSED", Ledger.UNAVAILABLE),
        (503, "LEDGER_BUSY", Ledger.UNAVAILABLE),
        (None, None, Ledger.UNAVAILABLE),
    ],
)
def test_ledger_replies(status: int | None, code: str | None, expected: Ledger) -> None:
    assert classify_ledger(status, code) is expected


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (201, None, Ledger.VOIDED),
        (200, None, Ledger.VOIDED),  # voided before: a replay
        (409, "TRANSFER_APPLIED", Ledger.APPLIED),
        (503, "TRANSFER_IN_FLUX", Ledger.UNAVAILABLE),
        (503, "LEDGER_BUSY", Ledger.UNAVAILABLE),
        (None, None, Ledger.UNAVAILABLE),
    ],
)
def test_void_replies(status: int | None, code: str | None, expected: Ledger) -> None:
    """Only an answer about the id settles a compensation's question; anything else is asked again."""
    assert classify_void(status, code) is expected


def test_acquirer_replies_and_what_the_breaker_counts() -> None:
    assert classify_authorization(201) is Card.APPROVED
    assert classify_authorization(402) is Card.DECLINED
    assert classify_authorization(504) is Card.UNAVAILABLE
    assert not breaker_counts_as_failure(402)
    assert breaker_counts_as_failure(502) and breaker_counts_as_failure(None)


def test_fingerprint_ignores_key_order_and_absent_fields() -> None:
    a = fingerprint({"amount": 100, "user_id": "u00001"})
    assert a == fingerprint({"user_id": "u00001", "amount": 100})
    assert a != fingerprint({"user_id": "u00001", "amount": 101})


def test_per_mille_is_deterministic_and_in_range() -> None:
    assert per_mille("pay-1") == per_mille("pay-1")
    assert all(0 <= per_mille(str(i)) < 1000 for i in range(200))
