"""Surge scorer: quiet on steady traffic, quick on steps, paired starts and ends, bounded memory."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.trends.surge import KeyScorer, SurgeDetector, SurgeEvent, SurgeParams

WINDOW = 60
DAY_SECONDS = 86_400
WINDOWS_PER_DAY = DAY_SECONDS // WINDOW
T0 = 1_699_920_000  # a UTC midnight, so event-time hours line up with days
SEEDS = range(5)


def poisson(rng: random.Random, lam: float) -> int:
    """Knuth's Poisson sampler: exact, and fast enough for the rates used here (<= 1000)."""
    if lam <= 0:
        return 0
    if lam > 500:  # exp(-lam) would underflow precision; split into independent halves
        return poisson(rng, lam / 2) + poisson(rng, lam / 2)
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def run(
    detector: SurgeDetector,
    windows: Iterable[int],
    rates: Callable[[int], dict[str, float]],
    rng: random.Random,
) -> list[SurgeEvent]:
    """Feed Poisson counts for window indexes ``windows``; return every event."""
    events: list[SurgeEvent] = []
    for i in windows:
        counts = {key: poisson(rng, lam) for key, lam in rates(i).items()}
        window_start = T0 + WINDOW * i
        events += detector.observe_window(window_start, {k: c for k, c in counts.items() if c})
    return events


def diurnal(base: float, i: int) -> float:
    return base * (1.0 + 0.5 * math.sin(2 * math.pi * (i % WINDOWS_PER_DAY) / WINDOWS_PER_DAY))


def assert_alternating(events: Iterable[SurgeEvent]) -> None:
    expected: dict[str, str] = {}
    for event in events:
        assert event.state == expected.get(event.key, "start"), event
        expected[event.key] = "end" if event.state == "start" else "start"


@pytest.mark.parametrize("seed", SEEDS)
def test_steady_diurnal_poisson_for_three_days_never_surges(seed: int) -> None:
    # Measured over seeds 0-4: the largest score of any window is 3.6-5.1, below z_start = 6.
    rng = random.Random(seed)
    detector = SurgeDetector()
    events = run(
        detector,
        range(3 * WINDOWS_PER_DAY),
        lambda i: {f"rate{b}": diurnal(b, i) for b in (1, 10, 100)},
        rng,
    )
    assert [e for e in events if e.state == "start"] == []


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("base", [2, 100])
def test_tenfold_step_is_flagged_within_three_windows(seed: int, base: int) -> None:
    rng = random.Random(seed)
    detector = SurgeDetector()
    step_at = 180
    before = run(detector, range(step_at), lambda i: {"k": base}, rng)
    assert before == []
    after = run(detector, range(step_at, step_at + 3), lambda i: {"k": 10 * base}, rng)
    assert [e.state for e in after] == ["start"]
    assert after[0].key == "k"
    assert after[0].baseline == pytest.approx(base, rel=0.5)


def ramp_delay(seed: int, base: float, history_windows: int, weight: float) -> int | None:
    """Windows from the start of a 6-hour linear ramp to 5x until the first start (or None)."""
    rng = random.Random(seed)
    scorer = KeyScorer(SurgeParams(diurnal_weight=weight), T0, seed_count=round(base))
    ramp = 6 * 60
    for i in range(history_windows + ramp + 4 * 60):
        step = min(max(i - history_windows, 0), ramp)
        lam = base * (1.0 + 4.0 * step / ramp)
        seen = scorer.observe(T0 + WINDOW * i, poisson(rng, lam))
        if seen.transition == "start":
            return i - history_windows
    return None


@pytest.mark.parametrize("seed", SEEDS)
def test_slow_ramp_is_caught_only_against_yesterday(seed: int) -> None:
    # The 30-window EWMA follows a 6-hour ramp (its lag becomes variance), so without a day of
    # history the ramp is never a surge; with one steady day before it, the day-over-day score
    # (the last hour or so against the same span yesterday) flags it.
    # Measured (seeds 0-4): 180 windows after the ramp began (3 h, at 3x), at 100 and at 10 per
    # window, whatever the diurnal weight of the window score.
    assert ramp_delay(seed, 100, history_windows=120, weight=0.5) is None
    for base, weight in ((100, 0.5), (100, 1.0), (10, 0.5)):
        delay = ramp_delay(seed, base, history_windows=WINDOWS_PER_DAY + 120, weight=weight)
        assert delay is not None and 150 <= delay <= 210, (base, weight, delay)


