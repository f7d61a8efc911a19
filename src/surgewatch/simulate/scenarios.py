"""The simulator's scenarios: a registry of named, deterministic event streams and their parameters.

``rednote-2025`` replays the shape of January 2025: days before the US TikTok ban, about 700,000 US
users signed up to RedNote (Xiaohongshu) in two days and #tiktokrefugee went viral. ``baseline`` is the
same app on ordinary days, with no migration. Add a scenario by adding a :class:`Scenario` to
``_SCENARIOS``; the generator in :mod:`surgewatch.simulate.engine` needs no change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

from surgewatch.eventfile import EventRecord
from surgewatch.simulate.engine import generate
from surgewatch.simulate.model import Country, Scenario, SurgeTag, Wave

DEFAULT_SCENARIO: Final = "rednote-2025"
#: The day before the wave: one quiet day of baseline first.
DEFAULT_START: Final = datetime(2025, 1, 12, tzinfo=UTC)
DEFAULT_HOURS: Final = 72.0
DEFAULT_SEED: Final = 2025
DEFAULT_SCALE: Final = 1.0

#: Where the app's users are; offsets are standard time in January.
_COUNTRIES: Final = (
    Country("CN", 8, "zh", signup_share=0.36, post_share=0.40),
    Country("TW", 8, "zh", signup_share=0.12, post_share=0.12),
    Country("HK", 8, "zh", signup_share=0.07, post_share=0.07),
    Country("MY", 8, "zh", signup_share=0.08, post_share=0.07),
    Country("SG", 8, "en", signup_share=0.06, post_share=0.05),
    Country("JP", 9, "ja", signup_share=0.03, post_share=0.03),
    Country("KR", 9, "ko", signup_share=0.02, post_share=0.02),
    Country("TH", 7, "th", signup_share=0.02, post_share=0.02),
    Country("VN", 7, "vi", signup_share=0.02, post_share=0.02),
    Country("US", -5, "en", signup_share=0.06, post_share=0.05),
    Country("CA", -5, "en", signup_share=0.03, post_share=0.02),
    Country("GB", 0, "en", signup_share=0.03, post_share=0.03),
    Country("AU", 11, "en", signup_share=0.03, post_share=0.03),
    Country("DE", 1, "de", signup_share=0.01, post_share=0.01),
    Country("FR", 1, "fr", signup_share=0.01, post_share=0.01),
)

_REDNOTE_SURGE_TAGS: Final = (
    SurgeTag("tiktokrefugee", "TikTokRefugee", 0.40),
    SurgeTag("rednote", "RedNote", 0.27),
    SurgeTag("cattax", "CatTax", 0.15),
    SurgeTag("小红书", "小红书", 0.18),
)

_BASELINE: Final = Scenario(
    name="baseline",
    description="An ordinary few days of the app: diurnal rhythm, long-tail hashtags, no migration.",
    countries=_COUNTRIES,
    # A couple of signups and a few tens of posts a second at scale 1.
    signups_per_second=2.0,
    posts_per_second=25.0,
    users=500_000,
    diurnal_amplitude=0.6,
    hashtag_count_weights=(0.22, 0.30, 0.25, 0.14, 0.09),
)

_REDNOTE_2025: Final = replace(
    _BASELINE,
    name="rednote-2025",
    description=(
        "January 2025: a quiet day, then from 13 Jan ~15:00Z about 700,000 US users sign up within "
        "two days (scale 1) and #tiktokrefugee, #rednote, #cattax and #小红书 surge; then it decays."
    ),
    # The app's own name turns up now and then before anyone migrates.
    background_tags=(SurgeTag("小红书", "小红书", 0.7), SurgeTag("rednote", "RedNote", 0.3)),
    background_tag_share=0.001,
    wave=Wave(
        # 2025-01-13T15:00Z from the default start 2025-01-12T00:00Z.
        onset_offset_hours=39.0,
        ramp_hours=3.0,
        plateau_hours=24.0,
        decay_hours=6.0,
        # Onset to the end of 14 January (UTC): the "two days" of the reports.
        counted_hours=33.0,
        signups=700_000.0,
        country="US",
        utc_offset_hours=-5,
        lang="en",
        diurnal_amplitude=0.3,
        # Posts rise about four-fold over the 25/s baseline.
        posts_peak_per_second=75.0,
        posts_decay_hours=10.0,
        surge_tags=_REDNOTE_SURGE_TAGS,
        newcomer_surge_share=0.7,
        welcome_share=0.12,
        newcomer_text_tag_share=0.3,
        signup_sources=(("organic", 0.5), ("app_store", 0.45), ("referral", 0.05)),
        signup_platforms=(("ios", 0.6), ("android", 0.35), ("web", 0.05)),
    ),
)

_SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType(
    {scenario.name: scenario for scenario in (_REDNOTE_2025, _BASELINE)}
)

#: Scenario name -> one-line description, for ``--help`` and choices.
SCENARIOS: Final[Mapping[str, str]] = MappingProxyType(
    {name: scenario.description for name, scenario in _SCENARIOS.items()}
)


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return _SCENARIOS[name]
    except KeyError:
        known = ", ".join(sorted(_SCENARIOS))
        raise ValueError(f"unknown scenario {name!r}; choose one of: {known}") from None


def simulate(
    scenario: str,
    *,
    seed: int = DEFAULT_SEED,
    scale: float = DEFAULT_SCALE,
    start: datetime = DEFAULT_START,
    hours: float = DEFAULT_HOURS,
    on_progress: Callable[[float], None] | None = None,
) -> Iterator[EventRecord]:
    """Yield the events of ``scenario`` from ``start`` for ``hours``, in event-time order within ~5 s.

    Same arguments, same records. ``scale`` multiplies every rate (and the user population);
    ``on_progress`` is called with the event-time seconds covered so far, about once per simulated
    minute.
    """
    return generate(
        get_scenario(scenario),
        seed=seed,
        scale=scale,
        start=start,
        hours=hours,
        on_progress=on_progress,
    )


def wave_onset(start: datetime = DEFAULT_START, scenario: str = DEFAULT_SCENARIO) -> datetime:
    """When the scenario's wave starts for a run beginning at ``start`` (2025-01-13T15:00Z by default)."""
    onset = get_scenario(scenario).wave_onset(start)
    if onset is None:
        raise ValueError(f"scenario {scenario!r} has no migration wave")
    return onset


def wave_window(
    start: datetime = DEFAULT_START, scenario: str = DEFAULT_SCENARIO
) -> tuple[datetime, datetime]:
    """The span holding the wave's headline signups (700,000 at scale 1 for ``rednote-2025``)."""
    wave = get_scenario(scenario).wave
    if wave is None:
        raise ValueError(f"scenario {scenario!r} has no migration wave")
    return wave.counted_window(start)


def surge_hashtags(scenario: str = DEFAULT_SCENARIO) -> tuple[str, ...]:
    """The normalised (NFKC + casefolded) hashtags the scenario's wave makes surge."""
    return get_scenario(scenario).surge_hashtags()


def expected_wave_signups(scale: float, scenario: str = DEFAULT_SCENARIO) -> float:
    """Wave signups expected within :func:`wave_window` at ``scale``."""
    return get_scenario(scenario).expected_wave_signups(scale)
