"""Checkpoints of a downstream partition's surge detectors: what changed at each close, as key-value
writes, and the detectors restored from them.

A :class:`PartitionCheckpoint` follows the detectors of one :class:`PartitionTrends`. After windows
close, :meth:`PartitionCheckpoint.changes` gives the writes that bring the stored state up to date:
one entry per key observed since the previous checkpoint, deletions of the keys evicted since, and
one small metadata entry per detector. The cost is proportional to the keys observed, never to the
keys tracked. :meth:`PartitionCheckpoint.load` restores the detectors from a store, so a restarted
worker's detectors continue warm, with their surges open.

Keys (bytes): ``{partition:08x}/{metric}/m`` for a detector's metadata, ``{partition:08x}/{metric}/k/``
followed by the UTF-8 key for a key's scorer. Values start with a format byte
(:data:`FORMAT_VERSION`); an entry of another version, or one that cannot be read, makes the whole
detector start over (warm up), because a detector missing some of its keys would judge them new.

Stored state is used only when it is at least as far along as the partition's counting state
(restored from the log snapshot): every window that has closed must have been scored by it. State
that is further along is fine: the windows it has scored close again from the log with the same
counts, and :meth:`PartitionTrends.close` skips windows a detector has already observed.

Pure: no I/O here beyond the :class:`StateStore` passed in.
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from surgewatch.trends.partition import PartitionTrends
from surgewatch.trends.surge import (
    RING_HOURS,
    KeyScorer,
    Observation,
    ScorerState,
    SurgeDetector,
    SurgeParams,
    SurgeState,
)

log = logging.getLogger("surgewatch.checkpoint")

#: First byte of every stored value; a value with another one is not read.
FORMAT_VERSION = 1
#: How a detector's stored state was found at a takeover.
LoadOutcome = Literal["restored", "none", "stale", "unreadable"]
LOAD_OUTCOMES: tuple[LoadOutcome, ...] = ("restored", "none", "stale", "unreadable")

#: Stands for ``None`` in an integer field.
_NONE = -(2**63)
# Scorer: first window, last window, mean, variance, newest hour, flags, calm windows, the last
# observation's count, baseline and score, and a bitmap of the non-zero hour sums that follow.
_SCORER = struct.Struct("<qqddqBIqddI")
# Key entry: version, order (position in the detector's least-recently-observed order), length of
# the whole key (only for a surging key filed under a digest, else 0), the whole key, scorer.
_KEY_HEAD = struct.Struct("<BqI")
# Metadata: version, parameters' fingerprint, first and last window, evicted keys, next order
# number, closed boundary of the counting state when written, whether a volume scorer follows.
_META = struct.Struct("<B8sqqqqdB")
_IN_SURGE, _SURGE_DAY, _HAS_LAST, _LAST_DAY = 1, 2, 4, 8
_TRANSITION_SHIFT = 4
_TRANSITIONS: tuple[SurgeState | None, ...] = (None, "start", "end")


class StateStore(Protocol):
    """Where checkpoints go: an ordered byte key-value store with atomic batches."""

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every entry whose key starts with ``prefix``, in key order."""
        ...

    def write(self, changes: Changes) -> None:
        """Apply ``changes`` atomically."""
        ...

    def delete_prefix(self, prefix: bytes) -> None:
        """Remove every entry whose key starts with ``prefix``."""
        ...


@dataclass(slots=True)
class Changes:
    """Writes of one checkpoint: deletions first, then puts."""

    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes)


class MemoryStateStore:
    """A :class:`StateStore` in a dict (tests, and what a store looks like)."""

    def __init__(self) -> None:
        self.entries: dict[bytes, bytes] = {}

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in self.entries if k.startswith(prefix)):
            yield key, self.entries[key]

    def write(self, changes: Changes) -> None:
        for key in changes.deletes:
            self.entries.pop(key, None)
        self.entries.update(changes.puts)

    def delete_prefix(self, prefix: bytes) -> None:
        for key in [k for k in self.entries if k.startswith(prefix)]:
            del self.entries[key]


class UnreadableEntry(ValueError):
    """A stored value of another format version, or damaged."""


def partition_prefix(partition: int) -> bytes:
    """The prefix of every entry of one downstream partition."""
    return b"%08x/" % partition


