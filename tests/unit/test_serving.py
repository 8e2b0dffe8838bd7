"""What a replica exposes before its first request: the server-error series the SLOs count."""

from __future__ import annotations

from prometheus_client import generate_latest

from paychaos.platform.services import gateway
from paychaos.platform.services.serving import SERVER_ERRORS, ReplicaContext, build_app
from paychaos.platform.topology import Replica, load_topology


def exposed() -> str:
    ctx = ReplicaContext(load_topology(), Replica("gateway", "az-a", 1, 0))
    build_app(ctx, gateway.build(ctx))
    return generate_latest(ctx.registry).decode()


def test_every_route_has_its_server_error_series_at_zero_before_any_request() -> None:
    # increase() counts rises between samples: a 503 series born with the first 503 would count
    # it as nothing, and `payments-server-errors below: 1` would pass the run that had one.
    text = exposed()
    for route, method in (("/v1/payments", "POST"), ("/v1/campaign/status", "GET"), ("/v1/wallets/{user_id}", "GET")):
        for status in SERVER_ERRORS:
            series = (f'http_server_requests_seconds_count{{method="{method}",route="{route}",service="gateway",'
                      f'status="{status}",zone="az-a"}} 0.0')
            assert series in text, series
    assert 'route="/health/live"' not in text and 'route="/metrics"' not in text  # not measured, so not created


def test_the_gateway_payment_series_by_method_exist_at_zero_too() -> None:
    text = exposed()
    for method in ("balance", "card", "other"):
        for status in SERVER_ERRORS:
            series = f'gateway_payment_requests_seconds_count{{method="{method}",service="gateway",status="{status}",zone="az-a"}} 0.0'
            assert series in text, series
