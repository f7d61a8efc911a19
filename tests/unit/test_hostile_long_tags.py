"""Very long distinct hashtags: counted exactly and named in full, in state bounded in bytes.

A hashtag may be as long as a 64 KiB value allows. Open windows hold each one whole (they publish
it); what outlives a window (the owner cache, the pair sketches, the surge detectors) holds a
bounded number of bytes per key.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from datasketches import frequent_items_error_type

from surgewatch.ingest import (
    LONG_KEY_CHARS,
    LONG_PAIR_TAGS,
    OWNER_CACHE_CHARS,
    Partial,
    StreamIngest,
    owner_partition,
)
from surgewatch.labels import hashtag_label
from surgewatch.trends.partition import HASHTAGS, PartitionTrends
from surgewatch.trends.surge import MAX_KEY_CHARS, SurgeDetector, SurgeParams
from surgewatch.windows.counting import WindowCount

WINDOW = 60
GRACE = 30
#: Event time of the tests, a multiple of 60: 2025-01-16T04:00:00Z.
T0 = 1_737_000_000
NOW = T0 + 3_600.0
CAP = 3
#: Characters of a long tag: about the most a 64 KiB value carries.
LONG_CHARS = 60_000
#: What the old key-counting caps let 5,000 such tags (286 MiB) or 2,000 (114 MiB) hold.
HELD_BYTES = 8 * 2**20


def long_tag(index: int, chars: int = LONG_CHARS) -> str:
    """A distinct tag of ``chars`` characters (made on demand: 5,000 of them are 300 MB)."""
    return f"{index:05d}" + "l" * (chars - 5)


def post(ts: float, *tags: str, user: str = "bot", event_id: str = "e") -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": user, "ts": ts, "hashtags": list(tags)})


def held_bytes(run: Callable[[], Any]) -> tuple[int, Any]:
    """Python heap still held once ``run`` has returned (its result dropped), and the result's
    summary."""
    gc.collect()
    tracemalloc.start()
    try:
        result = run()
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return held, result


def sketch_items(ingest: StreamIngest) -> Iterator[str]:
    """Every (account, hashtag) pair the open windows' sketches of input partition 0 track."""
    for sketch in ingest._pairs.get(0, {}).values():
        for item, *_ in sketch.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES, 0):
            yield item


def test_5000_distinct_60k_character_tags_are_counted_in_bounded_ingest_state() -> None:
    """Each tag is routed whole with its exact count; what the ingest keeps between batches (owner
    cache, pair sketches) holds no long tag, so 300 MB of tags leave kilobytes behind."""
    tags, batch = 5_000, 250
    ingest = StreamIngest("posts", WINDOW, GRACE, 4, 1, user_cap=CAP)
    seen: Counter[int] = Counter()
    longest_pair = 0

    def feed() -> None:
        nonlocal longest_pair
        for first in range(0, tags, batch):
            values = [
                post(T0 + i * 0.01, long_tag(i), user=f"u{i % 7}", event_id=str(i))
                for i in range(first, first + batch)
            ]
            outcome, partials = ingest.process(0, values, first, first + batch - 1, None, NOW)
            assert outcome.counted == batch
            for dest, partial in partials:
                for key, start, count in partial.counts:
                    index = int(key[:5])
                    assert key == long_tag(index)
                    assert (start, count) == (T0, 1)
                    assert dest == owner_partition("hashtag_posts", key, 4)
                    seen[index] += 1
            longest_pair = max(longest_pair, *map(len, sketch_items(ingest)))

    held, _ = held_bytes(feed)
    assert held < HELD_BYTES, held
    assert seen == Counter(range(tags))
    assert ingest._owners == {}
    # A pair is the length-prefixed account and a 33-character digest, never the tag (the C++
    # sketch's memory is not on the Python heap).
    assert longest_pair < 64
    closed = [p for _, p in ingest.close_all(NOW)]
    assert all(not p.counts and not p.discounts for p in closed)


def test_a_long_tag_flooded_by_one_account_is_discounted_under_its_whole_name() -> None:
    """The pair sketch counts a long tag under its digest; the discount still names it whole."""
    flooded = long_tag(1)
    values = [post(T0 + i, flooded, event_id=str(i)) for i in range(10)]
    values += [post(T0 + 20, long_tag(2), user="other", event_id="x")]
    ingest = StreamIngest("posts", WINDOW, GRACE, 2, 1, user_cap=CAP)
    ingest.process(0, values, 0, len(values) - 1, None, NOW)
    assert max(map(len, sketch_items(ingest))) < 64
    discounts = [d for _, p in ingest.close_all(NOW) for d in p.discounts]
    assert discounts == [(flooded, T0, 10 - CAP)]
    assert ingest._long_tags == {0: {}}


