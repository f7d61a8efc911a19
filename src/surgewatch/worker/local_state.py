"""The worker's local surge state (``SURGEWATCH_STORE=rocksdb://``): checkpoints of its downstream
partitions' surge detectors in a RocksDB under Faust's table directory.

A checkpoint's writes reach RocksDB only once every record derived from the same close (window
counts, surges, the summary) has been acknowledged by the broker, and in the order they were taken.
So after a ``kill -9`` the stored state never holds a window whose surge records were lost; at
worst it lacks the last windows, which the next owner scores again, from the same state and the
same counts, into identical records. RocksDB's write-ahead log makes an acknowledged write survive
the process. Imported only for ``rocksdb://``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch

from surgewatch.config import SettingsError
from surgewatch.downstream import Downstream
from surgewatch.metrics import Metrics
from surgewatch.trends.checkpoint import Changes, PartitionCheckpoint
from surgewatch.trends.partition import TREND_METRICS

log = logging.getLogger("surgewatch.worker")

#: The directory under Faust's table directory.
DIRECTORY = "surge-state"


class RocksStateStore:
    """A :class:`~surgewatch.trends.checkpoint.StateStore` in a RocksDB at ``path``."""

    def __init__(self, path: Path) -> None:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = Rdict(str(path), options)
        except Exception as exc:  # rocksdict raises a bare Exception (e.g. the lock is held)
            raise SettingsError(
                f"SURGEWATCH_STORE=rocksdb://: cannot open {path} ({exc}); each worker needs its "
                "own data directory (run it from its own working directory)"
            ) from None
        self.path = path

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items(from_key=prefix):
            # Raw mode: keys and values are bytes.
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            yield key, value

    def write(self, changes: Changes) -> None:
        batch = WriteBatch(raw_mode=True)
        for key in changes.deletes:
            batch.delete(key)
        for key, value in changes.puts:
            batch.put(key, value)
        self._db.write(batch)

    def delete_prefix(self, prefix: bytes) -> None:
        # Keys of a prefix sort between it and the prefix with its last byte incremented.
        self._db.delete_range(prefix, prefix[:-1] + bytes([prefix[-1] + 1]))

    def close(self) -> None:
        self._db.close()


class LocalSurgeState:
    """Checkpoints of this worker's downstream partitions: restored at a takeover, written as
    windows close."""

    def __init__(self, store: RocksStateStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._checkpoints: dict[int, PartitionCheckpoint] = {}
        #: Per partition, writes waiting for their records' acknowledgements, oldest first.
        self._pending: dict[int, deque[list[Any]]] = {}

    @classmethod
    def open(cls, tabledir: Path, metrics: Metrics) -> LocalSurgeState:
        """Open (or create) the RocksDB under ``tabledir``."""
        return cls(RocksStateStore(tabledir / DIRECTORY), metrics)

    def take_over(self, downstream: Downstream, from_snapshot: bool) -> None:
        """Restore ``downstream``'s detectors when this worker's checkpoint of the partition is
        usable; ``from_snapshot``: its counting state came from a log snapshot (otherwise the
        partition starts from nothing, and so does its checkpoint)."""
        partition = downstream.partition
        # Writes of an earlier ownership still waiting for acknowledgements are dropped: the state
        # read now is where this ownership's writes continue from.
        self._pending.pop(partition, None)
        checkpoint = self._checkpoints[partition] = PartitionCheckpoint(
            partition, downstream.trends
        )
        if not from_snapshot:
            checkpoint.discard(self.store)
            return
        store = downstream.store
        outcomes = checkpoint.load(
            self.store, {m: store.closed_before_seconds(m) for m in TREND_METRICS}
        )
        for metric, outcome in outcomes.items():
            self.metrics.surge_state_restores.labels(metric, outcome).inc()
            if outcome == "restored":
                restored = checkpoint.restored_keys(metric)
                self.metrics.surge_state_keys_restored.labels(metric).inc(restored)

    def checkpoint(self, downstream: Downstream, futures: list[Awaitable[Any]]) -> None:
        """Take the partition's changes since its last checkpoint; write them once ``futures``
        (the sends of what the same close produced) are acknowledged."""
        checkpoint = self._checkpoints.get(downstream.partition)
        if checkpoint is None:
            return
        store = downstream.store
        changes = checkpoint.changes({m: store.closed_before_seconds(m) for m in TREND_METRICS})
        if not changes:
            return
        pending = self._pending.setdefault(downstream.partition, deque())
        entry: list[Any] = [changes, not futures]
        pending.append(entry)

        def flush() -> None:
            if self._pending.get(downstream.partition) is not pending:
                return  # taken over again meanwhile (see take_over)
            while pending and pending[0][1]:
                self.store.write(pending.popleft()[0])

        if not futures:
            flush()
            return

        def done(result: asyncio.Future[Any]) -> None:
            # A failed send stops the worker (see Pipeline._commit_after); nothing from it or
            # after it is written, so the store keeps a state whose records all went out.
            if result.cancelled() or result.exception() is not None:
                return
            entry[1] = True
            flush()

        asyncio.gather(*futures).add_done_callback(done)

    def release(self, partition: int) -> None:
        """The partition went to another worker: stop checkpointing it (writes already taken
        still land; the next owner may be this worker again)."""
        self._checkpoints.pop(partition, None)
