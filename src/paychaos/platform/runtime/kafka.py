"""A 3-node Apache Kafka cluster in KRaft combined mode (each node is broker and controller).

Writes each node's server.properties, formats storage once with a shared cluster id, describes
the node processes for the supervisor, and creates the topology's topics through the Admin API.
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from paychaos.platform.runtime.installing import Tools
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.processes import ProcessSpec, TcpReady
from paychaos.platform.topology import Topology


class ClusterError(Exception):
    """The Kafka cluster could not be prepared or did not reach the wanted state in time."""

# Small-box JVM: serial GC and C1-only JIT start a broker in seconds and keep three of them
# (plus the services) within two cores; peak throughput is not what a chaos test box needs.
JVM_FLAGS = [
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:MaxMetaspaceSize=128m",
    "-Xss512k",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
]

_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by paychaos: brokers log to stdout, which the supervisor captures per process. -->
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="stdout"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
  </Loggers>
</Configuration>
"""


def node_name(node: int) -> str:
    return f"kafka-{node}"


def log_dir(run_dir: RunDir, node: int) -> Path:
    return run_dir.data / node_name(node)


def properties_file(run_dir: RunDir, node: int) -> Path:
    return run_dir.config / f"{node_name(node)}.properties"


def server_properties(topology: Topology, run_dir: RunDir, node: int) -> dict[str, str]:
    host = topology.host
    voters = ",".join(f"{n}@{host}:{topology.kafka_controller_port(n)}" for n in topology.kafka_nodes)
    return {
        "process.roles": "broker,controller",
        "node.id": str(node),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{topology.kafka_port(node)},CONTROLLER://{host}:{topology.kafka_controller_port(node)}",
        "advertised.listeners": f"PLAINTEXT://{host}:{topology.kafka_port(node)}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir(run_dir, node)),
        # The promises under test: nothing acknowledged lives on fewer than two nodes.
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "share.coordinator.state.topic.replication.factor": "3",
        "share.coordinator.state.topic.min.isr": "2",
        "unclean.leader.election.enable": "false",
        "auto.create.topics.enable": "false",
        # Fewer internal partitions: creating 50 x RF3 takes seconds a test box does not have.
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.num.partitions": "6",
        "num.partitions": "6",
        # Failure detection in seconds, so a killed node drops out of the ISR and loses its
        # leaderships quickly and rejoins quickly when it returns.
        "replica.lag.time.max.ms": "5000",
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "6000",
        "group.initial.rebalance.delay.ms": "0",
        "auto.leader.rebalance.enable": "true",
        "leader.imbalance.check.interval.seconds": "30",
        # Two cores and a small heap.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.replica.fetchers": "1",
        "background.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": "8388608",
        "log.segment.bytes": "67108864",
        "log.retention.hours": "24",
    }


def _write_properties(path: Path, props: dict[str, str]) -> None:
    body = "".join(f"{k}={v}\n" for k, v in props.items())
    path.write_text("# written by paychaos from the topology on every start\n" + body)


def _cluster_id(run_dir: RunDir) -> str:
    """One id for the life of the run directory, in Kafka's base64url UUID form."""
    path = run_dir.data / "kafka-cluster-id"
    if path.exists():
        return path.read_text().strip()
    cluster_id = "-"
    # Like Kafka's Uuid.randomUuid: an id starting with "-" would be read as a command-line option.
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.write_text(cluster_id + "\n")
    return cluster_id


def _java_command(tools: Tools, run_dir: RunDir, heap: str | None) -> list[str]:
    memory = [f"-Xms{heap}", f"-Xmx{heap}"] if heap else ["-Xmx256m"]
    return [str(tools.java), *memory, *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={run_dir.config / 'kafka-log4j2.xml'}",
            "-cp", tools.kafka_classpath]


