"""The simulator's scenarios: a registry of named, deterministic event streams and their parameters.

``rednote-2025`` replays the shape of January 2025: days before the US TikTok ban, about 700,000 US
users signed up to RedNote (Xiaohongshu) in two days and #tiktokrefugee went viral. ``baseline`` is the
same app on ordinary days, with no migration. ``slow-ramp`` and ``bot-spike`` are the baseline plus
what a trust-and-safety or growth team tests a surge detector against: a migration that builds up
linearly over six hours (how late is it caught?) and one bot flooding a hashtag for one minute (is it
told apart from a trend?). Add a scenario by adding a :class:`Scenario` to ``_SCENARIOS``; the
generator in :mod:`surgewatch.simulate.engine` needs no change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

from surgewatch.eventfile import EventRecord
from surgewatch.simulate.engine import generate
from surgewatch.simulate.model import (
    SECONDS_PER_HOUR,
    BotSpike,
    BotSpikeMinute,
    Country,
    Scenario,
    SurgeTag,
    Wave,
    require_utc,
)

DEFAULT_SCENARIO: Final = "rednote-2025"
BOT_SPIKE_SCENARIO: Final = "bot-spike"
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
        # The story broke at once: the signup rate climbs to its plateau within six minutes.
        ramp_hours=0.1,
        ramp_shape="linear",
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

#: slow-ramp: US signups climb linearly for six hours to five times the US's usual (daily mean) rate,
#: hold it for four hours, then decay. Onset 30 h after the start: a full quiet day of history first.
_SLOW_RAMP_ONSET_HOURS: Final = 30.0
_SLOW_RAMP_RAMP_HOURS: Final = 6.0
_SLOW_RAMP_PLATEAU_HOURS: Final = 4.0
_SLOW_RAMP_MULTIPLE: Final = 5.0
_SLOW_RAMP_PEAK_PER_SECOND: Final = _SLOW_RAMP_MULTIPLE * _BASELINE.country_signups_per_second("US")

_SLOW_RAMP: Final = replace(
    _BASELINE,
    name="slow-ramp",
    description=(
        "The baseline, then 30 h in US signups climb linearly for 6 h to 5x their usual rate, hold "
        "for 4 h and decay, with #bluesky, #xexodus and #twittermigration rising alongside."
    ),
    wave=Wave(
        onset_offset_hours=_SLOW_RAMP_ONSET_HOURS,
        ramp_hours=_SLOW_RAMP_RAMP_HOURS,
        plateau_hours=_SLOW_RAMP_RAMP_HOURS + _SLOW_RAMP_PLATEAU_HOURS,
        decay_hours=3.0,
        # Ramp and plateau. A linear ramp holds half of a plateau's signups for as long; no diurnal
        # modulation (amplitude 0), so the plateau rate is exactly the peak.
        counted_hours=_SLOW_RAMP_RAMP_HOURS + _SLOW_RAMP_PLATEAU_HOURS,
        signups=_SLOW_RAMP_PEAK_PER_SECOND
        * (_SLOW_RAMP_RAMP_HOURS / 2 + _SLOW_RAMP_PLATEAU_HOURS)
        * SECONDS_PER_HOUR,
        country="US",
        utc_offset_hours=-5,
        lang="en",
        diurnal_amplitude=0.0,
        # About a third more posts than the 25/s baseline at the plateau.
        posts_peak_per_second=8.0,
        posts_decay_hours=6.0,
        surge_tags=(
            SurgeTag("bluesky", "Bluesky", 0.5),
            SurgeTag("xexodus", "XExodus", 0.3),
            SurgeTag("twittermigration", "TwitterMigration", 0.2),
        ),
        newcomer_surge_share=0.6,
        welcome_share=0.02,
        newcomer_text_tag_share=0.3,
        # Word of mouth more than the app store: people follow the people they followed.
        signup_sources=(("organic", 0.55), ("referral", 0.25), ("app_store", 0.2)),
        signup_platforms=(("ios", 0.5), ("android", 0.3), ("web", 0.2)),
        ramp_shape="linear",
        newcomer_phrases=(
            "just moved over",
            "hello from the US",
            "leaving X behind",
            "first post here",
            "who else just got here?",
            "starter pack please",
            "is everyone here now?",
        ),
        welcome_phrases=("welcome newcomers", "欢迎新朋友", "so many new faces today", "交个朋友"),
    ),
)

_BOT_SPIKE: Final = replace(
    _BASELINE,
    name=BOT_SPIKE_SCENARIO,
    description=(
        "The baseline, plus 30 h in one bot account posting #freecrypto 3,000 times in a single "
        "minute (scale 1, at least 300); nobody else uses the tag."
    ),
    bot_spike=BotSpike(
        offset_hours=30.0,
        user_id="bot-000001",
        tag="freecrypto",
        posts=3000,
        # Far above the tag's absence at any scale.
        min_posts=300,
        text="FREE crypto airdrop 🚀 claim yours now, link in bio",
    ),
)

_SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType(
    {scenario.name: scenario for scenario in (_REDNOTE_2025, _BASELINE, _SLOW_RAMP, _BOT_SPIKE)}
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


def bot_spike(
    scenario: str = BOT_SPIKE_SCENARIO,
    *,
    start: datetime = DEFAULT_START,
    scale: float = DEFAULT_SCALE,
) -> BotSpikeMinute:
    """The scenario's bot spike in a run from ``start`` at ``scale``: minute, account, tag, posts.

    For ``bot-spike`` from the default start: 2025-01-13T06:00Z, ``bot-000001``, ``freecrypto`` and
    ``max(300, round(3000 * scale))`` posts, all inside ``[start, start + 1 min)``.
    """
    spike = get_scenario(scenario).bot_spike
    if spike is None:
        raise ValueError(f"scenario {scenario!r} has no bot spike")
    return spike.minute(require_utc(start), scale)
