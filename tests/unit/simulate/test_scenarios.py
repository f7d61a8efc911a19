"""The simulator: deterministic bytes, the rednote-2025 wave where and as big as the story says, noise.

Events are classified with the pipeline's own parser, so "malformed" means rejected by the real rules
and every other event is countable.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from surgewatch.eventfile import EventRecord, encode_records, write_events
from surgewatch.events.model import Post, Rejected
from surgewatch.events.parse import parse_post, parse_signup
from surgewatch.events.timestamps import parse_ts
from surgewatch.simulate import (
    DEFAULT_START,
    SCENARIOS,
    expected_wave_signups,
    get_scenario,
    simulate,
    surge_hashtags,
    wave_onset,
    wave_window,
)
from surgewatch.simulate.engine import generate

SCALE = 0.01
HOURS = 72.0
SEED = 7
#: Far enough ahead of 2025 that no simulated ts is "in the future".
NOW_SECONDS = 2_000_000_000.0
HOUR = 3600.0


@dataclass
class Summary:
    """One pass over a simulated run, as the pipeline would see it."""

    events: int = 0
    by_stream: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    us_signups_by_hour: Counter[int] = field(default_factory=Counter)
    us_signups_in_wave_window: int = 0
    surge_posts_by_hour: Counter[int] = field(default_factory=Counter)
    surge_tags_seen: Counter[str] = field(default_factory=Counter)
    surge_spellings: set[str] = field(default_factory=set)
    countries: Counter[str] = field(default_factory=Counter)
    late: int = 0
    smallest_late_gap: float = float("inf")
    largest_disorder: float = 0.0
    iso_ts: int = 0
    key_mismatches: int = 0
    event_ids: set[str] = field(default_factory=set)
    duplicate_ids: int = 0
    first_ts: float = float("inf")
    last_ts: float = 0.0


def _summarise(records: Iterable[EventRecord] | None = None, **kwargs: object) -> Summary:
    summary = Summary()
    start = DEFAULT_START.timestamp()
    window_begin, window_end = (t.timestamp() for t in wave_window())
    surge = set(surge_hashtags())
    running_max = 0.0
    for record in records if records is not None else simulate("rednote-2025", **kwargs):  # type: ignore[arg-type]
        summary.events += 1
        summary.by_stream[record.stream] += 1
        raw = record.value_bytes()
        parsed = (parse_post if record.stream == "posts" else parse_signup)(raw, NOW_SECONDS)
        if isinstance(parsed, Rejected):
            summary.rejected[parsed.reason.value] += 1
            continue
        assert isinstance(record.value, dict)
        if isinstance(record.value["ts"], str):
            summary.iso_ts += 1
        if record.key != parsed.user_id:
            summary.key_mismatches += 1
        if parsed.event_id in summary.event_ids:
            summary.duplicate_ids += 1
        summary.event_ids.add(parsed.event_id)
        ts = parsed.ts
        summary.first_ts = min(summary.first_ts, ts)
        summary.last_ts = max(summary.last_ts, ts)
        if ts < running_max - 6.0:
            summary.late += 1
            summary.smallest_late_gap = min(summary.smallest_late_gap, running_max - ts)
        else:
            summary.largest_disorder = max(summary.largest_disorder, running_max - ts)
        running_max = max(running_max, ts)
        hour = int((ts - start) // HOUR)
        if isinstance(parsed, Post):
            found = surge.intersection(parsed.hashtags)
            if found:
                summary.surge_posts_by_hour[hour] += 1
                summary.surge_tags_seen.update(found)
                spellings = record.value.get("hashtags") or [record.value.get("text", "")]
                summary.surge_spellings.update(spellings)
        else:
            summary.countries[parsed.country] += 1
            if parsed.country == "US":
                summary.us_signups_by_hour[hour] += 1
                if window_begin <= ts < window_end:
                    summary.us_signups_in_wave_window += 1
    return summary


@pytest.fixture(scope="module")
def run() -> Summary:
    """rednote-2025 at 1 % scale over the default 72 hours (about 150,000 events)."""
    return _summarise(seed=SEED, scale=SCALE, hours=HOURS)


def _file_bytes(**kwargs: object) -> bytes:
    return encode_records(simulate("rednote-2025", **kwargs))  # type: ignore[arg-type]


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    args = {"scale": 0.002, "hours": 24.0}
    write_events(tmp_path / "a.jsonl.gz", simulate("rednote-2025", seed=1, **args))  # type: ignore[arg-type]
    write_events(tmp_path / "b.jsonl.gz", simulate("rednote-2025", seed=1, **args))  # type: ignore[arg-type]
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    first = _file_bytes(seed=1, **args)
    assert hashlib.sha256(first).digest() == hashlib.sha256(_file_bytes(seed=1, **args)).digest()
    assert first != _file_bytes(seed=2, **args)


def test_the_defaults_are_the_story_dates() -> None:
    assert datetime(2025, 1, 12, tzinfo=UTC) == DEFAULT_START
    assert wave_onset() == datetime(2025, 1, 13, 15, tzinfo=UTC)
    assert wave_window() == (wave_onset(), datetime(2025, 1, 15, tzinfo=UTC))
    assert set(surge_hashtags()) == {"tiktokrefugee", "cattax", "rednote", "小红书"}
    assert expected_wave_signups(1.0) == 700_000
    assert {"rednote-2025", "baseline"} <= set(SCENARIOS)


def test_the_wave_brings_about_700000_us_signups_at_scale_1(run: Summary) -> None:
    expected = 700_000 * SCALE
    assert expected * 0.9 <= run.us_signups_in_wave_window <= expected * 1.1


def test_us_signups_jump_at_the_onset(run: Summary) -> None:
    onset_hour = int((wave_onset() - DEFAULT_START) / timedelta(hours=1))
    before = [run.us_signups_by_hour[h] for h in range(onset_hour - 12, onset_hour)]
    after = [run.us_signups_by_hour[h] for h in range(onset_hour + 3, onset_hour + 15)]
    assert max(before) * 10 < min(after)
    assert sum(before) / len(before) * 30 < sum(after) / len(after)


def test_posts_rise_several_fold_in_the_wave(run: Summary) -> None:
    assert run.by_stream["posts"] > 10 * run.by_stream["signups"]
    # 25/s baseline and 75/s more at the height of the wave, at scale 1.
    assert 125_000 < run.events < 190_000


def test_surge_hashtags_trend_in_the_wave_and_are_rare_before(run: Summary) -> None:
    onset_hour = int((wave_onset() - DEFAULT_START) / timedelta(hours=1))
    before = sum(run.surge_posts_by_hour[h] for h in range(onset_hour))
    during = sum(run.surge_posts_by_hour[h] for h in range(onset_hour + 3, onset_hour + 27))
    assert before / onset_hour * 100 < during / 24
    assert set(run.surge_tags_seen) == set(surge_hashtags())
    spellings = " ".join(run.surge_spellings)
    for spelling in (
        "TikTokRefugee",
        "tiktokrefugee",
        "ＴｉｋＴｏｋＲｅｆｕｇｅｅ",
        "#RedNote",
        "#小红书#",
    ):
        assert spelling in spellings


def test_events_are_in_time_order_within_a_few_seconds_except_the_late_ones(run: Summary) -> None:
    assert 1.0 < run.largest_disorder <= 5.0
    # About one in 20,000 events, each ~10 minutes behind: late for 60 s windows with 30 s grace.
    assert 2 <= run.late <= 20
    assert run.smallest_late_gap > 60 + 30 + 60


def test_malformed_events_are_about_one_in_ten_thousand(run: Summary) -> None:
    assert 5 <= sum(run.rejected.values()) <= 30


def test_malformed_events_come_in_every_kind_the_contract_rejects() -> None:
    scenario = get_scenario("rednote-2025")
    noisy = replace(scenario, noise=replace(scenario.noise, malformed_every=50, late_every=100))
    records = generate(noisy, seed=1, scale=0.05, start=DEFAULT_START, hours=2.0)
    summary = _summarise(records)
    assert set(summary.rejected) == {
        "invalid_json",
        "not_an_object",
        "missing_field",
        "invalid_ts",
        "too_many_hashtags",
    }
    assert 0.01 < sum(summary.rejected.values()) / summary.events < 0.03
    assert 0.004 < summary.late / summary.events < 0.016


def test_events_have_unique_ids_keys_equal_to_users_and_some_iso_times(run: Summary) -> None:
    assert run.duplicate_ids == 0
    assert run.key_mismatches == 0
    assert 0.01 < run.iso_ts / run.events < 0.03


def test_the_run_covers_the_requested_hours(run: Summary) -> None:
    start = DEFAULT_START.timestamp()
    assert start <= run.first_ts < start + 60
    assert start + HOURS * HOUR - 60 < run.last_ts < start + HOURS * HOUR


def test_signup_countries_mix_asia_the_west_and_a_few_unknown(run: Summary) -> None:
    for code in ("CN", "TW", "HK", "MY", "SG", "US", "CA", "GB", "AU", "unknown"):
        assert run.countries[code] > 0, code
    assert run.countries["unknown"] < 0.03 * sum(run.countries.values())


def test_scale_multiplies_the_rates() -> None:
    small = sum(1 for _ in simulate("rednote-2025", seed=3, scale=0.002, hours=24))
    large = sum(1 for _ in simulate("rednote-2025", seed=3, scale=0.004, hours=24))
    assert 1.8 < large / small < 2.2


def test_baseline_has_no_wave() -> None:
    summary = _summarise(simulate("baseline", seed=1, scale=0.002, hours=HOURS))
    assert summary.us_signups_in_wave_window < 0.1 * expected_wave_signups(0.002)
    assert not summary.surge_tags_seen
    assert get_scenario("baseline").wave is None


def test_the_start_moves_the_whole_story() -> None:
    start = datetime(2025, 3, 1, 6, tzinfo=UTC)
    assert wave_onset(start) == start + timedelta(hours=39)
    first = next(iter(simulate("rednote-2025", seed=1, scale=0.01, start=start, hours=1)))
    assert isinstance(first.value, dict)
    ts = parse_ts(first.value["ts"], NOW_SECONDS)
    assert ts is not None and start.timestamp() <= ts < start.timestamp() + 60


def test_progress_reports_event_time_covered() -> None:
    seen: list[float] = []
    for _ in simulate("baseline", seed=1, scale=0.001, hours=0.5, on_progress=seen.append):
        pass
    assert seen == sorted(seen)
    assert seen[-1] == 1800.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "myspace-2006"}, "unknown scenario"),
        ({"scale": 0.0}, "scale must be a positive"),
        ({"hours": -1.0}, "hours must be a positive"),
        ({"start": datetime(2025, 1, 12)}, "timezone-aware"),
    ],
)
def test_bad_arguments_are_refused_up_front(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"scenario": "rednote-2025", "seed": 1, "scale": 0.01, "hours": 1.0}
    args.update(kwargs)
    scenario = args.pop("scenario")
    with pytest.raises(ValueError, match=message):
        simulate(scenario, **args)  # type: ignore[arg-type]


def test_bytes_do_not_depend_on_the_interpreter_hash_seed() -> None:
    code = (
        "import hashlib, sys; from surgewatch.eventfile import encode_records; "
        "from surgewatch.simulate import simulate; "
        "data = encode_records(simulate('rednote-2025', seed=5, scale=0.001, hours=48)); "
        "sys.stdout.write(hashlib.sha256(data).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in (1, 2)
    }
    assert len(digests) == 1
