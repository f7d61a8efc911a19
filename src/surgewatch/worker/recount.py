"""Reading input records back by offset, to recount partials the broker acknowledged and lost.

A downstream partition knows, per input partition, the last input offset it has applied, and every
batch and heartbeat says where its sender stands (:meth:`~surgewatch.downstream.Downstream.missing`).
When those disagree, the partials in between never arrived: the counting agent reads those input
records here, by offset and outside the consumer group, and counts them itself.
"""

from __future__ import annotations

import logging
from time import monotonic

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from surgewatch.config import Settings

log = logging.getLogger("surgewatch.worker")

#: How long one range may take to read before the recount gives up (logged and counted).
READ_TIMEOUT_SECONDS = 30.0


class InputReader:
    """A group-less consumer that reads offset ranges of input partitions, started when needed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**self.settings.reader_kwargs("recount"))
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def read(
        self,
        topic: str,
        partition: int,
        first: int,
        last: int,
        timeout_seconds: float = READ_TIMEOUT_SECONDS,
    ) -> list[tuple[int, bytes | None]] | None:
        """``(offset, value)`` of the records ``first..last`` of ``topic``/``partition``, or
        ``None`` when they could not all be read within ``timeout_seconds``."""
        deadline = monotonic() + timeout_seconds
        tp = TopicPartition(topic, partition)
        out: list[tuple[int, bytes | None]] = []
        try:
            consumer = await self._started()
            consumer.assign([tp])
            consumer.seek(tp, first)
            while (remaining := deadline - monotonic()) > 0:
                fetched = await consumer.getmany(tp, timeout_ms=int(min(remaining, 1.0) * 1000))
                for record in fetched.get(tp, ()):
                    if first <= record.offset <= last:
                        out.append((record.offset, record.value))
                # The position passes offsets that hold no record (transaction markers) too.
                if await consumer.position(tp) > last:
                    return out
        except KafkaError as exc:
            log.error(
                "cannot read %s[%d] offsets %d-%d back: %r", topic, partition, first, last, exc
            )
            return None
        return None

    async def close(self) -> None:
        """Stop the consumer, if it was started."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
