"""Hostile input to the ingest: one verdict per event, exact counts, bounded memory under a flood.

The verdict of a value of ``tests/hostile.py`` is known in advance; that of a random or mutated
value is the parser's (tested on its own). Lateness is recomputed here from the contract's rule.
"""

from __future__ import annotations

import gc
import math
import os
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surgewatch.config import ENV_PREFIX, load_settings
from surgewatch.eventfile import EventRecord
from surgewatch.events.model import Post, Rejected
from surgewatch.events.parse import parse_post, parse_signup
from surgewatch.ingest import (
    HEAVY_PAIRS_LG_MAP_SIZE,
    OWNER_CACHE_KEYS,
    Partial,
    StreamIngest,
)
from surgewatch.offline import OfflinePipeline
from tests.hostile import LABEL_BREAKING_TAGS, OK, REASONS, corpus

WINDOW = 60
GRACE = 30
#: Event time of the tests, a multiple of 60: 2025-01-16T04:00:00Z.
T0 = 1_737_000_000.0
#: The processing clock: an hour after T0.
NOW = T0 + 3_600
CAP = 3
#: Most (account, hashtag) pairs one window's sketch tracks: 0.75 * 2**11.
SKETCH_PAIRS = 3 * 2**HEAVY_PAIRS_LG_MAP_SIZE // 4
BATCH = 4096


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``SURGEWATCH_*`` variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    yield


def post(ts: float, *tags: str, user: str = "bot", event_id: str = "e") -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": user, "ts": ts, "hashtags": list(tags)})


def window_of(ts: float) -> int:
    return int(ts // WINDOW) * WINDOW


def routed(partials: list[tuple[int, Partial]]) -> tuple[Counter[tuple[str, int]], Counter[Any]]:
    """Counts and discounts of a batch's partials, by (key, window start)."""
    counts: Counter[tuple[str, int]] = Counter()
    discounts: Counter[tuple[str, int]] = Counter()
    for _, partial in partials:
        for key, start, count in partial.counts:
            counts[key, start] += count
        for key, start, excess in partial.discounts:
            discounts[key, start] += excess
    return counts, discounts


# --- one verdict per event -----------------------------------------------------------------

STREAMS = ("posts", "signups")
HOSTILE = {stream: corpus(T0 + 10, prefix=stream) for stream in STREAMS}


@st.composite
def batch_items(draw: st.DrawFn, stream: str) -> list[tuple[bytes | None, str | None, Any]]:
    """``(value, expected verdict or None when the parser decides, ts of a valid post)``."""
    items: list[tuple[bytes | None, str | None, Any]] = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["corpus", "corpus", "valid", "valid", "bytes", "cut", "none"]))
        if kind == "corpus":
            hostile = draw(st.sampled_from(HOSTILE[stream]))
            expected = hostile.post if stream == "posts" else hostile.signup
            items.append((hostile.value, expected, None))
        elif kind == "valid":
            # Mostly in order, sometimes far behind: late once the watermark has moved on.
            ts = T0 + draw(st.integers(-300, 600)) + draw(st.sampled_from([0.0, 0.25, 0.999]))
            tags = draw(st.lists(st.sampled_from([*LABEL_BREAKING_TAGS, "a", "B"]), max_size=4))
            user = draw(st.sampled_from(["bot", "u1", "u2"]))
            items.append((post(ts, *tags, user=user), OK, ts))
        elif kind == "bytes":
            items.append((draw(st.binary(max_size=64)), None, None))
        elif kind == "cut":
            hostile = draw(st.sampled_from(HOSTILE[stream]))
            items.append((hostile.value[: draw(st.integers(0, 200))], None, None))
        else:
            items.append((None, "invalid_json", None))  # a tombstone: no value at all
    return items


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_hostile_event_ends_exactly_one_way(data: st.DataObject) -> None:
    stream = data.draw(st.sampled_from(STREAMS))
    batches = data.draw(
        st.lists(st.tuples(st.integers(0, 1), batch_items(stream)), min_size=1, max_size=4)
    )
    ingest = StreamIngest(stream, WINDOW, GRACE, 3, 2)
    parse = parse_post if stream == "posts" else parse_signup
    watermark = {0: -math.inf, 1: -math.inf}
    offsets = {0: 0, 1: 0}
    expected_counts: Counter[tuple[str, int]] = Counter()
    got_counts: Counter[tuple[str, int]] = Counter()
    totals: Counter[str] = Counter()
    for partition, items in batches:
        values = [value for value, _, _ in items]
        verdicts: list[str] = []
        for value, expected, _ in items:
            if expected is None or (expected == OK and stream == "signups"):
                result = parse(value if value is not None else b"", NOW)
                expected = result.reason.value if isinstance(result, Rejected) else OK
            verdicts.append(expected)
        counted = late = 0
        for value, verdict in zip(values, verdicts, strict=True):
            if verdict != OK:
                continue
            result = parse(value or b"", NOW)
            assert not isinstance(result, Rejected)
            start = window_of(result.ts)
            if start + WINDOW + GRACE <= watermark[partition]:
                late += 1
                continue
            counted += 1
            watermark[partition] = max(watermark[partition], min(result.ts, NOW))
            keys = result.hashtags if isinstance(result, Post) else (result.country,)
            for key in keys:
                expected_counts[key, start] += 1
        first = offsets[partition]
        offsets[partition] += len(values)
        outcome, partials = ingest.process(
            partition, values, first, first + len(values) - 1, None, NOW
        )
        assert outcome.received == len(values)
        assert outcome.counted + outcome.late + len(outcome.rejected) == outcome.received
        assert (outcome.counted, outcome.late) == (counted, late)
        rejected = {index: rejection.reason.value for index, rejection in outcome.rejected}
        assert len(rejected) == len(outcome.rejected)  # no event rejected twice
        assert rejected == {i: v for i, v in enumerate(verdicts) if v != OK}
        assert set(rejected.values()) <= REASONS
        for _, rejection in outcome.rejected:
            assert rejection.detail.encode()  # a dead letter's header
        counts, _ = routed(partials)
        got_counts.update(counts)
        totals.update(received=outcome.received, counted=counted, late=late, rejected=len(rejected))
    assert got_counts == expected_counts
    assert totals["counted"] + totals["late"] + totals["rejected"] == totals["received"]


