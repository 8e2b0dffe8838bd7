"""What a replica exposes before its first request: the server-error series the SLOs count."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from paychaos.platform.services import gateway, payment
from paychaos.platform.services.serving import SERVER_ERRORS, ReplicaContext, ServiceParts, build_app
from paychaos.platform.topology import Replica, load_topology


def counts(service: str, build: Callable[[ReplicaContext], ServiceParts]) -> dict[str, list[dict[str, str]]]:
    """Each ``*_count`` series the replica exposes before any request, by metric: its labels, for
    the series at zero."""
    ctx = ReplicaContext(load_topology(), Replica(service, "az-a", 1, 0))
    build_app(ctx, build(ctx))
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(generate_latest(ctx.registry).decode()):
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.value == 0:
                found.setdefault(sample.name, []).append(sample.labels)
    return found


def test_every_route_has_its_server_error_series_at_zero_before_any_request() -> None:
    # increase() counts rises between samples: a 503 series born with the first 503 would count
    # it as nothing, and `payments-server-errors below: 1` would pass the run that had one.
    series = counts("gateway", gateway.build)["http_server_requests_seconds_count"]
    for route, method in (("/v1/payments", "POST"), ("/v1/campaign/status", "GET"), ("/v1/wallets/{user_id}", "GET")):
        for status in SERVER_ERRORS:
            assert {"service": "gateway", "zone": "az-a", "route": route, "method": method, "status": status} in series
    assert not {s["route"] for s in series} & {"/health/live", "/health/ready", "/metrics"}  # not measured


def test_the_per_method_payment_series_exist_at_zero_too() -> None:
    at_gateway = counts("gateway", gateway.build)["gateway_payment_requests_seconds_count"]
    at_payment = counts("payment", payment.build)["payment_request_duration_seconds_count"]
    for status in SERVER_ERRORS:
        for method in ("balance", "card", "other"):
            assert {"service": "gateway", "zone": "az-a", "method": method, "status": status} in at_gateway
        for method in ("balance", "card"):  # breaker failsFast reads the card payments' 503s
            assert {"service": "payment", "zone": "az-a", "method": method, "status": status} in at_payment
