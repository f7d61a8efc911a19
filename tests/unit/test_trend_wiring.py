"""Trend wiring: per-account discounts from ingest to the store, partition trends, the aggregator.

Pure code, no Kafka: ingest's (account, hashtag) sketch and the discounts it emits, the counting
store carrying discounts and origins into closed windows, :class:`PartitionTrends` scoring and
summarising, :class:`TrendAggregator` completing windows across partitions, :class:`Downstream`,
the summary wire format and the surge settings.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import orjson
import pytest
from datasketches import frequent_strings_sketch
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.config import ENV_PREFIX, SettingsError, load_settings
from surgewatch.downstream import Downstream, surge_params
from surgewatch.ingest import (
    DEFAULT_TREND_USER_CAP,
    END_OF_TIME,
    HEAVY_PAIRS_LG_MAP_SIZE,
    Partial,
    StreamIngest,
    owner_partition,
    pair_prefix,
    pair_tag,
)
from surgewatch.trends.aggregate import TrendAggregator, TrendView
from surgewatch.trends.partition import (
    ALL_KEY,
    KeyTrend,
    PartitionTrends,
    SummaryMessage,
    Surge,
    WindowSummary,
    top_surging,
)
from surgewatch.trends.surge import SurgeEvent, SurgeParams
from surgewatch.trends.topk import top_of_window
from surgewatch.windows.counting import WindowCount, WindowStore

WINDOW = 60
GRACE = 30
#: Event time of the tests, a multiple of 60.
T0 = 1_700_000_040
#: Processing clock: an hour after T0, so every event of the tests is in range.
NOW = T0 + 3_600
HASHTAGS = "hashtag_posts"
SIGNUPS = "signups"
#: Capacity of the heavy-pairs sketch: past this many distinct pairs it starts to forget.
PAIRS_CAPACITY = (1 << HEAVY_PAIRS_LG_MAP_SIZE) * 3 // 4


def post(ts: float, user: str, *tags: str, event_id: str = "e") -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": user, "ts": ts, "hashtags": list(tags)})


def signup(ts: float, user: str, country: str, event_id: str = "e") -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": user, "ts": ts, "country": country})


def discounts_of(partials: Iterable[tuple[int, Partial]]) -> list[tuple[int, str, int, int]]:
    """``(destination, hashtag, window_start, posts)`` of every discount in ``partials``."""
    return [(dest, *d) for dest, partial in partials for d in partial.discounts]


class Feed:
    """Hands one input partition's values to ingest in batches, with increasing offsets."""

    def __init__(self, ingest: StreamIngest, partition: int = 0) -> None:
        self.ingest = ingest
        self.partition = partition
        self.offset = 0

    def __call__(self, values: list[bytes]) -> list[tuple[int, Partial]]:
        first = self.offset
        self.offset += len(values)
        _, partials = self.ingest.process(self.partition, values, first, self.offset - 1, None, NOW)
        return partials


# --- ingest: sketch keys -----------------------------------------------------------------------


def test_pair_prefix_is_the_length_prefixed_account() -> None:
    assert pair_prefix("bob") == "3:bob"
    assert pair_prefix("") == "0:"
    assert pair_prefix("话题") == "2:话题"
    assert pair_tag(pair_prefix("bob") + "tiktokrefugee") == "tiktokrefugee"
    # An account that looks like a prefix, and a tag that looks like a pair, stay apart.
    assert pair_tag(pair_prefix("12:ab") + "3:cd") == "3:cd"
    assert pair_tag(pair_prefix("1:") + ":") == ":"
    assert pair_tag(pair_prefix("9") + "") == ""


_HOSTILE_TEXT = st.text(st.one_of(st.sampled_from(":0123456789"), st.characters()), max_size=40)


@given(user=_HOSTILE_TEXT, tag=_HOSTILE_TEXT)
@settings(max_examples=300, deadline=None)
def test_pair_tag_inverts_pair_prefix_for_any_text(user: str, tag: str) -> None:
    assert pair_tag(pair_prefix(user) + tag) == tag


# --- ingest: discounts -------------------------------------------------------------------------


def heavy_window(
    rng: random.Random, bot_posts: int, cap: int
) -> tuple[list[bytes], Counter[tuple[str, str]]]:
    """One window of posts: a bot posting ``x`` ``bot_posts`` times among normal accounts, each of
    which posts at most ``cap`` times (so uses ``x`` at most ``cap`` times) with varied other tags.
    Returns the shuffled values and the true per-(account, tag) counts."""
    values: list[bytes] = []
    pairs: Counter[tuple[str, str]] = Counter()
    for i in range(bot_posts):
        values.append(post(T0 + 1 + 55 * i / bot_posts, "bot", "x", event_id=f"b{i}"))
        pairs["bot", "x"] += 1
    for account in range(1_500):
        user = f"u{account}"
        for j in range(rng.randint(1, cap)):
            tags = ["x", *(f"t{rng.randrange(5_000)}" for _ in range(rng.randint(1, 2)))]
            values.append(post(T0 + rng.uniform(0, 59), user, *tags, event_id=f"{user}-{j}"))
            for tag in set(tags):
                pairs[user, tag] += 1
    rng.shuffle(values)
    return values, pairs


def true_excess(pairs: Counter[tuple[str, str]], tag: str, cap: int) -> int:
    return sum(max(0, count - cap) for (_, t), count in pairs.items() if t == tag)