@pytest.mark.parametrize("seed", SEEDS)
def test_one_window_spike_starts_once_and_ends_once(seed: int) -> None:
    rng = random.Random(seed)
    detector = SurgeDetector()
    spike_at = 120
    events = run(
        detector,
        range(spike_at + 60),
        lambda i: {"k": 500.0 if i == spike_at else 10.0},
        rng,
    )
    assert [(e.state, (e.window_start - T0) // WINDOW) for e in events] == [
        ("start", spike_at),
        ("end", spike_at + 2),
    ]
    assert events[0].count >= 400
    assert detector.surging == frozenset()


def test_gap_decays_baseline_in_closed_form() -> None:
    # No surge may start (in a surge the baseline learns more slowly, which a gap cannot know).
    params = SurgeParams(diurnal_weight=0.0, min_count=10**6)
    counts = [7, 0, 3, 12, 0, 5]
    looped, gapped = KeyScorer(params, T0), KeyScorer(params, T0)
    for i, count in enumerate(counts):
        looped.observe(T0 + WINDOW * i, count)
    for i, count in enumerate(counts):
        if count:
            gapped.observe(T0 + WINDOW * i, count)
    for i in range(len(counts), 5000):
        looped.observe(T0 + WINDOW * i, 0)
    gapped.observe(T0 + WINDOW * 4999, 0)
    assert gapped.mean == pytest.approx(looped.mean, rel=1e-9, abs=1e-300)
    assert gapped.variance == pytest.approx(looped.variance, rel=1e-9, abs=1e-300)


def test_key_silent_for_two_days_returns_quietly_unless_at_min_count() -> None:
    # Definition: a silence counts as zeros, so after two days the baseline is ~0 and the only guard
    # is min_count: a normal count below it is not a surge, a burst of min_count or more is.
    params = SurgeParams()
    detector = SurgeDetector(params)
    rng = random.Random(7)
    assert run(detector, range(180), lambda i: {"k": 8.0}, rng) == []
    back = 180 + 2 * WINDOWS_PER_DAY
    normal = detector.observe_window(T0 + WINDOW * back, {"k": 8})
    assert normal == []
    scorer = detector.scorer("k")
    assert scorer is not None and scorer.last is not None
    assert scorer.last.baseline < 1e-6  # decayed and yesterday's same hour was silent
    # Against a zero baseline (mean_floor 0.5), 8 is unusual but the Poisson tail keeps it below
    # z_start; it is below min_count too.
    assert 4.0 < scorer.last.score < params.z_start
    burst = detector.observe_window(T0 + WINDOW * (back + 60), {"k": 2 * params.min_count})
    assert [e.state for e in burst] == ["start"]


def test_new_key_after_warmup_is_a_surge_only_past_min_count_and_the_tail() -> None:
    params = SurgeParams()
    detector = SurgeDetector(params)
    detector.observe_window(T0, {"old": 500})  # seeded during warm-up: no surge
    assert detector.observe_window(T0 + WINDOW, {"old": 500}) == []
    for i in range(2, params.warmup_windows + 2):
        detector.observe_window(T0 + WINDOW * i, {"old": 500})
    late = T0 + WINDOW * (params.warmup_windows + 2)
    events = detector.observe_window(
        late, {"old": 500, "small": params.min_count - 1, "big": params.min_count + 2}
    )
    assert [(e.key, e.state) for e in events] == [("big", "start")]


def test_surging_key_that_falls_silent_ends() -> None:
    detector = SurgeDetector()
    rng = random.Random(3)
    run(detector, range(60), lambda i: {"k": 5.0}, rng)
    start = detector.observe_window(T0 + WINDOW * 60, {"k": 300})
    assert [e.state for e in start] == ["start"]
    ends = [detector.observe_window(T0 + WINDOW * i, {}) for i in (61, 62, 63)]
    assert [[e.state for e in window] for window in ends] == [[], ["end"], []]
    assert ends[1][0].count == 0


@given(
    st.lists(
        st.tuples(st.integers(1, 3000), st.integers(0, 10**12)),
        min_size=1,
        max_size=60,
    ),
    st.floats(0.0, 1.0),
)
@settings(max_examples=150, deadline=None)
def test_scores_are_finite_and_states_alternate(
    steps: list[tuple[int, int]], weight: float
) -> None:
    params = SurgeParams(diurnal_weight=weight, warmup_windows=0)
    scorer = KeyScorer(params, T0)
    window_start = T0
    in_surge = False
    for advance, count in steps:
        seen = scorer.observe(window_start, count)
        assert math.isfinite(seen.score) and math.isfinite(seen.baseline)
        assert seen.baseline >= 0.0
        if seen.transition is not None:
            assert seen.transition == ("end" if in_surge else "start")
            in_surge = not in_surge
        window_start += WINDOW * advance


@given(
    st.lists(
        st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 2000), max_size=8),
        min_size=1,
        max_size=80,
    )
)
@settings(max_examples=100, deadline=None)
def test_detector_events_alternate_per_key(windows: list[dict[str, int]]) -> None:
    detector = SurgeDetector(SurgeParams(warmup_windows=2, max_keys=4))
    events: list[SurgeEvent] = []
    for i, counts in enumerate(windows):
        events += detector.observe_window(T0 + WINDOW * i, counts)
        assert len(detector) <= 4
    assert_alternating(events)
    for key in detector.surging:
        assert [e.state for e in events if e.key == key][-1] == "start"