def test_one_window_names_at_most_long_pair_tags_long_tags() -> None:
    """Past LONG_PAIR_TAGS long tags over the cap in one window, further ones are not discounted
    (their published counts stay exact)."""
    tags = LONG_PAIR_TAGS + 6
    chars = LONG_KEY_CHARS + 44
    values = [
        post(T0 + 1, long_tag(i, chars), event_id=f"{i}-{n}") for i in range(tags) for n in range(5)
    ]
    ingest = StreamIngest("posts", WINDOW, GRACE, 1, 1, user_cap=CAP)
    _, partials = ingest.process(0, values, 0, len(values) - 1, None, NOW)
    assert Counter((k, c) for _, p in partials for k, _, c in p.counts) == {
        (long_tag(i, chars), 5): 1 for i in range(tags)
    }
    discounts = [d for _, p in ingest.close_all(NOW) for d in p.discounts]
    assert sorted(discounts) == [(long_tag(i, chars), T0, 5 - CAP) for i in range(LONG_PAIR_TAGS)]


def test_ordinary_tags_are_still_cached_and_the_cache_is_bounded_in_characters() -> None:
    ingest = StreamIngest("posts", WINDOW, GRACE, 4, 1)
    short, edge = "tiktokrefugee", "e" * LONG_KEY_CHARS
    ingest.process(0, [post(T0 + 1, short, edge, long_tag(0, LONG_KEY_CHARS + 1))], 0, 0, None, NOW)
    assert set(ingest._owners) == {short, edge}
    ingest._owner_chars = OWNER_CACHE_CHARS + 1
    ingest.process(0, [post(T0 + 2, "other")], 1, 1, None, NOW)
    assert set(ingest._owners) == {"other"}


# --- surge detectors ----------------------------------------------------------------------------


def test_a_detector_of_2500_distinct_60k_character_keys_holds_bounded_bytes() -> None:
    """2,500 long keys over five windows: every one tracked, under a digest of bounded size."""
    detector = SurgeDetector(SurgeParams(window_seconds=WINDOW, warmup_windows=0))

    def feed() -> None:
        for window in range(5):
            counts = {long_tag(window * 500 + i): 1 for i in range(500)}
            assert detector.observe_window(T0 + window * WINDOW, counts) == []
            assert all(key in detector for key in counts)

    held, _ = held_bytes(feed)
    assert held < HELD_BYTES, held
    assert len(detector) == 2_500
    assert max(map(len, detector._keys)) <= MAX_KEY_CHARS


def window_counts(start: int, counts: dict[str, int]) -> list[WindowCount]:
    return [WindowCount(HASHTAGS, k, start, start + WINDOW, c) for k, c in counts.items()]


def test_a_surge_of_a_long_tag_starts_and_ends_under_its_whole_name() -> None:
    """Among 2,000 one-off long tags, one long tag bursts and then falls silent: the start and
    the end (in windows without the tag) name it whole, and the summary shows its label."""
    params = SurgeParams(window_seconds=WINDOW, warmup_windows=2)
    trends = PartitionTrends(params, top_k=5)
    surging = long_tag(99_999)
    surges = []
    for window in range(8):
        start = T0 + window * WINDOW
        counts = {long_tag(window * 250 + i): 1 for i in range(250)}
        if window == 3:
            counts[surging] = 50
        found, summaries = trends.close(HASHTAGS, window_counts(start, counts))
        surges.extend(found)
        if window == 3:
            (summary,) = summaries
            assert [(t.key, t.count, t.surging) for t in summary.keys] == [
                (hashtag_label(surging), 50, True)
            ]
            assert trends.detectors[HASHTAGS].surging == {surging}
    assert [(s.event.key, s.event.state, s.event.window_start) for s in surges] == [
        (surging, "start", T0 + 3 * WINDOW),
        (surging, "end", T0 + 5 * WINDOW),
    ]
    assert [(s.event.count, s.kafka_key) for s in surges] == [
        (50, f"{HASHTAGS}|{surging}"),
        (0, f"{HASHTAGS}|{surging}"),
    ]
    detector = trends.detectors[HASHTAGS]
    assert detector.surging == frozenset()
    assert detector._names == {}
    assert len(detector) == 2_001


def test_a_surging_long_key_evicted_for_room_ends_under_its_whole_name() -> None:
    detector = SurgeDetector(SurgeParams(window_seconds=WINDOW, warmup_windows=0, max_keys=2))
    surging = long_tag(7)
    events = detector.observe_window(T0, {surging: 50})
    assert [(e.key, e.state) for e in events] == [(surging, "start")]
    # Scored first (at zero, absent), so the least recently observed when "a" and "b" need room.
    events = detector.observe_window(T0 + WINDOW, {"a": 1, "b": 1})
    assert [(e.key, e.state, e.count) for e in events] == [(surging, "end", 0)]
    assert surging not in detector
    assert detector._names == {}


def test_partials_of_long_tags_round_trip() -> None:
    """The wire form keeps a long tag whole (the downstream window publishes it)."""
    partial = Partial("hashtag_posts", 0, 1, T0 + 1.0, [(long_tag(3), T0, 2)])
    assert Partial.decode(partial.encode()).counts == [(long_tag(3), T0, 2)]