def detector_prefix(partition: int, metric: str) -> bytes:
    """The prefix of every entry of one detector."""
    return partition_prefix(partition) + metric.encode() + b"/"


def fingerprint(params: SurgeParams, relative: bool) -> bytes:
    """8 bytes that differ when the detector's parameters do (state of others is not used)."""
    return hashlib.blake2b(f"{params!r}/{relative}".encode(), digest_size=8).digest()


def encode_scorer(state: ScorerState) -> bytes:
    """A scorer's state, without the format byte: fixed fields, then the non-zero hour sums."""
    flags = (_IN_SURGE if state.in_surge else 0) | (
        _SURGE_DAY if state.surge_basis == "day_over_day" else 0
    )
    last = state.last
    count, baseline, score = 0, 0.0, 0.0
    if last is not None:
        flags |= _HAS_LAST | (_LAST_DAY if last.basis == "day_over_day" else 0)
        flags |= _TRANSITIONS.index(last.transition) << _TRANSITION_SHIFT
        count, baseline, score = last.count, last.baseline, last.score
    mask = 0
    present: list[float] = []
    for slot, value in enumerate(state.hour_sums):
        if value:
            mask |= 1 << slot
            present.append(value)
    head = _SCORER.pack(
        state.first_window_start,
        _NONE if state.last_window_start is None else state.last_window_start,
        state.mean,
        state.variance,
        state.newest_hour,
        flags,
        state.calm_windows,
        count,
        baseline,
        score,
        mask,
    )
    return head + struct.pack(f"<{len(present)}d", *present)


def decode_scorer(raw: bytes, offset: int = 0) -> ScorerState:
    """Inverse of :func:`encode_scorer` (from ``offset``); raises :class:`UnreadableEntry`."""
    try:
        first, last_start, mean, var, newest, flags, calm, count, baseline, score, mask = (
            _SCORER.unpack_from(raw, offset)
        )
        slots = [slot for slot in range(RING_HOURS) if mask >> slot & 1]
        if mask >> RING_HOURS:
            raise UnreadableEntry(f"hour bitmap {mask:#x} beyond {RING_HOURS} hours")
        start = offset + _SCORER.size
        values = struct.unpack_from(f"<{len(slots)}d", raw, start)
        if start + 8 * len(slots) != len(raw):
            raise UnreadableEntry(f"{len(raw)} bytes, expected {start + 8 * len(slots)}")
        transition = _TRANSITIONS[flags >> _TRANSITION_SHIFT & 3]
    except (struct.error, IndexError) as exc:
        raise UnreadableEntry(str(exc)) from None
    hour_sums = [0.0] * RING_HOURS
    for slot, value in zip(slots, values, strict=True):
        hour_sums[slot] = value
    last_window = None if last_start == _NONE else last_start
    observation = None
    if flags & _HAS_LAST:
        if last_window is None:
            raise UnreadableEntry("an observation without a last window")
        observation = Observation(
            last_window,
            count,
            baseline,
            score,
            transition,
            "day_over_day" if flags & _LAST_DAY else "window",
        )
    values_ok = all(math.isfinite(v) for v in (mean, var, baseline, score, *values))
    if not values_ok or count < 0 or var < 0:
        raise UnreadableEntry("a value out of range")
    return ScorerState(
        first,
        last_window,
        mean,
        var,
        newest,
        tuple(hour_sums),
        bool(flags & _IN_SURGE),
        "day_over_day" if flags & _SURGE_DAY else "window",
        calm,
        observation,
    )


def encode_key_entry(order: int, state: ScorerState, whole_key: str = "") -> bytes:
    """A key's stored value: format byte, order number, the whole key when the entry's key is a
    digest of it (:func:`~surgewatch.trends.surge.key_id`) and it surges, scorer."""
    name = whole_key.encode("utf-8", "surrogatepass")
    return _KEY_HEAD.pack(FORMAT_VERSION, order, len(name)) + name + encode_scorer(state)


def decode_key_entry(raw: bytes) -> tuple[int, str, ScorerState]:
    """``(order, whole key or "", state)`` of a key's stored value; raises :class:`UnreadableEntry`."""
    if len(raw) < _KEY_HEAD.size or raw[0] != FORMAT_VERSION:
        raise UnreadableEntry(f"format {raw[:1].hex() or 'missing'}, expected {FORMAT_VERSION}")
    _, order, length = _KEY_HEAD.unpack_from(raw)
    start = _KEY_HEAD.size + length
    try:
        name = raw[_KEY_HEAD.size : start].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise UnreadableEntry(f"whole key: {exc}") from None
    return order, name, decode_scorer(raw, start)


