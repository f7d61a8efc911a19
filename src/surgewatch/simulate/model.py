"""What a simulated scenario is made of: countries, baseline rates, an optional migration wave, an
optional bot spike, noise.

Plain frozen data plus the rate shapes (diurnal rhythm, wave envelope) as pure functions of time, so a
new scenario is one more :class:`Scenario` value in :mod:`surgewatch.simulate.scenarios`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, NamedTuple

SECONDS_PER_HOUR: Final = 3600.0
SECONDS_PER_DAY: Final = 86_400.0
#: People post and sign up most in the evening: the diurnal sinusoid peaks at 21:00 local time.
EVENING_PEAK_LOCAL_HOUR: Final = 21.0


@dataclass(frozen=True, slots=True)
class Country:
    """A country of the simulated population; shares are relative weights within the scenario."""

    code: str
    utc_offset_hours: float
    lang: str
    signup_share: float
    post_share: float


@dataclass(frozen=True, slots=True)
class SurgeTag:
    """A hashtag a wave makes popular: its normalised form, a usual spelling and a relative weight."""

    tag: str
    display: str
    weight: float


@dataclass(frozen=True, slots=True)
class Wave:
    """A migration wave: new users of one country arriving over a couple of days, and their posts.

    The signup rate ramps up over ``ramp_hours`` from the onset (eased in and out, or at a constant
    rate: ``ramp_shape``), stays on a plateau (modulated by the country's own diurnal rhythm) until
    ``plateau_hours`` after the onset, then decays exponentially. Its peak is chosen so that ``signups`` of them (at scale 1) fall into the
    ``counted_hours`` after the onset.
    """

    onset_offset_hours: float
    ramp_hours: float
    plateau_hours: float
    decay_hours: float
    counted_hours: float
    signups: float
    country: str
    utc_offset_hours: float
    lang: str
    diurnal_amplitude: float
    #: Extra posts per second at the height of the wave (scale 1), written by the newcomers.
    posts_peak_per_second: float
    #: The newcomers keep posting for a while after the signups fade.
    posts_decay_hours: float
    surge_tags: tuple[SurgeTag, ...]
    #: Share of the newcomers' posts that carry one to three surge tags.
    newcomer_surge_share: float
    #: Share of the existing users' posts carrying a surge tag at the wave's height (welcomes, jokes).
    welcome_share: float
    #: Share of the newcomers' posts whose tags appear only inside ``text``.
    newcomer_text_tag_share: float
    signup_sources: tuple[tuple[str, float], ...]
    signup_platforms: tuple[tuple[str, float], ...]
    #: ``smoothstep`` eases in and out (a sudden story); ``linear`` climbs at a constant rate.
    ramp_shape: Literal["smoothstep", "linear"] = "smoothstep"
    #: What newcomers write, and existing users beside a surge tag; empty keeps the generator's own.
    newcomer_phrases: tuple[str, ...] = ()
    welcome_phrases: tuple[str, ...] = ()

    def onset(self, start: datetime) -> datetime:
        """When the wave begins for a scenario starting at ``start``."""
        return start + timedelta(hours=self.onset_offset_hours)

    def counted_window(self, start: datetime) -> tuple[datetime, datetime]:
        """The span ``[onset, onset + counted_hours)`` holding ``signups * scale`` wave signups."""
        onset = self.onset(start)
        return onset, onset + timedelta(hours=self.counted_hours)

    def shape(self, seconds_since_onset: float, decay_hours: float | None = None) -> float:
        """Envelope in [0, 1]: 0 before the onset, smooth ramp, plateau, exponential decay."""
        x = seconds_since_onset
        if x <= 0.0:
            return 0.0
        ramp = self.ramp_hours * SECONDS_PER_HOUR
        if x < ramp:
            u = x / ramp
            return u if self.ramp_shape == "linear" else u * u * (3.0 - 2.0 * u)
        plateau = self.plateau_hours * SECONDS_PER_HOUR
        if x < plateau:
            return 1.0
        decay = (self.decay_hours if decay_hours is None else decay_hours) * SECONDS_PER_HOUR
        return math.exp(-(x - plateau) / decay)

    def rhythm(self, epoch_seconds: float) -> float:
        """The wave country's diurnal multiplier at ``epoch_seconds``."""
        return diurnal(epoch_seconds, self.utc_offset_hours, self.diurnal_amplitude)

    def peak_signups_per_second(self, onset_epoch_seconds: float) -> float:
        """Plateau signup rate (scale 1) that puts ``signups`` into the counted window.

        Integrates the envelope minute by minute at minute midpoints, as the generator samples it.
        """
        minutes = round(self.counted_hours * 60)
        area_seconds = 0.0
        for minute in range(minutes):
            x = (minute + 0.5) * 60.0
            area_seconds += 60.0 * self.shape(x) * self.rhythm(onset_epoch_seconds + x)
        return self.signups / area_seconds


class BotSpikeMinute(NamedTuple):
    """A bot spike as it happens in one run: its minute, the account, the tag and how many posts."""

    start: datetime
    user_id: str
    tag: str
    posts: int

    @property
    def end(self) -> datetime:
        """The end of the spike's minute (exclusive)."""
        return self.start + timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class BotSpike:
    """One bot account posting the same hashtag over and over inside a single clock minute.

    The posts are evenly spaced over the minute and are not touched by noise; nobody else uses the tag.
    """

    offset_hours: float
    user_id: str
    tag: str
    #: Posts in the minute at scale 1; scaled, but never fewer than ``min_posts``.
    posts: int
    min_posts: int
    text: str
    lang: str = "en"

    def minute(self, start: datetime, scale: float) -> BotSpikeMinute:
        """The spike of a run from ``start`` at ``scale``: ``offset_hours`` later, floored to the minute."""
        at = require_utc(start) + timedelta(hours=self.offset_hours)
        posts = max(self.min_posts, round(self.posts * scale))
        return BotSpikeMinute(at.replace(second=0, microsecond=0), self.user_id, self.tag, posts)


@dataclass(frozen=True, slots=True)
class Noise:
    """The imperfections a real feed has, so that every path of the pipeline is exercised."""

    #: Share of events delivered up to ``jitter_max_seconds`` after later events.
    jitter_share: float = 0.03
    jitter_max_seconds: float = 5.0
    #: One event in ``late_every`` is ~``late_seconds`` older than its neighbours: late for a 60 s
    #: window with 30 s of grace whatever window it falls in.
    late_every: int = 20_000
    late_seconds: float = 600.0
    #: One event in ``malformed_every`` is broken in one of the ways the contract rejects.
    malformed_every: int = 10_000
    #: Share of ``ts`` fields written as ISO-8601 strings instead of epoch seconds.
    iso_ts_share: float = 0.02
    #: Shares of signups whose country is missing, lower case, or not an ISO code (-> ``unknown``).
    country_missing_share: float = 0.01
    country_lower_share: float = 0.02
    country_garbage_share: float = 0.005
    #: Share of ordinary posts whose tags appear only inside ``text`` (no ``hashtags`` field).
    text_tag_share: float = 0.15
    #: Share of ordinary posts with a tag spelled in upper case, title case or fullwidth.
    tag_variant_share: float = 0.05


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named, fully determined description of what the simulator produces (rates at scale 1)."""

    name: str
    description: str
    countries: tuple[Country, ...]
    signups_per_second: float
    posts_per_second: float
    #: Existing users who post (at scale 1); posting activity is skewed towards a few heavy users.
    users: int
    diurnal_amplitude: float
    #: Probabilities of 0, 1, 2, ... hashtags on an ordinary post.
    hashtag_count_weights: tuple[float, ...]
    #: Tags some people use anyway, before any wave (the app's own name), with their share of posts.
    background_tags: tuple[SurgeTag, ...] = ()
    background_tag_share: float = 0.0
    signup_sources: tuple[tuple[str, float], ...] = (
        ("organic", 0.6),
        ("app_store", 0.3),
        ("referral", 0.1),
    )
    signup_platforms: tuple[tuple[str, float], ...] = (
        ("ios", 0.5),
        ("android", 0.45),
        ("web", 0.05),
    )
    wave: Wave | None = None
    bot_spike: BotSpike | None = None
    noise: Noise = field(default_factory=Noise)

    def country_signups_per_second(self, code: str) -> float:
        """Baseline signups per second (scale 1) from the country ``code``, averaged over a day."""
        total = sum(c.signup_share for c in self.countries)
        share = sum(c.signup_share for c in self.countries if c.code == code)
        return self.signups_per_second * share / total

    def surge_hashtags(self) -> tuple[str, ...]:
        """The normalised hashtags the wave makes surge (empty without a wave)."""
        return () if self.wave is None else tuple(tag.tag for tag in self.wave.surge_tags)

    def wave_onset(self, start: datetime) -> datetime | None:
        """When the wave begins for a run starting at ``start``, or ``None`` without a wave."""
        return None if self.wave is None else self.wave.onset(start)

    def expected_wave_signups(self, scale: float) -> float:
        """Wave signups expected in the wave's counted window at ``scale``."""
        return 0.0 if self.wave is None else self.wave.signups * scale


def diurnal(epoch_seconds: float, utc_offset_hours: float, amplitude: float) -> float:
    """Daily rhythm multiplier averaging 1: ``1 + amplitude * cos`` peaking at 21:00 local time."""
    local_hour = (epoch_seconds / SECONDS_PER_HOUR + utc_offset_hours) % 24.0
    return 1.0 + amplitude * math.cos(2.0 * math.pi * (local_hour - EVENING_PEAK_LOCAL_HOUR) / 24.0)


def require_utc(start: datetime) -> datetime:
    """``start`` as an aware UTC datetime; a naive one is refused (event time is never local)."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError(f"start must be timezone-aware, got naive {start.isoformat()}")
    return start.astimezone(UTC)
