"""The simulator's generator: turns a :class:`Scenario` and a seed into a deterministic event stream.

Time advances a simulated minute at a time. Within a minute every rate is constant (diurnal rhythm and
wave envelope are sampled at the minute's midpoint); the number of events of each kind is a Poisson
draw and their times are uniform within the minute, then sorted. Noise (jitter, late and malformed
events, ISO timestamps, odd country codes) is applied to each sorted minute. A bot spike's posts are
evenly spaced, draw nothing random and are merged in after the noise, so a scenario with one is its
base scenario plus those posts. Only
``random.Random(seed)`` drives choices: no hashing, no set iteration order, no wall clock, so the same
arguments give the same records (byte for byte on the same Python and C maths library).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from bisect import bisect, bisect_left
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from itertools import accumulate
from operator import itemgetter
from typing import Any, Final

import orjson

from surgewatch.eventfile import EventRecord
from surgewatch.simulate.model import BotSpike, Scenario, SurgeTag, Wave, diurnal, require_utc
from surgewatch.simulate.vocabulary import (
    fullwidth,
    spelling_variants,
    vocabulary,
    zipf_cumulative_weights,
)

POSTS: Final = "posts"
SIGNUPS: Final = "signups"
_MINUTE_MS: Final = 60_000
#: Above this mean a Poisson count is drawn from its normal approximation (error < 1 %).
_POISSON_NORMAL_ABOVE: Final = 30.0
_POST_COUNTRY_SHARE: Final = 0.9
_POST_TEXT_SHARE: Final = 0.9
_GARBAGE_COUNTRIES: Final = ("usa", "USA", "U.S.", "uk", "ZZ", "")
_BAD_TS: Final = ("2025-13-45T99:00:00Z", "yesterday", "not-a-time", "2025-01-13 15:00")
_TOO_MANY_HASHTAGS: Final = 31
_MALFORMED_KINDS: Final = 5

_PHRASES: Final[dict[str, tuple[str, ...]]] = {
    "zh": (
        "今天的分享",
        "记录一下",
        "好开心",
        "周末愉快",
        "新人报到",
        "求推荐",
        "太好看了",
        "打卡",
    ),
    "en": ("today's share", "weekend vibes", "so good", "new here", "any tips?", "love this"),
    "ja": ("今日の記録", "週末", "おすすめ"),
    "ko": ("오늘의 기록", "주말", "추천"),
    "th": ("วันนี้", "แนะนำ"),
    "vi": ("hôm nay", "gợi ý"),
    "de": ("heute", "Wochenende"),
    "fr": ("aujourd'hui", "week-end"),
}
_NEWCOMER_PHRASES: Final = (
    "loving this app",
    "hello from the US",
    "just got here from tiktok",
    "cat tax 🐱",
    "what do I do here",
    "teach me some chinese",
    "hi from ohio",
    "first post!",
    "is this the new tiktok",
)
_WELCOME_PHRASES: Final = ("欢迎美国朋友", "welcome TikTok refugees", "欢迎新朋友", "交个朋友")


def generate(
    scenario: Scenario,
    *,
    seed: int,
    scale: float,
    start: datetime,
    hours: float,
    on_progress: Callable[[float], None] | None = None,
) -> Iterator[EventRecord]:
    """The records of ``scenario`` at ``scale`` for ``hours`` from ``start``; arguments checked eagerly."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    if not (math.isfinite(hours) and hours > 0):
        raise ValueError(f"hours must be a positive number, got {hours}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return _Generator(scenario, seed, scale, require_utc(start), hours).run(on_progress)


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    cum = list(accumulate(weight / total for weight in weights))
    cum[-1] = 1.0
    return cum


def iso_from_ms(ms: int) -> str:
    """``2025-01-13T15:00:01.250Z`` for an epoch time in milliseconds."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _threshold_1024(share: float) -> int:
    """A share as a threshold for a 10-bit random field (resolution 0.1 %)."""
    return round(min(max(share, 0.0), 1.0) * 1024)


class _Generator:
    """One simulation run; its state is the random generator, id counters and the newcomers so far."""

    def __init__(
        self, scenario: Scenario, seed: int, scale: float, start: datetime, hours: float
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.scale = scale
        self.rng = random.Random(seed)
        self.start_ms = round(start.timestamp() * 1000)
        self.end_ms = self.start_ms + round(hours * 3_600_000)
        countries = scenario.countries
        signup_total = sum(c.signup_share for c in countries)
        post_total = sum(c.post_share for c in countries)
        self.signup_shares = [c.signup_share / signup_total for c in countries]
        self.post_shares = [c.post_share / post_total for c in countries]
        self.populations = [
            max(20, round(scenario.users * share * scale)) for share in self.post_shares
        ]
        excluded = tuple(t.tag for t in scenario.background_tags)
        if scenario.wave is not None:
            excluded += tuple(t.tag for t in scenario.wave.surge_tags)
        if scenario.bot_spike is not None:
            excluded += (scenario.bot_spike.tag,)
        self.vocab = vocabulary(exclude=excluded)
        zipf = zipf_cumulative_weights(len(self.vocab))
        # Normalised so that a bare random() indexes it.
        self.vocab_cum = [w / zipf[-1] for w in zipf]
        self.count_cum = _cumulative(scenario.hashtag_count_weights)
        self.onset_s = self.start_ms / 1000.0
        self.wave_peak_per_second = 0.0
        if scenario.wave is not None:
            self.onset_s += scenario.wave.onset_offset_hours * 3600.0
            self.wave_peak_per_second = scenario.wave.peak_signups_per_second(self.onset_s)
        noise = scenario.noise
        self.malformed_share = 1.0 / noise.malformed_every
        self.late_share = 1.0 / noise.late_every
        self.noise_share = self.malformed_share + self.late_share
        self.noise_share += noise.iso_ts_share + noise.jitter_share
        self.newcomers: list[str] = []
        self.users_created = 0
        self.posts_created = 0
        self.until_noise = self.geometric_gap()
        # Times of the bot spike's posts: evenly spaced over its minute, no random draw.
        self.bot_posts_ms: list[int] = []
        if scenario.bot_spike is not None:
            spike = scenario.bot_spike.minute(start, scale)
            first_ms = round(spike.start.timestamp() * 1000)
            self.bot_posts_ms = [
                first_ms + index * _MINUTE_MS // spike.posts for index in range(spike.posts)
            ]

    # -- small random helpers --------------------------------------------------------------------

    def poisson(self, mean: float) -> int:
        """A Poisson count: exact (Knuth) for small means, normal approximation above 30."""
        if mean <= 0.0:
            return 0
        if mean > _POISSON_NORMAL_ABOVE:
            return max(0, int(mean + math.sqrt(mean) * self.rng.gauss(0.0, 1.0) + 0.5))
        rand = self.rng.random
        limit = math.exp(-mean)
        count = 0
        product = rand()
        while product > limit:
            count += 1
            product *= rand()
        return count

    def geometric_gap(self) -> int:
        """How many clean events pass before the next noisy one."""
        if self.noise_share <= 0.0:
            return 1 << 62
        if self.noise_share >= 1.0:
            return 0
        return int(math.log(1.0 - self.rng.random()) / math.log(1.0 - self.noise_share))

    def tag_picker(self, tags: Sequence[SurgeTag]) -> Callable[[], str]:
        """A function drawing one of ``tags`` by weight, in one of its spellings."""
        rand = self.rng.random
        cum = _cumulative([t.weight for t in tags])
        # Most people write a tag the usual two ways; a quarter use upper case, title case, fullwidth.
        spellings = [
            (t.tag, t.display) * 3
            + tuple(v for v in spelling_variants(t.tag, t.display) if v not in (t.tag, t.display))
            for t in tags
        ]

        def pick() -> str:
            options = spellings[bisect(cum, rand())]
            return options[int(rand() * len(options))]

        return pick

    def variant(self, tag: str) -> str:
        """Another spelling of an ordinary tag: upper or title case, fullwidth, or with a ``#``."""
        choice = int(self.rng.random() * 4)
        if choice == 0:
            return tag.upper() if tag.isascii() else "#" + tag
        if choice == 1:
            return tag.title()
        if choice == 2:
            return fullwidth(tag)
        return "#" + tag

    @staticmethod
    def in_text(tag: str) -> str:
        """How a tag is written inside text: ``#tag``, or ``#话题#`` for CJK."""
        bare = tag.lstrip("#＃")
        if bare.isascii():
            return "#" + bare
        return "#" + bare + "#"

    def new_user(self) -> tuple[str, str]:
        """A fresh ``(user_id, event_id)`` for a signup; existing users are ``u<n>``."""
        self.users_created += 1
        return f"n{self.seed}-{self.users_created}", f"s{self.seed}-{self.users_created}"

    # -- the run ---------------------------------------------------------------------------------

    def run(self, on_progress: Callable[[float], None] | None) -> Iterator[EventRecord]:
        minute_ms = self.start_ms
        while minute_ms < self.end_ms:
            length_ms = min(_MINUTE_MS, self.end_ms - minute_ms)
            events: list[tuple[int, EventRecord]] = []
            joined = self.minute(events, minute_ms, length_ms)
            events.sort(key=_by_time)
            self.apply_noise(events)
            if self.bot_posts_ms:
                events = self.merge_bot_posts(events, minute_ms, length_ms)
            for _, record in events:
                yield record
            self.newcomers.extend(joined)
            minute_ms += length_ms
            if on_progress is not None:
                on_progress((minute_ms - self.start_ms) / 1000.0)

    def minute(self, events: _Events, minute_ms: int, length_ms: int) -> list[str]:
        """Append one minute's events (unsorted) to ``events``; return the newcomers it brings."""
        wave = self.scenario.wave
        mid_s = (minute_ms + length_ms / 2) / 1000.0
        self.baseline_signups(events, minute_ms, length_ms, mid_s)
        joined: list[str] = []
        if wave is None:
            surge_pick = None
            if self.scenario.background_tags:
                surge_pick = self.tag_picker(self.scenario.background_tags)
            self.ordinary_posts(events, minute_ms, length_ms, mid_s, surge_pick, 0.0)
            return joined
        wave_x = mid_s - self.onset_s
        level = wave.shape(wave_x)
        if level <= 0.0:
            surge_pick = self.tag_picker(self.scenario.background_tags or wave.surge_tags)
            self.ordinary_posts(events, minute_ms, length_ms, mid_s, surge_pick, 0.0)
            return joined
        rate = self.wave_peak_per_second * self.scale * level * wave.rhythm(mid_s)
        joined = self.wave_signups(events, minute_ms, length_ms, wave, rate)
        surge_pick = self.tag_picker(wave.surge_tags)
        self.ordinary_posts(events, minute_ms, length_ms, mid_s, surge_pick, level)
        if self.newcomers:
            posts_level = wave.shape(wave_x, wave.posts_decay_hours)
            rate = wave.posts_peak_per_second * self.scale * posts_level * wave.rhythm(mid_s)
            self.newcomer_posts(events, minute_ms, length_ms, wave, rate, surge_pick)
        return joined

    def baseline_signups(
        self, events: _Events, minute_ms: int, length_ms: int, mid_s: float
    ) -> None:
        scenario = self.scenario
        rand = self.rng.random
        seconds = length_ms / 1000.0
        sources = [name for name, _ in scenario.signup_sources]
        sources_cum = _cumulative([w for _, w in scenario.signup_sources])
        platforms = [name for name, _ in scenario.signup_platforms]
        platforms_cum = _cumulative([w for _, w in scenario.signup_platforms])
        for index, country in enumerate(scenario.countries):
            rate = scenario.signups_per_second * self.scale * self.signup_shares[index]
            rate *= diurnal(mid_s, country.utc_offset_hours, scenario.diurnal_amplitude)
            for _ in range(self.poisson(rate * seconds)):
                ms = minute_ms + int(rand() * length_ms)
                source = sources[bisect(sources_cum, rand())]
                platform = platforms[bisect(platforms_cum, rand())]
                events.append((ms, self.signup(ms, country.code, country.lang, source, platform)))

    def wave_signups(
        self, events: _Events, minute_ms: int, length_ms: int, wave: Wave, rate: float
    ) -> list[str]:
        rand = self.rng.random
        sources = [name for name, _ in wave.signup_sources]
        sources_cum = _cumulative([w for _, w in wave.signup_sources])
        platforms = [name for name, _ in wave.signup_platforms]
        platforms_cum = _cumulative([w for _, w in wave.signup_platforms])
        joined: list[str] = []
        for _ in range(self.poisson(rate * length_ms / 1000.0)):
            ms = minute_ms + int(rand() * length_ms)
            source = sources[bisect(sources_cum, rand())]
            platform = platforms[bisect(platforms_cum, rand())]
            record = self.signup(ms, wave.country, wave.lang, source, platform)
            events.append((ms, record))
            assert record.key is not None
            joined.append(record.key)
        return joined

    def signup(self, ms: int, code: str, lang: str, source: str, platform: str) -> EventRecord:
        """A signup record of a brand-new user, with the occasional odd country code."""
        rand = self.rng.random
        noise = self.scenario.noise
        user_id, event_id = self.new_user()
        value: dict[str, Any] = {"event_id": event_id, "user_id": user_id, "ts": ms / 1000}
        r = rand()
        if r < noise.country_missing_share:
            pass
        elif r < noise.country_missing_share + noise.country_lower_share:
            value["country"] = code.lower()
        elif (
            r
            < noise.country_missing_share + noise.country_lower_share + noise.country_garbage_share
        ):
            value["country"] = _GARBAGE_COUNTRIES[int(rand() * len(_GARBAGE_COUNTRIES))]
        else:
            value["country"] = code
        value["source"] = source
        value["platform"] = platform
        value["lang"] = lang
        return EventRecord(SIGNUPS, user_id, value)

    def ordinary_posts(
        self,
        events: _Events,
        minute_ms: int,
        length_ms: int,
        mid_s: float,
        surge_pick: Callable[[], str] | None,
        wave_level: float,
    ) -> None:
        """Posts of the existing population; the hot loop of the simulator, hence the local names."""
        scenario = self.scenario
        noise = scenario.noise
        rand = self.rng.random
        getrandbits = self.rng.getrandbits
        append = events.append
        vocab = self.vocab
        vocab_cum = self.vocab_cum
        count_cum = self.count_cum
        in_text = self.in_text
        record = EventRecord
        # Four yes/no decisions and a phrase index come from one 48-bit draw: 10 bits each.
        text_tags_below = _threshold_1024(noise.text_tag_share)
        text_below = _threshold_1024(_POST_TEXT_SHARE)
        country_below = _threshold_1024(_POST_COUNTRY_SHARE)
        variant_below = _threshold_1024(noise.tag_variant_share)
        surge_share = scenario.background_tag_share
        welcome_phrases: tuple[str, ...] = _WELCOME_PHRASES
        if scenario.wave is not None:
            surge_share += scenario.wave.welcome_share * wave_level
            welcome_phrases = scenario.wave.welcome_phrases or _WELCOME_PHRASES
        if surge_pick is None:
            surge_share = 0.0
        n_countries = len(scenario.countries)
        prefix = f"p{self.seed}-"
        seq = self.posts_created
        seconds = length_ms / 1000.0
        for index, country in enumerate(scenario.countries):
            rate = scenario.posts_per_second * self.scale * self.post_shares[index]
            rate *= diurnal(mid_s, country.utc_offset_hours, scenario.diurnal_amplitude)
            population = self.populations[index]
            code = country.code
            lang = country.lang
            phrases = _PHRASES.get(lang, _PHRASES["en"])
            for _ in range(self.poisson(rate * seconds)):
                ms = minute_ms + int(rand() * length_ms)
                r = rand()
                # Heavy users post most: index ~ population * U**2 puts half the posts on a quarter.
                user_id = f"u{int(population * r * r) * n_countries + index}"
                tags: list[str] = []
                for _ in range(bisect(count_cum, rand())):
                    tags.append(vocab[bisect(vocab_cum, rand())])
                bits = getrandbits(48)
                if tags and (bits >> 30) & 1023 < variant_below:
                    tags[0] = self.variant(tags[0])
                if surge_share and rand() < surge_share:
                    assert surge_pick is not None
                    tags.append(surge_pick())
                    phrase = welcome_phrases[(bits >> 40) % len(welcome_phrases)]
                else:
                    phrase = phrases[(bits >> 40) % len(phrases)]
                seq += 1
                event_id = prefix + str(seq)
                value: dict[str, Any]
                if tags and bits & 1023 < text_tags_below:
                    text = phrase + " " + " ".join([in_text(tag) for tag in tags])
                    value = {
                        "event_id": event_id,
                        "user_id": user_id,
                        "ts": ms / 1000,
                        "text": text,
                    }
                elif (bits >> 10) & 1023 < text_below:
                    value = {
                        "event_id": event_id,
                        "user_id": user_id,
                        "ts": ms / 1000,
                        "text": phrase,
                        "hashtags": tags,
                    }
                else:
                    value = {
                        "event_id": event_id,
                        "user_id": user_id,
                        "ts": ms / 1000,
                        "hashtags": tags,
                    }
                value["lang"] = lang
                if (bits >> 20) & 1023 < country_below:
                    value["country"] = code
                append((ms, record(POSTS, user_id, value)))
        self.posts_created = seq

    def newcomer_posts(
        self,
        events: _Events,
        minute_ms: int,
        length_ms: int,
        wave: Wave,
        rate: float,
        surge_pick: Callable[[], str],
    ) -> None:
        """Posts of the wave's newcomers: mostly English, most carrying one to three surge tags."""
        rand = self.rng.random
        vocab = self.vocab
        vocab_cum = self.vocab_cum
        newcomers = self.newcomers
        phrases = wave.newcomer_phrases or _NEWCOMER_PHRASES
        prefix = f"p{self.seed}-"
        for _ in range(self.poisson(rate * length_ms / 1000.0)):
            ms = minute_ms + int(rand() * length_ms)
            user_id = newcomers[int(rand() * len(newcomers))]
            tags: list[str] = []
            if rand() < wave.newcomer_surge_share:
                for _ in range(1 + int(rand() * 3)):
                    tag = surge_pick()
                    if tag not in tags:
                        tags.append(tag)
            for _ in range(int(rand() * 3)):
                tags.append(vocab[bisect(vocab_cum, rand())])
            self.posts_created += 1
            value: dict[str, Any] = {
                "event_id": prefix + str(self.posts_created),
                "user_id": user_id,
                "ts": ms / 1000,
            }
            phrase = phrases[int(rand() * len(phrases))]
            if tags and rand() < wave.newcomer_text_tag_share:
                value["text"] = phrase + " " + " ".join([self.in_text(tag) for tag in tags])
            else:
                value["text"] = phrase
                value["hashtags"] = tags
            value["lang"] = wave.lang
            if rand() < _POST_COUNTRY_SHARE:
                value["country"] = wave.country
            events.append((ms, EventRecord(POSTS, user_id, value)))

    def merge_bot_posts(self, events: _Events, minute_ms: int, length_ms: int) -> _Events:
        """``events`` with the bot spike's posts falling in this minute merged in by time."""
        spike = self.scenario.bot_spike
        assert spike is not None
        times = self.bot_posts_ms
        first = bisect_left(times, minute_ms)
        last = bisect_left(times, minute_ms + length_ms)
        if first == last:
            return events
        bot = [
            (times[index], self.bot_post(spike, index, times[index]))
            for index in range(first, last)
        ]
        return list(heapq.merge(events, bot, key=_by_time))

    def bot_post(self, spike: BotSpike, index: int, ms: int) -> EventRecord:
        """The bot's ``index``-th post: same account, same text, same tag; ids of their own."""
        value: dict[str, Any] = {
            "event_id": f"b{self.seed}-{index + 1}",
            "user_id": spike.user_id,
            "ts": ms / 1000,
            "text": spike.text,
            "hashtags": [spike.tag],
            "lang": spike.lang,
        }
        return EventRecord(POSTS, spike.user_id, value)

    # -- noise -----------------------------------------------------------------------------------

    def apply_noise(self, events: _Events) -> None:
        """Jitter, lateness, ISO timestamps and breakage on a minute's sorted events, in place.

        Noisy events are spaced by geometric gaps (carried across minutes), so clean events cost nothing.
        """
        noise = self.scenario.noise
        rand = self.rng.random
        position = self.until_noise
        count = len(events)
        while position < count:
            ms, record = events[position]
            value = record.value
            assert isinstance(value, dict)
            r = rand() * self.noise_share
            if r < self.malformed_share:
                events[position] = (
                    ms,
                    EventRecord(record.stream, record.key, self.malformed(record)),
                )
            elif r < self.malformed_share + self.late_share:
                # Late for any window: ~10 minutes older than its neighbours (but not before the start).
                late_ms = noise.late_seconds * 1000.0 * (0.9 + 0.2 * rand())
                value["ts"] = max(self.start_ms, ms - int(late_ms)) / 1000
            elif r < self.malformed_share + self.late_share + noise.iso_ts_share:
                value["ts"] = iso_from_ms(ms)
            else:
                # Delivered after events that happened up to jitter_max_seconds later.
                jitter_ms = int(rand() * noise.jitter_max_seconds * 1000.0)
                value["ts"] = max(self.start_ms, ms - jitter_ms) / 1000
            position += 1 + self.geometric_gap()
        self.until_noise = position - count

    def malformed(self, record: EventRecord) -> dict[str, Any] | str:
        """The record's value broken in one of the ways the contract rejects."""
        value = record.value
        assert isinstance(value, dict)
        rand = self.rng.random
        kind = int(rand() * _MALFORMED_KINDS)
        if kind == 4 and record.stream != POSTS:
            kind = 0
        if kind == 0:  # invalid_json: the message was cut short
            text = orjson.dumps(value).decode()
            return text[: max(1, len(text) // 2)]
        if kind == 1:  # not_an_object: a JSON array
            return orjson.dumps([value]).decode()
        if kind == 2:  # missing_field
            del value["user_id"]
            return value
        if kind == 3:  # invalid_ts
            value["ts"] = _BAD_TS[int(rand() * len(_BAD_TS))]
            return value
        # too_many_hashtags
        value.pop("text", None)
        value["hashtags"] = list(self.vocab[:_TOO_MANY_HASHTAGS])
        return value


_Events = list[tuple[int, EventRecord]]
_by_time = itemgetter(0)
