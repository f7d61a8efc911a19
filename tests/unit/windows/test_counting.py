"""Window store: windows close once, when every source partition's watermark has passed end + grace."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.windows.counting import WindowCount, WindowStore

WINDOW = 60
GRACE = 30
#: A multiple of 60.
T0 = 1_700_000_040
POSTS = "hashtag_posts"
SIGNUPS = "signups"


def store() -> WindowStore:
    return WindowStore(WINDOW, GRACE)


def close_of(start: int) -> int:
    return start + WINDOW + GRACE


def test_window_count_record_and_key() -> None:
    record = WindowCount(POSTS, "tiktokrefugee", T0, T0 + 60, 7)
    assert record.kafka_key == f"hashtag_posts|tiktokrefugee|{T0}"
    assert record.as_dict() == {
        "metric": "hashtag_posts",
        "key": "tiktokrefugee",
        "window_start": T0,
        "window_end": T0 + 60,
        "count": 7,
    }


def test_window_closes_exactly_at_end_plus_grace() -> None:
    s = store()
    assert s.apply(POSTS, 0, 1, T0 + 10, [("a", T0, 3)]) == []
    assert s.apply(POSTS, 0, 1, close_of(T0) - 0.001, []) == []
    assert s.open_windows(POSTS) == 1
    assert s.apply(POSTS, 0, 1, close_of(T0), []) == [WindowCount(POSTS, "a", T0, T0 + 60, 3)]
    assert s.open_windows(POSTS) == 0
    assert s.open_keys() == 0
    # Nothing more for that window, ever.
    assert s.apply(POSTS, 0, 1, close_of(T0) + 1_000, []) == []


def test_counts_are_added_and_close_in_the_same_apply() -> None:
    s = store()
    s.apply(POSTS, 0, 1, T0, [("a", T0, 1)])
    # The batch that carries the watermark past the close also carries counts of that window.
    closed = s.apply(POSTS, 0, 1, close_of(T0), [("a", T0, 2), ("b", T0, 5)])
    assert closed == [
        WindowCount(POSTS, "a", T0, T0 + 60, 3),
        WindowCount(POSTS, "b", T0, T0 + 60, 5),
    ]


def test_no_close_until_every_source_partition_has_reported() -> None:
    s = store()
    assert s.apply(POSTS, 0, 3, T0 + 10_000, [("a", T0, 1)]) == []
    assert s.apply(POSTS, 2, 3, T0 + 10_000, [("a", T0, 1)]) == []
    assert s.watermark_seconds(POSTS) == -math.inf
    assert s.open_windows(POSTS) == 1
    # A report without a watermark (the source has read nothing) does not count either.
    assert s.apply(POSTS, 1, 3, -math.inf, [("a", T0, 1)]) == []
    assert s.watermark_seconds(POSTS) == -math.inf
    closed = s.apply(POSTS, 1, 3, close_of(T0), [])
    assert closed == [WindowCount(POSTS, "a", T0, T0 + 60, 3)]
    assert s.watermark_seconds(POSTS) == close_of(T0)


def test_min_watermark_decides_and_far_ahead_source_does_not_close() -> None:
    s = store()
    s.apply(POSTS, 0, 2, T0 + 3_600, [("a", T0, 1), ("a", T0 + 3_540, 1)])
    assert s.apply(POSTS, 1, 2, close_of(T0) - 1, [("a", T0, 4)]) == []
    assert s.watermark_seconds(POSTS) == close_of(T0) - 1
    closed = s.apply(POSTS, 1, 2, close_of(T0), [])
    assert closed == [WindowCount(POSTS, "a", T0, T0 + 60, 5)]
    assert s.open_windows(POSTS) == 1  # T0 + 3540 waits for source 1


def test_source_watermark_never_decreases() -> None:
    s = store()
    s.apply(POSTS, 0, 1, T0 + 500, [])
    s.apply(POSTS, 0, 1, T0 + 100, [])
    assert s.watermark_seconds(POSTS) == T0 + 500


def test_more_source_partitions_reopens_the_wait() -> None:
    s = store()
    s.apply(POSTS, 0, 1, T0, [("a", T0, 1)])
    # The input topic grew to two partitions: the new one must report before anything closes.
    assert s.apply(POSTS, 0, 2, close_of(T0), []) == []
    assert s.watermark_seconds(POSTS) == -math.inf
    assert s.apply(POSTS, 1, 2, close_of(T0), []) == [WindowCount(POSTS, "a", T0, T0 + 60, 1)]


def test_one_record_per_key_and_window_with_summed_count() -> None:
    s = store()
    s.apply(POSTS, 0, 2, T0 + 5, [("a", T0, 2), ("b", T0, 1)])
    s.apply(POSTS, 1, 2, T0 + 6, [("a", T0, 3)])
    s.apply(POSTS, 0, 2, T0 + 7, [("a", T0, 4), ("b", T0, 1)])
    assert s.open_keys() == 2
    closed = s.apply(POSTS, 1, 2, close_of(T0), [])
    s2 = s.apply(POSTS, 0, 2, close_of(T0), [])
    assert closed + s2 == [
        WindowCount(POSTS, "a", T0, T0 + 60, 9),
        WindowCount(POSTS, "b", T0, T0 + 60, 2),
    ]


def test_zero_counts_are_not_emitted() -> None:
    s = store()
    s.apply(SIGNUPS, 0, 1, T0, [("US", T0, 0), ("DE", T0, 2), ("FR", T0 + 60, 0)])
    assert s.open_keys() == 3
    closed = s.apply(SIGNUPS, 0, 1, close_of(T0 + 60), [])
    assert closed == [WindowCount(SIGNUPS, "DE", T0, T0 + 60, 2)]
    assert s.open_windows(SIGNUPS) == 0
    assert s.open_keys() == 0


def test_emission_sorted_by_window_start_then_key() -> None:
    s = store()
    s.apply(
        POSTS,
        0,
        1,
        T0,
        [("zeta", T0 + 120, 1), ("beta", T0, 1), ("alpha", T0 + 120, 2), ("gamma", T0, 3)],
    )
    s.apply(POSTS, 0, 1, T0 + 10, [("alpha", T0 + 60, 4), ("delta", T0, 5)])
    closed = s.apply(POSTS, 0, 1, close_of(T0 + 120), [])
    assert [(w.window_start, w.key, w.count) for w in closed] == [
        (T0, "beta", 1),
        (T0, "delta", 5),
        (T0, "gamma", 3),
        (T0 + 60, "alpha", 4),
        (T0 + 120, "alpha", 2),
        (T0 + 120, "zeta", 1),
    ]
    assert all(w.window_end == w.window_start + WINDOW for w in closed)


def test_update_for_closed_window_is_dropped_and_never_emitted() -> None:
    s = store()
    s.apply(POSTS, 0, 1, T0, [("a", T0, 1)])
    assert s.apply(POSTS, 0, 1, close_of(T0), []) == [WindowCount(POSTS, "a", T0, T0 + 60, 1)]
    # After a reassignment a source might resend counts for the closed window.
    assert s.apply(POSTS, 0, 1, close_of(T0), [("a", T0, 4), ("b", T0, 2)]) == []
    assert s.dropped_updates(POSTS) == 6
    assert s.open_windows(POSTS) == 0
    assert s.apply(POSTS, 0, 1, close_of(T0) + 10_000, []) == []
    # The next window, still open at that watermark, is accepted.
    s2 = store()
    s2.apply(POSTS, 0, 1, close_of(T0), [("a", T0 + 60, 1)])
    assert s2.dropped_updates(POSTS) == 0
    assert s2.open_windows(POSTS) == 1


def test_window_closed_without_counts_still_drops_later_updates() -> None:
    s = store()
    # The watermark passes the window's close while the store holds no window at all.
    s.apply(POSTS, 0, 1, close_of(T0), [])
    assert s.apply(POSTS, 0, 1, close_of(T0), [("a", T0, 3), ("a", T0 + 60, 1)]) == []
    assert s.dropped_updates(POSTS) == 3
    assert s.open_windows(POSTS) == 1


def test_metrics_are_independent() -> None:
    s = store()
    s.apply(POSTS, 0, 2, T0, [("a", T0, 1)])
    s.apply(POSTS, 1, 2, T0, [])
    s.apply(SIGNUPS, 0, 1, T0, [("US", T0, 2)])
    # Signups' watermark passing the close does not close the hashtag window.
    assert s.apply(SIGNUPS, 0, 1, close_of(T0), []) == [WindowCount(SIGNUPS, "US", T0, T0 + 60, 2)]
    assert s.open_windows(POSTS) == 1
    assert s.watermark_seconds(POSTS) == T0
    assert s.watermark_seconds(SIGNUPS) == close_of(T0)
    # A signups update for a closed window does not count as a hashtag drop.
    s.apply(SIGNUPS, 0, 1, close_of(T0), [("US", T0, 1)])
    assert (s.dropped_updates(SIGNUPS), s.dropped_updates(POSTS)) == (1, 0)
    # The same key under two metrics is two records.
    s.apply(POSTS, 0, 2, close_of(T0), [])
    s.apply(POSTS, 0, 2, close_of(T0), [("US", T0, 5)])
    closed = s.apply(POSTS, 1, 2, close_of(T0), [])
    assert closed == [
        WindowCount(POSTS, "US", T0, T0 + 60, 5),
        WindowCount(POSTS, "a", T0, T0 + 60, 1),
    ]


def test_unknown_metric_reads_as_empty() -> None:
    s = store()
    assert s.watermark_seconds("nope") == -math.inf
    assert s.open_windows("nope") == 0
    assert s.dropped_updates("nope") == 0
    assert s.open_keys() == 0


# --- property: exactly once, exact counts, close rule ----------------------------------------

N_SOURCES = 3
KEYS = ("a", "b", "c", "US")


RawStep = tuple[int, int, list[tuple[int, int, int]], int]
raw_steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=1),  # metric
        st.integers(min_value=0, max_value=N_SOURCES - 1),  # source
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=len(KEYS) - 1),  # key
                st.integers(min_value=0, max_value=5),  # n-th window still open
                st.integers(min_value=0, max_value=4),  # count
            ),
            max_size=6,
        ),
        st.sampled_from((-1, 0, 1, 10, 30, 59, 60, 90, 120, 400)),  # watermark step, -1: none
    ),
    max_size=30,
)


def partials_of(raw: list[RawStep]) -> list[tuple[str, int, float, list[tuple[str, int, int]]]]:
    """Partials as the ingest sends them: each source's watermark never goes back, and a source
    sends counts only for windows still open by its own watermark when it read them."""
    watermark = {(m, p): -math.inf for m in (POSTS, SIGNUPS) for p in range(N_SOURCES)}
    out = []
    for metric_index, source, raw_counts, step in raw:
        metric = (POSTS, SIGNUPS)[metric_index]
        previous = watermark[metric, source]
        # Window starts still open for this source: start + size + grace > previous watermark.
        lowest = T0 if previous == -math.inf else math.floor(previous) - WINDOW - GRACE + 1
        first_open = -(-lowest // WINDOW) * WINDOW
        counts = [(KEYS[k], first_open + i * WINDOW, c) for k, i, c in raw_counts]
        if step < 0:
            new = previous  # a batch that moved nothing (or, before any event, -inf)
        else:
            new = (T0 if previous == -math.inf else previous) + step + 0.5 * (step % 2)
        watermark[metric, source] = max(previous, new)
        out.append((metric, source, new, counts))
    return out


@settings(max_examples=150, deadline=None)
@given(raw_steps)
def test_every_count_emitted_once_and_only_when_closed(raw: list[RawStep]) -> None:
    sequence = partials_of(raw)
    s = store()
    expected: Counter[tuple[str, str, int]] = Counter()
    emitted: dict[tuple[str, str, int], int] = {}
    seen_watermarks = {(m, p): -math.inf for m in (POSTS, SIGNUPS) for p in range(N_SOURCES)}
    for metric, source, watermark, counts in sequence:
        for key, start, count in counts:
            expected[metric, key, start] += count
        seen_watermarks[metric, source] = max(seen_watermarks[metric, source], watermark)
        closed = s.apply(metric, source, N_SOURCES, watermark, counts)
        low = min(seen_watermarks[metric, p] for p in range(N_SOURCES))
        for record in closed:
            ident = (record.metric, record.key, record.window_start)
            assert ident not in emitted, f"{ident} emitted twice"
            assert record.metric == metric
            assert record.window_end == record.window_start + WINDOW
            # Close rule at the moment of emission: every source reported, min >= end + grace.
            assert record.window_end + GRACE <= low
            assert record.count > 0
            emitted[ident] = record.count
        assert closed == sorted(closed, key=lambda r: (r.window_start, r.key))
        # Nothing that may close is left open.
        assert s.watermark_seconds(metric) == low
        assert s.dropped_updates(metric) == 0
    # Flush: every source reports a watermark past everything.
    final = T0 + 100_000
    for metric in (POSTS, SIGNUPS):
        for source in range(N_SOURCES):
            for record in s.apply(metric, source, N_SOURCES, final, []):
                ident = (record.metric, record.key, record.window_start)
                assert ident not in emitted, f"{ident} emitted twice"
                emitted[ident] = record.count
        assert s.open_windows(metric) == 0
        assert s.dropped_updates(metric) == 0
    assert emitted == {ident: count for ident, count in expected.items() if count}


@settings(max_examples=100, deadline=None)
@given(raw_steps)
def test_open_windows_are_exactly_those_not_yet_closable(raw: list[RawStep]) -> None:
    sequence = partials_of(raw)
    s = store()
    opened: dict[str, set[int]] = {POSTS: set(), SIGNUPS: set()}
    for metric, source, watermark, counts in sequence:
        s.apply(metric, source, N_SOURCES, watermark, counts)
        opened[metric].update(start for _, start, _ in counts)
        low = s.watermark_seconds(metric)
        opened[metric] = {start for start in opened[metric] if close_of(start) > low}
        assert s.open_windows(metric) == len(opened[metric])
