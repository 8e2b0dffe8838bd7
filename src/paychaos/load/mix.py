"""The mix of requests one app user sends: mostly campaign-status checks, a payment, a balance look.

Pure, so the share of payments a spec asks for can be checked without running Locust.
"""

from __future__ import annotations

DEFAULT_PAYMENT_SHARE = 1 / 12  # what the app does on an ordinary day: ten status checks a payment
CYCLE_LENGTH = 24


def _spread(count: int, slots: int) -> list[bool]:
    """``count`` marks spread evenly over ``slots`` positions."""
    return [(i + 1) * count // slots > i * count // slots for i in range(slots)]


def app_cycle(payment_share: float | None = None) -> tuple[str, ...]:
    """One user's repeating sequence of ``status``, ``pay`` and ``wallet`` steps: ``payment_share``
    of them payments (at least one), a wallet look every twelve steps, the rest status checks."""
    share = DEFAULT_PAYMENT_SHARE if payment_share is None else payment_share
    pays = min(CYCLE_LENGTH, max(1, round(share * CYCLE_LENGTH)))
    others = CYCLE_LENGTH - pays
    wallets = iter(_spread(min(others, CYCLE_LENGTH // 12), others))
    return tuple("pay" if pay else ("wallet" if next(wallets) else "status") for pay in _spread(pays, CYCLE_LENGTH))
