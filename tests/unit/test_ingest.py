"""Ingest: verdicts per event, per-partition lateness, partials routed to the owner of each key."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.events.model import MAX_VALUE_BYTES, Reason
from surgewatch.ingest import (
    LAG_BUCKETS_SECONDS,
    MAX_PARTIAL_BYTES,
    METRIC_OF_STREAM,
    PARTIAL_ENTRY_OVERHEAD_BYTES,
    STREAM_OF_METRIC,
    Partial,
    StreamIngest,
    owner_partition,
)
from surgewatch.windows.watermark import FRESH_SECONDS

WINDOW = 60
GRACE = 30
#: Event time of the tests, a multiple of 60.
T0 = 1_700_000_040.0
#: Processing clock: an hour after T0, so every event of the tests is in range and has positive lag.
NOW = T0 + 3_600


def ingest(stream: str = "posts", downstream: int = 4, sources: int = 2) -> StreamIngest:
    return StreamIngest(stream, WINDOW, GRACE, downstream, sources)


def post(ts: float, *tags: str, event_id: str = "e") -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": "u", "ts": ts, "hashtags": list(tags)})


def signup(ts: float, country: str | None = None, event_id: str = "e") -> bytes:
    event: dict[str, Any] = {"event_id": event_id, "user_id": "u", "ts": ts}
    if country is not None:
        event["country"] = country
    return orjson.dumps(event)


def summed(partials: list[tuple[int, Partial]]) -> Counter[tuple[str, int]]:
    total: Counter[tuple[str, int]] = Counter()
    for _, partial in partials:
        for key, start, count in partial.counts:
            total[key, start] += count
    return total


# --- basics ------------------------------------------------------------------------------------


def test_stream_names_and_metrics() -> None:
    assert METRIC_OF_STREAM == {"posts": "hashtag_posts", "signups": "signups"}
    assert STREAM_OF_METRIC == {"hashtag_posts": "posts", "signups": "signups"}
    assert ingest("posts").metric == "hashtag_posts"
    assert ingest("signups").metric == "signups"
    with pytest.raises(ValueError, match="unknown stream 'likes'"):
        StreamIngest("likes", WINDOW, GRACE, 4, 2)


def test_owner_partition_is_crc32_of_metric_and_key() -> None:
    import zlib

    for key in ("tiktokrefugee", "xiaohongshu", "US", "unknown", "话题"):
        for n in (1, 3, 4, 12):
            expected = zlib.crc32(f"hashtag_posts|{key}".encode()) % n
            assert owner_partition("hashtag_posts", key, n) == expected
    assert owner_partition("signups", "US", 1) == 0
    # Stable across calls and processes: a fixed value pins the function.
    assert owner_partition("hashtag_posts", "tiktokrefugee", 4) == (
        zlib.crc32(b"hashtag_posts|tiktokrefugee") % 4
    )


def test_batch_counts_aggregates_and_routes() -> None:
    s = ingest("posts", downstream=3, sources=2)
    values = [
        post(T0 + 1, "A", "b", event_id="1"),
        post(T0 + 2, "a", event_id="2"),
        post(T0 + 61, "a", event_id="3"),
        post(T0 + 3, event_id="4"),  # no hashtag: counted, contributes no key
        b"not json",
    ]
    outcome, partials = s.process(1, values, 10, 14, 20, NOW)
    assert (outcome.received, outcome.counted, outcome.late) == (5, 4, 0)
    assert [(i, r.reason) for i, r in outcome.rejected] == [(4, Reason.INVALID_JSON)]
    assert [dest for dest, _ in partials] == [0, 1, 2]
    assert summed(partials) == {("a", T0): 2, ("b", T0): 1, ("a", T0 + 60): 1}
    for dest, partial in partials:
        assert partial.metric == "hashtag_posts"
        assert partial.source_partition == 1
        assert partial.source_partitions == 2
        assert partial.watermark_seconds == T0 + 61
        assert (partial.first_offset, partial.last_offset) == (10, 14)
        for key, _, _ in partial.counts:
            assert owner_partition("hashtag_posts", key, 3) == dest
    # One aggregated entry per (key, window): never one per event.
    assert sum(len(p.counts) for _, p in partials) == 3
    clock = s.watermarks.partitions[1]
    assert (clock.next_offset, clock.highwater, clock.last_record_wall_seconds) == (15, 20, NOW)
    assert clock.highwater_wall_seconds == NOW  # the batch's highwater is confirmed at its read
    assert clock.max_event_seconds == T0 + 61


def test_one_partial_per_downstream_partition_even_when_empty() -> None:
    s = ingest("signups", downstream=5, sources=1)
    outcome, partials = s.process(0, [b"[]", None], 0, 1, None, NOW)
    assert outcome.counted == 0
    assert [r.reason for _, r in outcome.rejected] == [Reason.NOT_AN_OBJECT, Reason.INVALID_JSON]
    assert [dest for dest, _ in partials] == [0, 1, 2, 3, 4]
    assert all(p.counts == [] for _, p in partials)
    assert all(p.watermark_seconds == -math.inf for _, p in partials)
    assert s.watermarks.partitions[0].highwater_wall_seconds is None  # no end reported
    # An empty batch too.
    _, partials = s.process(0, [], 2, 1, None, NOW)
    assert [dest for dest, _ in partials] == [0, 1, 2, 3, 4]


def test_signup_countries_are_normalised() -> None:
    s = ingest("signups", downstream=2, sources=1)
    values = [
        signup(T0 + 1, "us", event_id="1"),
        signup(T0 + 2, "US", event_id="2"),
        signup(T0 + 3, " de ", event_id="3"),
        signup(T0 + 4, None, event_id="4"),
        signup(T0 + 5, "Atlantis", event_id="5"),
        signup(T0 + 6, "XK", event_id="6"),
        orjson.dumps({"event_id": "7", "user_id": "u", "ts": T0 + 7, "country": 840}),
    ]
    outcome, partials = s.process(0, values, 0, 6, None, NOW)
    assert outcome.counted_by_country == {"US": 2, "DE": 1, "unknown": 3}
    assert outcome.counted == 6
    assert [(i, r.reason) for i, r in outcome.rejected] == [(6, Reason.INVALID_FIELD)]
    assert summed(partials) == {("US", T0): 2, ("DE", T0): 1, ("unknown", T0): 3}
    for dest, partial in partials:
        assert partial.metric == "signups"
        for key, _, _ in partial.counts:
            assert owner_partition("signups", key, 2) == dest


def test_posts_do_not_fill_counted_by_country() -> None:
    s = ingest("posts")
    outcome, _ = s.process(0, [post(T0, "x")], 0, 0, None, NOW)
    assert outcome.counted_by_country == {}


# --- lateness ----------------------------------------------------------------------------------


def test_late_within_a_batch_is_judged_by_the_running_watermark() -> None:
    s = ingest("posts")
    values = [
        post(T0 + 10, "a", event_id="1"),  # window T0, closes at T0 + 90
        post(T0 + 90, "a", event_id="2"),  # watermark reaches the close: T0 is now closed
        post(T0 + 59, "a", event_id="3"),  # late
        post(T0 + 60, "a", event_id="4"),  # window T0 + 60 is open
    ]
    outcome, partials = s.process(0, values, 0, 3, None, NOW)
    assert (outcome.counted, outcome.late) == (3, 1)
    assert summed(partials) == {("a", T0): 1, ("a", T0 + 60): 2}


def test_late_verdicts_across_batches_of_the_same_partition() -> None:
    s = ingest("posts")
    s.process(0, [post(T0 + 89.999, "a")], 0, 0, None, NOW)
    # One ms short of T0 + 90: the first window is still open.
    outcome, partials = s.process(0, [post(T0 + 5, "a")], 1, 1, None, NOW)
    assert (outcome.counted, outcome.late) == (1, 0)
    assert summed(partials) == {("a", T0): 1}
    s.process(0, [post(T0 + 90, "b")], 2, 2, None, NOW)
    outcome, partials = s.process(
        0, [post(T0 + 5, "a"), post(T0 + 59.999, "a"), post(T0 + 60, "a")], 3, 5, None, NOW
    )
    assert (outcome.counted, outcome.late) == (1, 2)
    assert summed(partials) == {("a", T0 + 60): 1}
    assert outcome.lag_bucket_counts == [0] * 11 + [1] + [0] * 3  # lag 3540 s: le 3600


def test_partition_far_ahead_does_not_make_another_late() -> None:
    s = ingest("posts", sources=2)
    s.process(0, [post(T0 + 3_000, "a")], 0, 0, None, NOW)
    outcome, _ = s.process(1, [post(T0 + 5, "a")], 0, 0, None, NOW)
    assert (outcome.counted, outcome.late) == (1, 0)
    outcome, _ = s.process(0, [post(T0 + 5, "a")], 1, 1, None, NOW)
    assert (outcome.counted, outcome.late) == (0, 1)


def test_events_after_an_idle_raise_are_judged_against_the_raised_watermark() -> None:
    s = ingest("posts", downstream=2, sources=2)
    s.process(0, [post(T0 + 600, "a")], 0, 0, None, NOW)  # partition 0 has backlog unknown
    s.process(1, [post(T0, "a")], 0, 0, 1, NOW)  # partition 1 is caught up
    assert s.heartbeats(NOW) == []  # not at once: more may have been written since
    beats = s.heartbeats(NOW + FRESH_SECONDS)  # nothing came for a while
    assert [(d, p.source_partition, p.watermark_seconds) for d, p in beats] == [
        (0, 1, T0 + 600),
        (1, 1, T0 + 600),
    ]
    # A new record on partition 1 for a window the downstream may have closed is late.
    outcome, partials = s.process(1, [post(T0 + 30, "a")], 1, 1, 2, NOW)
    assert (outcome.counted, outcome.late) == (0, 1)
    assert summed(partials) == {}
    assert all(p.watermark_seconds == T0 + 600 for _, p in partials)


# --- heartbeats --------------------------------------------------------------------------------


def test_forced_heartbeats_one_partial_per_owned_and_downstream_partition() -> None:
    s = ingest("signups", downstream=3, sources=4)
    s.process(0, [signup(T0 + 1, "us")], 0, 0, None, NOW)
    s.process(3, [signup(T0 + 7, "fr")], 0, 0, None, NOW)
    assert s.heartbeats(NOW) == []  # nothing idle, nothing moved
    beats = s.heartbeats(NOW, force=True)
    assert [(d, p.source_partition) for d, p in beats] == [
        (0, 0), (1, 0), (2, 0), (0, 3), (1, 3), (2, 3),
    ]  # fmt: skip
    for _, partial in beats:
        assert partial.counts == []
        assert partial.metric == "signups"
        assert partial.source_partitions == 4
        assert (partial.first_offset, partial.last_offset) == (-1, -1)
    assert {p.source_partition: p.watermark_seconds for _, p in beats} == {0: T0 + 1, 3: T0 + 7}


def test_heartbeats_announce_idle_moves() -> None:
    s = ingest("posts", downstream=2, sources=2)
    s.process(0, [post(T0 + 100, "a")], 0, 0, 1, NOW)
    s.process(1, [post(T0 + 40, "a")], 0, 0, 1, NOW)
    # Both caught up, and nothing new for a while: all idle, raised to the largest event time.
    assert s.heartbeats(NOW + 1) == []
    beats = s.heartbeats(NOW + FRESH_SECONDS)
    assert [(d, p.source_partition, p.watermark_seconds) for d, p in beats] == [
        (0, 1, T0 + 100),
        (1, 1, T0 + 100),
    ]
    # Quiet for grace since both became idle, on fresh fetch responses: advance with wall time.
    quiet_until = NOW + FRESH_SECONDS + GRACE
    for partition in (0, 1):
        s.watermarks.set_highwater(partition, 1, quiet_until)
    beats = s.heartbeats(quiet_until)
    assert sorted({(p.source_partition, p.watermark_seconds) for _, p in beats}) == [
        (0, T0 + 100 + GRACE),
        (1, T0 + 100 + GRACE),
    ]
    assert len(beats) == 4


def test_stale_fetch_evidence_never_advances_the_watermark() -> None:
    """A stalled broker or a paused worker: no fresh fetch response, so nothing is idle."""
    s = ingest("posts", downstream=1, sources=2)
    # Both caught up, confirmed at NOW by the batches' own highwater: fresh until NOW + 2 s.
    s.process(0, [post(T0 + 100, "a")], 0, 0, 1, NOW)
    s.process(1, [post(T0 + 40, "a")], 0, 0, 1, NOW)
    much_later = NOW + 10 * GRACE
    assert FRESH_SECONDS < 10 * GRACE
    assert s.heartbeats(much_later) == []
    assert {p: c.watermark_seconds for p, c in s.watermarks.partitions.items()} == {
        0: T0 + 100,
        1: T0 + 40,
    }
    # Fetching resumes and shows a backlog on partition 1: it stays busy and holds the stream.
    # Partition 0 is idle, but the most it may be raised to is partition 1's watermark, below its
    # own: no heartbeat.
    s.watermarks.set_highwater(0, 1, much_later)
    s.watermarks.set_highwater(1, 5_000, much_later)
    assert s.heartbeats(much_later) == []
    assert {p: c.watermark_seconds for p, c in s.watermarks.partitions.items()} == {
        0: T0 + 100,
        1: T0 + 40,
    }
    assert s.watermarks.stream_watermark_seconds() == T0 + 40
    # The backlog the stall hid is on time: its window (T0, closes at T0 + 90) is still open.
    outcome, partials = s.process(1, [post(T0 + 45, "a")], 1, 1, 5_000, much_later)
    assert (outcome.counted, outcome.late) == (1, 0)
    assert [(d, p.watermark_seconds, p.counts) for d, p in partials] == [
        (0, T0 + 45, [("a", T0, 1)])
    ]


def test_stall_after_all_idle_adds_no_wall_clock_time() -> None:
    """Caught up and idle, then the broker stalls for 10 grace periods: the watermark waits."""
    s = ingest("signups", downstream=1, sources=1)
    s.process(0, [signup(T0 + 10, "us")], 0, 0, 1, NOW)
    assert s.heartbeats(NOW + 1) == []  # idle on fresh evidence; quiet clock starts at NOW + 1
    assert s.heartbeats(NOW + 1 + 10 * GRACE) == []  # stale: not idle, no advance
    assert s.watermarks.late_before_seconds(0) == T0 + 10
    # Fresh again: quiet only from this tick on, so still no advance.
    s.watermarks.set_highwater(0, 1, NOW + 2 + 10 * GRACE)
    assert s.heartbeats(NOW + 2 + 10 * GRACE) == []
    s.watermarks.set_highwater(0, 1, NOW + 2 + 11 * GRACE)
    beats = s.heartbeats(NOW + 2 + 11 * GRACE)
    assert [p.watermark_seconds for _, p in beats] == [T0 + 10 + GRACE]


def test_an_event_from_the_future_moves_the_watermark_only_to_now() -> None:
    s = ingest("posts", downstream=1, sources=1)
    now = T0 + 1_000
    future = now + 6 * 3600
    outcome, partials = s.process(0, [post(future, "early")], 0, 0, None, now)
    assert (outcome.counted, outcome.late) == (1, 0)
    # Counted in its own window, but the watermark and the largest event time stop at now.
    assert [(p.watermark_seconds, p.counts) for _, p in partials] == [
        (now, [("early", T0 + 22_560, 1)])
    ]
    clock = s.watermarks.partitions[0]
    assert (clock.watermark_seconds, clock.max_event_seconds) == (now, now)
    outcome, partials = s.process(0, [post(now - 5, "normal")], 1, 1, None, now)
    assert (outcome.counted, outcome.late) == (1, 0)
    assert [(p.watermark_seconds, p.counts) for _, p in partials] == [
        (now, [("normal", T0 + 960, 1)])
    ]
    # A later clock lets a later event move it on, again at most to that clock.
    s.process(0, [post(future, "early")], 2, 2, None, now + 30)
    assert (clock.watermark_seconds, clock.max_event_seconds) == (now + 30, now + 30)


def test_an_event_exactly_at_now_moves_the_watermark_to_it() -> None:
    s = ingest("signups", downstream=1, sources=1)
    s.process(0, [signup(NOW, "us")], 0, 0, None, NOW)
    clock = s.watermarks.partitions[0]
    assert (clock.watermark_seconds, clock.max_event_seconds) == (NOW, NOW)


#: Long tags for the split tests: 2,004 characters, so an entry is estimated at 8,040 bytes and a
#: piece is cut once it holds 33 of them (33 * 8,040 >= MAX_PARTIAL_BYTES > 32 * 8,040).
LONG_TAGS = [f"{i:04d}" + "x" * 2_000 for i in range(300)]
PER_PIECE = 33


def test_split_arithmetic() -> None:
    entry = 2_004 * 4 + PARTIAL_ENTRY_OVERHEAD_BYTES
    assert entry == 8_040
    assert (PER_PIECE - 1) * entry < MAX_PARTIAL_BYTES <= PER_PIECE * entry


def test_a_large_batch_is_split_and_only_the_last_piece_moves_the_watermark() -> None:
    s = ingest("posts", downstream=1, sources=1)
    events = [post(T0 + 10, *LONG_TAGS[i : i + 30]) for i in range(0, 300, 30)]
    _, partials = s.process(0, events, 0, len(events) - 1, None, NOW)
    # 300 entries: 9 full pieces of 33, then the last piece with the remaining 3.
    assert [len(p.counts) for _, p in partials] == [PER_PIECE] * 9 + [3]
    assert [d for d, _ in partials] == [0] * 10
    assert all(len(p.encode()) < 1_000_000 for _, p in partials)
    assert [p.watermark_seconds for _, p in partials] == [-math.inf] * 9 + [T0 + 10]
    assert [p.first_offset for _, p in partials] == [0] * 10
    assert (partials[-1][1].first_offset, partials[-1][1].last_offset) == (0, 9)
    # Every count arrives once, in the batch's order.
    assert [c for _, p in partials for c in p.counts] == [(tag, T0, 1) for tag in LONG_TAGS]


def test_split_pieces_carry_the_watermark_from_before_the_batch_per_destination() -> None:
    s = ingest("posts", downstream=2, sources=1)
    s.process(0, [post(T0 + 5, "small")], 0, 0, None, NOW)
    events = [post(T0 + 20, *LONG_TAGS[i : i + 30]) for i in range(0, 300, 30)]
    _, partials = s.process(0, events, 1, 10, None, NOW)
    for dest in (0, 1):
        owned = [t for t in LONG_TAGS if owner_partition("hashtag_posts", t, 2) == dest]
        pieces = [p for d, p in partials if d == dest]
        full = len(owned) // PER_PIECE
        assert [len(p.counts) for p in pieces] == [PER_PIECE] * full + [len(owned) % PER_PIECE]
        # Earlier pieces: the watermark before this batch; the last piece: the new one.
        assert [p.watermark_seconds for p in pieces] == [T0 + 5] * full + [T0 + 20]
        assert [c for p in pieces for c in p.counts] == [(t, T0, 1) for t in owned]
    # Each destination's last piece comes after all of its earlier pieces.
    assert [d for d, _ in partials[-2:]] == [0, 1]
    assert s.watermarks.partitions[0].watermark_seconds == T0 + 20


def test_a_piece_that_reaches_the_limit_exactly_is_cut_and_the_watermark_still_follows() -> None:
    s = ingest("posts", downstream=1, sources=1)
    # 32 tags of 2,042 characters: 32 * (2,042 * 4 + 24) == MAX_PARTIAL_BYTES exactly.
    tags = [f"{i:02d}" + "y" * 2_040 for i in range(32)]
    assert len(tags) * (2_042 * 4 + PARTIAL_ENTRY_OVERHEAD_BYTES) == MAX_PARTIAL_BYTES
    _, partials = s.process(0, [post(T0 + 10, *tags[:16]), post(T0 + 11, *tags[16:])], 0, 1, 1, NOW)
    # The last entry fills the piece: it is cut with the old watermark, and an empty last piece
    # still brings the new one.
    assert [(len(p.counts), p.watermark_seconds) for _, p in partials] == [
        (32, -math.inf),
        (0, T0 + 11),
    ]
    # One entry less stays in one piece.
    s = ingest("posts", downstream=1, sources=1)
    _, partials = s.process(
        0, [post(T0 + 10, *tags[:16]), post(T0 + 11, *tags[16:31])], 0, 1, 1, NOW
    )
    assert [(len(p.counts), p.watermark_seconds) for _, p in partials] == [(31, T0 + 11)]


def test_max_event_time_tracks_events_read_below_a_raised_watermark() -> None:
    """Regression: max_event was only updated when ts also exceeded the (raised) watermark."""
    s = ingest("signups", downstream=1, sources=1)
    s.process(0, [signup(T0, "us")], 0, 0, 1, NOW)
    assert s.heartbeats(NOW) == []  # caught up, but more may still come
    quiet = NOW + FRESH_SECONDS
    s.watermarks.set_highwater(0, 1, quiet)
    assert s.heartbeats(quiet) == []  # idle on fresh evidence: the quiet clock starts here
    s.watermarks.set_highwater(0, 1, quiet + 100)
    s.heartbeats(quiet + 100)  # quiet 100 s >= grace: watermark T0 + 100
    assert s.watermarks.late_before_seconds(0) == T0 + 100
    outcome, _ = s.process(0, [signup(T0 + 90, "us")], 1, 1, 2, quiet + 100)
    assert outcome.counted == 1  # window T0 + 60 closes at T0 + 150
    # Quiet 40 s after the event at T0 + 90: the largest event time plus the quiet time. With a
    # stale maximum (T0) the watermark would stay at T0 + 100 until the quiet exceeded 100 s, and
    # window T0 + 60 would close 100 s later than it does.
    s.watermarks.set_highwater(0, 2, quiet + 140)
    beats = s.heartbeats(quiet + 140)
    assert [p.watermark_seconds for _, p in beats] == [T0 + 130]
    assert s.watermarks.partitions[0].max_event_seconds == T0 + 90


# --- lag histogram -----------------------------------------------------------------------------


def test_lag_buckets_use_le_bounds() -> None:
    s = ingest("posts")
    # Bounds exact in binary, so a lag equal to a bound is exactly that bound; oldest event first,
    # so none is late.
    lags = [86_400.5, 86_400.0, 60.0, 59.0, 1.0, 0.2500005, 0.25, 0.0]
    now = T0 + 100_000
    values = [post(now - lag, "a", event_id=str(i)) for i, lag in enumerate(lags)]
    outcome, _ = s.process(0, values, 0, len(values) - 1, None, now)
    assert (outcome.counted, outcome.late) == (8, 0)
    by_bound = dict(zip((*LAG_BUCKETS_SECONDS, math.inf), outcome.lag_bucket_counts, strict=True))
    assert by_bound == {
        0.1: 1,
        0.25: 1,
        0.5: 1,
        1.0: 1,
        2.5: 0,
        5.0: 0,
        10.0: 0,
        30.0: 0,
        60.0: 2,
        300.0: 0,
        900.0: 0,
        3600.0: 0,
        21600.0: 0,
        86400.0: 1,
        math.inf: 1,
    }
    assert outcome.lag_sum_seconds == pytest.approx(sum(lags), abs=1e-3)


def test_late_and_rejected_events_stay_out_of_the_lag_histogram() -> None:
    s = ingest("posts")
    values = [post(T0 + 200, "a", event_id="1"), post(T0, "a", event_id="2"), b"{}"]
    outcome, _ = s.process(0, values, 0, 2, None, NOW)
    assert (outcome.counted, outcome.late, len(outcome.rejected)) == (1, 1, 1)
    assert sum(outcome.lag_bucket_counts) == 1
    assert outcome.lag_sum_seconds == NOW - (T0 + 200)


# --- Partial wire form ---------------------------------------------------------------------------


def test_partial_roundtrip_with_no_watermark() -> None:
    partial = Partial("signups", 2, 4, -math.inf, [], 7, 9)
    raw = partial.encode()
    assert isinstance(
        orjson.loads(raw), dict
    )  # -inf is not JSON: it must be encoded some other way
    assert Partial.decode(raw) == partial


def test_partial_roundtrip_with_default_offsets() -> None:
    partial = Partial("hashtag_posts", 0, 1, 12.5, [("a", 60, 2), ("话题", 120, 1)])
    assert (partial.first_offset, partial.last_offset) == (-1, -1)
    assert Partial.decode(partial.encode()) == partial


@given(
    metric=st.sampled_from(("hashtag_posts", "signups")),
    source=st.integers(min_value=0, max_value=1023),
    sources=st.integers(min_value=1, max_value=1024),
    watermark=st.one_of(st.just(-math.inf), st.floats(min_value=0, max_value=4e9, allow_nan=False)),
    counts=st.lists(
        st.tuples(
            st.text(st.characters(codec="utf-8"), max_size=20),
            st.integers(min_value=0, max_value=4_000_000_000),
            st.integers(min_value=0, max_value=2**40),
        ),
        max_size=8,
    ),
    first=st.integers(min_value=-1, max_value=2**40),
    last=st.integers(min_value=-1, max_value=2**40),
)
def test_partial_roundtrip(
    metric: str,
    source: int,
    sources: int,
    watermark: float,
    counts: list[tuple[str, int, int]],
    first: int,
    last: int,
) -> None:
    partial = Partial(metric, source, sources, watermark, counts, first, last)
    assert Partial.decode(partial.encode()) == partial


# --- property: every event ends in exactly one verdict --------------------------------------------

TAGS = ("TikTokRefugee", "xhs", "RedNote", "a", "话题")
#: Inputs that are rejected, with the reason.
INVALID: tuple[tuple[bytes, Reason], ...] = (
    (b"", Reason.INVALID_JSON),
    (b"\xff\xfe", Reason.INVALID_JSON),
    (b"[1, 2]", Reason.NOT_AN_OBJECT),
    (b'"text"', Reason.NOT_AN_OBJECT),
    (b'{"user_id": "u", "ts": 1700000000}', Reason.MISSING_FIELD),
    (b'{"event_id": "e", "user_id": "u"}', Reason.MISSING_FIELD),
    (b'{"event_id": "e", "user_id": "u", "ts": 1}', Reason.INVALID_TS),
    (b'{"event_id": "e", "user_id": "u", "ts": "yesterday"}', Reason.INVALID_TS),
    (b'{"event_id": 5, "user_id": "u", "ts": 1700000000}', Reason.INVALID_FIELD),
    (b" " * (MAX_VALUE_BYTES + 1), Reason.TOO_LARGE),
)

valid_event = st.fixed_dictionaries(
    {
        # Offset from T0 in ms: 0 .. 10 min, so windows overlap and lateness happens.
        "offset_ms": st.integers(min_value=0, max_value=600_000),
        "tags": st.lists(st.sampled_from(TAGS), max_size=4),
        "country": st.sampled_from((None, "us", "US", "gb", " fr ", "Narnia", "XK")),
    }
)
item = st.one_of(
    valid_event,
    st.sampled_from(INVALID),
    # Shorter than the smallest valid event, so never one.
    st.binary(max_size=30).map(lambda raw: (raw, None)),
)
batches = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2), st.lists(item, max_size=12)), max_size=8
)


def encode(stream: str, event: dict[str, Any], index: int) -> bytes:
    value: dict[str, Any] = {
        "event_id": f"e{index}",
        "user_id": "u",
        "ts": T0 + event["offset_ms"] / 1000,
    }
    if stream == "posts":
        value["hashtags"] = event["tags"]
    elif event["country"] is not None:
        value["country"] = event["country"]
    return orjson.dumps(value)


def expected_country(raw: str | None) -> str:
    code = (raw or "").strip().upper()
    return code if code in {"US", "GB", "FR"} else "unknown"


@settings(max_examples=150, deadline=None)
@given(stream=st.sampled_from(("posts", "signups")), batches=batches)
def test_verdicts_add_up_and_counts_match_brute_force(
    stream: str, batches: list[tuple[int, list[Any]]]
) -> None:
    downstream = 3
    s = ingest(stream, downstream=downstream, sources=3)
    watermark = {0: -math.inf, 1: -math.inf, 2: -math.inf}
    offsets = {0: 0, 1: 0, 2: 0}
    expected_counts: Counter[tuple[str, int]] = Counter()
    got_counts: Counter[tuple[str, int]] = Counter()
    index = 0
    for partition, items in batches:
        values: list[bytes | None] = []
        expected_reasons: list[tuple[int, Reason | None]] = []
        counted = late = 0
        countries: Counter[str] = Counter()
        lag_sum = 0.0
        for position, entry in enumerate(items):
            index += 1
            if isinstance(entry, tuple):
                raw, reason = entry
                values.append(None if raw == b"" and position % 2 else raw)
                expected_reasons.append((position, reason))
                continue
            values.append(encode(stream, entry, index))
            ts = T0 + entry["offset_ms"] / 1000
            start = math.floor(ts / WINDOW) * WINDOW
            if start + WINDOW + GRACE <= watermark[partition]:
                late += 1
                continue
            counted += 1
            watermark[partition] = max(watermark[partition], ts)
            lag_sum += NOW - ts
            if stream == "posts":
                for tag in {t.lower() for t in entry["tags"]}:
                    expected_counts[tag, start] += 1
            else:
                country = expected_country(entry["country"])
                countries[country] += 1
                expected_counts[country, start] += 1
        first = offsets[partition]
        last = first + len(values) - 1
        offsets[partition] = last + 1
        outcome, partials = s.process(partition, values, first, last, None, NOW)

        assert outcome.received == len(values)
        assert outcome.counted + outcome.late + len(outcome.rejected) == outcome.received
        assert (outcome.counted, outcome.late) == (counted, late)
        assert [i for i, _ in outcome.rejected] == [i for i, _ in expected_reasons]
        for (_, rejection), (_, reason) in zip(outcome.rejected, expected_reasons, strict=True):
            if reason is not None:
                assert rejection.reason == reason
        assert sum(outcome.lag_bucket_counts) == outcome.counted
        assert outcome.lag_sum_seconds == pytest.approx(lag_sum, abs=1e-4)
        assert outcome.counted_by_country == (dict(countries) if stream == "signups" else {})
        assert [dest for dest, _ in partials] == list(range(downstream))
        for dest, partial in partials:
            assert partial.watermark_seconds == watermark[partition]
            assert partial.source_partition == partition
            assert (partial.first_offset, partial.last_offset) == (first, last)
            assert len({(k, w) for k, w, _ in partial.counts}) == len(partial.counts)
            for key, start, count in partial.counts:
                assert owner_partition(s.metric, key, downstream) == dest
                assert count > 0
                assert start % WINDOW == 0
                got_counts[key, start] += count
        assert s.watermarks.late_before_seconds(partition) == watermark[partition]
    assert got_counts == expected_counts
