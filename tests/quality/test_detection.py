"""Detection quality on the simulator's scenarios: how soon a wave is flagged, and nothing else is.

Each scenario is simulated and run through :func:`surgewatch.offline.compute` (the worker's pure
pipeline, in memory) once per module, at 10 % scale from the default start with the default seed
and settings. A window is ``window_seconds`` of event time; delays are counted in windows from the
one holding the wave's onset, so a surge flagged in the onset's own window has delay 0.

The bounds are the acceptance criteria of the detection issue. Measured with this code: rednote-2025
flags US signups and all four wave hashtags 2 windows after the onset; slow-ramp flags US signups
180 windows (3 h) into its 6-hour ramp; baseline and bot-spike flag nothing, and bot-spike with the
per-account cap lifted flags #freecrypto in the spike's own minute.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from surgewatch.config import load_settings
from surgewatch.eventfile import EventRecord
from surgewatch.offline import compute
from surgewatch.simulate import (
    BOT_SPIKE_SCENARIO,
    DEFAULT_SEED,
    bot_spike,
    simulate,
    surge_hashtags,
    wave_onset,
)
from surgewatch.trends.partition import Surge
from surgewatch.trends.surge import SurgeEvent

SCALE = 0.1
#: Far enough ahead of 2025 that no simulated ts is "in the future"; fixed, so runs repeat exactly.
NOW_SECONDS = 2_000_000_000.0
HASHTAGS = "hashtag_posts"
SIGNUPS = "signups"
REDNOTE = "rednote-2025"
SLOW_RAMP = "slow-ramp"
#: Two hours past rednote-2025's onset (39 h in).
REDNOTE_HOURS = 41.0
BASELINE_HOURS = 24.0
#: The quiet day and a half, the six-hour ramp and four hours of plateau.
SLOW_RAMP_HOURS = 40.0
#: An hour past the spike, 30 h in.
BOT_SPIKE_HOURS = 31.0
#: The slow-ramp US surge must be flagged before its ramp is over: 6 h of 60 s windows.
SLOW_RAMP_MAX_DELAY_WINDOWS = 360
#: Far above any account's posts in a window: the per-account cap never applies.
NO_USER_CAP = 10**9


@dataclass(frozen=True)
class Run:
    """The surges one scenario run flagged, and the window size they were counted in."""

    events: int
    surges: tuple[Surge, ...]
    window_seconds: int

    def starts(self, metric: str | None = None, key: str | None = None) -> list[SurgeEvent]:
        """Surge starts in event-time order, optionally of one metric and key."""
        return [
            surge.event
            for surge in self.surges
            if surge.event.state == "start"
            and (metric is None or surge.metric == metric)
            and (key is None or surge.event.key == key)
        ]

    def delay_windows(self, event: SurgeEvent, onset: datetime) -> int:
        """Windows from the one holding ``onset`` to the one that decided ``event``."""
        onset_window = int(onset.timestamp()) // self.window_seconds * self.window_seconds
        return (event.window_start - onset_window) // self.window_seconds


def _compute(records: list[EventRecord], **overrides: Any) -> Run:
    settings = load_settings(**overrides)
    result = compute(records, settings, now=lambda: NOW_SECONDS)
    surges = tuple(sorted(result.surges, key=lambda surge: surge.event.window_start))
    return Run(len(records), surges, settings.window_seconds)


def _simulate(scenario: str, hours: float) -> list[EventRecord]:
    return list(simulate(scenario, seed=DEFAULT_SEED, scale=SCALE, hours=hours))


def _describe(events: Iterable[SurgeEvent]) -> list[tuple[str, str, int, float]]:
    """What an assertion message needs: key, window, count and baseline of each event."""
    return [
        (
            event.key,
            datetime.fromtimestamp(event.window_start, UTC).isoformat(),
            event.count,
            round(event.baseline, 2),
        )
        for event in events
    ]


@pytest.fixture(scope="module")
def rednote() -> Run:
    """rednote-2025 to two hours past its onset (about 450,000 events)."""
    return _compute(_simulate(REDNOTE, REDNOTE_HOURS))


@pytest.fixture(scope="module")
def baseline() -> Run:
    """One ordinary day (about 230,000 events)."""
    return _compute(_simulate("baseline", BASELINE_HOURS))


@pytest.fixture(scope="module")
def slow_ramp() -> Run:
    """slow-ramp through its ramp and four hours of plateau (about 420,000 events)."""
    return _compute(_simulate(SLOW_RAMP, SLOW_RAMP_HOURS))


@pytest.fixture(scope="module")
def bot_spike_records() -> list[EventRecord]:
    """bot-spike to an hour past the spike (about 280,000 events)."""
    return _simulate(BOT_SPIKE_SCENARIO, BOT_SPIKE_HOURS)


@pytest.fixture(scope="module")
def bot_spike_capped(bot_spike_records: list[EventRecord]) -> Run:
    """bot-spike with the default per-account cap on trend counts."""
    return _compute(bot_spike_records)


@pytest.fixture(scope="module")
def bot_spike_uncapped(bot_spike_records: list[EventRecord]) -> Run:
    """The same events with the per-account cap lifted."""
    return _compute(bot_spike_records, trend_user_cap=NO_USER_CAP)


# -- rednote-2025 ----------------------------------------------------------------------------------


def test_rednote_us_signup_surge_starts_within_3_windows_of_the_onset(rednote: Run) -> None:
    onset = wave_onset(scenario=REDNOTE)
    starts = rednote.starts(SIGNUPS, "US")
    assert starts, "no US signup surge at all"
    assert 0 <= rednote.delay_windows(starts[0], onset) <= 3, _describe(starts)


def test_rednote_tiktokrefugee_surge_starts_within_5_windows_of_the_onset(rednote: Run) -> None:
    onset = wave_onset(scenario=REDNOTE)
    early = {
        event.key
        for event in rednote.starts(HASHTAGS)
        if 0 <= rednote.delay_windows(event, onset) <= 5
    }
    assert "tiktokrefugee" in early, _describe(rednote.starts(HASHTAGS))


def test_rednote_every_wave_hashtag_surge_starts_within_5_windows_of_the_onset(
    rednote: Run,
) -> None:
    onset = wave_onset(scenario=REDNOTE)
    for tag in surge_hashtags(REDNOTE):
        starts = rednote.starts(HASHTAGS, tag)
        assert starts, f"#{tag} never surged"
        assert 0 <= rednote.delay_windows(starts[0], onset) <= 5, _describe(starts)


def test_rednote_flags_nothing_before_the_onset(rednote: Run) -> None:
    onset = wave_onset(scenario=REDNOTE)
    early = [event for event in rednote.starts() if rednote.delay_windows(event, onset) < 0]
    assert early == [], _describe(early)


# -- baseline --------------------------------------------------------------------------------------


def test_baseline_day_flags_no_surge(baseline: Run) -> None:
    assert baseline.events > 200_000
    assert baseline.starts() == [], _describe(baseline.starts())


# -- slow-ramp -------------------------------------------------------------------------------------


def test_slow_ramp_us_signup_surge_is_flagged_during_the_ramp(slow_ramp: Run) -> None:
    onset = wave_onset(scenario=SLOW_RAMP)
    starts = slow_ramp.starts(SIGNUPS, "US")
    assert starts, "no US signup surge at all"
    delay = slow_ramp.delay_windows(starts[0], onset)
    assert 0 <= delay <= SLOW_RAMP_MAX_DELAY_WINDOWS, _describe(starts)


def test_slow_ramp_flags_nothing_before_the_onset(slow_ramp: Run) -> None:
    onset = wave_onset(scenario=SLOW_RAMP)
    early = [event for event in slow_ramp.starts() if slow_ramp.delay_windows(event, onset) < 0]
    assert early == [], _describe(early)


# -- bot-spike -------------------------------------------------------------------------------------


def test_bot_spike_flags_nothing_with_the_per_account_cap(bot_spike_capped: Run) -> None:
    tag = bot_spike(scale=SCALE).tag
    assert bot_spike_capped.starts(HASHTAGS, tag) == []
    assert bot_spike_capped.starts() == [], _describe(bot_spike_capped.starts())


def test_bot_spike_is_flagged_in_its_minute_without_the_cap(bot_spike_uncapped: Run) -> None:
    # The control: the same events do look like a surge once one account may count without limit,
    # so it is the cap, not a lack of data, that keeps the capped run quiet.
    spike = bot_spike(scale=SCALE)
    starts = bot_spike_uncapped.starts()
    assert [(event.key, event.window_start) for event in starts] == [
        (spike.tag, int(spike.start.timestamp()))
    ], _describe(starts)
    assert starts[0].count == spike.posts