def test_heavy_account_is_discounted_once_in_the_partial_that_closes_its_window() -> None:
    cap = DEFAULT_TREND_USER_CAP
    values, pairs = heavy_window(random.Random(7), 500, cap)
    # The sketch must have had to forget: more distinct pairs than it can hold.
    assert len(pairs) > 2 * PAIRS_CAPACITY
    excess = true_excess(pairs, "x", cap)
    assert excess == 500 - cap  # normal accounts stay at or under the cap
    mentions = sum(pairs.values())
    error = math.floor(
        frequent_strings_sketch.get_epsilon_for_lg_size(HEAVY_PAIRS_LG_MAP_SIZE) * mentions
    )
    assert 0 < error < excess

    downstream = 4
    owner = owner_partition(HASHTAGS, "x", downstream)
    feed = Feed(StreamIngest("posts", WINDOW, GRACE, downstream, 1))
    emitted: list[tuple[int, str, int, int]] = []
    for begin in range(0, len(values), 700):
        emitted += discounts_of(feed(values[begin : begin + 700]))
    # The next window's posts, up to (not at) end + grace of the first: nothing yet.
    emitted += discounts_of(feed([post(T0 + 60, "v", "y", event_id="n1")]))
    emitted += discounts_of(feed([post(T0 + 89.999, "v", "y", event_id="n2")]))
    assert emitted == []

    partials = feed([post(T0 + 90, "v", "y", event_id="n3")])
    found = discounts_of(partials)
    assert len(found) == 1
    dest, tag, start, posts = found[0]
    assert (dest, tag, start) == (owner, "x", T0)
    assert excess - error <= posts <= excess
    # It rides on the owner's last partial, the one that carries the watermark past end + grace.
    carrier = next(p for d, p in reversed(partials) if d == owner)
    assert carrier.discounts == [("x", T0, posts)]
    assert carrier.watermark_seconds == T0 + WINDOW + GRACE
    assert all(p.discounts == [] for d, p in partials if p is not carrier)

    # Never again: later batches and the end of the input add nothing for that window.
    later = feed([post(T0 + 400, "v", "y", event_id="n4")])
    later += feed([post(T0 + 1_000, "v", "y", event_id="n5")])
    later += feed.ingest.close_all(NOW)
    assert [d for d in discounts_of(later) if d[2] == T0] == []


def test_close_all_emits_the_discounts_of_windows_still_open() -> None:
    downstream = 3
    ingest = StreamIngest("posts", WINDOW, GRACE, downstream, 2, user_cap=3)
    feed = Feed(ingest, partition=1)
    values = [post(T0 + i, "bot", "y", "z", event_id=f"b{i}") for i in range(10)]
    values += [post(T0 + 60 + i, "bot", "y", event_id=f"c{i}") for i in range(5)]
    values += [post(T0 + 61, f"u{i}", "y", event_id=f"u{i}") for i in range(20)]
    assert discounts_of(feed(values)) == []
    partials = ingest.close_all(NOW)
    assert sorted(discounts_of(partials)) == sorted(
        [
            (owner_partition(HASHTAGS, "y", downstream), "y", T0, 7),
            (owner_partition(HASHTAGS, "z", downstream), "z", T0, 7),
            (owner_partition(HASHTAGS, "y", downstream), "y", T0 + 60, 2),
        ]
    )
    # One partial per (input partition, destination), each with the watermark run out.
    assert len(partials) == 2 * downstream
    assert {p.watermark_seconds for _, p in partials} == {END_OF_TIME}
    assert {(p.source_partition, p.origin) for _, p in partials} == {(0, None), (1, T0)}
    assert discounts_of(ingest.close_all(NOW)) == []


def test_accounts_at_or_under_the_cap_are_never_discounted() -> None:
    rng = random.Random(3)
    cap = 3
    values: list[bytes] = []
    # 1,200 accounts posting "x" exactly cap times, amid enough other pairs to make the sketch forget.
    for account in range(1_200):
        for j in range(cap):
            tags = ["x", f"t{rng.randrange(4_000)}"]
            values.append(post(T0 + rng.uniform(0, 59), f"u{account}", *tags, event_id=f"{j}"))
    rng.shuffle(values)
    ingest = StreamIngest("posts", WINDOW, GRACE, 4, 1, user_cap=cap)
    feed = Feed(ingest)
    emitted = discounts_of(feed(values[:1_800])) + discounts_of(feed(values[1_800:]))
    emitted += discounts_of(feed([post(T0 + 200, "v", "y", event_id="late-window")]))
    emitted += discounts_of(ingest.close_all(NOW))
    assert emitted == []


@given(
    per_account=st.lists(
        st.lists(st.sampled_from(["a", "b", "c", "话题", "1:x"]), min_size=1, max_size=4),
        min_size=1,
        max_size=30,
    ),
    cap=st.integers(1, 4),
)
@settings(max_examples=60, deadline=None)
def test_discounts_are_exact_while_the_sketch_forgets_nothing(
    per_account: list[list[str]], cap: int
) -> None:
    """Few pairs: the sketch is exact, so the discount is each tag's excess over the cap."""
    values: list[bytes] = []
    pairs: Counter[tuple[str, str]] = Counter()
    for account, tags in enumerate(per_account):
        for i, tag in enumerate(tags):
            values.append(post(T0 + i, f"{account}:", tag, event_id=f"{account}-{i}"))
            pairs[f"{account}:", tag] += 1
    ingest = StreamIngest("posts", WINDOW, GRACE, 2, 1, user_cap=cap)
    Feed(ingest)(values)
    got = {(tag, start): posts for _, tag, start, posts in discounts_of(ingest.close_all(NOW))}
    expected = {(tag, T0): true_excess(pairs, tag, cap) for _, tag in pairs}
    assert got == {key: posts for key, posts in expected.items() if posts}


