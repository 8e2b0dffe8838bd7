"""Serve one replica: ``python -m paychaos.platform.services SERVICE --zone Z --index N --port P --topology FILE``."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import uvicorn

from paychaos.platform.services.serving import ReplicaContext, build_app
from paychaos.platform.topology import SERVICES, Replica, Topology


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m paychaos.platform.services")
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--zone", required=True)
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topology", type=Path, required=True, help="resolved topology JSON from the run directory")
    args = parser.parse_args()

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
