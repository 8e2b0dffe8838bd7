"""The payment service: ``POST /v1/payments`` with an Idempotency-Key, run as a saga, completed with an outbox event.

One key is one charge: the key is claimed in the database, a retry gets the stored response,
and a payment whose replica died (its lease expired) is taken over and resumed by the recovery
loop, which a retry of it waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter, Histogram
from psycopg import AsyncConnection, OperationalError
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paychaos.platform.services.breaker import BreakerMetrics, CircuitBreaker
from paychaos.platform.services.fingerprints import fingerprint
from paychaos.platform.services.outbox import TOPIC as OUTBOX_TOPIC
from paychaos.platform.services.outbox import Publisher
from paychaos.platform.services.payment_rules import Claim, Existing, decide_claim
from paychaos.platform.services.saga import Ending, PaymentFacts, Saga
from paychaos.platform.services.schemas import database_readiness, ensure_schema
from paychaos.platform.services.serving import (
    ID_PATTERN, LATENCY_BUCKETS, SERVER_ERRORS, ReplicaContext, ServiceParts, invalid_request, problem, series_from_start,
)

log = logging.getLogger(__name__)

#: A claim lasts this long without news from its owner; then another replica may take it over.
#: The owner renews it every HEARTBEAT_SECONDS while its saga runs, however long the saga takes,
#: so the lease only has to outlast a late renewal, not the slowest saga: a payment whose replica
#: died is taken over this soon after its last renewal (it was 15 s, the slowest saga, before).
#: A live owner whose renewals stall for longer loses the payment, which is safe (every step is
#: idempotent and only the lease holder may finish it) but wasteful:
#: ``payment_lease_renewal_seconds`` shows how close renewals come.
LEASE_SECONDS = 2.0
HEARTBEAT_SECONDS = 0.5
#: How often each replica looks for payments whose lease ran out (their owner died) to resume.
RECOVERY_POLL_SECONDS = 0.25
#: How long a request waits for another request with the same key to finish. Longer than a lease
#: and a recovery poll, so a retry of a payment cut by its replica's death gets the payment's
#: answer once the recovery loop has finished it, rather than PAYMENT_IN_PROGRESS.
WAIT_SECONDS = 3.0
assert WAIT_SECONDS > LEASE_SECONDS + RECOVERY_POLL_SECONDS
POLL_SECONDS = 0.05
RETRY_AFTER = "2"

_COLUMNS = (
    "id, request_hash, status, step, authorization_id, response_status, response, user_id, merchant_id,"
    " amount, method"
)

MESSAGES = {
    "INSUFFICIENT_FUNDS": "Your balance is too low for this payment.",
    "UNKNOWN_ACCOUNT": "This user or merchant does not exist.",
    "CARD_DECLINED": "Your card was declined. Please use another payment method.",
    "PAYMENT_FAILED": "The payment could not be completed. No money was taken.",
    "CARD_NETWORK_UNAVAILABLE": "Card payments are temporarily unavailable. Please try again shortly or pay with your balance.",
    "LEDGER_UNAVAILABLE": "Payments are temporarily unavailable. Please try again shortly.",
    "PAYMENT_IN_PROGRESS": "This payment is still being processed. Please try again shortly.",
}
#: An unfinished compensation (its refund or void failed, typically on an unavailable ledger or
#: card network) is released, not kept: the recovery loop resumes it this long after, rather than
#: at its next poll, which would send the failing step again four times a second.
RELEASE_RETRY_SECONDS = 1.0
#: Every statement the owner of a payment sends while it runs the saga (a renewal, the step to
#: compensating, the ending) also answers whether the lease had already run out when it arrived:
#: ``was`` reads the row as the statement found it, by the database's clock, the one the recovery
#: loop reads. A lapse the recovery loop did not catch in time is still a lapse, and is counted
#: (payment_leases_lapsed_total) whether or not another replica then took the payment.
WAS_LAPSED = "was AS (SELECT lease_until < now() AS lapsed FROM payment.payments WHERE id = %(id)s)"
OWNED = " WHERE id = %(id)s AND lease_owner = %(owner)s AND status = 'pending'"
#: A renewal, or the step to compensating (``step`` and ``authorization_id`` unchanged when None).
EXTEND_SQL = (
    f"WITH {WAS_LAPSED}"
    " UPDATE payment.payments SET lease_until = now() + make_interval(secs => %(lease)s),"
    " step = coalesce(%(step)s, step), authorization_id = coalesce(%(authorization_id)s, authorization_id),"
    " updated_at = CASE WHEN %(step)s::text IS NULL THEN updated_at ELSE now() END"  # a renewal changes nothing else
    f"{OWNED} RETURNING (SELECT lapsed FROM was)"
)
#: The ending and its outbox event in one statement. A payment left pending (an unfinished
#: compensation) is released: no owner, so its resumption is told apart from the takeover of a
#: dead replica's payment (payment_takeovers_total{reason="released"} against "abandoned").
FINISH_SQL = (
    f"WITH {WAS_LAPSED}, done AS ("
    " UPDATE payment.payments SET status = %(status)s, response_status = %(response_status)s, response = %(response)s,"
    " authorization_id = coalesce(%(authorization_id)s, authorization_id), completed_at = %(completed_at)s,"
    " lease_owner = CASE WHEN %(status)s = 'pending' THEN NULL ELSE lease_owner END,"
    " lease_until = CASE WHEN %(status)s = 'pending' THEN now() + make_interval(secs => %(retry)s) ELSE now() END,"
    f" updated_at = now(){OWNED} RETURNING id),"
    " queued AS (INSERT INTO payment.outbox (topic, key, payload)"
    " SELECT %(topic)s, %(key)s, %(event)s::jsonb FROM done WHERE %(event)s::jsonb IS NOT NULL)"
    " SELECT (SELECT count(*) FROM done), (SELECT lapsed FROM was)"
)
STATUS_CODES = {"completed": 201, "failed": 502, "aborted": 503, "pending": 503}
DECLINE_CODES = {"INSUFFICIENT_FUNDS": 402, "CARD_DECLINED": 402, "UNKNOWN_ACCOUNT": 422}


class PaymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=ID_PATTERN)
    merchant_id: str = Field(pattern=ID_PATTERN)
    amount: StrictInt = Field(gt=0, le=10_000_000)
    method: Literal["balance", "card"]


class LeaseLost(Exception):
    """Another replica took the payment over; it, not we, will answer for it."""


class LeaseWatch:
    """Counts, once, that the lease on one saga's payment ran out while its owner ran it: at the
    first statement that finds it so, even a renewal answered after the saga's ending."""

    def __init__(self, lapses: Any) -> None:
        self.lapses = lapses
        self.lapsed = False

    def saw(self, lapsed: bool | None) -> None:
        if lapsed and not self.lapsed:
            self.lapsed = True
            self.lapses.inc()