def test_signups_are_never_discounted() -> None:
    ingest = StreamIngest("signups", WINDOW, GRACE, 2, 1)
    values = [signup(T0 + i * 0.1, "same-user", "US", event_id=str(i)) for i in range(50)]
    _, partials = ingest.process(0, values, 0, 49, None, NOW)
    partials += ingest.close_all(NOW)
    assert discounts_of(partials) == []
    assert {p.origin for _, p in partials} == {T0}


def test_origin_is_the_first_window_the_input_partition_counted() -> None:
    ingest = StreamIngest("posts", WINDOW, GRACE, 2, 2)
    feed = Feed(ingest, partition=0)
    assert {p.origin for _, p in feed([b"not json"])} == {None}
    assert {p.origin for _, p in feed([post(T0 + 125, "u", "a")])} == {T0 + 120}
    # An earlier window, still within grace, moves the origin back.
    assert {p.origin for _, p in feed([post(T0 + 100, "u", "a")])} == {T0 + 60}
    assert {p.origin for _, p in feed([post(T0 + 300, "u", "a")])} == {T0 + 60}
    # The other input partition has its own.
    _, other = ingest.process(1, [post(T0 + 600, "w", "a")], 0, 0, None, NOW)
    assert {p.origin for _, p in other} == {T0 + 600}


def test_revoke_forgets_the_partitions_sketches_and_origin() -> None:
    ingest = StreamIngest("posts", WINDOW, GRACE, 2, 1)
    Feed(ingest)([post(T0 + i, "bot", "x", event_id=str(i)) for i in range(20)])
    ingest.revoke(0)
    partials = ingest.close_all(NOW)
    assert discounts_of(partials) == []
    assert {p.origin for _, p in partials} == {None}


def test_partial_round_trips_discounts_and_origin() -> None:
    partial = Partial(
        HASHTAGS,
        2,
        4,
        T0 + 95.5,
        [("话题", T0, 3), ('"q"', T0 + 60, 1)],
        10,
        20,
        discounts=[("话题", T0, 2), ("🚀", T0 - 60, 497)],
        origin=T0 - 600,
    )
    raw = partial.encode()
    assert orjson.loads(raw)["x"] == [["话题", T0, 2], ["🚀", T0 - 60, 497]]
    assert orjson.loads(raw)["f"] == T0 - 600
    assert Partial.decode(raw) == partial
    # Without discounts or origin, neither field is written, and both come back empty.
    bare = Partial(SIGNUPS, 0, 1, -math.inf, [("US", T0, 1)])
    data = orjson.loads(bare.encode())
    assert "x" not in data
    assert "f" not in data
    assert Partial.decode(bare.encode()) == bare


def test_old_format_partial_decodes_without_discounts_or_origin() -> None:
    old = orjson.dumps(
        {"m": HASHTAGS, "p": 1, "n": 2, "wm": T0 + 5, "o": [0, 3], "k": ["a"], "w": [T0], "c": [4]}
    )
    partial = Partial.decode(old)
    assert partial.discounts == []
    assert partial.origin is None
    assert partial.counts == [("a", T0, 4)]
    assert partial.watermark_seconds == T0 + 5


# --- store: discounts and origins --------------------------------------------------------------


def close_of(start: int) -> int:
    return start + WINDOW + GRACE


def test_store_carries_discounts_into_the_closed_window() -> None:
    store = WindowStore(WINDOW, GRACE)
    assert store.apply(HASHTAGS, 0, 2, T0 + 10, [("x", T0, 300), ("y", T0, 4)]) == []
    assert store.apply(HASHTAGS, 1, 2, T0 + 20, [("x", T0, 200), ("z", T0, 1)]) == []
    # Each input partition sends its discount when its own watermark passes end + grace.
    assert store.apply(HASHTAGS, 0, 2, close_of(T0), [], [("x", T0, 290), ("y", T0, 9)]) == []
    closed = store.apply(HASHTAGS, 1, 2, close_of(T0), [], [("x", T0, 150), ("q", T0, 5)])
    assert closed == [
        WindowCount(HASHTAGS, "x", T0, T0 + 60, 500, 440),
        WindowCount(HASHTAGS, "y", T0, T0 + 60, 4, 4),  # never more than the count
        WindowCount(HASHTAGS, "z", T0, T0 + 60, 1, 0),
    ]  # "q" had no posts here: a discount alone makes no record
    assert [w.trend_count for w in closed] == [60, 0, 1]
    # The published record is the contract's, without the discount.
    assert closed[0].as_dict() == {
        "metric": HASHTAGS,
        "key": "x",
        "window_start": T0,
        "window_end": T0 + 60,
        "count": 500,
    }
    assert store.closed_before_seconds(HASHTAGS) == T0 + 60


