"""The app's entry behind the edge load balancer: admission, load shedding and routing downstream.

Refusals are 429/503 with ``Retry-After`` and a friendly body; a downstream that times out or
cannot be reached becomes 503 UPSTREAM_UNAVAILABLE instead of a hung or broken response.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Awaitable, Callable
from typing import Literal
from urllib.parse import quote

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paychaos.platform.services.admission import Admission, Decision, Restriction, pass_expires, stack_secret
from paychaos.platform.services.calling import CallFailed, CallTimedOut, Reply, ServiceClient
from paychaos.platform.services.serving import (
    LATENCY_BUCKETS, SERVER_ERRORS, ReplicaContext, ServiceParts, invalid_identifier, problem, series_from_start,
)

PASS_HEADER = "X-Admission-Pass"
# When the pass lapses (epoch seconds): the app, and a client-side probe, know the flow it covers.
PASS_EXPIRES_HEADER = "X-Admission-Pass-Expires"
DEVICE_HEADER = "X-Device-Id"
FORWARDED_HEADERS = frozenset({b"idempotency-key", b"x-device-id", b"x-user-id", b"content-type", b"accept"})
# Downstream statuses that mean "the service is not there" (HAProxy answers these with HTML).
UNAVAILABLE_STATUSES = (502, 503, 504)
PASSED_HEADERS = frozenset({"content-type", "retry-after", "location"})
TRY_AGAIN = "Lots of people are paying right now — please try again in a few seconds."

Handler = Callable[[Request], Awaitable[Response]]


class Gateway:
    """Routes requests downstream, with admission in front when the topology enables it."""

    def __init__(self, ctx: ReplicaContext) -> None:
        self.ctx = ctx
        self.spec = ctx.topology.resilience.admission
        self.admission = Admission(self.spec, stack_secret(ctx.topology), time.time())
        self.in_flight = 0
        self.clients: dict[str, ServiceClient] = {}
        self.decisions = Counter(
            "gateway_admission_decisions",
            "Admission decisions of the gateway",
            ["service", "zone", "decision"],
            registry=ctx.registry,
        )
        series_from_start(self.decisions, ctx.labels(), decision=("admitted", "pass", "rate_limited", "rotated_out", "shed"))
        # Payments by method as the app saw them, refusals and queueing included: the SLO that
        # shows whether balance payments are spared when the card network is slow. Measured here
        # because a payment replica whose workers are all pinned never sees the requests it refuses.
        self.payments = Histogram(
            "gateway_payment_requests_seconds",
            "Payment requests by method and answer, as the gateway answered them",
            ["service", "zone", "method", "status"],
            registry=ctx.registry,
            buckets=LATENCY_BUCKETS,
        )
        series_from_start(self.payments, ctx.labels(), method=("balance", "card", "other"), status=SERVER_ERRORS)

    async def start(self) -> None:
        for dependency in ("payment", "campaign", "ledger"):
            self.clients[dependency] = self.ctx.client(dependency)

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def _count(self, decision: Decision | Literal["shed"]) -> None:
        self.decisions.labels(decision=decision, **self.ctx.labels()).inc()

    def admitted(self, handler: Handler) -> Handler:
        """Wrap a route with admission: device id, in-flight cap, token bucket, rotation or pass."""

        async def guarded(request: Request) -> Response:
            if not self.spec.enabled:
                return await handler(request)
            device_id = request.headers.get(DEVICE_HEADER)
            if not device_id:
                return problem(400, "DEVICE_ID_REQUIRED", f"The {DEVICE_HEADER} header is required.")
            if self.in_flight >= self.spec.max_in_flight:
                self._count("shed")
                return _try_again(503, 1, "shed")
            token = request.headers.get(PASS_HEADER) or request.cookies.get(PASS_HEADER)
            verdict = self.admission.decide(device_id, token, time.time())
            self._count(verdict.decision)
            if not verdict.admitted:
                return _try_again(429, verdict.retry_after, verdict.decision)
            self.in_flight += 1
            try:
                response = await handler(request)
            finally:
                self.in_flight -= 1
            if verdict.new_pass is not None:
                response.headers[PASS_HEADER] = verdict.new_pass
                expires = pass_expires(verdict.new_pass)
                response.headers[PASS_EXPIRES_HEADER] = str(expires)
                # The pass's own lifetime: under a restriction it is that restriction's flowTtl.
                response.set_cookie(PASS_HEADER, verdict.new_pass, max_age=max(1, expires - int(time.time())), httponly=True)
            return response

        return guarded

    async def restriction(self, request: Request) -> Response:
        """The rotation rules in force. PUT {allowedPercent, rotation, flowTtl (seconds), until
        (epoch seconds)} restricts admission until then, as an operator does for the noon rush;
        DELETE lifts it. Served on the replica's own port: the edge does not route /admin."""
        if request.method == "PUT":
            try:
                body = json.loads(await request.body())
                self.admission.restriction = Restriction(int(body["allowedPercent"]), float(body["rotation"]),
                                                         float(body["flowTtl"]), float(body["until"]))
            except (ValueError, KeyError, TypeError) as exc:
                return problem(422, "INVALID_RESTRICTION", f"expected {{allowedPercent, rotation, flowTtl, until}}: {exc}")
        elif request.method == "DELETE":
            self.admission.restriction = None
        now = time.time()
        allowed, rotation, flow_ttl = self.admission.rules(now)
        r = self.admission.restriction
        return JSONResponse({"enabled": self.spec.enabled, "allowedPercent": allowed, "rotation": rotation,
                             "flowTtl": flow_ttl, "restricted": r is not None and now < r.until,
                             "until": r.until if r is not None else None})

    async def forward(self, request: Request, dependency: str, path: str) -> Response:
        # Header values and the query string go on byte for byte (bytes a request line may not
        # hold, percent-encoded). Header text is written as UTF-8, so a value that is not UTF-8
        # (any visible Latin-1 byte is legal HTTP) is the app's mistake, answered 400 here rather
        # than re-encoded into another key downstream.
        headers = []
        for name, value in request.headers.raw:
            if name in FORWARDED_HEADERS:
                try:
                    headers.append((name.decode("ascii"), value.decode("utf-8")))
                except UnicodeDecodeError:
                    header = name.decode("latin-1")
                    return problem(400, "INVALID_HEADER", f"The {header} header must be UTF-8 text.", field=header)
        try:
            upstream = await self.clients[dependency].request(
                request.method, path, query=quote(request.scope["query_string"], safe=string.punctuation), headers=headers,
                content=await request.body(),
            )
        except CallTimedOut:
            return _unavailable(dependency, "did not answer in time")
        except CallFailed:
            return _unavailable(dependency, "could not be reached")
        if upstream.status_code in UNAVAILABLE_STATUSES and not _is_json(upstream):
            return _unavailable(dependency, f"answered {upstream.status_code}")
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            headers={name: upstream.headers[name] for name in PASSED_HEADERS if name in upstream.headers},
        )

    def routes(self) -> list[Route]:
        async def payments(request: Request) -> Response:
            started = time.perf_counter()
            response = await self.forward(request, "payment", "/v1/payments")
            self.payments.labels(method=_payment_method(await request.body()), status=str(response.status_code),
                                 **self.ctx.labels()).observe(time.perf_counter() - started)
            return response

        async def campaign_status(request: Request) -> Response:
            return await self.forward(request, "campaign", "/v1/campaign/status")

        async def wallet(request: Request) -> Response:
            user_id = request.path_params["user_id"]
            if (invalid := invalid_identifier(user_id, "user_id")) is not None:
                return invalid  # before it goes into a URL: a NUL byte cannot
            return await self.forward(request, "ledger", f"/v1/wallets/{user_id}")

        return [
            Route("/admin/admission", self.restriction, methods=["GET", "PUT", "DELETE"]),
            Route("/v1/payments", self.admitted(payments), methods=["POST"]),
            Route("/v1/campaign/status", self.admitted(campaign_status), methods=["GET"]),
            Route("/v1/wallets/{user_id}", self.admitted(wallet), methods=["GET"]),
        ]


def _payment_method(body: bytes) -> str:
    """The body's payment method (card, balance), or "other" for anything the payment service will reject."""
    try:
        method = json.loads(body).get("method")
    except (ValueError, AttributeError):
        return "other"
    return method if method in ("card", "balance") else "other"


def _is_json(response: Reply) -> bool:
    return response.headers.get("content-type", "").startswith("application/json")


def _try_again(status: int, retry_after: int, reason: str) -> Response:
    """A refusal the app shows as "try again shortly"; ``reason`` (rotated_out, rate_limited,
    shed) tells operators and client-side probes which rule refused."""
    return problem(status, "TRY_AGAIN_SHORTLY", TRY_AGAIN, headers={"Retry-After": str(retry_after)}, reason=reason)


def _unavailable(dependency: str, what: str) -> Response:
    return problem(
        503,
        "UPSTREAM_UNAVAILABLE",
        f"The {dependency} service {what}; please try again in a few seconds.",
        headers={"Retry-After": "1"},
        upstream=dependency,
    )


def build(ctx: ReplicaContext) -> ServiceParts:
    gateway = Gateway(ctx)
    return ServiceParts(routes=gateway.routes(), startup=[gateway.start], shutdown=[gateway.stop])
