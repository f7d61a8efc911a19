"""One downstream partition's state: the window counting store and the trends of the keys it owns.

The worker's counting agent and the offline computation (``backfill``, ``report``, tests) drive
the same object: apply routed partials, then score what closed and condense it for the aggregator.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from surgewatch.config import Settings
from surgewatch.ingest import Partial
from surgewatch.trends.partition import (
    TREND_METRICS,
    PartitionTrends,
    SummaryMessage,
    Surge,
    WindowSummary,
)
from surgewatch.trends.surge import SurgeParams
from surgewatch.windows.counting import WindowCount, WindowStore


def surge_params(settings: Settings) -> SurgeParams:
    """The surge detectors' parameters from the settings."""
    return SurgeParams(
        window_seconds=settings.window_seconds,
        z_start=settings.surge_z_start,
        z_end=settings.surge_z_end,
        min_count=settings.surge_min_count,
        half_life_windows=settings.surge_half_life_windows,
    )


#: What :meth:`Downstream._admit` gives for a piece of a batch that lost an earlier piece.
_LOST_PIECE: list[tuple[str, int, int]] = []


@dataclass(slots=True)
class _Cursor:
    """Per input partition: the last input offset applied, and the batch being applied."""

    done: int = -1
    epoch: int = 0
    first: int = -1
    piece: int = -1
    #: ``done`` before the current batch (its granular pieces are judged against it).
    done_before: int = -1
    #: Counts and discounts of the current batch's pieces read so far: applied with its last
    #: piece, dropped if another batch comes first (its sender died between the pieces).
    held: list[tuple[str, int, int]] = field(default_factory=list)
    held_discounts: list[tuple[str, int, int]] = field(default_factory=list)
    #: A piece of the current batch never arrived: its pieces are dropped, and the batch is
    #: recounted from the input when its last piece comes (see :meth:`Downstream.missing`).
    broken: bool = False

    def holds_batch_of(self, partial: Partial) -> bool:
        """``partial`` is a piece of the batch this cursor is applying (same sender, same start)."""
        return self.epoch == partial.epoch and self.first == partial.first_offset


