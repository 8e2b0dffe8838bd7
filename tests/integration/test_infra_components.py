"""The infrastructure parts of the local stack, each started for real from its ProcessSpec.

Runs on port offset 12000 in a temporary run directory, so it never meets a developer's stack.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from paychaos.faults.kafka import partition_leader
from paychaos.faults.toxiproxy import Toxiproxy, ToxiproxyError
from paychaos.installing import CACHE_DIR_ENV
from paychaos.platform.runtime import installing, kafka, postgres
from paychaos.platform.runtime.paths import RUN_DIR_ENV, RunDir
from paychaos.platform.runtime.processes import HttpReady, ProcessSpec, TcpReady
from paychaos.platform.runtime.toxiproxy import ensure_proxies, toxiproxy_process
from paychaos.platform.topology import PORT_OFFSET_ENV, Topology, load_topology

pytestmark = pytest.mark.integration

PORT_OFFSET = "12000"  # below the ephemeral port range (32768+)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    saved = {k: os.environ.get(k) for k in (PORT_OFFSET_ENV, RUN_DIR_ENV)}
    root = tmp_path_factory.mktemp("infra") / "run"
    os.environ[PORT_OFFSET_ENV] = PORT_OFFSET
    os.environ[RUN_DIR_ENV] = str(root)
    rd = RunDir.default()
    rd.ensure()
    yield rd
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def topology(run_dir: RunDir) -> Topology:
    return load_topology()


@pytest.fixture(scope="module")
def tools() -> installing.Tools:
    return installing.install(progress=lambda message: None)


class Processes:
    """Starts ProcessSpecs the way the supervisor will, and stops every one of them by PID."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.running: dict[str, tuple[ProcessSpec, subprocess.Popen[bytes]]] = {}

    def start(self, spec: ProcessSpec) -> subprocess.Popen[bytes]:
        host, port = _ready_address(spec)
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                pytest.fail(f"{host}:{port} for {spec.name} is taken: is another session using port offset {PORT_OFFSET}?")
        user = pwd.getpwnam(spec.user) if spec.user else None
        with open(self.run_dir.log_file(spec.name), "ab") as log:
            proc = subprocess.Popen(
                spec.argv, env={**os.environ, **spec.env}, cwd=spec.cwd, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                extra_groups=[] if user else None)
        self.running[spec.name] = (spec, proc)
        return proc

    def kill(self, name: str) -> None:
        _, proc = self.running.pop(name)
        proc.kill()
        proc.wait()

    def stop_all(self, grace: float = 20.0) -> dict[str, float]:
        """Stop with each spec's signal; returns how long each took to exit."""
        took: dict[str, float] = {}
        started = time.monotonic()
        for spec, proc in self.running.values():
            if proc.poll() is None:
                proc.send_signal(spec.stop_signal)
        for name, (_, proc) in self.running.items():
            try:
                proc.wait(timeout=max(0.1, grace - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            took[name] = time.monotonic() - started
        self.running.clear()
        return took


def _ready_address(spec: ProcessSpec) -> tuple[str, int]:
    if isinstance(spec.ready, TcpReady):
        return spec.ready.host, spec.ready.port
    url = httpx.URL(spec.ready.url)
    assert url.port is not None
    return url.host, url.port


def wait_ready(spec: ProcessSpec, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{spec.name} exited with {proc.returncode}; log tail:\n{log.read_text()[-2000:]}")
        if isinstance(spec.ready, TcpReady):
            try:
                with socket.create_connection((spec.ready.host, spec.ready.port), timeout=0.5):
                    return
            except OSError:
                pass
        elif isinstance(spec.ready, HttpReady):
            try:
                if httpx.get(spec.ready.url, timeout=0.5).is_success:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    pytest.fail(f"{spec.name} not ready after {timeout}s; log tail:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def processes(run_dir: RunDir) -> Iterator[Processes]:
    procs = Processes(run_dir)
    yield procs
    print(f"\nstop times (s): { {k: round(v, 1) for k, v in procs.stop_all().items()} }")


# --- install ----------------------------------------------------------------------------------


def test_install_is_idempotent_and_locate_finds_everything(tools: installing.Tools) -> None:
    messages: list[str] = []
    started = time.monotonic()
    again = installing.install(messages.append)
    assert time.monotonic() - started < 10, "a second install must only check the cache"
    assert again == tools == installing.locate()
    for path in (tools.pg_bin / "postgres", tools.kafka_libs, tools.toxiproxy, tools.haproxy,
                 tools.prometheus, tools.promtool, tools.java):
        assert path.exists(), path
    assert any(installing.KAFKA_VERSION in m and "cached" in m for m in messages)
    assert any(tools.kafka_libs.glob("kafka_2.13-*.jar"))


def test_missing_tool_is_one_line_naming_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "empty-cache"))
    with pytest.raises(installing.MissingTool) as caught:
        installing.locate()
    message = str(caught.value)
    assert "\n" not in message
    assert f"Kafka {installing.KAFKA_VERSION}" in message and "`paychaos stack install`" in message


# --- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_starts_in_foreground_and_serves_the_paychaos_database(
        topology: Topology, tools: installing.Tools, run_dir: RunDir, processes: Processes) -> None:
    postgres.prepare_postgres(topology, tools, run_dir)
    postgres.prepare_postgres(topology, tools, run_dir)  # a second prepare leaves the cluster as it is
    spec = postgres.postgres_process(topology, tools, run_dir)
    assert spec.stop_signal == signal.SIGINT and spec.kind == "postgres"
    wait_ready(spec, processes.start(spec), 30, run_dir.log_file(spec.name))
    postgres.ensure_database(topology)
    postgres.ensure_database(topology)
    with psycopg.connect(topology.postgres_dsn) as conn:
        row = conn.execute("SELECT current_database(), current_setting('fsync'), "
                           "current_setting('max_connections')::int").fetchone()
    assert row == ("paychaos", "on", 300)


# --- Toxiproxy --------------------------------------------------------------------------------


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _median_get(url: str, n: int = 5) -> float:
    times = []
    for _ in range(n):
        started = time.monotonic()
        assert httpx.get(url, timeout=5).text == "ok"
        times.append(time.monotonic() - started)
    return sorted(times)[n // 2]


@pytest.fixture(scope="module")
def upstream(topology: Topology) -> Iterator[None]:
    # Plays the acquirer's internal load balancer, which is what the topology's proxy points at.
    server = ThreadingHTTPServer((topology.host, topology.ports.internal.acquirer), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()
    server.server_close()
    thread.join()


def test_toxiproxy_latency_toxic_adds_latency_and_removal_restores_it(
        topology: Topology, tools: installing.Tools, run_dir: RunDir, processes: Processes, upstream: None) -> None:
    spec = toxiproxy_process(topology, tools, run_dir)
    wait_ready(spec, processes.start(spec), 15, run_dir.log_file(spec.name))
    with Toxiproxy(topology.toxiproxy_url) as api:
        assert api.version() == installing.TOXIPROXY_VERSION.lstrip("v")
        ensure_proxies(api, topology)
        ensure_proxies(api, topology)
        proxy = api.proxies()["acquirer"]
        assert proxy["enabled"] and proxy["upstream"] == f"{topology.host}:{topology.ports.internal.acquirer}"
        url = f"http://{topology.host}:{topology.proxies['acquirer'].listen}/"
        baseline = _median_get(url)

        api.add_toxic("acquirer", "slow", "latency", {"latency": 100, "jitter": 0})
        api.add_toxic("acquirer", "slow", "latency", {"latency": 300, "jitter": 0})  # same name: updated
        assert [t["attributes"]["latency"] for t in api.toxics("acquirer")] == [300]
        slowed = _median_get(url)
        assert slowed >= baseline + 0.25, (baseline, slowed)

        api.remove_toxic("acquirer", "slow")
        api.remove_toxic("acquirer", "slow")  # reverts must be safe twice
        assert api.toxics("acquirer") == []
        # Relative to the slowed figure: the machine may be busy, but 300 ms must be gone.
        assert _median_get(url) < slowed - 0.2

        with pytest.raises(ToxiproxyError, match="404") as caught:
            api.add_toxic("no-such-proxy", "x", "latency", {"latency": 1})
        assert "\n" not in str(caught.value)
        api.reset()


def test_toxiproxy_unreachable_is_one_clear_line() -> None:
    with Toxiproxy("http://127.0.0.1:9", timeout=1) as api, pytest.raises(ToxiproxyError, match="unreachable"):
        api.proxies()


# --- Kafka ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_cluster(topology: Topology, tools: installing.Tools, run_dir: RunDir,
                  processes: Processes) -> Iterator[dict[str, float]]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    kafka.prepare_kafka(topology, tools, run_dir)
    timings["format"] = time.monotonic() - started
    specs = kafka.kafka_processes(topology, tools, run_dir)
    procs = [(spec, processes.start(spec)) for spec in specs]
    for spec, proc in procs:
        wait_ready(spec, proc, 60, run_dir.log_file(spec.name))
    timings["listening"] = time.monotonic() - started
    kafka.ensure_topics(topology, timeout=90)
    timings["topics_ready"] = time.monotonic() - started
    print(f"\nKafka cold start: {timings}")
    yield timings


def _produce(topology: Topology, partition: int, timeout: float) -> KafkaError | None:
    """Produce one record with acks=all and idempotence; the delivery error, or None on success."""
    producer = Producer({"bootstrap.servers": topology.bootstrap_servers, "acks": "all",
                         "enable.idempotence": True, "message.timeout.ms": int(timeout * 1000),
                         "request.timeout.ms": min(5000, int(timeout * 1000)), "log_level": 2})
    outcome: list[KafkaError | None] = []
    producer.produce("payments", key=b"k", value=b"v", partition=partition,
                     on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(timeout + 10)
    assert outcome, "no delivery report"
    return outcome[0]


def test_kafka_cluster_has_payments_topic_with_rf3_and_min_isr_2(topology: Topology, kafka_cluster: dict[str, float]) -> None:
    admin = AdminClient({"bootstrap.servers": topology.bootstrap_servers, "log_level": 2})
    meta = admin.list_topics("payments", timeout=10).topics["payments"]
    assert len(meta.partitions) == topology.kafka.topics["payments"].partitions
    assert all(sorted(p.replicas) == [1, 2, 3] for p in meta.partitions.values())
    configs = admin.describe_configs([ConfigResource("topic", "payments")])
    (future,) = configs.values()
    assert future.result()["min.insync.replicas"].value == "2"
    kafka.ensure_topics(topology, timeout=30)  # idempotent


def test_kafka_acks_all_survives_one_node_and_fails_without_quorum_of_replicas(
        topology: Topology, tools: installing.Tools, run_dir: RunDir, kafka_cluster: dict[str, float],
        processes: Processes) -> None:
    assert _produce(topology, partition=0, timeout=20) is None
    leader = partition_leader(topology.bootstrap_servers, "payments", 0)
    others = [n for n in topology.kafka_nodes if n != leader]

    processes.kill(kafka.node_name(others[0]))
    assert _produce(topology, partition=0, timeout=30) is None, "acks=all must work with one node down"

    processes.kill(kafka.node_name(others[1]))
    error = _produce(topology, partition=0, timeout=8)
    assert error is not None, "acks=all must not be acknowledged by the leader alone"
    print(f"\nproduce with two of three nodes down: {error.name()}")
    # Two of three KRaft voters down also means no controller quorum, so the ISR cannot shrink
    # below 2: the leader waits for a dead follower and the produce times out rather than
    # failing fast with NOT_ENOUGH_REPLICAS.
    assert error.code() in (KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                            KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT)

    # The supervisor's restart path: prepare again (must not reformat), start the same specs.
    kafka.prepare_kafka(topology, tools, run_dir)
    started = time.monotonic()
    for spec in kafka.kafka_processes(topology, tools, run_dir):
        if spec.name not in processes.running:
            wait_ready(spec, processes.start(spec), 60, run_dir.log_file(spec.name))
    assert _produce(topology, partition=0, timeout=30) is None
    print(f"\ntwo nodes restarted, acks=all produce accepted after {time.monotonic() - started:.1f}s")
