"""Admission rules of the gateway: a global token bucket and PayPay-style rotating device groups.

Pure logic, no I/O: the caller passes the time in, so tests drive the clock. A device admitted by
rotation gets a signed flow pass, accepted by every gateway replica, so its flow is not cut off.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Literal

from paychaos.platform.topology import AdmissionSpec, Topology

Decision = Literal["admitted", "pass", "rate_limited", "rotated_out"]


class TokenBucket:
    """Refills ``rate`` tokens per second up to ``burst``; each admitted request takes one."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        # A clock that steps backwards must not drain the bucket.
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def try_take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def seconds_until_token(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


def device_group(device_id: str) -> int:
    """A stable group 0..99 for a device, the same in every process (unlike ``hash()``)."""
    digest = hashlib.sha256(device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


def in_rotation(group: int, time_bucket: int, allowed_percent: int) -> bool:
    """PayPay's rule: shift the group by ``time_bucket × allowed%`` and admit the low slice."""
    return (group + time_bucket * allowed_percent) % 100 < allowed_percent


def seconds_until_admitted(group: int, now: float, rotation: float, allowed_percent: int) -> float:
    """How long until the window that admits ``group`` opens (one rotation if it never will)."""
    bucket = int(now // rotation)
    if allowed_percent > 0:
        # The admitted slice moves by allowed% per window, so 100 windows cover every group.
        for ahead in range(1, 101):
            if in_rotation(group, bucket + ahead, allowed_percent):
                return (bucket + ahead) * rotation - now
    return rotation - (now - bucket * rotation)


def stack_secret(topology: Topology) -> bytes:
    """A secret every gateway replica of one stack derives alike, so any replica accepts a pass."""
    return hashlib.sha256(b"paychaos-admission-pass\0" + topology.model_dump_json().encode("utf-8")).digest()


def _signature(secret: bytes, device_id: str, expires: int) -> str:
    message = f"{device_id}\0{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def issue_pass(secret: bytes, device_id: str, expires: int) -> str:
    """A flow pass ``<expires>.<hmac>`` bound to one device id."""
    return f"{expires}.{_signature(secret, device_id, expires)}"


def pass_expires(token: str) -> int:
    """When a pass issued by :func:`issue_pass` lapses (epoch seconds)."""
    return int(token.partition(".")[0])


def pass_valid(secret: bytes, device_id: str, token: str | None, now: float) -> bool:
    if not token:
        return False
    expires_text, _, signature = token.partition(".")
    if not expires_text.isdigit() or not signature:
        return False
    expires = int(expires_text)
    if now >= expires:
        return False
    return hmac.compare_digest(signature, _signature(secret, device_id, expires))


@dataclass(frozen=True)
class Restriction:
    """Rotation rules an operator sets for a while (the noon rush), over the topology's own.
    It lapses by itself at ``until``, so one set by a run that then died does not outlive it."""

    allowed_percent: int
    rotation: float  # seconds
    flow_ttl: float  # seconds
    until: float  # epoch seconds

    def __post_init__(self) -> None:
        if not 0 <= self.allowed_percent <= 100:
            raise ValueError(f"allowedPercent: expected 0 to 100, got {self.allowed_percent}")
        if self.rotation <= 0 or self.flow_ttl <= 0:
            raise ValueError("rotation and flowTtl: expected more than 0 seconds")


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    retry_after: int = 0  # whole seconds, for the Retry-After header of a refusal
    new_pass: str | None = None  # set when the device was admitted and earns a (fresh) pass

    @property
    def admitted(self) -> bool:
        return self.decision in ("admitted", "pass")


class Admission:
    """One gateway replica's admission state: the bucket plus the rotation rule and pass checks."""

    def __init__(self, spec: AdmissionSpec, secret: bytes, now: float) -> None:
        self.spec = spec
        self.secret = secret
        self.rotation = spec.rotation.total_seconds()
        self.flow_ttl = spec.flow_ttl.total_seconds()
        self.bucket = TokenBucket(spec.tokens_per_second, spec.burst, now)
        self.restriction: Restriction | None = None

    def rules(self, now: float) -> tuple[int, float, float]:
        """(allowed percent, rotation seconds, flow TTL seconds) in force at ``now``."""
        r = self.restriction
        if r is not None and now < r.until:
            return r.allowed_percent, r.rotation, r.flow_ttl
        return self.spec.allowed_percent, self.rotation, self.flow_ttl

    def decide(self, device_id: str, token: str | None, now: float) -> Verdict:
        if not self.bucket.try_take(now):
            return Verdict("rate_limited", _whole_seconds(self.bucket.seconds_until_token(now)))
        allowed, rotation, flow_ttl = self.rules(now)
        group = device_group(device_id)
        if in_rotation(group, int(now // rotation), allowed):
            # Renewed on each admitted request: the pass lasts flowTtl past the last in-window request.
            return Verdict("admitted", new_pass=issue_pass(self.secret, device_id, math.ceil(now + flow_ttl)))
        if pass_valid(self.secret, device_id, token, now):
            return Verdict("pass")
        wait = seconds_until_admitted(group, now, rotation, allowed)
        return Verdict("rotated_out", _whole_seconds(wait))


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
