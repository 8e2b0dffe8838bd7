"""The campaign service: consumes payment events, keeps Step/flash aggregates, grants cashback.

Grants are reserved in the same transaction as the aggregate update and booked in the ledger
afterwards under an idempotent transfer id; a loop retries any grant left pending.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Message
from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paychaos.platform.services import campaign_store as store
from paychaos.platform.services.calling import CallFailed, Reply, ServiceClient
from paychaos.platform.services.campaign_rules import CAMPAIGN_TZ, PaymentEvent, month_of, next_tier, tier_for
from paychaos.platform.services.campaign_view import StatusView
from paychaos.platform.services.consuming import BatchConsumer, consumer_config
from paychaos.platform.services.ledger import MAX_BATCH
from paychaos.platform.services.reaggregating import DriftReport, reaggregate
from paychaos.platform.services.schemas import database_readiness
from paychaos.platform.services.serving import ReplicaContext, ServiceParts, invalid_identifier, problem
from paychaos.platform.topology import CampaignSpec

log = logging.getLogger(__name__)

TOPIC = "payments"
CONSUMER_GROUP = "campaign"
#: A pending grant younger than this is still being booked by the replica that reserved it.
RETRY_PENDING_AFTER_SECONDS = 5.0


class NextTier(BaseModel):
    bps: int
    payments: int
    value: int
    payments_needed: int
    value_needed: int


class StepStatus(BaseModel):
    payments: int
    value: int
    tier_bps: int
    next_tier: NextTier | None


class FlashStatus(BaseModel):
    campaign: str
    granted: int
    user_cap_remaining: int
    budget_remaining: int
    budget_exhausted: bool


class CampaignStatus(BaseModel):
    user_id: str
    month: str
    step: StepStatus
    flash: FlashStatus


class ReaggregateRequest(BaseModel):
    repair: bool = False


def campaign_status(spec: CampaignSpec, user_id: str, moment: datetime, row: store.StatusRow) -> CampaignStatus:
    """Shape the precomputed row into the API answer (tiers are derived, never stored)."""
    tier = tier_for(row.payments, row.value, spec.step)
    upcoming = next_tier(row.payments, row.value, spec.step)
    return CampaignStatus(
        user_id=user_id,
        month=month_of(moment),
        step=StepStatus(
            payments=row.payments,
            value=row.value,
            tier_bps=tier.bps if tier else 0,
            next_tier=None
            if upcoming is None
            else NextTier(
                bps=upcoming.bps,
                payments=upcoming.payments,
                value=upcoming.value,
                payments_needed=max(0, upcoming.payments - row.payments),
                value_needed=max(0, upcoming.value - row.value),
            ),
        ),
        flash=FlashStatus(
            campaign=spec.flash.name,
            granted=row.granted,
            user_cap_remaining=max(0, spec.flash.per_user_cap - row.granted),
            budget_remaining=max(0, row.budget_remaining),
            budget_exhausted=row.budget_exhausted,
        ),
    )


@dataclass
class Metrics:
    consumed: Counter
    granted_yen: Counter
    booked: Counter
    lag: Gauge
    duplicates: Counter
    poison: Counter
    reads_from_copy: Counter
    reads_from_database: Counter

    @classmethod
    def register(cls, ctx: ReplicaContext) -> Metrics:
        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["service", "zone"], registry=ctx.registry).labels(**ctx.labels())

        lag = Gauge(
            "campaign_consumer_lag",
            "Messages behind the high watermark, summed over this replica's partitions",
            ["service", "zone"],
            registry=ctx.registry,
        )
        reads = Counter(
            "campaign_status_reads",
            "Status reads by where they were answered from: the replica's copy, or the database while it had none",
            ["service", "zone", "source"],
            registry=ctx.registry,
        )
        return cls(
            consumed=counter("campaign_events_consumed", "Payment events applied to the aggregates"),
            granted_yen=counter("campaign_cashback_granted_yen", "Cashback yen booked in the ledger by this replica"),
            booked=counter("campaign_cashback_booked", "Cashback transfers the ledger booked for this replica (a replay of one already booked not counted)"),
            lag=lag.labels(**ctx.labels()),
            duplicates=counter("campaign_duplicates_skipped", "Redelivered events recognised and skipped"),
            poison=counter("campaign_poison_skipped", "Undecodable events logged and skipped (skipPoison)"),
            reads_from_copy=reads.labels(source="copy", **ctx.labels()),
            reads_from_database=reads.labels(source="database", **ctx.labels()),
        )


class CampaignService:
    def __init__(
        self, ctx: ReplicaContext, pool: AsyncConnectionPool, ledger: ServiceClient, metrics: Metrics
    ) -> None:
        self.ctx = ctx
        self.spec = ctx.topology.campaign
        self.dedupe = ctx.topology.resilience.consumer_dedupe
        self.skip_poison = ctx.topology.resilience.skip_poison
        self.pool = pool
        self.ledger = ledger
        self.metrics = metrics
        self.view = StatusView(ctx.topology.database_dsn(ctx.service), self.spec.flash.name)

    async def record(self, events: list[PaymentEvent]) -> store.Recorded:
        """Apply a batch of events to the aggregates; the grants they earn are reserved, not yet booked."""
        # Without dedupe every delivery is a new grant with its own transfer id: the defect on purpose.
        suffix = (lambda: None) if self.dedupe else (lambda: secrets.token_hex(6))
        async with self.pool.connection() as conn:
            recorded = await store.record_events(conn, events, self.spec, dedupe=self.dedupe, suffix=suffix)
        self.metrics.duplicates.inc(recorded.duplicates)
        self.metrics.consumed.inc(recorded.applied)
        return recorded

    async def book(self, grants: list[store.Grant]) -> None:
        """Send grants to the ledger in batches, together, so a slow ledger costs them one timeout
        rather than one each, and the budget row is taken once a batch rather than once a grant;
        mark what it answered definitely, leave the rest pending for the retry loop."""
        if not grants:
            return
        chunks = [grants[i:i + MAX_BATCH] for i in range(0, len(grants), MAX_BATCH)]
        answered = await asyncio.gather(*(self._send(chunk) for chunk in chunks))
        applied: list[store.Grant] = []
        refused: list[tuple[store.Grant, int, str | None]] = []  # answered, but not booked
        booked_yen = booked = 0
        for chunk, answers in zip(chunks, answered, strict=True):
            for grant, answer in zip(chunk, answers or [], strict=False):  # no answer: left pending
                status, code = int(answer.get("status", 0)), (answer.get("error") or {}).get("code")
                if status in (200, 201):
                    applied.append(grant)
                    if status == 201:
                        booked_yen, booked = booked_yen + grant.amount, booked + 1
                else:
                    refused.append((grant, status, code))
        # One connection for the whole batch's marks: the consumer and the retry loop are its only
        # callers, so bookings hold at most two of the pool's connections and status reads keep
        # the rest (when each grant marked on its own connection, a starved machine's status
        # reads waited past the pool's timeout).
        async with self.pool.connection() as conn:
            if applied:
                await store.mark_applied(conn, [g.transfer_id for g in applied])
            for grant, status, code in refused:
                if code == "INSUFFICIENT_FUNDS":
                    log.warning("campaign budget %s exhausted at %s", grant.campaign, grant.transfer_id)
                    await store.mark_refused(conn, grant.transfer_id)
                elif code == "TRANSFER_ID_REUSED":
                    # Retrying cannot help: the id is taken by a transfer with another body.
                    log.error("ledger holds %s with another body; grant parked for a human", grant.transfer_id)
                    await store.mark_parked(conn, grant.transfer_id)
                else:
                    # UNKNOWN_ACCOUNT before the ledger is seeded: worth another try later.
                    log.warning("ledger answered %s %s for %s; retrying later", status, code, grant.transfer_id)
        self.metrics.granted_yen.inc(booked_yen)
        self.metrics.booked.inc(booked)

    async def _send(self, grants: list[store.Grant]) -> list[dict[str, object]] | None:
        """The ledger's answer to each grant of a batch, in order, or None when it could not be
        had (the whole batch is retried later)."""
        body = {"transfers": [{
            "id": grant.transfer_id,
            "kind": "cashback",
            "user_id": grant.user_id,
            "payment_id": grant.payment_id,
            "postings": [
                {"account": f"budget:{grant.campaign}", "amount": -grant.amount},
                {"account": f"wallet:{grant.user_id}", "amount": grant.amount},
            ],
        } for grant in grants]}
        try:
            reply = await self.ledger.post("/v1/transfer-batches", json=body)
        except CallFailed as exc:
            log.warning("ledger unreachable for %d grants from %s (%s); retrying later", len(grants), grants[0].transfer_id, exc)
            return None
        if reply.status_code != 200:
            log.warning("ledger answered %s %s for %d grants; retrying later", reply.status_code, _error_code(reply), len(grants))
            return None
        results = reply.json().get("results")
        return results if isinstance(results, list) and len(results) == len(grants) else None

    async def process(self, events: list[PaymentEvent]) -> store.Recorded:
        """Record a batch of events, then book the grants it earned once its transaction committed."""
        recorded = await self.record(events)
        await self.book(recorded.grants)
        return recorded

    async def handle_batch(self, messages: list[Message]) -> None:
        events: list[PaymentEvent] = []
        for message in messages:
            try:
                event = _decode(message, skip_poison=self.skip_poison)
            except Undecodable:
                self.metrics.poison.inc()
                continue
            if event is not None:
                events.append(event)
        if events:
            await self.process(events)

    async def consume(self) -> None:
        topology = self.ctx.topology
        config = consumer_config(topology.bootstrap_servers, CONSUMER_GROUP, self.ctx.replica.name)
        consumer = BatchConsumer(config, TOPIC, on_lag=self.metrics.lag.set)
        while True:
            try:
                await consumer.run(self.handle_batch)
            except Exception:
                log.exception("campaign consumer crashed; restarting")
                await asyncio.sleep(2.0)
                consumer = BatchConsumer(config, TOPIC, on_lag=self.metrics.lag.set)

    async def retry_pending(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            try:
                async with self.pool.connection() as conn:
                    grants = await store.pending_grants(conn, older_than_seconds=RETRY_PENDING_AFTER_SECONDS)
                await self.book(grants)
            except Exception:
                log.exception("retrying pending grants failed")

    async def status(self, request: Request) -> Response:
        user_id = request.query_params.get("user_id", "")
        if not user_id:
            return problem(400, "USER_ID_REQUIRED", "Pass the user as ?user_id=.")
        if (invalid := invalid_identifier(user_id, "user_id")) is not None:
            return invalid
        now = datetime.now(CAMPAIGN_TZ)
        row = self.view.status(user_id, month_of(now))
        if row is not None:
            self.metrics.reads_from_copy.inc()
        else:  # the copy is loading or was dropped: the database answers
            self.metrics.reads_from_database.inc()
            async with self.pool.connection() as conn:
                row = await store.read_status(conn, self.spec, user_id, now)
        return Response(campaign_status(self.spec, user_id, now, row).model_dump_json(), media_type="application/json")

    async def reaggregate(self, request: Request) -> Response:
        raw = await request.body()
        try:
            ask = ReaggregateRequest.model_validate_json(raw) if raw.strip() else ReaggregateRequest()
        except ValidationError as exc:
            return problem(422, "INVALID_REQUEST", str(exc.errors()[0]["msg"]))
        report: DriftReport
        async with self.pool.connection() as conn:
            report = await reaggregate(conn, self.spec, repair=ask.repair)
        return JSONResponse(report.model_dump())


class PoisonMessage(Exception):
    """An event that cannot be decoded, with skipPoison switched off: the batch fails, for ever."""


class Undecodable(Exception):
    """An event that cannot be decoded, with skipPoison on: logged, counted and skipped."""


def _decode(message: Message, *, skip_poison: bool = True) -> PaymentEvent | None:
    """The payment event in ``message``; None for another event type. Undecodable bytes raise
    :class:`Undecodable` (to skip and count) or, with skipPoison off, :class:`PoisonMessage`."""
    try:
        data = json.loads(message.value() or b"")
        if not isinstance(data, dict) or data.get("type") != "payment.completed":
            return None
        return PaymentEvent.model_validate(data)
    except (ValueError, ValidationError) as exc:
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        if not skip_poison:
            raise PoisonMessage(f"undecodable event at {where}: {exc}") from None
        # A poison message must not stall the partition; it is logged and skipped.
        log.error("skipping undecodable event at %s: %s", where, exc)
        raise Undecodable(where) from None


def _error_code(response: Reply) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def build(ctx: ReplicaContext) -> ServiceParts:
    pool = ctx.db_pool()
    ledger = ctx.client("ledger")
    service = CampaignService(ctx, pool, ledger, Metrics.register(ctx))

    async def start() -> None:
        await pool.open(wait=True)
        await store.ensure_schema(pool, ctx.topology.campaign)

    async def stop() -> None:
        await ledger.aclose()
        await pool.close()

    return ServiceParts(
        routes=[
            Route("/v1/campaign/status", service.status, methods=["GET"]),
            Route("/admin/reaggregate", service.reaggregate, methods=["POST"]),
        ],
        startup=[start],
        shutdown=[stop],
        ready=database_readiness(pool),
        background=[service.consume, service.retry_pending, service.view.run],
    )