def test_store_ignores_discounts_of_closed_windows() -> None:
    store = WindowStore(WINDOW, GRACE)
    store.apply(HASHTAGS, 0, 1, T0, [("x", T0, 5)])
    assert store.apply(HASHTAGS, 0, 1, close_of(T0), []) == [
        WindowCount(HASHTAGS, "x", T0, T0 + 60, 5)
    ]
    # Too late for T0; and it must not leak into any other window.
    store.apply(HASHTAGS, 0, 1, close_of(T0), [("x", T0 + 60, 5)], [("x", T0, 3)])
    closed = store.apply(HASHTAGS, 0, 1, close_of(T0 + 60), [])
    assert closed == [WindowCount(HASHTAGS, "x", T0 + 60, T0 + 120, 5, 0)]
    assert store.dropped_updates(HASHTAGS) == 0


def test_store_closed_before_and_origin() -> None:
    store = WindowStore(WINDOW, GRACE)
    assert store.closed_before_seconds(HASHTAGS) == -math.inf
    assert store.origin(HASHTAGS) is None
    store.apply(HASHTAGS, 0, 2, T0 + 500, [], origin=T0 + 120)
    assert store.origin(HASHTAGS) == T0 + 120
    # Not every input partition heard from: nothing is closed yet.
    assert store.closed_before_seconds(HASHTAGS) == -math.inf
    store.apply(HASHTAGS, 1, 2, T0 + 200, [], origin=T0 + 60)
    store.apply(HASHTAGS, 0, 2, T0 + 600, [], origin=T0 + 180)  # a later origin changes nothing
    assert store.origin(HASHTAGS) == T0 + 60
    # Even with no window open, the closed boundary follows the slowest watermark.
    assert store.closed_before_seconds(HASHTAGS) == T0 + 200 - GRACE
    # Metrics are separate.
    assert store.origin(SIGNUPS) is None
    assert store.closed_before_seconds(SIGNUPS) == -math.inf


@given(
    entries=st.lists(
        st.tuples(
            st.integers(0, 2),  # source
            st.sampled_from(["a", "b", "话"]),
            st.integers(0, 3),  # window index
            st.integers(0, 50),  # count
            st.integers(0, 60),  # discount
            st.none() | st.integers(0, 3),  # origin window index
        ),
        max_size=40,
    )
)
@settings(max_examples=100, deadline=None)
def test_store_discounts_and_origins_for_any_arrival_order(
    entries: list[tuple[int, str, int, int, int, int | None]],
) -> None:
    store = WindowStore(WINDOW, GRACE)
    counts: Counter[tuple[str, int]] = Counter()
    discounts: Counter[tuple[str, int]] = Counter()
    origins: list[int] = []
    for source, key, index, count, discount, origin in entries:
        start = T0 + 60 * index
        at = None if origin is None else T0 + 60 * origin
        assert (
            store.apply(
                HASHTAGS, source, 3, T0, [(key, start, count)], [(key, start, discount)], at
            )
            == []
        )
        counts[key, start] += count
        discounts[key, start] += discount
        if at is not None:
            origins.append(at)
    assert store.origin(HASHTAGS) == (min(origins) if origins else None)
    closed: list[WindowCount] = []
    for source in range(3):
        closed += store.apply(HASHTAGS, source, 3, close_of(T0 + 180), [])
    expected = {
        (key, start): (count, min(count, discounts[key, start]))
        for (key, start), count in counts.items()
        if count
    }
    assert {(w.key, w.window_start): (w.count, w.discount) for w in closed} == expected
    for window in closed:
        assert 0 <= window.trend_count == window.count - window.discount <= window.count
        assert set(window.as_dict()) == {"metric", "key", "window_start", "window_end", "count"}


# --- partition trends --------------------------------------------------------------------------


def windows_of(metric: str, start: int, counts: dict[str, int]) -> list[WindowCount]:
    return [WindowCount(metric, k, start, start + WINDOW, c) for k, c in sorted(counts.items())]


def ramp_counts() -> list[int]:
    """Warm-up at 2 a window, a ramp to 200, a plateau, then back to 2."""
    return [2] * 15 + [5, 10, 20, 50, 100, 200, 200, 200, 200] + [2] * 15


def test_a_ramping_key_starts_once_then_ends_once() -> None:
    trends = PartitionTrends(SurgeParams(), top_k=5)
    surges: list[Surge] = []
    summaries: list[WindowSummary] = []
    for index, count in enumerate(ramp_counts()):
        start = T0 + WINDOW * index
        background = {f"bg{j}": 3 + j for j in range(8)}
        found, condensed = trends.close(
            HASHTAGS, windows_of(HASHTAGS, start, {"ramp": count, **background}), origin=T0
        )
        surges += found
        summaries += condensed
    assert [(s.metric, s.event.key, s.event.state) for s in surges] == [
        (HASHTAGS, "ramp", "start"),
        (HASHTAGS, "ramp", "end"),
    ]
    started, ended = (s.event for s in surges)
    assert started.count >= SurgeParams().min_count
    assert started.score >= SurgeParams().z_start
    assert T0 + 15 * WINDOW <= started.window_start <= T0 + 20 * WINDOW
    # It ends once the count is back to 2, after end_windows calm windows.
    assert ended.count == 2
    assert ended.window_start == T0 + (24 + SurgeParams().end_windows - 1) * WINDOW
    assert ended.score < SurgeParams().z_end
    assert surges[0].kafka_key == f"{HASHTAGS}|ramp"
    assert surges[0].as_dict() == started.as_dict(HASHTAGS)
    # One summary per window; the surging key is listed while it surges.
    assert [s.window_start for s in summaries] == [T0 + WINDOW * i for i in range(39)]
    plateau = summaries[21]
    assert plateau.top[0] == ("ramp", 200)
    assert [(t.key, t.count, t.surging) for t in plateau.keys] == [("ramp", 200, True)]
    assert summaries[-1].keys == ()


