"""A Kafka consumer loop for asyncio services: at-least-once, commit after the handler succeeds.

confluent_kafka calls block, so they all run on one dedicated thread (the client is not meant to
be driven from several threads at once); the event loop only awaits them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)

T = TypeVar("T")
BatchHandler = Callable[[list[Message]], Awaitable[None]]
LagSink = Callable[[int], None]


def consumer_config(bootstrap_servers: str, group_id: str, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # A killed replica's partitions move to the survivors within seconds, not the 45 s default.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1500,
    }


class BatchConsumer:
    """Polls batches, hands them to an async handler, commits only once the handler returned."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        *,
        batch_size: int = 200,
        poll_seconds: float = 0.5,
        lag_every_seconds: float = 2.0,
        on_lag: LagSink | None = None,
    ) -> None:
        self.config = config
        self.topic = topic
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.lag_every_seconds = lag_every_seconds
        self.on_lag = on_lag
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{topic}")

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(fn, *args, **kwargs))

    async def run(self, handle: BatchHandler) -> None:
        consumer = await self._call(Consumer, self.config)
        await self._call(consumer.subscribe, [self.topic])
        lag_due = 0.0
        try:
            while True:
                messages = await self._call(consumer.consume, self.batch_size, self.poll_seconds)
                batch = [m for m in messages if _usable(m)]
                if batch:
                    try:
                        await handle(batch)
                    except Exception:
                        log.exception("handling %d messages failed; they will be redelivered", len(batch))
                        await self._call(_rewind, consumer, batch)
                        await asyncio.sleep(1.0)
                    else:
                        await self._call(_commit, consumer)
                # Reported whether the batch succeeded or not: a consumer stuck on a batch must
                # show its lag growing, not the last value it had before it got stuck.
                if self.on_lag is not None and time.monotonic() >= lag_due:
                    lag_due = time.monotonic() + self.lag_every_seconds
                    lag = await self._call(_lag, consumer)
                    if lag is not None:
                        self.on_lag(lag)
        finally:
            await self._call(consumer.close)
            self._thread.shutdown(wait=False)


def _usable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("kafka: %s", error)
    return False


def _commit(consumer: Consumer) -> None:
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        # Typically a rebalance took the partitions away: the new owner redelivers, dedupe absorbs it.
        log.warning("kafka commit failed: %s", exc)


def _rewind(consumer: Consumer, batch: list[Message]) -> None:
    """Seek back to the first unhandled offset of each partition so the batch is consumed again."""
    first: dict[tuple[str, int], int] = {}
    for m in batch:
        key = (m.topic(), m.partition())
        first[key] = min(first.get(key, m.offset()), m.offset())
    for (topic, partition), offset in first.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException:
            # Not ours any more: its new owner starts from the last committed offset anyway.
            continue


def _lag(consumer: Consumer) -> int | None:
    """Σ over assigned partitions of (high watermark − committed offset), as kafka-consumer-groups
    reports it. Not the fetch position: a consumer that fetched a batch and keeps failing on it
    has moved its position past messages it never processed."""
    try:
        assigned = consumer.assignment()
        if not assigned:
            return 0
        total = 0
        for tp in consumer.committed(assigned, timeout=2):
            low, high = consumer.get_watermark_offsets(tp, timeout=2, cached=False)
            total += max(0, high - (tp.offset if tp.offset >= 0 else low))
        return total
    except KafkaException as exc:
        log.warning("kafka lag unknown: %s", exc)
        return None
