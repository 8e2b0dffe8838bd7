"""Prometheus scraping every replica each second, with ``service`` and ``zone`` labels."""

from __future__ import annotations

import shutil

import yaml

from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.processes import HttpReady, ProcessSpec
from paychaos.platform.topology import Topology


def prometheus_config(topology: Topology) -> str:
    replicas = [
        {
            "targets": [f"{topology.host}:{r.port}"],
            "labels": {"service": r.service, "zone": r.zone, "replica": r.name},
        }
        for r in topology.replicas
    ]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "scrape_configs": [
            # Replicas label their own series with service and zone; honour them so the same
            # PromQL works on a Kubernetes stack where those labels come from the pods.
            {"job_name": "paychaos", "honor_labels": True, "static_configs": replicas},
            {
                "job_name": "haproxy",
                "static_configs": [{"targets": [f"{topology.host}:{topology.ports.haproxy_stats}"]}],
            },
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_process(topology: Topology, prometheus: str, run_dir: RunDir) -> ProcessSpec:
    config = run_dir.config / "prometheus.yml"
    config.write_text(prometheus_config(topology), encoding="utf-8")
    storage = run_dir.data / "prometheus"
    # Each stack starts with empty metrics. Series a previous stack left (its replicas, maybe
    # more of them than this topology has) carry no staleness marker across a restart, so for
    # five minutes they still answered queries: a gate after `--replicas 2` read the dead
    # replicas' consumer lag (340) and never settled. Runs keep what they read in journals.
    shutil.rmtree(storage, ignore_errors=True)
    storage.mkdir(parents=True, exist_ok=True)
    return ProcessSpec(
        name="prometheus",
        kind="prometheus",
        argv=[
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={topology.host}:{topology.ports.prometheus}",
            "--web.enable-lifecycle",
        ],
        ready=HttpReady(f"{topology.prometheus_url}/-/ready"),
    )
