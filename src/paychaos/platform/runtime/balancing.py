"""HAProxy playing the cloud load balancers: one edge frontend for the gateways, one internal
frontend per service, active health checks, and retry/redispatch when a connect fails."""

from __future__ import annotations

import csv
import io

import httpx

from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.processes import HttpReady, ProcessSpec
from paychaos.platform.topology import SERVICES, Topology


def haproxy_config(topology: Topology) -> str:
    host = topology.host
    lines = [
        "global",
        "    maxconn 4000",
        "defaults",
        "    mode http",
        "    timeout connect 500ms",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        # Retry when the connection failed (the request never reached a replica) or the replica
        # died without answering a read. The payment and ledger backends resend no POST (below).
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response",
        "    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 1",
        "",
        "frontend edge",
        f"    bind {host}:{topology.ports.edge}",
        # Operators' endpoints (admission restrictions) answer on each replica's own port only.
        "    http-request deny deny_status 404 if { path_beg /admin }",
        "    default_backend gateway",
        "",
        "frontend stats",
        f"    bind {host}:{topology.ports.haproxy_stats}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 2s",
    ]
    for service in SERVICES:
        lines += [
            "",
            f"frontend internal-{service}",
            f"    bind {host}:{getattr(topology.ports.internal, service)}",
            f"    default_backend {service}",
            "",
            f"backend {service}",
            "    balance leastconn",
            "    option httpchk GET /health/ready",
            "    http-check expect status 200",
        ]
        if service in ("ledger", "payment"):
            # A transfer or payment whose replica died mid-request may have been applied:
            # resending it under its transfer id or idempotency key is the caller's job (the
            # payment saga, the campaign's pending cashback, the app), as behind a Kubernetes
            # Service, which resends nothing. So the paths that guard it (the saga's retries, the
            # app's retry waiting for the recovery loop) are the ones walked here too. The load
            # balancer still resends a read, and any request whose connection never opened.
            lines.append("    http-request disable-l7-retry if METH_POST")
        for replica in topology.replicas_of(service):
            lines.append(f"    server {replica.name} {host}:{replica.port} check")
    return "\n".join(lines) + "\n"


def haproxy_process(topology: Topology, haproxy: str, run_dir: RunDir) -> ProcessSpec:
    config = run_dir.config / "haproxy.cfg"
    config.write_text(haproxy_config(topology), encoding="utf-8")
    return ProcessSpec(
        name="haproxy",
        kind="haproxy",
        argv=[haproxy, "-db", "-f", str(config)],
        ready=HttpReady(f"http://{topology.host}:{topology.ports.haproxy_stats}/metrics"),
        stop_signal=15,
    )


def servers_not_up(topology: Topology) -> dict[str, str]:
    """The backend servers HAProxy does not route to yet, with their status, from its stats CSV.

    A replica answers its readiness check before HAProxy's next health check has seen it: until
    then a request through the load balancer finds no server (503)."""
    url = f"http://{topology.host}:{topology.ports.haproxy_stats}/;csv;norefresh"
    try:
        response = httpx.get(url, timeout=2)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return {"haproxy": f"stats unreadable: {exc}"}
    rows = csv.DictReader(io.StringIO(response.text.removeprefix("# ")))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row.get("svname") not in ("FRONTEND", "BACKEND") and row.get("pxname") in SERVICES and row.get("status") != "UP"
    }
