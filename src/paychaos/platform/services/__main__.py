"""Serve one replica: ``python -m paychaos.platform.services SERVICE --zone Z --index N --port P --topology FILE``.

In a cluster (platform/k8s/reference) the zone comes from ``PAYCHAOS_ZONE`` (the pod's zone label)
and the topology is the YAML file of a ConfigMap; the supervisor on one machine passes both as flags
and the topology as the resolved JSON of its run directory."""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import uvicorn

from paychaos.platform.services.serving import ReplicaContext, build_app
from paychaos.platform.topology import SERVICES, Replica, Topology, load_topology


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m paychaos.platform.services")
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--zone", default=os.environ.get("PAYCHAOS_ZONE"), help="[env: PAYCHAOS_ZONE]")
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topology", type=Path, required=True,
                        help="resolved topology JSON from the run directory, or a topology YAML file")
    args = parser.parse_args()
    if not args.zone:
        parser.error("--zone (or PAYCHAOS_ZONE) is required")

    if args.topology.suffix in (".yaml", ".yml"):
        topology = load_topology(args.topology, port_offset=False)  # a cluster's: its Services' ports
    else:
        topology = Topology.model_validate_json(args.topology.read_text(encoding="utf-8"))
    ctx = ReplicaContext(topology, Replica(args.service, args.zone, args.index, args.port))
    module = importlib.import_module(f"paychaos.platform.services.{args.service}")
    app = build_app(ctx, module.build(ctx))
    uvicorn.run(
        app,
        host=topology.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
