"""Ingest: turns a batch of raw input records into counts, lateness verdicts, rejections and partials.

Pure code, no Kafka: the worker hands it the values of one input partition's batch; it parses and
validates each event, decides lateness against that partition's watermark, pre-aggregates the
(key, window) counts, and hands back per-downstream-partition :class:`Partial` messages that carry the
partition's watermark. Pre-aggregating per batch is what keeps one Kafka record per key per window
per batch instead of one per event.
"""

from __future__ import annotations

import bisect
import math
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from datasketches import frequent_items_error_type, frequent_strings_sketch

from surgewatch.events.model import Post, Rejected, Signup
from surgewatch.events.parse import parse_post, parse_signup
from surgewatch.trends.surge import MAX_KEY_CHARS, key_id
from surgewatch.windows.watermark import NO_TIME, SourceWatermarks

POSTS = "posts"
SIGNUPS = "signups"
STREAMS = (POSTS, SIGNUPS)
METRIC_OF_STREAM = {POSTS: "hashtag_posts", SIGNUPS: "signups"}
STREAM_OF_METRIC = {metric: stream for stream, metric in METRIC_OF_STREAM.items()}

#: Upper bounds of the event-lag histogram, seconds: sub-second live lag up to a day-old replay.
LAG_BUCKETS_SECONDS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
)  # fmt: skip


#: Largest routed partial, bytes (estimated with 4 bytes a key character): Kafka's default
#: message limit is 1 MiB, and a batch of long tags would otherwise exceed it.
MAX_PARTIAL_BYTES = 256 * 1024
PARTIAL_ENTRY_OVERHEAD_BYTES = 24

#: Keys whose owner partition is remembered between batches (cleared past this, bounding memory).
OWNER_CACHE_KEYS = 100_000
#: Characters of all cached keys together (cleared past this): at most 16 MiB of text.
OWNER_CACHE_CHARS = 4 * 2**20
#: Longest key the state kept across batches holds as written. A longer one (a hashtag may fill
#: most of a 64 KiB value) is not cached, and a pair sketch holds its :func:`key_id` instead (as
#: the surge detectors do).
LONG_KEY_CHARS = MAX_KEY_CHARS
#: Long tags one window's pair sketch may name per input partition (a tag is at most 64 KiB, so
#: 4 MiB): past this, a further long tag's posts over the per-account cap are not discounted.
LONG_PAIR_TAGS = 64

#: A watermark past every window: the input has ended (finite, so it survives JSON).
END_OF_TIME = 1e18

#: Posts of one hashtag by one account in one window that count towards the hashtag's trend.
DEFAULT_TREND_USER_CAP = 3
#: Hash-map size (log2) of the per-window sketch of (account, hashtag) pairs: tracks the heaviest
#: 0.75 * 2**11 = 1536 pairs; any pair's count is known to within 3.5 / 2**11 (0.17 %) of the
#: window's mentions on that input partition.
HEAVY_PAIRS_LG_MAP_SIZE = 11


def owner_partition(metric: str, key: str, partitions: int) -> int:
    """The downstream partition that owns ``key`` of ``metric`` (CRC-32 of ``metric|key``)."""
    return zlib.crc32(f"{metric}|{key}".encode()) % partitions


def pair_prefix(user_id: str) -> str:
    """Start of an (account, hashtag) sketch key: the length-prefixed account, so any tag can follow."""
    return f"{len(user_id)}:{user_id}"


def pair_tag(pair: str) -> str:
    """The hashtag of an (account, hashtag) sketch key made from :func:`pair_prefix` (for a long
    tag, its :func:`key_id`)."""
    colon = pair.index(":")
    return pair[colon + 1 + int(pair[:colon]) :]


