"""Every route at the edge, fuzzed with hypothesis against the real stack: whatever a broken app
or a hostile client sends, the answer is a 4xx problem document or a success, never a 5xx; a
request the platform refused writes no payment; and the money invariants hold afterwards.

test_bad_input.py pins the cases found by hand; this finds the ones nobody thought of. The run is
derandomized (the same examples on every run of the same code), so a failure here reproduces:
hypothesis prints the smallest request that shows it.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paychaos.probes.invariants import check_invariants, engine_for

from .conftest import CATALOGUE

pytestmark = pytest.mark.integration

# Users of their own, so that the fuzz's payments (some are valid) touch no other test's wallets.
USERS = [f"u{n:05d}" for n in range(1950, 1960)]
MERCHANTS = ["m001", "m050"]  # the first and the last
UNKNOWN_MERCHANT = "m999"
# Refusals that come before anything is written. Every other 4xx (a declined card, an unknown
# merchant) is an answer about a payment that was recorded.
REFUSED_UNWRITTEN = {"INVALID_REQUEST", "INVALID_IDENTIFIER", "IDEMPOTENCY_KEY_REQUIRED", "DEVICE_ID_REQUIRED"}
INVARIANTS = ("ledger-conservation", "balance-equals-entries", "no-negative-wallet", "no-double-charge")
FUZZ = settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# What h11 lets a client put in a header value: visible Latin-1, no control characters.
header_text = st.text(st.characters(codec="latin-1", exclude_categories=("Cc", "Zs")), min_size=1, max_size=250)


@st.composite
def payment_bodies(draw: st.DrawFn) -> bytes:
    """Valid payments, payments with exactly one thing wrong (a field of any JSON type, a field
    missing, one too many, a merchant that does not exist), any JSON at all, and bytes that are
    not JSON. Valid ones are drawn outright: a body with four fields each sometimes wrong is
    almost never right, and a fuzz that sends no valid payment tests only refusals."""
    kind = draw(st.sampled_from(["valid"] * 2 + ["one thing wrong"] * 3 + ["any JSON", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "any JSON":
        return json.dumps(draw(json_values)).encode()
    body: dict[str, Any] = {
        "user_id": draw(st.sampled_from(USERS)),
        "merchant_id": draw(st.sampled_from(MERCHANTS)),
        "amount": draw(st.integers(1, 500)),
        "method": draw(st.sampled_from(["balance", "card"])),
    }
    if kind == "one thing wrong":
        field = draw(st.sampled_from(sorted(body)))
        wrong = draw(st.sampled_from(["any value", "missing", "one more field", "unknown merchant"]))
        if wrong == "any value":
            body[field] = draw(json_values | st.integers() | st.text())
        elif wrong == "missing":
            del body[field]
        elif wrong == "one more field":
            body[draw(st.text(max_size=8).filter(lambda k: k not in body))] = draw(json_values)
        else:
            body["merchant_id"] = UNKNOWN_MERCHANT
    return json.dumps(body).encode()


def payment_headers(key: str | None, device: str) -> dict[str, bytes]:
    headers = {"X-Device-Id": device.encode("latin-1"), "Content-Type": b"application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key.encode("latin-1")
    return headers


def assert_answered(r: httpx.Response, what: object) -> str:
    """A success, or a 4xx problem document with a code; the code ('' on success)."""
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    if r.status_code < 400:
        return ""
    assert r.headers.get("content-type", "").startswith("application/json"), (what, r.status_code, r.headers)
    code = r.json()["error"]["code"]
    assert code, (what, r.text[:300])
    assert len(r.content) < 10_000, (what, "the answer must not echo the input back", len(r.content))
    return str(code)


ANSWERS: Counter[str] = Counter()  # every fuzzed payment's answer, for the last test's message


def fuzz_payments_written(stack) -> int:
    return int(stack.scalar("SELECT count(*) FROM payment.payments WHERE user_id = ANY(%s)", USERS))


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30) as c:
        yield c


@FUZZ
@given(
    body=payment_bodies(),
    # Mostly a fresh key, as the app sends; sometimes none, one reused across bodies, or any text.
    key=st.sampled_from(["fresh"] * 3 + ["other"]).flatmap(
        lambda k: st.uuids().map(lambda u: u.hex) if k == "fresh" else st.none() | st.just("fuzz-reused") | header_text
    ),
    device=st.uuids().map(lambda u: f"fuzz-{u.hex}") | header_text,
)
def test_any_payment_request_is_answered_without_a_server_error(stack, client, body: bytes, key: str | None, device: str) -> None:
    before = fuzz_payments_written(stack)
    r = client.post(f"{stack.edge}/v1/payments", content=body, headers=payment_headers(key, device))
    code = assert_answered(r, (body[:200], key, device))
    ANSWERS[f"{r.status_code} {code}".strip()] += 1
    if code in REFUSED_UNWRITTEN:
        assert fuzz_payments_written(stack) == before, (body[:200], code, "refused, yet a payment was written")


@FUZZ
@given(user=st.text(max_size=80) | st.sampled_from(USERS), device=st.uuids().map(lambda u: f"fuzz-{u.hex}") | header_text)
def test_any_read_is_answered_without_a_server_error(stack, client, user: str, device: str) -> None:
    headers = {"X-Device-Id": device.encode("latin-1")}
    status = client.get(f"{stack.edge}/v1/campaign/status", params={"user_id": user}, headers=headers)
    assert_answered(status, ("campaign status", user, device))
    wallet = client.get(f"{stack.edge}/v1/wallets/{quote(user, safe='')}", headers=headers)
    assert_answered(wallet, ("wallet", user, device))


def test_after_the_fuzz_the_money_invariants_hold(stack) -> None:
    # Runs after the two above (file order): their valid payments moved real money.
    accepted = sum(n for answer, n in ANSWERS.items() if answer.startswith("2"))
    assert accepted and fuzz_payments_written(stack) > 0, ("the fuzz sent no payment the platform took: it tested only refusals", ANSWERS)
    engine = engine_for(stack.topology.postgres_dsn)
    try:
        results = check_invariants(engine, {name: CATALOGUE.invariant(name) for name in INVARIANTS})
    finally:
        engine.dispose()
    assert all(r.holds for r in results), [r for r in results if not r.holds]

