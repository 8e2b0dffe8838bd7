"""Bad input through the edge is the client's mistake: a 4xx problem document, never a 5xx, and
no money moves. What a new user tried by hand, plus the neighbours of each case."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import httpx
import pytest

pytestmark = pytest.mark.integration

USER, MERCHANT = "u00031", "m001"
GOOD = {"user_id": USER, "merchant_id": MERCHANT, "amount": 100, "method": "balance"}

# Bodies of POST /v1/payments, raw bytes as a broken app or a fuzzer would send them.
PAYMENT_BODIES: dict[str, bytes] = {
    "empty": b"",
    "not closed": b"{",
    "a number too big for a float": b"1e999",
    "junk, 5 MB": b"\xff\xfe junk" * 500_000,
    "a list": b"[]",
    "null": b"null",
    "NUL in user_id": b'{"user_id": "u0\\u00001", "merchant_id": "m001", "amount": 100, "method": "balance"}',
    "amount as text": b'{"user_id": "u00031", "merchant_id": "m001", "amount": "100", "method": "balance"}',
    "amount fractional": b'{"user_id": "u00031", "merchant_id": "m001", "amount": 100.5, "method": "balance"}',
    "amount negative": b'{"user_id": "u00031", "merchant_id": "m001", "amount": -100, "method": "balance"}',
    "amount 1e999": b'{"user_id": "u00031", "merchant_id": "m001", "amount": 1e999, "method": "balance"}',
    "unknown method": b'{"user_id": "u00031", "merchant_id": "m001", "amount": 100, "method": "cash"}',
    "extra field": b'{"user_id": "u00031", "merchant_id": "m001", "amount": 100, "method": "balance", "tip": 1}',
    "not UTF-8": b'{"user_id": "\xff\xfe", "merchant_id": "m001", "amount": 100, "method": "balance"}',
}

# Reads whose identifier cannot name anything.
BAD_IDS = ["u0\x001", "u" * 5000, "u 1", "u%00", "<script>", "\u00e9t\u00e9"]


def wallet(stack, client: httpx.Client, user: str) -> int:
    r = client.get(f"{stack.edge}/v1/wallets/{user}", headers={"X-Device-Id": f"device-{user}"})
    assert r.status_code == 200, r.text
    return int(r.json()["balance"])


def assert_client_error(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    assert r.headers.get("content-type", "").startswith("application/json"), (what, r.headers)
    assert r.json()["error"]["code"], (what, r.text[:300])
    assert len(r.content) < 10_000, (what, "the answer must not echo the input back", len(r.content))


def test_malformed_payments_are_4xx_and_move_no_money(stack) -> None:
    payments = "SELECT count(*) FROM payment.payments"
    with httpx.Client(timeout=30) as client:
        before, stored = wallet(stack, client, USER), stack.scalar(payments)
        for what, body in PAYMENT_BODIES.items():
            r = client.post(f"{stack.edge}/v1/payments", content=body, headers={
                "Idempotency-Key": uuid.uuid4().hex, "X-Device-Id": f"device-{USER}", "Content-Type": "application/json"})
            assert_client_error(r, what)
        assert wallet(stack, client, USER) == before
        assert stack.scalar(payments) == stored


def test_a_payment_to_an_unknown_merchant_is_declined_and_charges_nothing(stack) -> None:
    with httpx.Client(timeout=30) as client:
        before = wallet(stack, client, USER)
        for method in ("balance", "card"):
            for _ in range(10):  # the simulated card network declines ~2 % first (402): a valid answer too
                r = stack.pay(client, USER, 100, method, merchant="m999")
                if r.status_code != 402:
                    break
            assert r.status_code == 422 and r.json()["error"]["code"] == "UNKNOWN_ACCOUNT", (method, r.text)
        assert wallet(stack, client, USER) == before
    assert stack.scalar("SELECT coalesce(sum(amount), 0) FROM ledger.entries") == 0


@pytest.mark.parametrize("bad", BAD_IDS, ids=["NUL", "5000 chars", "space", "escaped NUL", "markup", "accents"])
def test_unusable_ids_on_reads_are_4xx(stack, bad: str) -> None:
    headers = {"X-Device-Id": "device-bad-input"}
    with httpx.Client(timeout=30) as client:
        status = client.get(f"{stack.edge}/v1/campaign/status", params={"user_id": bad}, headers=headers)
        assert_client_error(status, f"campaign status for {bad[:20]!r}")
        wallet_read = client.get(f"{stack.edge}/v1/wallets/{quote(bad, safe='')}", headers=headers)
        assert_client_error(wallet_read, f"wallet of {bad[:20]!r}")


def test_an_idempotency_key_that_is_not_utf8_is_refused_at_the_gateway(stack) -> None:
    # Legal HTTP (visible Latin-1), but the gateway passes header text on as UTF-8: re-encoded,
    # the key would reach the payment service as another key than the app sent.
    payments = "SELECT count(*) FROM payment.payments"
    with httpx.Client(timeout=30) as client:
        before, stored = wallet(stack, client, USER), stack.scalar(payments)
        r = client.post(f"{stack.edge}/v1/payments", json=GOOD,
                        headers={"Idempotency-Key": b"caf\xe9-" + uuid.uuid4().hex.encode(), "X-Device-Id": f"device-{USER}"})
        assert_client_error(r, "Latin-1 key")
        assert r.status_code == 400 and r.json()["error"] == {
            "code": "INVALID_HEADER", "message": "The idempotency-key header must be UTF-8 text.", "field": "idempotency-key"}
        # The same key in UTF-8 goes through, and a retry of it is answered from the stored response.
        key = "caf\u00e9-" + uuid.uuid4().hex
        first, again = (client.post(f"{stack.edge}/v1/payments", json=GOOD,
                                    headers={"Idempotency-Key": key.encode(), "X-Device-Id": f"device-{USER}"})
                        for _ in range(2))
        assert first.status_code == 201 and again.status_code == 201, (first.text, again.text)
        assert again.json() == first.json()
        assert wallet(stack, client, USER) == before - GOOD["amount"]
        assert stack.scalar(payments) == stored + 1
