"""Top-K: exact per-window ranking, and the sketch's bounds, flat memory, merge and round trip."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.trends.topk import (
    DEFAULT_LG_MAX_MAP_SIZE,
    WindowTopK,
    capacity_for,
    top_of_window,
)

ZIPF_DISTINCT = 10**6
# A prime coprime with every stream size used here: j -> j * stride mod m visits every tag once, in
# an order that spreads heavy and light tags through the stream, without holding a shuffled list.
STRIDE = 7919
# Serialized frequent-strings sketch: a 48-byte preamble, then per tracked key an 8-byte weight,
# a 4-byte length and the UTF-8 bytes. "tag1000000" is the longest key below: 10 bytes.
PREAMBLE_BYTES = 48
LONGEST_TAG_BYTES = 10
SERIALIZED_BOUND_BYTES = PREAMBLE_BYTES + capacity_for(DEFAULT_LG_MAX_MAP_SIZE) * (
    8 + 4 + LONGEST_TAG_BYTES
)  # 67,632 bytes

HOSTILE_KEYS = [
    '"',
    '"quoted"',
    "\\",
    'back\\slash"and quote',
    "new\nline",
    "tab\tand\rreturn",
    "nul\x00byte",
    "🦋",
    "👩🏽‍💻",
    "日本語",
    "中文标签",
    "",
    '{hashtag="x"}',
]


def zipf_count(rank: int, distinct: int) -> int:
    """True count of ``tag{rank}`` in a Zipf (s=1) stream over ``distinct`` tags."""
    return distinct // rank


def zipf_stream(distinct: int) -> Iterator[tuple[str, int]]:
    """Every tag of the stream once, with its exact count, in a spread-out order."""
    for j in range(distinct):
        rank = (j * STRIDE) % distinct + 1
        yield f"tag{rank}", zipf_count(rank, distinct)


def zipf_sketch(distinct: int) -> WindowTopK:
    sketch = WindowTopK()
    for key, count in zipf_stream(distinct):
        sketch.add(key, count)
    return sketch


def true_count(key: str, distinct: int) -> int:
    return zipf_count(int(key.removeprefix("tag")), distinct)


def exact_ranking(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


@pytest.fixture(scope="module")
def million() -> WindowTopK:
    return zipf_sketch(ZIPF_DISTINCT)


# --- top_of_window: exact ------------------------------------------------------------------------


def test_top_of_window_ranks_by_count_then_key() -> None:
    counts = {"b": 5, "a": 5, "c": 9, "d": 1, "e": 5}
    assert top_of_window(counts, 3) == [("c", 9), ("a", 5), ("b", 5)]
    assert top_of_window(counts, 10) == [("c", 9), ("a", 5), ("b", 5), ("e", 5), ("d", 1)]
    assert top_of_window(counts, 0) == []
    assert top_of_window({}, 5) == []


def test_top_of_window_skips_non_positive_counts() -> None:
    assert top_of_window({"a": 0, "b": -3, "c": 2}, 5) == [("c", 2)]


def test_top_of_window_rejects_negative_k() -> None:
    with pytest.raises(ValueError, match="k must be >= 0"):
        top_of_window({"a": 1}, -1)


@given(
    counts=st.dictionaries(st.text(max_size=4), st.integers(1, 50), max_size=40),
    k=st.integers(0, 50),
)
def test_top_of_window_is_the_head_of_the_exact_ranking(counts: dict[str, int], k: int) -> None:
    assert top_of_window(counts, k) == exact_ranking(counts)[:k]


# --- WindowTopK: exact while nothing is evicted ----------------------------------------------------


def test_small_input_is_exact() -> None:
    sketch = WindowTopK(k=3)
    for window in ({"a": 4, "b": 2}, {"b": 3, "c": 1}, {"d": 5}):
        for key, count in window.items():
            sketch.add(key, count)
    assert sketch.total_weight == 15
    assert sketch.max_error == 0
    assert sketch.top() == [("b", 5, 5, 5), ("d", 5, 5, 5), ("a", 4, 4, 4)]
    assert sketch.top(10) == [
        ("b", 5, 5, 5),
        ("d", 5, 5, 5),
        ("a", 4, 4, 4),
        ("c", 1, 1, 1),
    ]
    assert sketch.top(0) == []


def test_empty_sketch() -> None:
    sketch = WindowTopK()
    assert (sketch.top(), sketch.total_weight, sketch.max_error) == ([], 0, 0)


def test_epsilon_matches_the_library_constant() -> None:
    assert WindowTopK().epsilon == 3.5 / 2**12 == 0.0008544921875
    assert WindowTopK(lg_max_map_size=13).epsilon == 3.5 / 2**13


@pytest.mark.parametrize(
    ("k", "lg", "message"),
    [
        (1, 2, "lg_max_map_size must be in"),
        (1, 27, "lg_max_map_size must be in"),
        (0, 12, "k must be in"),
        (7, 3, r"k must be in \[1, 6\]"),
    ],
)
def test_bad_parameters_say_what_is_wrong(k: int, lg: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WindowTopK(k=k, lg_max_map_size=lg)


def test_bad_counts_and_keys_say_what_is_wrong() -> None:
    sketch = WindowTopK()
    with pytest.raises(ValueError, match="count must be >= 0"):
        sketch.add("a", -1)
    with pytest.raises(ValueError, match="UTF-8"):
        sketch.add("\ud800", 1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        sketch.top(-1)
    assert sketch.total_weight == 0


# --- WindowTopK: heavy hitters, bounded memory ----------------------------------------------------


def test_zipf_heavy_hitters_are_found_within_bounds(million: WindowTopK) -> None:
    expected_total = sum(zipf_count(rank, ZIPF_DISTINCT) for rank in range(1, ZIPF_DISTINCT + 1))
    assert million.total_weight == expected_total == 13_970_034
    assert 0 < million.max_error <= million.epsilon * million.total_weight  # 3,947 <= 11,937.3

    everything = million.top(capacity_for(DEFAULT_LG_MAX_MAP_SIZE))
    listed = {key: (estimate, lower, upper) for key, estimate, lower, upper in everything}
    for key, (estimate, lower, upper) in listed.items():
        assert lower <= true_count(key, ZIPF_DISTINCT) <= upper
        assert upper - lower == million.max_error
        assert estimate == upper
    heavy = [
        f"tag{rank}"
        for rank in range(1, ZIPF_DISTINCT // million.max_error + 2)
        if zipf_count(rank, ZIPF_DISTINCT) > million.max_error
    ]
    assert len(heavy) == 253
    assert set(heavy) <= set(listed)

    # A key ranked in the top 20 by estimate is at most max_error short of the true 20th count.
    top20 = million.top(20)
    floor = zipf_count(20, ZIPF_DISTINCT) - million.max_error
    assert all(true_count(key, ZIPF_DISTINCT) >= floor for key, *_ in top20)
    assert [key for key, *_ in top20] == [f"tag{rank}" for rank in range(1, 21)]


def test_memory_stays_flat(million: WindowTopK) -> None:
    ten_thousand = zipf_sketch(10**4)
    small, large = len(ten_thousand.serialize()), len(million.serialize())
    # 100x the distinct tags: measured 25,629 vs 59,474 bytes (1,402 vs 2,989 tracked tags).
    assert large <= SERIALIZED_BOUND_BYTES
    assert small <= SERIALIZED_BOUND_BYTES
    assert large < 3 * small
    assert len(million.top(10**6)) <= capacity_for(DEFAULT_LG_MAX_MAP_SIZE)


# --- WindowTopK: merge and serialization ----------------------------------------------------------


def test_merge_matches_one_sketch_over_both_streams() -> None:
    distinct = 10**5
    # Partition B sees the same tags with the ranking reversed, so both halves matter.
    stream_a = list(zipf_stream(distinct))
    stream_b = [(key, 1 + count // 3) for key, count in reversed(stream_a)]
    truth: Counter[str] = Counter()
    single, part_a, part_b = WindowTopK(), WindowTopK(), WindowTopK()
    for part, stream in ((part_a, stream_a), (part_b, stream_b)):
        for key, count in stream:
            part.add(key, count)
            single.add(key, count)
            truth[key] += count

    part_a.merge(part_b)
    merged = part_a
    assert merged.total_weight == single.total_weight == sum(truth.values())
    for sketch in (merged, single):
        assert sketch.max_error <= sketch.epsilon * sketch.total_weight
        listed = {key: (lower, upper) for key, _, lower, upper in sketch.top(10**6)}
        assert all(lower <= truth[key] <= upper for key, (lower, upper) in listed.items())
        assert {key for key, count in truth.items() if count > sketch.max_error} <= set(listed)

    # Where the true counts of the head are further apart than both errors, the order is settled.
    head = exact_ranking(truth)[:6]
    gaps = [earlier[1] - later[1] for earlier, later in itertools.pairwise(head)]
    assert min(gaps) > merged.max_error + single.max_error
    assert [key for key, *_ in merged.top(5)] == [key for key, *_ in single.top(5)]
    assert [key for key, *_ in merged.top(5)] == [key for key, _ in head[:5]]


def test_merge_of_exact_sketches_is_exact() -> None:
    left, right = WindowTopK(k=2), WindowTopK(k=2)
    left.add("a", 3)
    left.add("b", 1)
    right.add("b", 4)
    right.add("c", 2)
    left.merge(right)
    assert left.top() == [("b", 5, 5, 5), ("a", 3, 3, 3)]
    assert (left.total_weight, left.max_error) == (10, 0)


def test_serialization_round_trips(million: WindowTopK) -> None:
    restored = WindowTopK.deserialize(million.serialize(), k=7)
    assert restored.k == 7
    assert restored.lg_max_map_size == million.lg_max_map_size
    assert restored.top(5000) == million.top(5000)
    assert (restored.total_weight, restored.max_error) == (
        million.total_weight,
        million.max_error,
    )
    assert WindowTopK.deserialize(WindowTopK(lg_max_map_size=5).serialize()).lg_max_map_size == 5


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x01" * 64])
def test_deserialize_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a serialized frequent-strings sketch"):
        WindowTopK.deserialize(data)


def test_label_hostile_keys_round_trip_unchanged() -> None:
    sketch = WindowTopK(k=len(HOSTILE_KEYS))
    for weight, key in enumerate(HOSTILE_KEYS, start=1):
        sketch.add(key, weight)
    expected = [(key, w, w, w) for w, key in reversed(list(enumerate(HOSTILE_KEYS, start=1)))]
    assert sketch.top() == expected
    assert WindowTopK.deserialize(sketch.serialize(), k=len(HOSTILE_KEYS)).top() == expected
    window = {key: 1 for key in HOSTILE_KEYS}
    assert [key for key, _ in top_of_window(window, 100)] == sorted(HOSTILE_KEYS)


# --- WindowTopK: properties ------------------------------------------------------------------------

text_keys = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]),  # lone surrogates are not text
    max_size=6,
)
windows_strategy = st.lists(
    st.dictionaries(
        st.one_of(st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]), text_keys),
        st.integers(1, 1_000),
        max_size=25,
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(windows=windows_strategy, lg=st.integers(3, 5), n=st.integers(0, 30))
def test_bounds_hold_and_top_is_sorted(windows: list[dict[str, int]], lg: int, n: int) -> None:
    sketch = WindowTopK(k=1, lg_max_map_size=lg)
    truth: Counter[str] = Counter()
    for window in windows:
        for key, count in window.items():
            sketch.add(key, count)
            truth[key] += count

    assert sketch.total_weight == sum(truth.values())
    assert 0 <= sketch.max_error <= sketch.epsilon * sketch.total_weight
    rows = sketch.top(n)
    assert len(rows) <= n
    assert rows == sorted(rows, key=lambda row: (-row[1], row[0]))
    for key, estimate, lower, upper in rows:
        assert isinstance(estimate, int)
        assert not math.isnan(estimate)
        assert lower <= truth[key] <= upper
        assert lower <= estimate <= upper

    everything = {row[0] for row in sketch.top(capacity_for(lg))}
    assert {key for key, count in truth.items() if count > sketch.max_error} <= everything
    if len(truth) <= capacity_for(lg):
        assert sketch.max_error == 0
        exact = [(key, count, count, count) for key, count in exact_ranking(truth)]
        assert sketch.top(n) == exact[:n]
    restored = WindowTopK.deserialize(sketch.serialize(), k=1)
    assert restored.top(capacity_for(lg)) == sketch.top(capacity_for(lg))