def test_trend_count_not_count_is_scored() -> None:
    """A bot's posts over the cap are discounted: 2 -> 500 posts, 497 of them one account's."""

    def run(discount: int) -> list[SurgeEvent]:
        trends = PartitionTrends(SurgeParams(), top_k=5)
        events: list[SurgeEvent] = []
        for index in range(20):
            start = T0 + WINDOW * index
            count = 500 if index == 15 else 2
            window = WindowCount(
                HASHTAGS,
                "freecrypto",
                start,
                start + WINDOW,
                count,
                discount if count == 500 else 0,
            )
            found, summaries = trends.close(HASHTAGS, [window], origin=T0)
            events += [s.event for s in found]
            if index == 15:
                # The summary shows what was published, the count.
                assert summaries[0].top == (("freecrypto", 500),)
        return events

    assert run(discount=497) == []
    assert [e.state for e in run(discount=0)] == ["start", "end"]


def test_warm_up_is_dated_from_the_streams_origin_only_when_starting_with_the_stream() -> None:
    burst = {"new": 200, "old": 2}
    # Seen from its first window, the detector warms up: no start.
    trends = PartitionTrends(SurgeParams(), top_k=3)
    assert trends.close(HASHTAGS, windows_of(HASHTAGS, T0 + 600, burst))[0] == []
    # It began with the stream (first window five windows after the origin, within the warm-up):
    # the warm-up is dated from the origin and is over ten windows after it.
    trends = PartitionTrends(SurgeParams(), top_k=3)
    assert trends.close(HASHTAGS, windows_of(HASHTAGS, T0 + 300, {"old": 2}), origin=T0)[0] == []
    found, _ = trends.close(HASHTAGS, windows_of(HASHTAGS, T0 + 600, burst), origin=T0)
    assert [(s.event.key, s.event.state) for s in found] == [("new", "start")]
    # Made mid-stream (a partition that changed owner): it saw no history, so it warms up on its
    # own windows instead of judging every key new.
    trends = PartitionTrends(SurgeParams(), top_k=3)
    assert trends.close(HASHTAGS, windows_of(HASHTAGS, T0 + 3600, burst), origin=T0)[0] == []


@given(
    counts=st.dictionaries(
        st.text(min_size=1, max_size=4), st.integers(1, 30), min_size=1, max_size=60
    ),
    k=st.integers(1, 12),
)
@settings(max_examples=100, deadline=None)
def test_summary_top_is_the_exact_local_top_k(counts: dict[str, int], k: int) -> None:
    trends = PartitionTrends(SurgeParams(), top_k=k)
    _, summaries = trends.close(HASHTAGS, windows_of(HASHTAGS, T0, counts))
    brute = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]
    assert len(summaries) == 1
    assert list(summaries[0].top) == brute


def test_signup_summary_lists_every_country() -> None:
    trends = PartitionTrends(SurgeParams(), top_k=2)
    _, summaries = trends.close(SIGNUPS, windows_of(SIGNUPS, T0, {"US": 5, "CN": 9, "unknown": 1}))
    (summary,) = summaries
    assert summary.top == ()
    assert [(t.key, t.count) for t in summary.keys] == [("CN", 9), ("US", 5), ("unknown", 1)]


def test_windows_already_scored_are_skipped() -> None:
    trends = PartitionTrends(SurgeParams(), top_k=2)
    trends.close(HASHTAGS, windows_of(HASHTAGS, T0 + 60, {"a": 1}))
    _, summaries = trends.close(
        HASHTAGS, windows_of(HASHTAGS, T0, {"a": 1}) + windows_of(HASHTAGS, T0 + 120, {"a": 2})
    )
    assert [s.window_start for s in summaries] == [T0 + 120]


# --- aggregator --------------------------------------------------------------------------------


PARTITIONS = 3


def random_windows(
    rng: random.Random, windows: int, keys: int
) -> dict[int, dict[int, dict[str, int]]]:
    """Per window, per downstream partition, the counts of the keys it owns (disjoint)."""
    out: dict[int, dict[int, dict[str, int]]] = {}
    for index in range(windows):
        start = T0 + WINDOW * index
        per_partition: dict[int, dict[str, int]] = {p: {} for p in range(PARTITIONS)}
        for number in range(keys):
            if rng.random() < 0.7:
                key = rng.choice(["话题", "🚀", 'q"uote', "tag"]) + str(number)
                owner = owner_partition(HASHTAGS, key, PARTITIONS)
                per_partition[owner][key] = rng.choice([1, 1, 2, 3, 5, 8, 13, 40])
        out[start] = per_partition
    return out


