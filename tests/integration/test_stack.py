"""The stack as `paychaos stack` shows it: three zones ready, three Kafka nodes, targets up."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_status_json_shows_three_zones_ready_kafka_and_prometheus(stack) -> None:
    result = stack.cli("stack", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["running"] and status["phase"] == "ready"
    assert sorted(status["zones"]) == ["az-a", "az-b", "az-c"]
    for zone, info in status["zones"].items():
        services = sorted(r["name"].rsplit("-", 3)[0] for r in info["replicas"])
        assert services == ["acquirer", "campaign", "gateway", "ledger", "payment"], zone
        assert all(r["ready"] for r in info["replicas"]), info
    assert [(n["id"], n["zone"], n["ready"]) for n in status["kafka"]] == [
        (1, "az-a", True), (2, "az-b", True), (3, "az-c", True)
    ]
    assert all(p["ready"] for p in status["infrastructure"]), status["infrastructure"]
    stack.wait_for(
        "every Prometheus target to be scraped",
        lambda: (json.loads(stack.cli("stack", "status", "--json").stdout)["prometheusTargets"] or {}).get("down") == 0
        and json.loads(stack.cli("stack", "status", "--json").stdout)["prometheusTargets"]["up"] == 16,
    )


def test_every_replica_is_scraped_with_service_and_zone_labels(stack) -> None:
    def scraped() -> list[dict]:
        return [s for s in stack.prometheus('up{job="paychaos"} == 1')]

    series = stack.wait_for("15 replicas up in Prometheus", lambda: (lambda s: s if len(s) == 15 else None)(scraped()))
    pairs = {(s["metric"]["service"], s["metric"]["zone"]) for s in series}
    assert len(pairs) == 15


def test_human_status_and_logs(stack) -> None:
    human = stack.cli("stack", "status")
    assert human.returncode == 0
    assert "az-b" in human.stderr and "kafka" in human.stderr
    logs = stack.cli("stack", "logs", "kafka-1", "-n", "5")
    assert logs.returncode == 0 and logs.stdout.strip()
    missing = stack.cli("stack", "logs", "no-such-service")
    assert missing.returncode == 1 and "no log" in missing.stderr and "Traceback" not in missing.stderr