class Downstream:
    """Window store and trends of downstream partition ``partition`` (of ``partitions``)."""

    def __init__(
        self,
        partition: int,
        partitions: int,
        window_seconds: int,
        grace_seconds: int,
        params: SurgeParams,
        top_k: int,
        *,
        resend_summaries: bool = False,
    ) -> None:
        """``resend_summaries``: each summary message also carries the previous one's window
        summaries (see :meth:`conclude`)."""
        self.partition = partition
        self.partitions = partitions
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self.store = WindowStore(window_seconds, grace_seconds)
        self.trends = PartitionTrends(params, top_k)
        self._reported: dict[str, float] = {}
        #: (metric, input partition) -> what has been applied from it (see :meth:`_admit`).
        self._cursors: dict[tuple[str, int], _Cursor] = {}
        #: Partials (or pieces) left out because they had been applied already.
        self.duplicates = 0
        self.resend_summaries = resend_summaries
        #: The window summaries of the last message (sent again with the next one).
        self._last_summaries: tuple[WindowSummary, ...] = ()

    def apply(self, partial: Partial) -> list[WindowCount]:
        """Add one routed partial; return the window records it closed.

        The pieces of a batch split for size are held until its last piece has arrived, and then
        applied together: a batch counts whole or not at all (see :meth:`_admit`).
        """
        counts = self._admit(partial)
        if counts is None:
            self.duplicates += 1
            return []
        if counts is _LOST_PIECE:
            return []
        discounts = partial.discounts
        if partial.first_offset >= 0:
            cursor = self._cursors[(partial.metric, partial.source_partition)]
            if partial.last_offset < 0:  # a piece before the batch's last
                cursor.held.extend(counts)
                cursor.held_discounts.extend(discounts)
                return []
            if cursor.held or cursor.held_discounts:
                counts = [*cursor.held, *counts]
                discounts = [*cursor.held_discounts, *discounts]
                cursor.held, cursor.held_discounts = [], []
        return self.store.apply(
            partial.metric,
            partial.source_partition,
            partial.source_partitions,
            partial.watermark_seconds,
            counts,
            discounts,
            partial.origin,
        )

    def _admit(self, partial: Partial) -> list[tuple[str, int, int]] | None:
        """The counts of ``partial`` not applied yet (``None``: all were), late ones left out.

        At-least-once delivery means an input batch can be sent twice: by a worker that died before
        committing its offsets and by the partition's next owner, which reads from the committed
        offset. Every batch reaches every downstream partition, in input order, so per input
        partition it is enough to know the last input offset applied: a batch at or below it is
        a repeat. A new owner's first batches are granular (each entry lists its input offsets), so
        where its batches overlap what the previous owner sent, exactly the unsent records count.
        Pieces of one batch are told apart by the sender's epoch, the batch's first offset and the
        piece number, so a re-delivered piece is not applied twice either. Only the last piece
        moves the cursor, so pieces are held until it arrives: when the sender dies between the
        pieces, the next owner's granular records count the whole batch, and the pieces that did
        arrive are dropped instead of being counted a second time. A piece numbered past the next
        one expected means a piece was lost on the way: the batch's pieces are dropped and the
        batch is recounted from the input instead (see :meth:`missing`).

        A new owner starts without the partition's watermark, so it may count an event the
        previous owner would have judged late: its batches carry the watermark they were judged
        against, and entries of windows already closed for that input partition are left out here.
        """
        first = partial.first_offset
        if first < 0:  # a heartbeat: watermark only
            return partial.counts
        key = (partial.metric, partial.source_partition)
        cursor = self._cursors.get(key)
        if cursor is None:
            cursor = self._cursors[key] = _Cursor()
        same_batch = cursor.holds_batch_of(partial)
        if same_batch and partial.piece <= cursor.piece:
            return None
        if self._piece_lost(cursor, partial, same_batch):
            # Dropped, and the cursor stays: the batch is recounted from the input instead.
            if not same_batch:
                cursor.epoch, cursor.first, cursor.done_before = partial.epoch, first, cursor.done
            cursor.held, cursor.held_discounts = [], []
            cursor.broken = True
            cursor.piece = partial.piece
            return _LOST_PIECE
        done = cursor.done if not same_batch else cursor.done_before
        offsets = partial.offsets
        if offsets is None:
            if first <= done:
                return None
            counts = partial.counts
        else:
            counts = []
            for (name, start, _), listed in zip(partial.counts, offsets, strict=True):
                fresh = len(listed) - bisect.bisect_right(listed, done)
                if fresh:
                    counts.append((name, start, fresh))
        if not same_batch:
            cursor.epoch, cursor.first, cursor.done_before = partial.epoch, first, cursor.done
            cursor.held, cursor.held_discounts = [], []
            cursor.broken = False
        cursor.piece = partial.piece
        if partial.last_offset > cursor.done:
            cursor.done = partial.last_offset
        known = self.store.source_watermark_seconds(partial.metric, partial.source_partition)
        if counts and partial.previous_watermark_seconds < known:
            closed_before = known - self.grace_seconds
            size = self.window_seconds
            kept = [entry for entry in counts if entry[1] + size > closed_before]
            if len(kept) < len(counts):
                late = sum(entry[2] for entry in counts) - sum(entry[2] for entry in kept)
                self.store.count_dropped(partial.metric, late)
                counts = kept
        return counts

    @staticmethod
    def _piece_lost(cursor: _Cursor, partial: Partial, same_batch: bool) -> bool:
        """An earlier piece of ``partial``'s batch never arrived (pieces are numbered from 0)."""
        if same_batch:
            return cursor.broken or partial.piece != cursor.piece + 1
        return partial.piece > 0

    def missing(self, partial: Partial) -> tuple[int, int, bool] | None:
        """Input offsets of ``partial``'s source that were sent here but never arrived.

        Every batch of an input partition reaches every downstream partition, in input order, and
        a heartbeat says how far its sender had sent; so a batch that starts past the cursor, or a
        heartbeat that covers more than it, shows partials lost on the way (a broker that
        acknowledged a write and lost it). The worker recounts those offsets from the input
        topic (:meth:`~surgewatch.ingest.StreamIngest.recount`) and applies the result before
        ``partial``. Returns ``(first, last, replaces)``; ``replaces`` means the range includes
        ``partial``'s own batch, whose earlier piece was lost, so ``partial`` is not applied.
        ``None``: nothing is missing, or nothing from this source has arrived yet to compare with.
        """
        cursor = self._cursors.get((partial.metric, partial.source_partition))
        if cursor is None:
            return None
        # The first offset not applied yet: after the last batch, or the first batch's start.
        expected = cursor.done + 1 if cursor.done >= 0 else cursor.first
        first, last = partial.first_offset, partial.last_offset
        if first < 0:  # a heartbeat: its sender's partials up to ``covered`` came before it
            return (expected, partial.covered, False) if partial.covered >= expected else None
        same_batch = cursor.holds_batch_of(partial)
        if same_batch and partial.piece <= cursor.piece:
            return None  # a repeat
        if last >= expected and self._piece_lost(cursor, partial, same_batch):
            return min(expected, first), last, True
        if not same_batch and first > expected:
            return expected, first - 1, False
        return None

    def export_state(self) -> dict[str, Any]:
        """The partition's counting state as JSON-ready data: open windows, what closed, what was
        applied from each input partition. Detector baselines are not part of it."""
        return {
            "store": self.store.export_state(),
            "cursors": [
                [
                    metric,
                    source,
                    c.done,
                    c.epoch,
                    c.first,
                    c.piece,
                    c.done_before,
                    c.held,
                    c.held_discounts,
                    c.broken,
                ]
                for (metric, source), c in self._cursors.items()
            ],
            "reported": self._reported,
        }

    def import_state(self, data: dict[str, Any]) -> None:
        """Continue from what :meth:`export_state` gave."""
        self.store.import_state(data["store"])
        self._cursors = {}
        for row in data["cursors"]:
            # A snapshot of an earlier version has no held pieces (it applied them at once).
            metric, source, done, epoch, first, piece, before = row[:7]
            held, held_discounts = row[7:9] if len(row) >= 9 else ([], [])
            broken = bool(row[9]) if len(row) >= 10 else False
            self._cursors[(str(metric), int(source))] = _Cursor(
                int(done),
                int(epoch),
                int(first),
                int(piece),
                int(before),
                [(str(k), int(w), int(c)) for k, w, c in held],
                [(str(k), int(w), int(c)) for k, w, c in held_discounts],
                broken,
            )
        self._reported = {str(k): float(v) for k, v in data["reported"].items()}

    def conclude(self, closed: Iterable[WindowCount]) -> tuple[list[Surge], SummaryMessage | None]:
        """Score the windows that closed; the message for the aggregator when there is news.

        News is a closed window, or the closed boundary crossing a window boundary (so the
        aggregator learns that this partition has nothing for the windows in between).

        With :attr:`resend_summaries` a message also carries the previous message's summaries.
        The worker's messages share one partition, to which the embedded broker can lose one of
        two writes that arrive at the same moment: a lost message's summaries then arrive with
        the next message, which is also the one that advances this partition's closed boundary,
        so the aggregator completes no window without them. It takes a repeat as the same summary.
        """
        by_metric: dict[str, list[WindowCount]] = {}
        for window in closed:
            by_metric.setdefault(window.metric, []).append(window)
        surges: list[Surge] = []
        summaries: list[WindowSummary] = []
        for metric in TREND_METRICS:
            windows = by_metric.get(metric)
            if windows:
                found, condensed = self.trends.close(metric, windows, self.store.origin(metric))
                surges.extend(found)
                summaries.extend(condensed)
        progressed = False
        closed_before: dict[str, float] = {}
        size = self.window_seconds
        for metric in TREND_METRICS:
            boundary = self.store.closed_before_seconds(metric)
            if math.isinf(boundary):
                continue
            closed_before[metric] = boundary
            previous = self._reported.get(metric, -math.inf)
            if math.isinf(previous) or boundary // size > previous // size:
                self._reported[metric] = boundary
                progressed = True
        if not summaries and not progressed:
            return surges, None
        current = tuple(summaries)
        sent = current
        if self.resend_summaries:
            sent, self._last_summaries = self._last_summaries + current, current
        message = SummaryMessage(self.partition, self.partitions, closed_before, sent)
        return surges, message
