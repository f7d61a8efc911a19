"""Kafka's default partitioner, as a producer applies it: murmur2 of the key, round-robin without one.

``replay`` places records with it and the offline computation (``backfill``, tests) mirrors it, so
both see the same events on the same input partition in the same order.
"""

from __future__ import annotations

from typing import Final

from aiokafka.partitioner import murmur2

#: Keys whose partition is remembered (user ids repeat; murmur2 in Python costs a few microseconds).
_CACHE_KEYS: Final = 500_000


class KafkaPartitioner:
    """Picks the partition of each record of each topic (``partitions``: topic -> partition ids)."""

    def __init__(self, partitions: dict[str, list[int]]) -> None:
        self._partitions = partitions
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self._round_robin = 0

    def partition(self, topic: str, key: bytes | None) -> int:
        """The partition Kafka's default partitioner picks for ``key`` (round-robin without key)."""
        choices = self._partitions[topic]
        if key is None:
            self._round_robin += 1
            return choices[self._round_robin % len(choices)]
        cached = self._partition_of.get((topic, key))
        if cached is None:
            if len(self._partition_of) >= _CACHE_KEYS:
                self._partition_of.clear()
            cached = choices[(murmur2(key) & 0x7FFFFFFF) % len(choices)]
            self._partition_of[(topic, key)] = cached
        return cached
