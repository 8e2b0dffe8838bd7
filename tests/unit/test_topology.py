"""The topology file and what is derived from it: replicas, ports, URLs, durations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from paychaos.durations import format_duration, parse_duration
from paychaos.platform.topology import PORT_OFFSET_ENV, Topology, load_topology


def test_default_topology_has_one_replica_of_each_service_per_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_OFFSET_ENV, raising=False)
    topology = load_topology()
    assert topology.zones == ["az-a", "az-b", "az-c"]
    assert len(topology.replicas) == 15
    assert {r.zone for r in topology.replicas_of("payment")} == set(topology.zones)
    ports = [r.port for r in topology.replicas]
    assert len(set(ports)) == len(ports)
    assert [topology.kafka_zone(n) for n in topology.kafka_nodes] == topology.zones


def test_port_offset_moves_every_port_and_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_OFFSET_ENV, raising=False)
    base = load_topology()
    monkeypatch.setenv(PORT_OFFSET_ENV, "5000")
    shifted = load_topology()
    assert shifted.ports.edge == base.ports.edge + 5000
    assert shifted.ports.internal.ledger == base.ports.internal.ledger + 5000
    assert shifted.proxies["acquirer"].listen == base.proxies["acquirer"].listen + 5000
    assert shifted.replicas[0].port == base.replicas[0].port + 5000
    assert shifted.internal_url("acquirer").endswith(str(shifted.proxies["acquirer"].listen))


def test_the_ledger_reaches_its_database_through_its_own_proxy_and_the_others_directly() -> None:
    topology = load_topology()
    proxy = topology.proxies["ledger-db"]
    assert proxy.upstream == "postgres" and topology.upstream_port("postgres") == topology.ports.postgres
    assert topology.database_dsn("ledger").endswith(f":{proxy.listen}/paychaos")
    assert topology.database_dsn("payment") == topology.postgres_dsn
    assert topology.upstream_port("acquirer") == topology.ports.internal.acquirer
    direct = topology.without_database_proxies()
    assert direct.database_dsn("ledger") == topology.postgres_dsn and "acquirer" in direct.proxies


def test_topology_round_trips_through_the_run_directory_json() -> None:
    topology = load_topology()
    again = Topology.model_validate_json(topology.model_dump_json(by_alias=True))
    assert again == topology
    assert again.resilience.breaker.wait_duration_in_open_state == timedelta(seconds=15)


def test_unknown_keys_and_bad_values_are_refused() -> None:
    data = load_topology().model_dump(by_alias=True, mode="json")
    data["resilience"]["breaker"]["failureRateTreshold"] = 50
    with pytest.raises(ValidationError, match="failureRateTreshold"):
        Topology.model_validate(data)
    data = load_topology().model_dump(by_alias=True, mode="json")
    data["supervisor"]["restartBackoff"] = 5
    with pytest.raises(ValidationError, match="duration"):
        Topology.model_validate(data)


@pytest.mark.parametrize(
    ("text", "seconds"), [("300ms", 0.3), ("45s", 45), ("2m", 120), ("1.5s", 1.5), ("1h", 3600)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["45", "s", "-1s", "10 parsecs", "", 45])
def test_bad_durations_say_what_is_expected(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(bad)


def test_durations_format_back() -> None:
    assert [format_duration(parse_duration(t)) for t in ("300ms", "45s", "2m", "90s")] == ["300ms", "45s", "2m", "90s"]
