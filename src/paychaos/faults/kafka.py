"""Kafka's own answer to "which node leads this partition?", for any target: a
``kafkaBrokerFailure: {leaderOf: ...}`` is planned against the leader the cluster reports when the
plan is made."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


class MetadataError(Exception):
    """The leader could not be read; the message says why (no such topic, no leader now, unreachable)."""


def partition_leader(bootstrap_servers: str, topic: str, partition: int, timeout: float = 10.0) -> int:
    """The node id currently leading ``topic``-``partition``, from the cluster's metadata."""
    # log_level 2: connection errors while nodes are down are expected and surface as MetadataError;
    # librdkafka would otherwise print each one to stderr.
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 2})
    try:
        metadata = admin.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise MetadataError(f"cannot read Kafka metadata from {bootstrap_servers}: {exc.args[0].str()}") from exc
    meta = metadata.topics.get(topic)
    if meta is None or meta.error is not None:
        raise MetadataError(f"Kafka topic {topic!r} does not exist")
    part = meta.partitions.get(partition)
    if part is None:
        raise MetadataError(f"Kafka topic {topic!r} has no partition {partition} (it has {len(meta.partitions)})")
    if part.leader < 0:
        raise MetadataError(f"Kafka partition {topic}-{partition} has no leader right now")
    return int(part.leader)


def partition_leaders(bootstrap_servers: str, partitions: Sequence[tuple[str, int]]) -> tuple[
        dict[tuple[str, int], int], dict[tuple[str, int], str]]:
    """Each (topic, partition)'s leader, and for those that could not be read, why: what a driver's
    ``observe`` hands the planner."""
    leaders: dict[tuple[str, int], int] = {}
    errors: dict[tuple[str, int], str] = {}
    for topic, partition in partitions:
        try:
            leaders[(topic, partition)] = partition_leader(bootstrap_servers, topic, partition)
        except MetadataError as exc:
            errors[(topic, partition)] = str(exc)
    return leaders, errors
