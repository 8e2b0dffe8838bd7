"""The external card network, simulated: authorizes card payments with realistic latency and declines.

Answers are derived from the payment id (decline or not, authorization id), so a retry of one
payment gets the same answer from any replica, as a real acquirer's idempotency keys guarantee.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paychaos.platform.services.fingerprints import per_mille
from paychaos.platform.services.serving import ReplicaContext, ServiceParts, invalid_request, problem


class AuthorizationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_id: str = Field(min_length=1, max_length=128)
    amount: StrictInt = Field(gt=0)


#: A real acquirer keeps idempotency records for a retention window, not for ever: past this many
#: payment ids (or voided authorizations) the oldest are forgotten, so a game day of hours does
#: not grow the simulator without bound. Ids are UUIDs; one reused after that long does not happen.
REMEMBERED = 100_000


def remember(memory: dict[str, int | None], key: str, value: int | None = None, limit: int = REMEMBERED) -> int | None:
    """What ``memory`` first held for ``key`` (storing ``value`` if nothing), forgetting the oldest
    key past ``limit``. A dict keeps insertion order, which is all a FIFO of ids needs."""
    first = memory.setdefault(key, value)
    if len(memory) > limit:
        del memory[next(iter(memory))]
    return first


def authorization_id(payment_id: str) -> str:
    return "auth_" + hashlib.sha256(payment_id.encode("utf-8")).hexdigest()[:24]


def is_declined(payment_id: str, decline_per_mille: int) -> bool:
    return per_mille(payment_id) < decline_per_mille


def build(ctx: ReplicaContext) -> ServiceParts:
    spec = ctx.topology.acquirer
    latency = spec.latency.total_seconds()
    jitter = spec.jitter.total_seconds()
    # payment_id -> amount first authorized, to refuse a reused id with another amount.
    seen: dict[str, int | None] = {}
    voided: dict[str, int | None] = {}
    authorizations = Counter(
        "acquirer_authorizations",
        "Authorization requests by outcome",
        ["service", "zone", "outcome"],
        registry=ctx.registry,
    )
    voids = Counter("acquirer_voids", "Authorizations voided (compensation)", ["service", "zone"], registry=ctx.registry)
    labels = ctx.labels()

    async def network_delay() -> None:
        await asyncio.sleep(max(0.0, latency + random.uniform(-jitter, jitter)))

    async def authorize(request: Request) -> Response:
        try:
            body = AuthorizationRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return invalid_request("The authorization request is malformed.", exc)
        await network_delay()
        first = remember(seen, body.payment_id, body.amount)
        if first != body.amount:
            authorizations.labels(outcome="rejected", **labels).inc()
            return problem(409, "PAYMENT_ID_REUSED", "This payment id was authorized for another amount.")
        if is_declined(body.payment_id, spec.decline_per_mille):
            authorizations.labels(outcome="declined", **labels).inc()
            return JSONResponse({"payment_id": body.payment_id, "status": "declined", "code": "DECLINED"}, status_code=402)
        authorizations.labels(outcome="approved", **labels).inc()
        auth = authorization_id(body.payment_id)
        return JSONResponse(
            {"authorization_id": auth, "payment_id": body.payment_id, "amount": body.amount, "status": "approved"},
            status_code=201,
        )

    async def void(request: Request) -> Response:
        auth = request.path_params["authorization_id"]
        if not auth.startswith("auth_"):
            return problem(404, "UNKNOWN_AUTHORIZATION", "No such authorization.")
        await network_delay()
        if auth not in voided:
            remember(voided, auth)
            voids.labels(**labels).inc()
        return JSONResponse({"authorization_id": auth, "status": "voided"})

    return ServiceParts(
        routes=[
            Route("/v1/authorizations", authorize, methods=["POST"]),
            Route("/v1/authorizations/{authorization_id}/void", void, methods=["POST"]),
        ]
    )
