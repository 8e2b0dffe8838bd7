"""What every replica of the reference platform shares: identity, HTTP app, RED metrics, health.

A service module defines ``build(ctx: ReplicaContext) -> ServiceParts``; ``python -m
paychaos.platform.services SERVICE --zone Z --index N --port P --topology FILE`` serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paychaos.platform.services.calling import ServiceClient
from paychaos.platform.topology import Replica, Topology

#: A boundary at every latency bound an experiment or an SLO objective judges a quantile against
#: (1, 2 and 3 s): histogram_quantile interpolates inside a bucket, so a bound inside one is judged
#: on a guess. With (2.5, 5] a p99 of 3.05 s read 2.57 s and passed "below 3 s" (a unit test keeps
#: every bound the catalogue judges on a boundary).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 10.0)
#: The server errors the platform answers with; their series exist from a replica's start (see
#: series_from_start): a check that bounds server errors below one must see the first one.
SERVER_ERRORS = ("500", "502", "503", "504")


def series_from_start(metric: MetricWrapperBase, labels: Mapping[str, str], **values: Iterable[str]) -> None:
    """Create ``metric``'s series for every combination of ``values`` (label → its values), at zero.

    Prometheus' increase() and rate() see only the rises between a series' samples: a series
    born with its first 503 (or takeover, or refusal) would count that one as nothing, and a
    check bounding it below one would pass the run that had it.
    """
    names = list(values)
    for combination in itertools.product(*values.values()):
        metric.labels(**dict(zip(names, combination, strict=True)), **labels)


@dataclass
class ReplicaContext:
    """Who this process is and what it may talk to."""

    topology: Topology
    replica: Replica
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    @property
    def service(self) -> str:
        return self.replica.service

    @property
    def zone(self) -> str:
        return self.replica.zone

    def labels(self) -> dict[str, str]:
        return {"service": self.service, "zone": self.zone}

    def timeout(self, dependency: str) -> float | None:
        """Seconds to wait for a dependency, or None when timeouts are switched off."""
        t = self.topology.resilience.timeouts
        if not t.enabled:
            return None
        return getattr(t, dependency).total_seconds()

    def work_in_flight(self, what: str, kinds: Sequence[str]) -> Gauge:
        """``work_in_flight{kind}``, the platform's "what a replica is doing right now": a podKill
        with inFlightKind waits on it, to cut work of that kind rather than any request. Each
        kind's series exists from the start, so the fault can tell a kind the replica does not
        report (refused up front) from one it is not doing at the moment."""
        gauge = Gauge("work_in_flight", f"{what}, by kind", ["service", "zone", "kind"], registry=self.registry)
        series_from_start(gauge, self.labels(), kind=kinds)
        return gauge

    def client(self, dependency: str) -> ServiceClient:
        """A client for another service, through its load balancer (or its Toxiproxy)."""
        return ServiceClient(self.topology.internal_url(dependency), self.timeout(dependency))

    def db_pool(self, *, size: int = 10) -> AsyncConnectionPool:
        """A connection pool whose search_path is this service's own schema (one schema per service).

        Fixed-size, every connection opened at start (HikariCP's advice for the same reason): a
        pool that grows on demand grows when demand jumps, which is when the database is slow,
        and each new connection then costs several of its slow round trips (ledger-db-brownout:
        with the ledger's database 1.5 s late, ledger pools growing from 2 failed payments).
        Resized by restart, not by load.
        """

        async def configure(conn: Any) -> None:
            await conn.execute(f"SET search_path TO {self.service}")
            await conn.commit()

        return AsyncConnectionPool(
            self.topology.database_dsn(self.service),
            min_size=size,
            max_size=size,
            configure=configure,
            # Each statement outside a transaction block commits itself: a single-statement read
            # or write costs one round trip, not three (BEGIN, it, and the pool's COMMIT). Work of
            # several statements says so with conn.transaction().
            kwargs={"autocommit": True},
            open=False,
            timeout=self.timeout("ledger") or 30.0,
        )


Startup = Callable[[], Awaitable[None]]
ReadyCheck = Callable[[], Awaitable[bool]]


@dataclass
class ServiceParts:
    """What a service module hands to the server: its routes and its lifecycle hooks."""

    routes: Sequence[BaseRoute]
    startup: Sequence[Startup] = ()
    shutdown: Sequence[Startup] = ()
    ready: ReadyCheck | None = None
    background: Sequence[Callable[[], Awaitable[None]]] = ()  # long-running loops (outbox relay, consumer)


class RedMetrics:
    """Rate, errors, duration per route, with the labels the SLO catalogue queries."""

    def __init__(self, app: ASGIApp, ctx: ReplicaContext, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self.labels = ctx.labels()
        self.histogram = Histogram(
            "http_server_requests_seconds",
            "Server-side request latency by route and status",
            ["service", "zone", "route", "method", "status"],
            registry=ctx.registry,
            buckets=LATENCY_BUCKETS,
        )

        for route in routes:
            path, methods = getattr(route, "path", None), getattr(route, "methods", None) or ()
            if path is not None and not _management(path):
                series_from_start(self.histogram, self.labels, route=[path], method=sorted(set(methods) - {"HEAD"}),
                                  status=SERVER_ERRORS)

    def _route_template(self, scope: Scope) -> str | None:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", None)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route_template(scope)
        if route is None or _management(route):
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.histogram.labels(
                route=route, method=scope["method"], status=str(status), **self.labels
            ).observe(time.perf_counter() - started)


def _management(path: str) -> bool:
    """Health and metrics: served as a management port would, outside the worker pool and the RED metrics."""
    return path.startswith(("/health", "/metrics"))


class WorkerPool:
    """A bounded pool of request workers with an accept queue, as a servlet container has.

    asyncio has no thread pool to exhaust, yet the failure we rehearse is exactly that: slow
    downstream calls pin every worker and unrelated requests queue behind them. Health and
    metrics bypass the pool, as a management port would.
    """

    def __init__(self, app: ASGIApp, ctx: ReplicaContext) -> None:
        spec = ctx.topology.services[ctx.service]  # type: ignore[index]
        self.app = app
        self.workers = asyncio.Semaphore(spec.workers)
        self.capacity = spec.workers + spec.accept_queue
        self.admitted = 0
        self.rejected = Counter(
            "http_server_rejected_total",
            "Requests refused because every worker was busy and the accept queue was full",
            ["service", "zone"],
            registry=ctx.registry,
        ).labels(**ctx.labels())
        self.busy = Gauge(
            "http_server_workers_busy", "Workers serving a request", ["service", "zone"], registry=ctx.registry
        ).labels(**ctx.labels())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _management(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.admitted >= self.capacity:
            self.rejected.inc()
            response = problem(503, "OVERLOADED", "Every worker is busy; try again shortly.", {"Retry-After": "1"})
            await response(scope, receive, send)
            return
        self.admitted += 1
        try:
            async with self.workers:
                self.busy.inc()
                try:
                    await self.app(scope, receive, send)
                finally:
                    self.busy.dec()
        finally:
            self.admitted -= 1


def build_app(ctx: ReplicaContext, parts: ServiceParts) -> ASGIApp:
    """The Starlette app of one replica: the service's routes plus health, readiness and metrics."""
    tasks: list[asyncio.Task[None]] = []
    started = asyncio.Event()

    async def live(_: Request) -> Response:
        return JSONResponse({"status": "live", "replica": ctx.replica.name})

    async def ready(_: Request) -> Response:
        ok = started.is_set() and (parts.ready is None or await parts.ready())
        return JSONResponse(
            {"status": "ready" if ok else "not-ready", "replica": ctx.replica.name, "zone": ctx.zone},
            status_code=200 if ok else 503,
        )

    async def metrics(request: Request) -> Response:
        # ?name[]=<series>: only those, as prometheus_client's own exporter allows. A podKill
        # waiting for work in flight polls one gauge, and a 50 kB exposition made each poll, and
        # so the kill after it, tens of milliseconds later on a busy machine.
        names = request.query_params.getlist("name[]")
        registry = ctx.registry.restricted_registry(names) if names else ctx.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        for hook in parts.startup:
            await hook()
        for loop in parts.background:
            tasks.append(asyncio.create_task(loop()))
        started.set()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for hook in parts.shutdown:
                await hook()

    routes = [
        *parts.routes,
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/metrics", metrics),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: routing_problem, PoolTimeout: database_busy}
    )
    return RedMetrics(WorkerPool(app, ctx), ctx, parts.routes)


ROUTING_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


async def routing_problem(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) as problem documents too: a client
    reads every 4xx the same way, not some as JSON and some as plain text."""
    assert isinstance(exc, HTTPException)
    code = ROUTING_CODES.get(exc.status_code, "HTTP_ERROR")
    return problem(exc.status_code, code, f"{request.method} {request.url.path[:100]}: {exc.detail}", exc.headers)


async def database_busy(_: Request, exc: Exception) -> Response:
    """No pooled database connection came free in time: the service is overloaded, not broken, and
    says so as any overload is said (503, Retry-After), rather than with a 500 and a traceback."""
    return problem(503, "DATABASE_BUSY", "Every database connection is busy; try again shortly.", {"Retry-After": "1"})


def problem(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """An error body every service uses: a stable machine code and a sentence for people."""
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status, headers=headers)


ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"  # a user or a merchant
# Any other identifier (accounts, transfers): no control characters, which PostgreSQL refuses in
# text (a NUL byte would surface as a 500 from the driver, not as the client's mistake).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"


def invalid_identifier(value: str, field: str, pattern: str = ID_PATTERN) -> Response | None:
    """A 400 problem naming ``field`` when an identifier from a path or query string cannot name
    anything; None when it can. Checked before the value reaches a query."""
    if re.fullmatch(pattern, value):
        return None
    return problem(400, "INVALID_IDENTIFIER", f"{field} must match {pattern}.", field=field)


def invalid_request(message: str, exc: ValidationError) -> Response:
    """The 422 problem for a body that failed validation: where and what, never the input itself
    (it may be megabytes, bytes, or a float JSON cannot carry back, such as 1e999)."""
    return problem(422, "INVALID_REQUEST", message, details=exc.errors(include_url=False, include_context=False, include_input=False))