def render(p: PaymentFacts, ending: Ending, completed_at: datetime | None) -> tuple[int, str]:
    """The response for a saga's ending: status code and the exact body text that is stored."""
    if ending.status == "completed":
        body: dict[str, Any] = {
            "payment_id": p.id,
            "status": "completed",
            "user_id": p.user_id,
            "merchant_id": p.merchant_id,
            "amount": p.amount,
            "method": p.method,
            "authorization_id": ending.authorization_id,
            "completed_at": completed_at.isoformat() if completed_at else None,
        }
        return 201, json.dumps(body)
    code = ending.code or "PAYMENT_FAILED"
    status = DECLINE_CODES.get(code, 402) if ending.status == "declined" else STATUS_CODES[ending.status]
    error = {"code": code, "message": MESSAGES[code], "payment_id": p.id, "status": ending.status}
    return status, json.dumps({"error": error})


def completed_event(p: PaymentFacts, idempotency_key: str, completed_at: datetime) -> dict[str, Any]:
    return {
        # Derived from the payment, so a re-publish carries the same id and consumers dedupe it.
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"paychaos:payment:{p.id}:completed")),
        "type": "payment.completed",
        "payment_id": p.id,
        "idempotency_key": idempotency_key,
        "user_id": p.user_id,
        "merchant_id": p.merchant_id,
        "amount": p.amount,
        "method": p.method,
        "completed_at": completed_at.isoformat(),
    }