@dataclass(frozen=True, slots=True)
class DetectorMeta:
    """A detector's own state besides its keys, and where the checkpoint stands."""

    fingerprint: bytes
    first_window_start: int | None
    last_window_start: int | None
    evicted_keys: int
    next_order: int
    #: The counting state's closed boundary when this was written (``-inf`` before any close).
    closed_before: float
    volume: ScorerState | None

    def encode(self) -> bytes:
        def optional(value: int | None) -> int:
            return _NONE if value is None else value

        head = _META.pack(
            FORMAT_VERSION,
            self.fingerprint,
            optional(self.first_window_start),
            optional(self.last_window_start),
            self.evicted_keys,
            self.next_order,
            self.closed_before,
            self.volume is not None,
        )
        return head if self.volume is None else head + encode_scorer(self.volume)

    @classmethod
    def decode(cls, raw: bytes) -> DetectorMeta:
        """Inverse of :meth:`encode`; raises :class:`UnreadableEntry`."""
        if len(raw) < _META.size or raw[0] != FORMAT_VERSION:
            raise UnreadableEntry(f"format {raw[:1].hex() or 'missing'}, expected {FORMAT_VERSION}")
        _, mark, first, last, evicted, next_order, closed_before, has_volume = _META.unpack_from(
            raw
        )
        volume = decode_scorer(raw, _META.size) if has_volume else None
        if not has_volume and len(raw) != _META.size:
            raise UnreadableEntry(f"{len(raw)} bytes, expected {_META.size}")
        return cls(
            mark,
            None if first == _NONE else first,
            None if last == _NONE else last,
            evicted,
            next_order,
            closed_before,
            volume,
        )


def _closed_windows(closed_before: float, window_seconds: int) -> float:
    """How many windows the closed boundary has passed (``-inf`` before any)."""
    return closed_before if math.isinf(closed_before) else closed_before // window_seconds


@dataclass(slots=True)
class _Tracker:
    """Where one detector's checkpoint stands."""

    metric: str
    detector: SurgeDetector
    fingerprint: bytes
    #: The last window whose keys are in the store.
    through: int | None = None
    next_order: int = 0
    closed_before: float = -math.inf
    evicted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.detector.evicted_log = self.evicted