# --- a flood from one account ----------------------------------------------------------------


def sketches(ingest: StreamIngest, partition: int = 0) -> dict[int, Any]:
    """The open windows' (account, hashtag) sketches of an input partition (private state)."""
    return ingest._pairs.get(partition, {})


def flood(
    ingest: StreamIngest, posts: range, make: Any, close: bool = True
) -> tuple[Counter[Any], Counter[Any], int]:
    """Feed the values ``make(i)`` for ``i`` in ``posts``, a batch at a time; return the counts,
    the discounts and the most open window sketches seen at once. With ``close``, every window is
    closed at the end (``close_all``), so each window's discount is in."""
    counts: Counter[tuple[str, int]] = Counter()
    discounts: Counter[tuple[str, int]] = Counter()
    most_open = 0
    for first in range(posts.start, posts.stop, BATCH):
        values = [make(i) for i in range(first, min(posts.stop, first + BATCH))]
        outcome, partials = ingest.process(0, values, first, first + len(values) - 1, None, NOW)
        assert outcome.counted == len(values)
        batch_counts, batch_discounts = routed(partials)
        counts.update(batch_counts)
        discounts.update(batch_discounts)
        most_open = max(most_open, len(sketches(ingest)))
        for sketch in sketches(ingest).values():
            assert sketch.num_active_items <= SKETCH_PAIRS
    if close:
        batch_counts, batch_discounts = routed(ingest.close_all(NOW))
        counts.update(batch_counts)
        discounts.update(batch_discounts)
    return counts, discounts, most_open


def test_a_million_posts_of_one_tag_by_one_account_are_counted_and_capped() -> None:
    """Published counts stay exact; the trend discount is everything over the cap, per window;
    the ingest holds one small sketch per open window, and its memory does not grow."""
    posts, step_seconds = 1_000_000, 0.0006  # ten windows of 100,000 posts each
    ingest = StreamIngest("posts", WINDOW, GRACE, 4, 1, user_cap=CAP)

    def make(i: int) -> bytes:
        return post(T0 + i * step_seconds, "FreeCrypto", event_id=str(i))

    # The first batches warm the allocators up; from then on the resident set must stay flat.
    warm_up = 10 * BATCH
    counts, discounts, most_open = flood(ingest, range(warm_up), make, close=False)
    rss_before = resident_bytes()
    more_counts, more_discounts, more_open = flood(ingest, range(warm_up, posts), make)
    rss_growth = resident_bytes() - rss_before
    counts.update(more_counts)
    discounts.update(more_discounts)
    most_open = max(most_open, more_open)
    expected = Counter(window_of(T0 + i * step_seconds) for i in range(posts))
    assert len(expected) == 10
    assert counts == {("freecrypto", start): n for start, n in expected.items()}
    assert discounts == {("freecrypto", start): n - CAP for start, n in expected.items()}
    # A window closes once the watermark passes its end + grace: at most three are open at once.
    assert most_open <= 3
    assert sketches(ingest) == {}
    assert len(ingest._owners) == 1
    # The resident set (the sketches are C++, outside tracemalloc's view) grew by less than
    # 8 bytes a post after the warm-up: a per-post leak of even one pointer would break this.
    assert rss_growth < 8 * 2**20, rss_growth


