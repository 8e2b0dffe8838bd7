"""Generated HAProxy and Prometheus configuration, checked by the tools that will run it."""

from __future__ import annotations

import subprocess

import yaml

from paychaos.platform.runtime.balancing import haproxy_config
from paychaos.platform.runtime.installing import locate
from paychaos.platform.runtime.monitoring import prometheus_config
from paychaos.platform.topology import SERVICES, load_topology


def test_haproxy_routes_every_replica_with_health_checks(tmp_path) -> None:
    topology = load_topology()
    config = haproxy_config(topology)
    for replica in topology.replicas:
        assert f"server {replica.name} {topology.host}:{replica.port} check" in config
    for service in SERVICES:
        assert f"backend {service}" in config
    assert "retry-on conn-failure" in config and "option redispatch" in config
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    checked = subprocess.run([str(locate().haproxy), "-c", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_every_replica_each_second_with_labels(tmp_path) -> None:
    topology = load_topology()
    text = prometheus_config(topology)
    config = yaml.safe_load(text)
    assert config["global"]["scrape_interval"] == "1s"
    groups = config["scrape_configs"][0]["static_configs"]
    assert len(groups) == len(topology.replicas)
    assert all(set(g["labels"]) >= {"service", "zone"} for g in groups)
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    checked = subprocess.run([str(locate().promtool), "check", "config", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