def stored_response(row: dict[str, Any]) -> Response:
    headers = {"Idempotency-Replayed": "true"}
    if row["response_status"] == 503:
        headers["Retry-After"] = RETRY_AFTER
    return Response(row["response"], status_code=row["response_status"], media_type="application/json", headers=headers)


def facts(row: dict[str, Any]) -> PaymentFacts:
    return PaymentFacts(
        row["id"], row["user_id"], row["merchant_id"], row["amount"], row["method"], row["step"], row["authorization_id"]
    )


def build(ctx: ReplicaContext) -> ServiceParts:
    res = ctx.topology.resilience
    pool = ctx.db_pool(size=12)
    breaker = CircuitBreaker("acquirer", res.breaker)
    BreakerMetrics(breaker, ctx.registry, ctx.labels())
    ledger, acquirer = ctx.client("ledger"), ctx.client("acquirer")
    refused_retry = 0.0 if res.fallback else res.timeouts.acquirer.total_seconds()
    ledger_retries = Counter(
        "payment_ledger_retries", "Ledger transfers sent again under their transfer id after an unknown outcome",
        ["service", "zone", "step"], registry=ctx.registry,
    )
    # Every step's series present from the start: increase() misses a series' first value.
    retried = {step: ledger_retries.labels(step=step, **ctx.labels())
               for step in ("reserve", "settle", "refund", "void-reserve", "void-settle")}
    # What each compensation's fence found: the transfer it voided had never landed ("voided"),
    # or had ("applied"). A voided reserve is a payment whose outcome its saga never learned.
    fences = Counter(
        "payment_ledger_fences", "Transfers a compensation voided before deciding, by what it found",
        ["service", "zone", "step", "found"], registry=ctx.registry,
    )
    series_from_start(fences, ctx.labels(), step=("reserve", "settle"), found=("voided", "applied"))
    unanswered = Counter(
        "payment_ledger_unanswered", "Ledger transfers a saga gave up on without learning whether they landed",
        ["service", "zone", "step"], registry=ctx.registry,
    )
    series_from_start(unanswered, ctx.labels(), step=("reserve", "settle"))
    # A podKill with inFlightKind: authorization cuts a card saga while its acquirer call is out.
    authorizing = ctx.work_in_flight("Card authorizations out", ["authorization"]).labels(
        kind="authorization", **ctx.labels())
    saga = Saga(ledger, acquirer, breaker, retry_refused_for=refused_retry, on_ledger_retry=lambda step: retried[step].inc(),
                on_void=lambda step, found: fences.labels(step=step, found=found.value, **ctx.labels()).inc(),
                on_unanswered=lambda step: unanswered.labels(step=step, **ctx.labels()).inc(),
                authorizing=authorizing.track_inprogress)
    publisher = Publisher(ctx, pool)
    labels = ctx.labels()
    payments_total = Counter(
        "payments", "Payment sagas by method and outcome", ["service", "zone", "method", "outcome"], registry=ctx.registry
    )
    # What the idempotency and lease machinery did: experiments count these to show that a run
    # really walked the retry and takeover paths its money invariants guard.
    takeovers = Counter(
        "payment_takeovers",
        "Payments taken over: resumed by the recovery loop (abandoned: its owner's lease expired; released: an"
        " unfinished compensation its owner let go) or retried (aborted)",
        ["service", "zone", "reason"], registry=ctx.registry,
    )
    series_from_start(takeovers, labels, reason=("abandoned", "released", "aborted"))
    renewal_gap = Histogram(
        "payment_lease_renewal_seconds",
        f"Time between a saga's lease renewals (the lease lasts {LEASE_SECONDS:g} s: a gap near it loses the payment)",
        ["service", "zone"], registry=ctx.registry, buckets=(0.5, 0.55, 0.6, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 3.0),
    ).labels(**labels)
    leases_lost = Counter(
        "payment_leases_lost", "Sagas whose lease another replica took while they still ran", ["service", "zone"],
        registry=ctx.registry,
    ).labels(**labels)
    leases_lapsed = Counter(
        "payment_leases_lapsed",
        "Sagas whose lease ran out while they still ran, as their owner found: its next renewal or its ending came"
        " too late, whether or not another replica then took the payment",
        ["service", "zone"], registry=ctx.registry,
    ).labels(**labels)
    # How often a live saga needed its renewals: one that ran longer than a lease would have been
    # taken over without them. An experiment that guards renewals counts these as its exercise.
    beyond_lease = Counter(
        "payment_sagas_beyond_lease",
        f"Sagas that ran longer than one lease ({LEASE_SECONDS:g} s), kept by renewals or lost", ["service", "zone"],
        registry=ctx.registry,
    ).labels(**labels)
    replays = Counter(
        "payment_idempotent_replays", "Retried keys answered with the stored response", ["service", "zone"], registry=ctx.registry
    ).labels(**labels)
    # Latency per payment method as this service served them: where the breaker's fail-fast is
    # judged (a refused card call must not wait). What users saw, refusals of a full worker pool
    # included, is measured at the gateway (gateway_payment_requests_seconds).
    request_duration = Histogram(
        "payment_request_duration_seconds",
        "Payment requests by method and answer, as the payment service served them",
        ["service", "zone", "method", "status"],
        registry=ctx.registry,
        buckets=LATENCY_BUCKETS,
    )
    series_from_start(request_duration, labels, method=("balance", "card"), status=SERVER_ERRORS)

    heartbeats: set[asyncio.Task[None]] = set()  # the event loop keeps only weak references to tasks

    async def fetch(conn: AsyncConnection[Any], where: str, value: str) -> dict[str, Any] | None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(f"SELECT {_COLUMNS} FROM payment.payments WHERE {where} = %s", [value])  # type: ignore[arg-type]
        return await cur.fetchone()

    async def insert(body: PaymentRequest, key: str, request_hash: str, owner: str) -> dict[str, Any] | None:
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "INSERT INTO payment.payments (id, idempotency_key, dedupe_key, request_hash, user_id, merchant_id,"
                " amount, method, status, lease_owner, lease_until)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s, now() + make_interval(secs => %s))"
                f" ON CONFLICT (dedupe_key) DO NOTHING RETURNING {_COLUMNS}",  # type: ignore[arg-type]
                [uuid.uuid4().hex, key, key if res.idempotency else None, request_hash, body.user_id,
                 body.merchant_id, body.amount, body.method, owner, LEASE_SECONDS],
            )
            return await cur.fetchone()

    async def take_over(payment_id: str, owner: str, reason: str) -> dict[str, Any] | None:
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "UPDATE payment.payments SET status = 'pending', lease_owner = %s,"
                " lease_until = now() + make_interval(secs => %s), attempts = attempts + 1, updated_at = now()"
                " WHERE id = %s AND (status = 'aborted' OR (status = 'pending' AND lease_until < now()))"
                f" RETURNING {_COLUMNS}",  # type: ignore[arg-type]
                [owner, LEASE_SECONDS, payment_id],
            )
            row = await cur.fetchone()
        if row is not None:
            takeovers.labels(reason=reason, **labels).inc()
        return row

    async def finish(p: PaymentFacts, key: str, owner: str, ending: Ending, lease: LeaseWatch) -> tuple[int, str]:
        completed_at = datetime.now(UTC) if ending.status == "completed" else None
        status_code, text = render(p, ending, completed_at)
        stored = ending.status != "pending"  # an unfinished compensation is not an answer to keep
        event = Jsonb(completed_event(p, key, completed_at)) if completed_at is not None and res.outbox else None
        # The payment's ending and its outbox event in one statement, so in one transaction (and
        # one round trip): the event is queued only if this replica still held the lease.
        async with pool.connection() as conn:
            cur = await conn.execute(FINISH_SQL, {
                "status": "pending" if not stored else ending.status, "response_status": status_code if stored else None,
                "response": text if stored else None, "authorization_id": ending.authorization_id,
                "completed_at": completed_at, "id": p.id, "owner": owner, "topic": OUTBOX_TOPIC, "key": p.user_id,
                "event": event, "retry": RELEASE_RETRY_SECONDS,
            })
            finished, lapsed = await cur.fetchone() or (0, None)
        lease.saw(lapsed)
        if finished != 1:
            raise LeaseLost(p.id)
        if completed_at is not None and not res.outbox:
            publisher.publish_direct(p.user_id, completed_event(p, key, completed_at))
        payments_total.labels(method=p.method, outcome=ending.status, **labels).inc()
        return status_code, text

    async def extend(p: PaymentFacts, owner: str, lease: LeaseWatch, step: str | None = None,
                     authorization_id: str | None = None, timeout: float | None = None) -> bool:
        """Renew the lease this owner holds on a payment (and move it to ``step``); False if it was taken."""
        async with pool.connection(timeout=timeout) as conn:
            cur = await conn.execute(EXTEND_SQL, {
                "lease": LEASE_SECONDS, "step": step, "authorization_id": authorization_id, "id": p.id, "owner": owner,
            })
            row = await cur.fetchone()
        lease.saw(row[0] if row else None)
        return row is not None

    async def run_owned(row: dict[str, Any], key: str, owner: str) -> Response | None:
        """Run the saga of a payment this request owns; None if the lease was lost on the way."""
        p = facts(row)
        lease = LeaseWatch(leases_lapsed)

        async def mark_compensating(authorization_id: str | None) -> None:
            if not await extend(p, owner, lease, step="compensating", authorization_id=authorization_id):
                raise LeaseLost(p.id)

        async def renew(done: asyncio.Event) -> None:
            """The saga's heartbeat: keep the lease while it runs, so only a dead owner's payment expires."""
            loop = asyncio.get_running_loop()
            last = loop.time()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), HEARTBEAT_SECONDS)
                if done.is_set():
                    return
                try:
                    kept = await extend(p, owner, lease, timeout=LEASE_SECONDS / 2)
                except (PoolTimeout, OperationalError):
                    continue  # the lease may lapse; finish() tells whether it did
                now = loop.time()
                renewal_gap.observe(now - last)
                last = now
                if not kept:
                    return  # taken over: finish() raises LeaseLost, counted below

        done = asyncio.Event()
        # Not awaited: a renewal still waiting for a pool slot must not hold the answer up, and
        # one landing after finish() renews nothing finished (only a payment still pending).
        renewing = asyncio.create_task(renew(done))
        heartbeats.add(renewing)
        renewing.add_done_callback(heartbeats.discard)
        started = time.perf_counter()
        try:
            try:
                ending = await saga.run(p, mark_compensating)
            finally:
                done.set()
                if time.perf_counter() - started > LEASE_SECONDS:
                    beyond_lease.inc()
            status_code, text = await finish(p, key, owner, ending, lease)
        except LeaseLost:
            leases_lost.inc()
            lease.saw(True)  # only a lease that ran out is taken from a live owner
            return None
        headers = {"Retry-After": RETRY_AFTER} if status_code == 503 else None
        return Response(text, status_code=status_code, media_type="application/json", headers=headers)

    async def create_payment(request: Request) -> Response:
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key or len(key) > 200:
            return problem(400, "IDEMPOTENCY_KEY_REQUIRED", "Send an Idempotency-Key header (at most 200 characters).")
        try:
            body = PaymentRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return invalid_request("The payment request is malformed.", exc)
        request_hash = fingerprint(body)
        owner = f"{ctx.replica.name}:{uuid.uuid4().hex[:12]}"
        started = time.perf_counter()
        try:
            response = await resolve(body, key, request_hash, owner)
        except (PoolTimeout, OperationalError):
            response = problem(503, "PAYMENT_BUSY", MESSAGES["LEDGER_UNAVAILABLE"], headers={"Retry-After": RETRY_AFTER})
        request_duration.labels(method=body.method, status=str(response.status_code), **labels).observe(
            time.perf_counter() - started
        )
        return response

    async def resolve(body: PaymentRequest, key: str, request_hash: str, owner: str) -> Response:
        row = await insert(body, key, request_hash, owner)
        if row is not None:
            answer = await run_owned(row, key, owner)
            if answer is not None:
                return answer
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        waited = row is not None
        while True:
            async with pool.connection() as conn:
                row = await fetch(conn, "dedupe_key", key)
            if row is None:  # idempotency switched off and the lease lost: nothing to dedupe against
                return problem(409, "PAYMENT_IN_PROGRESS", MESSAGES["PAYMENT_IN_PROGRESS"], headers={"Retry-After": RETRY_AFTER})
            decision = decide_claim(Existing(row["request_hash"], row["status"]), request_hash, waited=waited)
            if decision is Claim.REUSED:
                return problem(409, "IDEMPOTENCY_KEY_REUSED", "This Idempotency-Key was used for a different payment.")
            if decision is Claim.REPLAY:
                replays.inc()
                return stored_response(row)
            if decision is Claim.TAKE_OVER:
                mine = await take_over(row["id"], owner, "aborted")
                answer = await run_owned(mine, key, owner) if mine is not None else None
                if answer is not None:
                    return answer
            elif asyncio.get_running_loop().time() >= deadline:
                return problem(409, "PAYMENT_IN_PROGRESS", MESSAGES["PAYMENT_IN_PROGRESS"], headers={"Retry-After": RETRY_AFTER})
            waited = True
            await asyncio.sleep(POLL_SECONDS)

    async def get_payment(request: Request) -> Response:
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT id AS payment_id, idempotency_key, status, user_id, merchant_id, amount, method,"
                " authorization_id, created_at, completed_at FROM payment.payments WHERE id = %s",
                [request.path_params["payment_id"]],
            )
            row = await cur.fetchone()
        if row is None:
            return problem(404, "PAYMENT_NOT_FOUND", "No such payment.")
        for field in ("created_at", "completed_at"):
            row[field] = row[field].isoformat() if row[field] else None
        return JSONResponse(row)

    async def resume(payment_id: str, key: str, released: bool) -> None:
        owner = f"{ctx.replica.name}:recovery:{uuid.uuid4().hex[:8]}"
        mine = await take_over(payment_id, owner, "released" if released else "abandoned")
        if mine is not None:
            await run_owned(mine, key, owner)

    async def recover_abandoned() -> None:
        """Background loop: resume payments whose replica died mid-saga (their lease ran out), the
        only path that does: no money waits in escrow for a retry, and a retry waits for this."""
        while True:
            await asyncio.sleep(RECOVERY_POLL_SECONDS)
            try:
                async with pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT id, idempotency_key, lease_owner IS NULL FROM payment.payments"
                        " WHERE status = 'pending' AND lease_until < now() ORDER BY lease_until LIMIT 20"
                    )
                    abandoned = await cur.fetchall()
                # At once, so one saga stuck on a slow card network holds up no other.
                outcomes = await asyncio.gather(*(resume(*row) for row in abandoned), return_exceptions=True)
            except (PoolTimeout, OperationalError):
                continue
            for (payment_id, _, _), outcome in zip(abandoned, outcomes, strict=True):
                if isinstance(outcome, Exception) and not isinstance(outcome, (PoolTimeout, OperationalError)):
                    # The loop goes on: it is the only path that finishes a dead owner's payment.
                    log.error("resuming payment %s failed", payment_id, exc_info=outcome)

    async def startup() -> None:
        await pool.open(wait=True)
        await ensure_schema(pool, "payment_schema.sql")

    async def shutdown() -> None:
        await ledger.aclose()
        await acquirer.aclose()
        await asyncio.to_thread(publisher.close)
        await pool.close()

    background = [recover_abandoned, *([publisher.relay, publisher.measure_backlog] if res.outbox else [publisher.serve_delivery_reports])]
    return ServiceParts(
        routes=[
            Route("/v1/payments", create_payment, methods=["POST"]),
            Route("/v1/payments/{payment_id}", get_payment, methods=["GET"]),
        ],
        startup=[startup],
        shutdown=[shutdown],
        ready=database_readiness(pool),
        background=background,
    )
