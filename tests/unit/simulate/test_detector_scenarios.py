"""The detector scenarios: slow-ramp climbs linearly for six hours; bot-spike floods one tag in one minute.

Events are read with the pipeline's own parser, as in ``test_scenarios``: a surge tag counts however it
is spelled, and a malformed event is simply skipped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from surgewatch.eventfile import EventRecord, encode_records
from surgewatch.events.model import Post, Rejected
from surgewatch.events.parse import parse_post, parse_signup
from surgewatch.simulate import (
    BOT_SPIKE_SCENARIO,
    DEFAULT_START,
    SCENARIOS,
    bot_spike,
    expected_wave_signups,
    get_scenario,
    simulate,
    surge_hashtags,
    wave_onset,
    wave_window,
)
from surgewatch.simulate.engine import generate

SLOW_RAMP = "slow-ramp"
#: Far enough ahead of 2025 that no simulated ts is "in the future".
NOW_SECONDS = 2_000_000_000.0
HOUR = 3600.0
RAMP_SCALE = 0.05
#: The quiet day, the six-hour ramp and the four-hour plateau.
RAMP_HOURS = 40.0
SPIKE_SCALE = 0.01
#: Just past the spike, 30 h in.
SPIKE_HOURS = 30.5


def _hour(ts: float, start: datetime = DEFAULT_START) -> int:
    return int((ts - start.timestamp()) // HOUR)


@dataclass
class RampRun:
    """Per-hour US signups and posts carrying a slow-ramp surge tag."""

    us_signups_by_hour: Counter[int] = field(default_factory=Counter)
    surge_posts_by_hour: Counter[int] = field(default_factory=Counter)
    surge_tags_seen: Counter[str] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def ramp() -> RampRun:
    """slow-ramp at 5 % scale up to the end of the plateau (about 210,000 events)."""
    run = RampRun()
    surge = set(surge_hashtags(SLOW_RAMP))
    for record in simulate(SLOW_RAMP, seed=11, scale=RAMP_SCALE, hours=RAMP_HOURS):
        raw = record.value_bytes()
        parsed = (parse_post if record.stream == "posts" else parse_signup)(raw, NOW_SECONDS)
        if isinstance(parsed, Rejected):
            continue
        hour = _hour(parsed.ts)
        if isinstance(parsed, Post):
            found = surge.intersection(parsed.hashtags)
            if found:
                run.surge_posts_by_hour[hour] += 1
                run.surge_tags_seen.update(found)
        elif parsed.country == "US":
            run.us_signups_by_hour[hour] += 1
    return run


@pytest.fixture(scope="module")
def spike_records() -> list[EventRecord]:
    """bot-spike at 1 % scale from the default start to just past the spike."""
    return list(simulate(BOT_SPIKE_SCENARIO, seed=5, scale=SPIKE_SCALE, hours=SPIKE_HOURS))


def _tagged(records: list[EventRecord], tag: str) -> list[Post]:
    posts = []
    for record in records:
        if record.stream != "posts":
            continue
        parsed = parse_post(record.value_bytes(), NOW_SECONDS)
        if isinstance(parsed, Post) and tag in parsed.hashtags:
            posts.append(parsed)
    return posts


# -- slow-ramp -------------------------------------------------------------------------------------


def test_slow_ramp_is_registered_with_its_onset_tags_and_window() -> None:
    assert SLOW_RAMP in SCENARIOS
    onset = wave_onset(scenario=SLOW_RAMP)
    assert onset == datetime(2025, 1, 13, 6, tzinfo=UTC) == DEFAULT_START + timedelta(hours=30)
    assert surge_hashtags(SLOW_RAMP) == ("bluesky", "xexodus", "twittermigration")
    assert wave_window(scenario=SLOW_RAMP) == (onset, onset + timedelta(hours=10))
    start = datetime(2025, 3, 1, 6, 30, tzinfo=UTC)
    assert wave_onset(start, SLOW_RAMP) == start + timedelta(hours=30)


def test_slow_ramp_plateau_is_five_times_the_us_daily_mean_rate() -> None:
    scenario = get_scenario(SLOW_RAMP)
    wave = scenario.wave
    assert wave is not None
    us_per_second = scenario.country_signups_per_second("US")
    assert us_per_second == pytest.approx(2.0 * 0.06 / 0.95)
    peak = wave.peak_signups_per_second(wave_onset(scenario=SLOW_RAMP).timestamp())
    assert peak == pytest.approx(5 * us_per_second)
    # Half the ramp's six hours plus the four-hour plateau, at the peak rate.
    assert expected_wave_signups(1.0, SLOW_RAMP) == pytest.approx(peak * 7 * HOUR)


def test_slow_ramp_envelope_is_linear_then_flat_then_decays() -> None:
    wave = get_scenario(SLOW_RAMP).wave
    assert wave is not None
    levels = [wave.shape(hours * HOUR) for hours in (0.0, 1.5, 3.0, 4.5, 6.0, 9.9)]
    assert levels == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert 0.0 < wave.shape(13.0 * HOUR) < 0.5


def test_slow_ramp_us_signups_climb_over_six_hours_to_several_times_the_quiet_rate(
    ramp: RampRun,
) -> None:
    signups = ramp.us_signups_by_hour
    quiet = sum(signups[h] for h in range(24)) / 24
    # 455 US signups an hour at scale 1, on average over the day.
    assert 0.8 * 455 * RAMP_SCALE < quiet < 1.2 * 455 * RAMP_SCALE
    onset = 30
    ramp_hours = [signups[onset + k] for k in range(6)]
    assert ramp_hours[0] < ramp_hours[2] < ramp_hours[4]
    pairs = [ramp_hours[k] + ramp_hours[k + 1] for k in (0, 2, 4)]
    assert pairs[0] < pairs[1] < pairs[2]
    # The first hour adds a twelfth of the plateau: still within the day's ordinary range.
    assert ramp_hours[0] < 2 * max(signups[h] for h in range(24))
    plateau = sum(signups[h] for h in range(onset + 6, onset + 10)) / 4
    assert 4 * quiet < plateau < 7 * quiet


def test_slow_ramp_surge_tags_are_absent_before_the_onset_and_rise_with_the_ramp(
    ramp: RampRun,
) -> None:
    surge = ramp.surge_posts_by_hour
    assert sum(surge[h] for h in range(30)) == 0
    climb = [surge[30 + k] for k in range(6)]
    assert climb == sorted(climb)
    assert surge[30] > 0
    plateau = sum(surge[h] for h in range(36, 40)) / 4
    assert plateau > 3 * surge[30]
    assert set(ramp.surge_tags_seen) == set(surge_hashtags(SLOW_RAMP))


def test_slow_ramp_is_deterministic() -> None:
    args = {"seed": 3, "scale": 0.002, "hours": 36.0}
    first = encode_records(simulate(SLOW_RAMP, **args))  # type: ignore[arg-type]
    assert first == encode_records(simulate(SLOW_RAMP, **args))  # type: ignore[arg-type]
    assert first != encode_records(simulate(SLOW_RAMP, **{**args, "seed": 4}))  # type: ignore[arg-type]


# -- bot-spike -------------------------------------------------------------------------------------


def test_bot_spike_helper_names_the_minute_account_tag_and_count() -> None:
    assert BOT_SPIKE_SCENARIO in SCENARIOS
    spike = bot_spike()
    assert spike.start == datetime(2025, 1, 13, 6, tzinfo=UTC)
    assert spike.end == spike.start + timedelta(minutes=1)
    assert (spike.user_id, spike.tag, spike.posts) == ("bot-000001", "freecrypto", 3000)
    assert bot_spike(scale=0.2).posts == 600
    assert bot_spike(scale=SPIKE_SCALE).posts == 300
    # A start off the minute still gives a clock minute.
    odd = bot_spike(start=datetime(2025, 3, 1, 6, 0, 30, tzinfo=UTC))
    assert odd.start == datetime(2025, 3, 2, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="no bot spike"):
        bot_spike(SLOW_RAMP)


def test_bot_posts_fill_exactly_one_minute_from_one_account(
    spike_records: list[EventRecord],
) -> None:
    spike = bot_spike(scale=SPIKE_SCALE)
    tagged = _tagged(spike_records, spike.tag)
    assert len(tagged) == spike.posts == 300
    assert {post.user_id for post in tagged} == {spike.user_id}
    assert {post.event_id for post in tagged} == {f"b5-{n}" for n in range(1, 301)}
    assert all(spike.start.timestamp() <= post.ts < spike.end.timestamp() for post in tagged)
    by_minute = Counter(int(post.ts // 60) for post in tagged)
    assert list(by_minute.values()) == [spike.posts]


def test_bot_spike_is_the_baseline_plus_the_bot_posts(spike_records: list[EventRecord]) -> None:
    spike = bot_spike(scale=SPIKE_SCALE)
    others = [record for record in spike_records if record.key != spike.user_id]
    assert len(spike_records) - len(others) == spike.posts
    baseline = simulate("baseline", seed=5, scale=SPIKE_SCALE, hours=SPIKE_HOURS)
    # So nobody else ever writes the tag, and the background is exactly the baseline's.
    assert encode_records(others) == encode_records(baseline)


def test_bot_spike_keeps_event_time_order(spike_records: list[EventRecord]) -> None:
    running_max = 0.0
    late = 0
    for record in spike_records:
        raw = record.value_bytes()
        parsed = (parse_post if record.stream == "posts" else parse_signup)(raw, NOW_SECONDS)
        if isinstance(parsed, Rejected):
            continue
        if parsed.ts < running_max - 5.0:
            late += 1
        running_max = max(running_max, parsed.ts)
    # Only the deliberately late events (about one in 20,000) are more than 5 s behind.
    assert late <= len(spike_records) / 5_000


def test_bot_spike_at_scale_1_posts_3000_times_in_its_minute() -> None:
    # The spike moved six minutes in and the start off the minute, so scale 1 stays a short run.
    scenario = get_scenario(BOT_SPIKE_SCENARIO)
    assert scenario.bot_spike is not None
    early = replace(scenario, bot_spike=replace(scenario.bot_spike, offset_hours=0.1))
    start = datetime(2025, 1, 12, 0, 0, 30, tzinfo=UTC)
    records = list(generate(early, seed=9, scale=1.0, start=start, hours=0.2))
    spike = early.bot_spike
    assert spike is not None
    minute = spike.minute(start, 1.0)
    assert minute.start == datetime(2025, 1, 12, 0, 6, tzinfo=UTC)
    tagged = _tagged(records, minute.tag)
    assert len(tagged) == minute.posts == 3000
    assert {post.user_id for post in tagged} == {minute.user_id}
    assert min(post.ts for post in tagged) == minute.start.timestamp()
    assert max(post.ts for post in tagged) < minute.end.timestamp()
    # Evenly spaced, and in order although the minute straddles two simulated minutes.
    times = [post.ts for post in tagged]
    assert times == sorted(times)


def test_bot_spike_is_deterministic(spike_records: list[EventRecord]) -> None:
    again = simulate(BOT_SPIKE_SCENARIO, seed=5, scale=SPIKE_SCALE, hours=SPIKE_HOURS)
    assert encode_records(again) == encode_records(spike_records)