class PartitionCheckpoint:
    """What the detectors of one downstream partition have stored, and what changed since.

    Construct it with the partition's fresh :class:`PartitionTrends`, then call :meth:`load` once
    (or :meth:`discard` to start over), then :meth:`changes` after every close.
    """

    def __init__(self, partition: int, trends: PartitionTrends) -> None:
        self.partition = partition
        self.trends = trends
        self._trackers = {
            metric: _Tracker(metric, detector, fingerprint(detector.params, detector.relative))
            for metric, detector in trends.detectors.items()
        }

    def discard(self, store: StateStore) -> None:
        """Forget what is stored for the partition: its detectors start over."""
        store.delete_prefix(partition_prefix(self.partition))

    def load(self, store: StateStore, closed_before: Mapping[str, float]) -> dict[str, LoadOutcome]:
        """Restore each detector from ``store`` when its state there is readable, was written with
        the same parameters and has scored every window closed before ``closed_before[metric]``
        (the counting state's boundary); otherwise delete it (the detector warms up).

        Returns the outcome per metric; the detectors must not have observed anything yet.
        """
        outcomes: dict[str, LoadOutcome] = {}
        for metric, tracker in self._trackers.items():
            prefix = detector_prefix(self.partition, metric)
            try:
                outcome = self._load(tracker, store.scan(prefix), closed_before.get(metric))
            except UnreadableEntry as exc:
                log.warning(
                    "partition %d %s: stored surge state unreadable (%s); it warms up again",
                    self.partition,
                    metric,
                    exc,
                )
                outcome = "unreadable"
            if outcome != "restored":
                store.delete_prefix(prefix)
            outcomes[metric] = outcome
        return outcomes

    def _load(
        self,
        tracker: _Tracker,
        entries: Iterable[tuple[bytes, bytes]],
        closed_before: float | None,
    ) -> LoadOutcome:
        detector = tracker.detector
        params = detector.params
        prefix = detector_prefix(self.partition, tracker.metric)
        meta_key, key_start = prefix + b"m", len(prefix) + 2
        meta: DetectorMeta | None = None
        keyed: list[tuple[int, str, ScorerState]] = []
        names: dict[str, str] = {}
        for stored, raw in entries:
            if stored == meta_key:
                meta = DetectorMeta.decode(raw)
            elif stored.startswith(prefix + b"k/"):
                order, whole, state = decode_key_entry(raw)
                try:
                    name = stored[key_start:].decode("utf-8", "surrogatepass")
                except UnicodeDecodeError as exc:
                    raise UnreadableEntry(f"key {stored[:40]!r}: {exc}") from None
                keyed.append((order, name, state))
                if whole:
                    names[name] = whole
        if meta is None:
            return "none" if not keyed else "stale"
        if meta.fingerprint != tracker.fingerprint:
            log.info(
                "partition %d %s: stored surge state has other parameters; it warms up again",
                self.partition,
                tracker.metric,
            )
            return "stale"
        size = params.window_seconds
        needed = -math.inf if closed_before is None else closed_before
        if _closed_windows(meta.closed_before, size) < _closed_windows(needed, size):
            log.info(
                "partition %d %s: stored surge state is behind the log snapshot (closed before %s,"
                " the snapshot %s); it warms up again",
                self.partition,
                tracker.metric,
                meta.closed_before,
                needed,
            )
            return "stale"
        keyed.sort(key=lambda item: item[0])
        detector.restore(
            meta.first_window_start,
            meta.last_window_start,
            ((name, KeyScorer.from_state(params, state)) for _, name, state in keyed),
            None if meta.volume is None else KeyScorer.from_state(params, meta.volume),
            meta.evicted_keys,
            names,
        )
        tracker.through = meta.last_window_start
        tracker.next_order = meta.next_order
        tracker.closed_before = meta.closed_before
        log.info(
            "partition %d %s: restored %d keys' surge state (%d surging) through window %s",
            self.partition,
            tracker.metric,
            len(keyed),
            len(detector.surging),
            meta.last_window_start,
        )
        return "restored"

    def restored_keys(self, metric: str) -> int:
        """Keys the detector of ``metric`` tracks (after :meth:`load`: how many were restored)."""
        return len(self._trackers[metric].detector)

    def changes(self, closed_before: Mapping[str, float]) -> Changes:
        """The writes that bring the store up to the detectors' state (empty when nothing changed);
        ``closed_before``: the counting state's boundary per metric, now.

        The writes must reach the store in the order they were taken: each holds only what changed
        since the previous one.
        """
        changes = Changes()
        for metric, tracker in self._trackers.items():
            detector = tracker.detector
            size = detector.params.window_seconds
            boundary = max(tracker.closed_before, closed_before.get(metric, -math.inf))
            observed = detector.observed_since(tracker.through)
            progressed = _closed_windows(boundary, size) > _closed_windows(
                tracker.closed_before, size
            )
            if not observed and not tracker.evicted and not progressed:
                continue
            prefix = detector_prefix(self.partition, metric)
            key_prefix = prefix + b"k/"
            if tracker.evicted:
                changes.deletes.extend(
                    key_prefix + key.encode("utf-8", "surrogatepass")
                    for key in set(tracker.evicted)
                    if key not in detector
                )
                tracker.evicted.clear()
            order = tracker.next_order
            puts = changes.puts
            for key, scorer in observed:
                whole = detector.whole_key(key) if scorer.in_surge else key
                entry = encode_key_entry(order, scorer.state(), "" if whole == key else whole)
                puts.append((key_prefix + key.encode("utf-8", "surrogatepass"), entry))
                order += 1
            tracker.next_order = order
            tracker.through = detector.last_window_start
            tracker.closed_before = boundary
            volume = detector.volume_scorer
            meta = DetectorMeta(
                tracker.fingerprint,
                detector.first_window_start,
                detector.last_window_start,
                detector.evicted_keys,
                order,
                boundary,
                None if volume is None else volume.state(),
            )
            puts.append((prefix + b"m", meta.encode()))
        return changes