def prepare_kafka(topology: Topology, tools: Tools, run_dir: RunDir) -> None:
    """Write every node's configuration and format the storage of nodes not yet formatted."""
    run_dir.ensure()
    (run_dir.config / "kafka-log4j2.xml").write_text(_LOG4J2)
    cluster_id = _cluster_id(run_dir)
    formats: list[tuple[int, subprocess.Popen[str]]] = []
    for node in topology.kafka_nodes:
        _write_properties(properties_file(run_dir, node), server_properties(topology, run_dir, node))
        if (log_dir(run_dir, node) / "meta.properties").exists():
            continue
        # Formatting starts a JVM each; run them side by side.
        argv = [*_java_command(tools, run_dir, None), "kafka.tools.StorageTool", "format",
                "-t", cluster_id, "-c", str(properties_file(run_dir, node)), "--ignore-formatted"]
        formats.append((node, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    failures: list[str] = []
    for node, proc in formats:
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0:
            lines = [line for line in out.splitlines() if line.strip()] or ["no output"]
            failures.append(f"{node_name(node)}: {lines[-1][:200]}")
    if failures:
        raise ClusterError(f"formatting Kafka storage failed: {'; '.join(failures)}")


def kafka_processes(topology: Topology, tools: Tools, run_dir: RunDir) -> list[ProcessSpec]:
    return [
        ProcessSpec(
            name=node_name(node),
            kind="kafka",
            argv=[*_java_command(tools, run_dir, topology.kafka.heap), "kafka.Kafka",
                  str(properties_file(run_dir, node))],
            ready=TcpReady(topology.host, topology.kafka_port(node)),
            zone=topology.kafka_zone(node),
            cwd=str(run_dir.root),
        )
        for node in topology.kafka_nodes
    ]


def _admin(topology: Topology) -> AdminClient:
    # Connection errors while nodes start or are killed are expected and surface as our own
    # exceptions; librdkafka would otherwise print each one to stderr.
    return AdminClient({"bootstrap.servers": topology.bootstrap_servers, "log_level": 2})


def ensure_topics(topology: Topology, timeout: float = 60.0) -> None:
    """Create the topology's topics if missing and wait until every node sees a leader for every partition.

    An existing topic is left as it is (partition counts cannot shrink; configs are not reconciled).
    """
    admin = _admin(topology)
    deadline = time.monotonic() + timeout
    pending = dict(topology.kafka.topics)
    last_error = ""
    while pending:
        if time.monotonic() > deadline:
            raise ClusterError(f"could not create Kafka topics {', '.join(pending)} "
                               f"within {timeout:.0f}s: {last_error}")
        new = [NewTopic(name, num_partitions=spec.partitions, replication_factor=spec.replication_factor,
                        config={"min.insync.replicas": str(spec.min_insync_replicas)})
               for name, spec in pending.items()]
        for name, future in admin.create_topics(new, request_timeout=10).items():
            try:
                future.result()
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    # Typically "only N brokers registered" while the cluster is still forming.
                    last_error = error.str()
                    continue
            pending.pop(name)
        if pending:
            time.sleep(0.5)
    # Every node must know the topic, not just the controller that created it: a client whose
    # first metadata request lands on a node that has not caught up yet sees an unknown topic.
    # A fresh client per node and round: its first request goes to the one node it knows.
    addresses = topology.bootstrap_servers.split(",")
    while True:
        nodes = [AdminClient({"bootstrap.servers": address, "log_level": 2}) for address in addresses]
        leaderless = sorted({name for node in nodes for name in _leaderless(node, list(topology.kafka.topics))})
        if not leaderless:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"Kafka partitions without a leader after {timeout:.0f}s: "
                               f"{', '.join(leaderless[:6])}")
        time.sleep(0.3)


def _leaderless(admin: AdminClient, topics: list[str]) -> list[str]:
    try:
        metadata = admin.list_topics(timeout=5)
    except KafkaException as exc:
        return [f"(metadata unavailable: {exc.args[0].str()})"]
    out: list[str] = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            out.append(topic)
            continue
        out.extend(f"{topic}-{p.id}" for p in meta.partitions.values() if p.leader < 0 or p.error is not None)
    return out


def isr_members(topology: Topology, topics: list[str]) -> dict[str, list[int]]:
    """Each partition (``topic-n``) of ``topics`` and the node ids in its in-sync replica set."""
    try:
        metadata = _admin(topology).list_topics(timeout=10)
    except KafkaException as exc:
        raise ClusterError(f"cannot read Kafka metadata from {topology.bootstrap_servers}: {exc.args[0].str()}") from exc
    return {
        f"{topic}-{n}": sorted(int(i) for i in part.isrs)
        for topic in topics if (meta := metadata.topics.get(topic)) is not None and meta.error is None
        for n, part in sorted(meta.partitions.items())
    }


def redeliver(topology: Topology, topic: str, last: int, timeout: float = 20.0) -> dict[str, int]:
    """Deliver the last ``last`` records of every partition of ``topic`` again: read them back
    (outside any consumer group) and produce them unchanged, key, value and headers, as a
    producer that retried after a lost acknowledgement does. Consumers see each event twice.
    Returns how many records each partition (``topic-n``) got again."""
    metadata = _admin(topology).list_topics(topic, timeout=10)
    meta = metadata.topics.get(topic)
    if meta is None or meta.error is not None:
        raise ClusterError(f"Kafka topic {topic!r} does not exist")
    reader = Consumer({"bootstrap.servers": topology.bootstrap_servers, "group.id": f"paychaos-redeliver-{uuid.uuid4().hex[:8]}",
                       "enable.auto.commit": False, "log_level": 2})
    writer = Producer({"bootstrap.servers": topology.bootstrap_servers, "acks": "all", "enable.idempotence": True, "log_level": 2})
    counts: dict[str, int] = {}
    try:
        wanted: list[TopicPartition] = []
        ends: dict[int, int] = {}
        for partition in sorted(meta.partitions):
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                wanted.append(TopicPartition(topic, partition, max(low, high - last)))
                ends[partition] = high
            counts[f"{topic}-{partition}"] = 0
        reader.assign(wanted)
        deadline = time.monotonic() + timeout
        while any(reader.position([TopicPartition(topic, p)])[0].offset < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise ClusterError(f"reading back the last {last} records of {topic} took over {timeout:g}s")
            message = reader.poll(0.5)
            if message is None or message.error() is not None or message.offset() >= ends[message.partition()]:
                continue
            writer.produce(topic, message.value(), message.key(), partition=message.partition(), headers=message.headers())
            counts[f"{topic}-{message.partition()}"] += 1
        if writer.flush(timeout) > 0:
            raise ClusterError(f"Kafka did not acknowledge every redelivered record of {topic} within {timeout:g}s")
    except KafkaException as exc:
        raise ClusterError(f"cannot redeliver {topic} through {topology.bootstrap_servers}: {exc.args[0].str()}") from exc
    finally:
        reader.close()
    return counts


#: What a buggy producer leaves in a topic: bytes that are not JSON, and JSON that names the event
#: type but not in its schema (an amount as text, no ids), so that both decoders' paths are hit.
POISON_VALUES = (b"\x00\xffnot json at all", b'{"type": "payment.completed", "amount": "1,000 yen"}')


def produce_poison(topology: Topology, topic: str, per_partition: int, timeout: float = 20.0) -> dict[str, int]:
    """Produce ``per_partition`` undecodable records to every partition of ``topic`` (keyed
    ``paychaos-poison-<n>``, alternating :data:`POISON_VALUES`); how many each partition got."""
    metadata = _admin(topology).list_topics(topic, timeout=10)
    meta = metadata.topics.get(topic)
    if meta is None or meta.error is not None:
        raise ClusterError(f"Kafka topic {topic!r} does not exist")
    writer = Producer({"bootstrap.servers": topology.bootstrap_servers, "acks": "all", "enable.idempotence": True, "log_level": 2})
    delivered: dict[str, int] = {f"{topic}-{p}": 0 for p in sorted(meta.partitions)}

    def acked(error: Any, message: Any) -> None:
        if error is None:
            delivered[f"{topic}-{message.partition()}"] += 1

    try:
        for partition in sorted(meta.partitions):
            for n in range(per_partition):
                writer.produce(topic, POISON_VALUES[n % len(POISON_VALUES)], f"paychaos-poison-{n}".encode(),
                               partition=partition, on_delivery=acked)
        if writer.flush(timeout) > 0:
            raise ClusterError(f"Kafka did not acknowledge every poison record for {topic} within {timeout:g}s")
        short = {p: n for p, n in delivered.items() if n < per_partition}
        if short:
            raise ClusterError(f"Kafka refused poison records for {topic}: acknowledged only {short} of {per_partition} each")
    except KafkaException as exc:
        raise ClusterError(f"cannot produce to {topic} through {topology.bootstrap_servers}: {exc.args[0].str()}") from exc
    return delivered