def resident_bytes() -> int:
    """This process's resident set size now (Linux)."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: Python heap peak allowed while flooding, over what was allocated before: a 4,096-post batch of
#: parsed events and its partials need a few hundred KB; 10**5 posts of state would need more.
FLOOD_PEAK_BYTES = 2 * 2**20


def traced_peak(ingest: StreamIngest, values: list[bytes], batch: int = BATCH) -> tuple[int, int]:
    """Feed ``values`` in batches under tracemalloc; return (peak, still held) in bytes."""
    gc.collect()
    tracemalloc.start()
    try:
        for first in range(0, len(values), batch):
            chunk = values[first : first + batch]
            ingest.process(0, chunk, first, first + len(chunk) - 1, None, NOW)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, held


def test_the_heap_of_a_one_tag_flood_stays_flat() -> None:
    posts = 30_000  # seven batches, over four windows
    values = [post(T0 + i * 0.006, "freecrypto", event_id=str(i)) for i in range(posts)]
    peak, held = traced_peak(StreamIngest("posts", WINDOW, GRACE, 4, 1), values)
    assert peak < FLOOD_PEAK_BYTES, peak
    assert held < 64 * 2**10, held  # nothing per post is kept


def test_one_account_with_100k_distinct_tags_keeps_bounded_state() -> None:
    """10**5 distinct tags from one account in one window (30 a post, the most a post may carry):
    the pair sketch keeps at most 1,536 pairs and discounts nothing (no pair is over the cap);
    the owner cache stays within its bound; the heap peak stays under the stated bound."""
    tags, per_post = 100_000, 30
    values = [
        post(
            T0 + k * 0.01, *(f"tag{j}" for j in range(i, min(tags, i + per_post))), event_id=str(i)
        )
        for k, i in enumerate(range(0, tags, per_post))
    ]
    ingest = StreamIngest("posts", WINDOW, GRACE, 4, 1, user_cap=CAP)
    peak, held = traced_peak(ingest, values)
    window_sketches = sketches(ingest)
    assert list(window_sketches) == [window_of(T0)]
    sketch = window_sketches[window_of(T0)]
    assert 0 < sketch.num_active_items <= SKETCH_PAIRS
    assert sketch.total_weight == tags
    assert len(ingest._owners) <= OWNER_CACHE_KEYS + BATCH
    # The owner cache (up to 100,000 short tags) is most of what is held.
    assert peak < 32 * 2**20, peak
    assert held < 24 * 2**20, held
    counts, discounts = routed(ingest.close_all(NOW))
    assert counts == Counter()
    assert discounts == Counter()  # every pair was seen once: nothing over the cap


def test_a_flood_hidden_among_distinct_tags_is_still_capped() -> None:
    """One account posts #freecrypto 5,000 times between 100,000 one-off tags in one window: the
    sketch still finds the pair, and discounts at most its true excess, missing at most the
    sketch's error (3.5 / 2**11 of the window's mentions)."""
    flooded, others = 5_000, 100_000
    every = others // flooded

    def make(i: int) -> bytes:
        tag = "freecrypto" if i % (every + 1) == 0 else f"tag{i}"
        return post(T0 + i * 0.0005, tag, event_id=str(i))

    total = others + flooded
    ingest = StreamIngest("posts", WINDOW, GRACE, 4, 1, user_cap=CAP)
    counts, discounts, most_open = flood(ingest, range(total), make)
    mentions = sum(1 for i in range(total) if i % (every + 1) == 0)
    assert counts[("freecrypto", window_of(T0))] == mentions
    error = math.ceil(3.5 / 2**HEAVY_PAIRS_LG_MAP_SIZE * total)
    excess = discounts[("freecrypto", window_of(T0))]
    assert mentions - CAP - error <= excess <= mentions - CAP
    assert set(discounts) == {("freecrypto", window_of(T0))}
    assert most_open == 1


def test_the_trend_count_of_a_flooded_tag_is_the_cap() -> None:
    """Through the whole pure pipeline: 3,000 posts of one account in one window publish 3,000
    and score 3, and label-breaking tags come out of the window records unchanged."""
    settings = load_settings(window_seconds=WINDOW, grace_seconds=GRACE, partitions=2)
    pipeline = OfflinePipeline(settings, lambda: NOW)
    for i in range(3_000):
        body = {"event_id": str(i), "user_id": "bot", "ts": T0 + i * 0.01}
        pipeline.add(EventRecord("posts", "bot", {**body, "hashtags": ["freecrypto"]}))
    for i, tag in enumerate(LABEL_BREAKING_TAGS):
        body = {"event_id": f"o{i}", "user_id": f"u{i}", "ts": T0 + 1}
        pipeline.add(EventRecord("posts", f"u{i}", {**body, "hashtags": [tag]}))
    result = pipeline.finish()
    by_key = {(w.key, w.window_start): w for w in result.window_counts}
    bot = by_key[("freecrypto", window_of(T0))]
    assert (bot.count, bot.trend_count) == (3_000, CAP)
    for tag in LABEL_BREAKING_TAGS:
        window = by_key[(tag.strip("#").casefold(), window_of(T0))]
        assert (window.count, window.trend_count) == (1, 1)
    assert result.totals["posts"].received == 3_000 + len(LABEL_BREAKING_TAGS)