def brute_top(counts: Iterable[dict[str, int]], k: int) -> tuple[tuple[str, int], ...]:
    merged: dict[str, int] = {}
    for part in counts:
        merged.update(part)  # keys are disjoint
    return tuple(sorted(merged.items(), key=lambda item: (-item[1], item[0]))[:k])


def test_aggregator_completes_a_window_only_when_every_partition_has_passed_it() -> None:
    k = 7
    data = random_windows(random.Random(11), windows=6, keys=200)
    starts = sorted(data)
    trends = [PartitionTrends(SurgeParams(), k) for _ in range(PARTITIONS)]

    def message(partition: int, upto: int) -> SummaryMessage:
        """Partition ``partition`` closing windows ``starts[:upto]`` it has not closed yet."""
        closed = [
            w
            for start in starts[:upto]
            for w in windows_of(HASHTAGS, start, data[start][partition])
        ]
        _, summaries = trends[partition].close(HASHTAGS, closed)
        boundary = starts[upto - 1] + WINDOW if upto else -math.inf
        return SummaryMessage(partition, PARTITIONS, {HASHTAGS: boundary}, tuple(summaries))

    aggregator = TrendAggregator(SurgeParams(), k)
    # Partitions 0 and 1 run ahead; 2 lags: nothing is complete.
    assert aggregator.add(message(0, 6)) == []
    assert aggregator.add(message(1, 6)) == []
    assert aggregator.view == TrendView()
    assert aggregator.complete_before(HASHTAGS) == -math.inf
    aggregator.add(message(2, 0))
    assert aggregator.view == TrendView()
    # Partition 2 catches up one window at a time; each completes exactly that window.
    for upto in range(1, 7):
        aggregator.add(message(2, upto))
        start = starts[upto - 1]
        assert aggregator.complete_before(HASHTAGS) == start + WINDOW
        assert aggregator.view.hashtag_window == start
        assert aggregator.view.window_start == start
        assert aggregator.view.top_hashtags == brute_top(data[start].values(), k)


@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 25),
    keys=st.integers(0, 120),
)
@settings(max_examples=40, deadline=None)
def test_global_top_k_is_exact_from_disjoint_partitions(seed: int, k: int, keys: int) -> None:
    data = random_windows(random.Random(seed), windows=1, keys=keys)
    ((start, per_partition),) = data.items()
    aggregator = TrendAggregator(SurgeParams(), k)
    for partition in range(PARTITIONS):
        _, summaries = PartitionTrends(SurgeParams(), k).close(
            HASHTAGS, windows_of(HASHTAGS, start, per_partition[partition])
        )
        aggregator.add(
            SummaryMessage(partition, PARTITIONS, {HASHTAGS: start + WINDOW}, tuple(summaries))
        )
    if any(per_partition.values()):
        assert aggregator.view.hashtag_window == start
    assert aggregator.view.top_hashtags == brute_top(per_partition.values(), k)
    assert aggregator.view.top_hashtags == tuple(
        top_of_window({k_: c for part in per_partition.values() for k_, c in part.items()}, k)
    )


def test_aggregator_merges_surging_hashtags_by_score() -> None:
    def trend(key: str, score: float, surging: bool = True) -> KeyTrend:
        return KeyTrend(key, 50, 2.0, score, surging)

    parts = [
        (trend("a", 9.0), trend("b", 7.0)),
        (trend("c", 12.0), trend("d", 7.0)),
        (trend("e", 8.0),),
    ]
    aggregator = TrendAggregator(SurgeParams(), top_k=3)
    for partition, keys in enumerate(parts):
        summary = WindowSummary(HASHTAGS, T0, (), keys)
        aggregator.add(SummaryMessage(partition, 3, {HASHTAGS: T0 + 60}, (summary,)))
    assert [t.key for t in aggregator.view.surging_hashtags] == ["c", "a", "e"]
    assert [t.key for t in top_surging([*parts[0], trend("z", 99.0, False)], 5)] == ["a", "b"]


def test_all_signups_are_summed_and_surge_as_star() -> None:
    countries = ["US", "CN", "TW", "DE", "GB", "unknown"]
    owner = {c: owner_partition(SIGNUPS, c, PARTITIONS) for c in countries}
    trends = [PartitionTrends(SurgeParams(), 5) for _ in range(PARTITIONS)]
    aggregator = TrendAggregator(SurgeParams(), 5)
    surges: list[Surge] = []
    totals = []
    for index in range(40):
        start = T0 + WINDOW * index
        # 3 a country a window, then 100 a window from the US for five windows.
        counts = {c: 3 for c in countries}
        if 20 <= index < 25:
            counts["US"] = 100
        totals.append(sum(counts.values()))
        for partition in range(PARTITIONS):
            mine = {c: n for c, n in counts.items() if owner[c] == partition}
            found, summaries = trends[partition].close(
                SIGNUPS, windows_of(SIGNUPS, start, mine), origin=T0
            )
            surges += found  # per-country surges
            message = SummaryMessage(
                partition, PARTITIONS, {SIGNUPS: start + WINDOW}, tuple(summaries)
            )
            surges += aggregator.add(message)
        view = aggregator.view
        assert view.signup_window == start
        assert view.all_signups is not None
        assert view.all_signups.key == ALL_KEY
        assert view.all_signups.count == totals[-1]
        assert [(t.key, t.count) for t in view.signups] == sorted(counts.items())
    everyone = [s for s in surges if s.event.key == ALL_KEY]
    assert [(s.metric, s.event.state) for s in everyone] == [(SIGNUPS, "start"), (SIGNUPS, "end")]
    start_event, end_event = (s.event for s in everyone)
    assert start_event.window_start == T0 + 20 * WINDOW
    assert start_event.count == 100 + 3 * 5
    assert end_event.window_start > T0 + 24 * WINDOW
    assert everyone[0].as_dict()["metric"] == SIGNUPS
    assert everyone[0].kafka_key == f"{SIGNUPS}|{ALL_KEY}"
    # The US surged on its own too, from its owner partition.
    assert [(s.event.key, s.event.state) for s in surges if s.event.key != ALL_KEY] == [
        ("US", "start"),
        ("US", "end"),
    ]