@dataclass(frozen=True, slots=True)
class Partial:
    """Pre-aggregated counts from one input partition to one downstream partition, with its watermark.

    ``discounts`` are ``(hashtag, window_start, posts)``: posts of a closed window (from this input
    partition's view) that came from accounts over the per-account cap, to be left out of the
    hashtag's trend count (never out of its published count). ``origin`` is the first window the
    input partition counted, so every downstream partition dates its warm-up from the stream's start.

    ``first_offset``..``last_offset`` is the input batch it was made from (``last_offset`` is -1 on
    every piece of a split batch but the last, and both are -1 on a watermark-only heartbeat);
    ``piece`` numbers the pieces of one batch for one destination. ``offsets``, when present, holds
    each entry's input offsets (its count is their number): a partition's new owner sends its first
    records in this granular form, so the downstream partition can leave out exactly the records the
    previous owner had already sent (see :class:`~surgewatch.downstream.Downstream`).
    ``previous_watermark_seconds`` is the input partition's watermark before the batch, against
    which the sender judged lateness.
    """

    metric: str
    source_partition: int
    source_partitions: int
    watermark_seconds: float
    counts: list[tuple[str, int, int]]
    first_offset: int = -1
    last_offset: int = -1
    discounts: list[tuple[str, int, int]] = field(default_factory=list)
    origin: int | None = None
    piece: int = 0
    #: Which ownership of the input partition sent it (a random number per owner).
    epoch: int = 0
    offsets: list[list[int]] | None = None
    previous_watermark_seconds: float = NO_TIME
    #: On a heartbeat: the last input offset its sender had sent partials for (-1: none yet), so
    #: a downstream partition can tell that a partial before it never arrived.
    covered: int = -1

    @property
    def granular(self) -> bool:
        """Entries carry their input offsets (a new owner's first records)."""
        return self.offsets is not None

    def encode(self) -> bytes:
        """Compact wire form."""
        watermark = None if self.watermark_seconds == NO_TIME else self.watermark_seconds
        data: dict[str, Any] = {
            "m": self.metric,
            "p": self.source_partition,
            "n": self.source_partitions,
            "wm": watermark,
            "o": [self.first_offset, self.last_offset],
            "k": [key for key, _, _ in self.counts],
            "w": [start for _, start, _ in self.counts],
            "c": [count for _, _, count in self.counts],
        }
        if self.discounts:
            data["x"] = self.discounts
        if self.origin is not None:
            data["f"] = self.origin
        if self.piece:
            data["i"] = self.piece
        if self.epoch:
            data["e"] = self.epoch
        if self.offsets is not None:
            data["q"] = self.offsets
        if self.previous_watermark_seconds != NO_TIME:
            data["pw"] = self.previous_watermark_seconds
        if self.covered >= 0:
            data["h"] = self.covered
        return orjson.dumps(data)

    @classmethod
    def decode(cls, raw: bytes) -> Partial:
        """Inverse of :meth:`encode`."""
        data: dict[str, Any] = orjson.loads(raw)
        watermark = data["wm"]
        first, last = data.get("o", (-1, -1))
        return cls(
            metric=data["m"],
            source_partition=int(data["p"]),
            source_partitions=int(data["n"]),
            watermark_seconds=NO_TIME if watermark is None else float(watermark),
            counts=list(zip(data["k"], data["w"], data["c"], strict=True)),
            first_offset=int(first),
            last_offset=int(last),
            discounts=[(str(k), int(w), int(c)) for k, w, c in data.get("x", ())],
            origin=None if data.get("f") is None else int(data["f"]),
            piece=int(data.get("i", 0)),
            epoch=int(data.get("e", 0)),
            offsets=data.get("q"),
            previous_watermark_seconds=float(data.get("pw", NO_TIME)),
            covered=int(data.get("h", -1)),
        )


@dataclass(slots=True)
class BatchOutcome:
    """What happened to each event of one batch."""

    received: int = 0
    counted: int = 0
    late: int = 0
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)
    counted_by_country: dict[str, int] = field(default_factory=dict)
    lag_bucket_counts: list[int] = field(
        default_factory=lambda: [0] * (len(LAG_BUCKETS_SECONDS) + 1)
    )
    lag_sum_seconds: float = 0.0