def test_tracked_keys_stay_under_the_cap_after_a_hundred_thousand_keys() -> None:
    params = SurgeParams(max_keys=1000)
    detector = SurgeDetector(params)
    for i in range(100):
        counts = {f"tag{i}-{j}": 1 + j % 30 for j in range(1000)}
        detector.observe_window(T0 + WINDOW * i, counts)
        assert len(detector) <= params.max_keys
    assert detector.evicted_keys == 100_000 - params.max_keys
    assert "tag99-999" in detector and "tag0-0" not in detector


def test_idle_keys_are_evicted_in_event_time() -> None:
    params = SurgeParams(idle_seconds=3600)
    detector = SurgeDetector(params)
    detector.observe_window(T0, {"a": 3, "b": 3})
    detector.observe_window(T0 + 1800, {"b": 3})
    detector.observe_window(T0 + 3660, {"c": 3})
    assert "a" not in detector and "b" in detector and "c" in detector


def test_same_counts_give_same_events_whatever_the_mapping_order() -> None:
    rng = random.Random(11)
    windows = [
        {f"k{j}": poisson(rng, 400.0 if i == 50 and j % 3 == 0 else 8.0) for j in range(20)}
        for i in range(80)
    ]
    first, second = SurgeDetector(), SurgeDetector()
    a = [e for i, w in enumerate(windows) for e in first.observe_window(T0 + WINDOW * i, w)]
    b = [
        e
        for i, w in enumerate(windows)
        for e in second.observe_window(T0 + WINDOW * i, dict(reversed(list(w.items()))))
    ]
    assert a == b and len(a) > 0


@pytest.mark.parametrize(
    ("window_start", "message"),
    [(T0, "does not follow"), (T0 + 30, "not aligned")],
)
def test_out_of_order_or_unaligned_windows_are_refused(window_start: int, message: str) -> None:
    detector = SurgeDetector()
    detector.observe_window(T0, {"a": 1})
    with pytest.raises(ValueError, match=message):
        detector.observe_window(window_start, {"a": 1})


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        SurgeParams(window_seconds=0)
    assert SurgeParams(window_seconds=90).windows_per_hour == 40.0
    with pytest.raises(ValueError, match="below z_start"):
        SurgeParams(z_start=2.0, z_end=3.0)