def test_summary_message_round_trips() -> None:
    message = SummaryMessage(
        partition=2,
        partitions=3,
        closed_before={HASHTAGS: -math.inf, SIGNUPS: T0 + 60.5},
        summaries=(
            WindowSummary(
                HASHTAGS,
                T0,
                (("话题", 40), ("🚀🚀", 7), ('a"b\\c', 3), ("new\nline", 1)),
                (KeyTrend("话题", 40, 2.25, 11.5, True), KeyTrend('"', 3, 0.0, -0.1, False)),
            ),
            WindowSummary(SIGNUPS, T0, (), (KeyTrend("US", 5, 1.0, 0.5, False),)),
            WindowSummary(HASHTAGS, T0 + 60, (), ()),
        ),
    )
    raw = message.encode()
    assert orjson.loads(raw)["c"][HASHTAGS] is None
    decoded = SummaryMessage.decode(raw)
    assert decoded == message
    assert decoded.closed_before[HASHTAGS] == -math.inf
    assert SummaryMessage.decode(SummaryMessage(0, 1, {}, ()).encode()) == SummaryMessage(
        0, 1, {}, ()
    )


@pytest.mark.parametrize(
    "junk",
    [b"{", b"[]", b"{}", b'{"p": 0, "n": 1, "c": {}, "s": [["hashtag_posts", 0]]}'],
)
def test_summary_message_decode_refuses_junk(junk: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        SummaryMessage.decode(junk)


# --- downstream --------------------------------------------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``SURGEWATCH_*`` variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    yield


def test_surge_params_come_from_the_settings(clean_environment: None) -> None:
    settings_ = load_settings(
        window_seconds=30,
        surge_z_start=5.0,
        surge_z_end=1.5,
        surge_min_count=4,
        surge_half_life_windows=12.0,
    )
    params = surge_params(settings_)
    assert (params.window_seconds, params.z_start, params.z_end) == (30, 5.0, 1.5)
    assert (params.min_count, params.half_life_windows) == (4, 12.0)
    defaults = surge_params(load_settings())
    assert (defaults.z_start, defaults.z_end, defaults.min_count) == (6.0, 2.0, 10)
    assert defaults.half_life_windows == 30.0
    assert load_settings().trend_user_cap == DEFAULT_TREND_USER_CAP


def test_downstream_applies_partials_and_reports_progress_once_per_window() -> None:
    downstream = Downstream(1, 2, WINDOW, GRACE, SurgeParams(), top_k=3)
    routed = Partial(HASHTAGS, 0, 1, T0 + 10, [("a", T0, 5), ("b", T0, 2)], origin=T0)
    assert downstream.apply(routed) == []
    # Nothing closed, but a first boundary (watermark less grace) is news.
    _, message = downstream.conclude([])
    assert message == SummaryMessage(1, 2, {HASHTAGS: T0 + 10 - GRACE}, ())
    assert downstream.conclude([]) == ([], None)
    closing = Partial(HASHTAGS, 0, 1, close_of(T0), [], discounts=[("a", T0, 3)], origin=T0)
    closed = downstream.apply(closing)
    assert closed == [
        WindowCount(HASHTAGS, "a", T0, T0 + 60, 5, 3),
        WindowCount(HASHTAGS, "b", T0, T0 + 60, 2, 0),
    ]
    surges, message = downstream.conclude(closed)
    assert surges == []
    assert message is not None
    assert (message.partition, message.partitions) == (1, 2)
    assert message.closed_before == {HASHTAGS: T0 + 60}
    (summary,) = message.summaries
    assert summary.top == (("a", 5), ("b", 2))
    # Within the same window, the boundary moving is no news; crossing into the next one is.
    downstream.apply(Partial(HASHTAGS, 0, 1, close_of(T0) + 30, []))
    assert downstream.conclude([]) == ([], None)
    downstream.apply(Partial(HASHTAGS, 0, 1, close_of(T0) + 60, []))
    _, message = downstream.conclude([])
    assert message is not None
    assert message.summaries == ()
    assert message.closed_before == {HASHTAGS: T0 + 120}


def test_ingest_to_aggregator_gives_the_exact_global_top() -> None:
    """Posts through ingest, routing, three downstream partitions and the aggregator."""
    rng = random.Random(5)
    k = 10
    ingest = StreamIngest("posts", WINDOW, GRACE, PARTITIONS, 2)
    downstreams = [
        Downstream(p, PARTITIONS, WINDOW, GRACE, SurgeParams(), k) for p in range(PARTITIONS)
    ]
    aggregator = TrendAggregator(SurgeParams(), k)
    truth: dict[int, Counter[str]] = {}
    views: list[TrendView] = []

    def route(partials: list[tuple[int, Partial]]) -> None:
        for dest, partial in partials:
            closed = downstreams[dest].apply(partial)
            _, message = downstreams[dest].conclude(closed)
            if message is not None:
                aggregator.add(message)
                if aggregator.view != (views[-1] if views else TrendView()):
                    views.append(aggregator.view)

    for index in range(5):
        start = T0 + WINDOW * index
        for source in range(2):
            values = []
            for i in range(300):
                tags = {f"t{min(rng.randrange(60), rng.randrange(60))}" for _ in range(2)}
                values.append(post(start + rng.uniform(0, 59), f"u{i}", *tags, event_id=str(i)))
                truth.setdefault(start, Counter()).update(tags)
            _, partials = ingest.process(source, values, index * 300, index * 300 + 299, None, NOW)
            route(partials)
    route(ingest.close_all(NOW))
    # Every window completed on its own, in order, and was shown with its exact top-K.
    assert [v.hashtag_window for v in views] == [T0 + WINDOW * i for i in range(5)]
    for view in views:
        assert view.hashtag_window is not None
        assert len(view.top_hashtags) == k
        assert view.top_hashtags == tuple(top_of_window(truth[view.hashtag_window], k))


def trend_views(
    resend: bool, drop: Callable[[int, int], bool], sent: Counter[int] | None = None
) -> list[tuple[str, TrendView]]:
    """The aggregator's window views of ten windows of posts from two input partitions through
    three downstream partitions, whose ``n``-th summary message from partition ``p`` is lost on
    the way when ``drop(p, n)``; ``sent`` counts the messages of each partition."""
    rng = random.Random(7)
    ingest = StreamIngest("posts", WINDOW, GRACE, PARTITIONS, 2)
    downstreams = [
        Downstream(p, PARTITIONS, WINDOW, GRACE, SurgeParams(), 5, resend_summaries=resend)
        for p in range(PARTITIONS)
    ]
    aggregator = TrendAggregator(SurgeParams(), 5)
    views: list[tuple[str, TrendView]] = []
    aggregator.on_window = lambda metric, view: views.append((metric, view))
    numbers: Counter[int] = Counter() if sent is None else sent

    def route(partials: list[tuple[int, Partial]]) -> None:
        for dest, partial in partials:
            closed = downstreams[dest].apply(partial)
            _, message = downstreams[dest].conclude(closed)
            if message is None:
                continue
            numbers[dest] += 1
            if not drop(dest, numbers[dest]):
                aggregator.add(SummaryMessage.decode(message.encode()))

    for index in range(10):
        start = T0 + WINDOW * index
        for source in range(2):
            values = [
                post(start + rng.uniform(0, 59), f"u{i}", f"t{rng.randrange(40)}", event_id=str(i))
                for i in range(100)
            ]
            _, partials = ingest.process(source, values, index * 100, index * 100 + 99, None, NOW)
            route(partials)
    route(ingest.close_all(NOW))
    return views


def test_a_lost_summary_message_arrives_again_with_the_next_one() -> None:
    """The embedded broker can lose one of two writes to the summaries partition: with
    ``resend_summaries`` the aggregator still sees every window whole."""
    sent: Counter[int] = Counter()
    whole = trend_views(resend=True, drop=lambda p, n: False, sent=sent)
    assert [view.hashtag_window for _, view in whole] == [T0 + WINDOW * i for i in range(10)]

    def every_third_but_the_last(partition: int, number: int) -> bool:
        return number % 3 == 2 and number < sent[partition]

    assert trend_views(resend=True, drop=every_third_but_the_last) == whole
    # Without the resend the same losses change what the aggregator shows.
    assert trend_views(resend=False, drop=lambda p, n: False) == whole
    assert trend_views(resend=False, drop=every_third_but_the_last) != whole


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [("6", "6"), ("3", "7.5")])
def test_surge_z_end_at_or_above_z_start_is_refused_in_one_line(
    clean_environment: None, monkeypatch: pytest.MonkeyPatch, start: str, end: str
) -> None:
    monkeypatch.setenv("SURGEWATCH_SURGE_Z_START", start)
    monkeypatch.setenv("SURGEWATCH_SURGE_Z_END", end)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    assert "SURGE_Z_END" in text
    assert "SURGE_Z_START" in text
    assert f"SURGE_Z_END={float(end)}" in text


def test_surge_settings_from_the_environment(
    clean_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURGEWATCH_SURGE_Z_START", "8")
    monkeypatch.setenv("SURGEWATCH_SURGE_Z_END", "3")
    monkeypatch.setenv("SURGEWATCH_SURGE_MIN_COUNT", "25")
    monkeypatch.setenv("SURGEWATCH_SURGE_HALF_LIFE_WINDOWS", "10")
    monkeypatch.setenv("SURGEWATCH_TREND_USER_CAP", "5")
    loaded = load_settings()
    assert (loaded.surge_z_start, loaded.surge_z_end, loaded.surge_min_count) == (8.0, 3.0, 25)
    assert (loaded.surge_half_life_windows, loaded.trend_user_cap) == (10.0, 5)
    with pytest.raises(SettingsError, match="SURGEWATCH_TREND_USER_CAP"):
        load_settings(trend_user_cap=0)