class StreamIngest:
    """Ingest state of one input stream on one worker: watermarks and pending partials."""

    def __init__(
        self,
        stream: str,
        window_seconds: int,
        grace_seconds: int,
        downstream_partitions: int,
        source_partitions: int,
        user_cap: int = DEFAULT_TREND_USER_CAP,
    ) -> None:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        self.stream = stream
        self.metric = METRIC_OF_STREAM[stream]
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self.downstream_partitions = downstream_partitions
        self.source_partitions = source_partitions
        self.watermarks = SourceWatermarks(window_seconds, grace_seconds)
        self._owners: dict[str, int] = {}
        #: Characters of the keys in ``_owners``.
        self._owner_chars = 0
        self.user_cap = user_cap
        #: input partition -> window start -> sketch of (account, hashtag) pairs (posts only).
        self._pairs: dict[int, dict[int, Any]] = {}
        #: input partition -> window start -> :func:`key_id` -> tag, for the long tags of
        #: that window's sketch that some account posted more than ``user_cap`` times.
        self._long_tags: dict[int, dict[int, dict[str, str]]] = {}
        #: input partition -> first window it counted.
        self._origins: dict[int, int] = {}
        #: input partition -> this ownership's epoch (see :attr:`Partial.epoch`).
        self._epochs: dict[int, int] = {}
        self._parse: Callable[[bytes, float], Post | Signup | Rejected] = (
            parse_post if stream == POSTS else parse_signup
        )

    def process(
        self,
        partition: int,
        values: Sequence[bytes | None],
        first_offset: int,
        last_offset: int,
        highwater: int | None,
        now_seconds: float,
        highwater_wall_seconds: float | None = None,
        offsets: Sequence[int] | None = None,
    ) -> tuple[BatchOutcome, list[tuple[int, Partial]]]:
        """Handle one batch of ``partition`` (offsets ``first..last``); return outcome and partials.

        The partials list has one ``(downstream_partition, Partial)`` for every downstream partition,
        so the watermark reaches all of them even where this batch had no key. With ``offsets`` (each
        value's input offset) the partials are granular: every entry lists the offsets it counts.
        """
        clock = self.watermarks.assign(partition, now_seconds)
        size, grace = self.window_seconds, self.grace_seconds
        watermark = previous_watermark = clock.watermark_seconds
        max_event = clock.max_event_seconds
        parse = self._parse
        outcome = BatchOutcome(received=len(values))
        rejected = outcome.rejected
        # window start -> key -> count; a batch spans few windows, so the inner dict is reused.
        windows: dict[int, dict[str, int]] = {}
        current_start: int | None = None
        per_key: dict[str, int] = {}
        counted_ts: list[float] = []
        keep_ts = counted_ts.append
        late = 0
        posts = self.stream == POSTS
        by_country = outcome.counted_by_country
        pairs = self._pairs.setdefault(partition, {}) if posts else {}
        sketch: Any = None
        new_sketch = frequent_strings_sketch
        long_chars = LONG_KEY_CHARS
        origin = self._origins.get(partition)
        #: (window start, key) -> input offsets, for a granular batch.
        track: dict[tuple[int, str], list[int]] | None = {} if offsets is not None else None
        for index, raw in enumerate(values):
            event = parse(raw if raw is not None else b"", now_seconds)
            if event.__class__ is Rejected:
                rejected.append((index, event))  # type: ignore[arg-type]
                continue
            ts: float = event.ts  # type: ignore[union-attr]
            start = int(ts // size) * size
            if start + size + grace <= watermark:
                late += 1
                continue
            # An event stamped ahead of the processing clock is counted, but moves the watermark
            # only up to "now": one bad clock must not close everyone's open windows.
            horizon = ts if ts <= now_seconds else now_seconds
            if horizon > watermark:
                watermark = horizon
            if horizon > max_event:
                max_event = horizon
            keep_ts(ts)
            if start != current_start:
                found = windows.get(start)
                if found is None:
                    found = windows[start] = {}
                    if origin is None or start < origin:
                        origin = start
                per_key, current_start = found, start
                if posts:
                    # Windows far ahead of the clock get no sketch: a forged future time cannot
                    # make one per window of the next day (a producer clock a little ahead can).
                    sketch = pairs.get(start)
                    if sketch is None and start <= now_seconds + size + grace:
                        sketch = pairs[start] = new_sketch(HEAVY_PAIRS_LG_MAP_SIZE)
            if posts:
                tags = event.hashtags  # type: ignore[union-attr]
                if tags:
                    if sketch is not None:
                        prefix = pair_prefix(event.user_id)  # type: ignore[union-attr]
                        for tag in tags:
                            per_key[tag] = per_key.get(tag, 0) + 1
                            if len(tag) <= long_chars:
                                sketch.update(prefix + tag)
                            else:
                                self._add_long_pair(partition, start, sketch, prefix, tag)
                    else:
                        for tag in tags:
                            per_key[tag] = per_key.get(tag, 0) + 1
            else:
                country = str(event.country)  # type: ignore[union-attr]
                per_key[country] = per_key.get(country, 0) + 1
                by_country[country] = by_country.get(country, 0) + 1
            if track is not None:
                offset = offsets[index]  # type: ignore[index]
                keys = tags if posts else (country,)
                for key in keys:
                    track.setdefault((start, key), []).append(offset)
        if origin is not None:
            self._origins[partition] = origin
        outcome.late = late
        outcome.counted = len(counted_ts)
        self._lag(outcome, counted_ts, now_seconds)
        self.watermarks.update_read(
            partition,
            max_event,
            watermark,
            last_offset + 1,
            highwater,
            now_seconds,
            highwater_wall_seconds,
        )
        partials = self._partials(
            partition, windows, first_offset, last_offset, previous_watermark, track
        )
        return outcome, partials

    def _add_long_pair(
        self, partition: int, start: int, sketch: Any, prefix: str, tag: str
    ) -> None:
        """Count a post of a tag over :data:`LONG_KEY_CHARS` in a pair sketch, under its digest.

        The sketch tracks up to 1,536 pairs per window, so holding such tags whole could take
        ~100 MB. The tag is remembered only once its pair is over the cap (its lower bound, the
        one :meth:`_discounts` reads, only grows while the pair is tracked), for the discount to
        name it, and up to :data:`LONG_PAIR_TAGS` per window.
        """
        tag_id = key_id(tag)
        pair = prefix + tag_id
        sketch.update(pair)
        if sketch.get_lower_bound(pair) <= self.user_cap:
            return
        names = self._long_tags.setdefault(partition, {}).setdefault(start, {})
        if len(names) < LONG_PAIR_TAGS:
            names.setdefault(tag_id, tag)

    @staticmethod
    def _lag(outcome: BatchOutcome, counted_ts: list[float], now_seconds: float) -> None:
        """Bucket ``now - ts`` of the counted events: a sort and one bisect per bucket bound."""
        if not counted_ts:
            return
        counted_ts.sort()
        total = len(counted_ts)
        previous = 0
        counts = outcome.lag_bucket_counts
        for index, bound in enumerate(LAG_BUCKETS_SECONDS):
            # lag <= bound  <=>  ts >= now - bound
            at_most = total - bisect.bisect_left(counted_ts, now_seconds - bound)
            counts[index] = at_most - previous
            previous = at_most
        counts[-1] = total - previous
        outcome.lag_sum_seconds = now_seconds * total - math.fsum(counted_ts)

    def _partials(
        self,
        partition: int,
        windows: dict[int, dict[str, int]],
        first_offset: int = -1,
        last_offset: int = -1,
        previous_watermark: float | None = None,
        track: dict[tuple[int, str], list[int]] | None = None,
        covered: int = -1,
    ) -> list[tuple[int, Partial]]:
        """Route counts to their owners; one partial per downstream partition, more when large.

        A partial over :data:`MAX_PARTIAL_BYTES` is split so each stays far below a broker's
        message limit; only the last piece of a destination carries the new watermark, so no window
        closes downstream before all of this batch's counts for it have arrived.
        """
        metric, n = self.metric, self.downstream_partitions
        routed: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
        routed_offsets: list[list[list[int]]] | None = (
            [[] for _ in range(n)] if track is not None else None
        )
        pieces = [0] * n
        sizes = [0] * n
        owners = self._owners
        if len(owners) > OWNER_CACHE_KEYS or self._owner_chars > OWNER_CACHE_CHARS:
            owners.clear()
            self._owner_chars = 0
        cached_chars = 0
        watermark = self.watermarks.partitions[partition].watermark_seconds
        held_back = watermark if previous_watermark is None else previous_watermark
        discounts = self._discounts(partition, watermark)
        epoch = self._epochs.get(partition)
        if epoch is None:
            epoch = self._epochs[partition] = random.getrandbits(31) + 1
        out: list[tuple[int, Partial]] = []

        def piece(owner: int, last: int, mark: float) -> Partial:
            offsets = None
            if routed_offsets is not None:
                offsets, routed_offsets[owner] = routed_offsets[owner], []
            made = Partial(
                self.metric,
                partition,
                self.source_partitions,
                mark,
                routed[owner],
                first_offset,
                last,
                origin=self._origins.get(partition),
                piece=pieces[owner],
                epoch=epoch,
                offsets=offsets,
                previous_watermark_seconds=held_back,
                covered=covered,
            )
            pieces[owner] += 1
            return made

        for start, per_key in windows.items():
            for key, count in per_key.items():
                owner = owners.get(key)
                if owner is None:
                    owner = owner_partition(metric, key, n)
                    # A long key's CRC costs about what caching it would save, and would hold
                    # its whole text until the cache is cleared.
                    if len(key) <= LONG_KEY_CHARS:
                        owners[key] = owner
                        cached_chars += len(key)
                routed[owner].append((key, start, count))
                if routed_offsets is not None:
                    routed_offsets[owner].append(track[(start, key)])  # type: ignore[index]
                sizes[owner] += len(key) * 4 + PARTIAL_ENTRY_OVERHEAD_BYTES
                if routed_offsets is not None:
                    sizes[owner] += count * 8
                if sizes[owner] >= MAX_PARTIAL_BYTES:
                    out.append((owner, piece(owner, -1, held_back)))
                    routed[owner], sizes[owner] = [], 0
        self._owner_chars += cached_chars
        # Discounts ride in pieces of their own when large (one account with many long tags): any
        # piece before the window closes will do, and none may exceed the size limit.
        routed_discounts: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
        for tag, start, excess in discounts:
            owner = owner_partition(metric, tag, n)
            routed_discounts[owner].append((tag, start, excess))
            sizes[owner] += len(tag) * 4 + PARTIAL_ENTRY_OVERHEAD_BYTES
            if sizes[owner] >= MAX_PARTIAL_BYTES:
                made = piece(owner, -1, held_back)
                made.discounts.extend(routed_discounts[owner])
                out.append((owner, made))
                routed[owner], routed_discounts[owner], sizes[owner] = [], [], 0
        for dest in range(n):
            made = piece(dest, last_offset, watermark)
            made.discounts.extend(routed_discounts[dest])
            out.append((dest, made))
        return out

    def _discounts(self, partition: int, watermark: float) -> list[tuple[str, int, int]]:
        """``(hashtag, window, posts over the per-account cap)`` of the windows that just closed.

        A window is final for this input partition once its watermark passes ``end + grace``
        (anything later is late), so its sketch is read and dropped then. The excess is computed
        from each pair's *lower* bound, so an account's posts are never discounted beyond its true
        excess; an account over the cap by less than the sketch's error may keep a few extra.
        """
        pairs = self._pairs.get(partition)
        if not pairs:
            return []
        size, grace, cap = self.window_seconds, self.grace_seconds, self.user_cap
        closed = [start for start in pairs if start + size + grace <= watermark]
        long_tags = self._long_tags.get(partition, {})
        out: list[tuple[str, int, int]] = []
        for start in sorted(closed):
            sketch = pairs.pop(start)
            names = long_tags.pop(start, {})
            excess: dict[str, int] = {}
            for pair, _, lower, _ in sketch.get_frequent_items(
                frequent_items_error_type.NO_FALSE_POSITIVES, cap
            ):
                if lower > cap:
                    tag = pair_tag(pair)
                    if tag.startswith("…"):
                        found = names.get(tag)
                        if found is None:
                            continue  # a long tag past LONG_PAIR_TAGS: not named, not discounted
                        tag = found
                    excess[tag] = excess.get(tag, 0) + int(lower) - cap
            out.extend((tag, start, posts) for tag, posts in sorted(excess.items()))
        return out

    def revoke(self, partition: int) -> None:
        """Forget an input partition another worker now reads."""
        self.watermarks.revoke(partition)
        self._pairs.pop(partition, None)
        self._long_tags.pop(partition, None)
        self._origins.pop(partition, None)
        self._epochs.pop(partition, None)

    def recount(
        self,
        partition: int,
        dest: int,
        records: Sequence[tuple[int, bytes | None]],
        first_offset: int,
        last_offset: int,
        watermark_seconds: float,
        now_seconds: float,
    ) -> list[Partial]:
        """The partials for downstream partition ``dest`` of input offsets ``first..last`` of
        ``partition`` (``records``: their ``(offset, value)``), counted from ``watermark_seconds``:
        what that partition's sender sent but the downstream partition never received.

        Run on a fresh instance: the partials are granular and carry an epoch of their own, so
        they count exactly the records the downstream partition has not applied. What the sender
        knew and this does not (its per-account sketches) is left out: trend discounts only.
        """
        clock = self.watermarks.assign(partition, now_seconds)
        clock.watermark_seconds = clock.max_event_seconds = watermark_seconds
        _, partials = self.process(
            partition,
            [value for _, value in records],
            first_offset,
            last_offset,
            None,
            now_seconds,
            offsets=[offset for offset, _ in records],
        )
        return [partial for owner, partial in partials if owner == dest]

    def close_all(self, now_seconds: float) -> list[tuple[int, Partial]]:
        """The input has ended (an offline run): every input partition's watermark runs out."""
        out: list[tuple[int, Partial]] = []
        for partition in range(self.source_partitions):
            clock = self.watermarks.assign(partition, now_seconds)
            clock.watermark_seconds = END_OF_TIME
            out.extend(self._partials(partition, {}, covered=clock.last_read_offset))
        return out

    def heartbeats(self, now_seconds: float, force: bool = False) -> list[tuple[int, Partial]]:
        """Watermark-only partials for partitions whose watermark moved by idleness.

        With ``force``, for every partition this worker reads (a periodic re-announcement, so a
        downstream partition that changed owner learns every input watermark again).
        """
        moved = self.watermarks.advance_idle(now_seconds)
        partitions = list(self.watermarks.partitions) if force else moved
        out: list[tuple[int, Partial]] = []
        for partition in partitions:
            covered = self.watermarks.partitions[partition].last_read_offset
            out.extend(self._partials(partition, {}, covered=covered))
        return out
