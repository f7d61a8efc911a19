"""Surge scoring: how unusual each key's closed-window count is against its own event-time baseline.

Everything here depends only on the sequence of ``(window_start, count)`` fed in, never on the wall
clock, so a replay at any speed yields the same events.

Baseline (per key, updated once per window, after scoring it)
    An exponentially weighted mean ``m`` and variance ``v`` of the window counts, with
    ``alpha = 1 - 2 ** (-1 / half_life_windows)``::

        d = x - m;  m += alpha * d;  v = (1 - alpha) * (v + alpha * d * d)

    A window in which the key did not appear counts as zero. A gap of ``k`` zero windows is applied
    in O(1) with the closed form of ``k`` such updates (``r = 1 - alpha``)::

        m_k = r**k * m;   v_k = r**k * (v + m * m * (1 - r**k))

Diurnal blend
    Each key keeps a ring of per-hour count sums for the last 25 hours (fixed size, event-time hours
    ``window_start // 3600``). When the key has been tracked since the start of the same hour 24 h
    earlier, ``y`` = that hour's mean count per window (zero windows included) and the baseline is
    ``b = (1 - diurnal_weight) * m + diurnal_weight * y``; otherwise ``b = m``.

Score (stated formula; always finite)::

    score = (x - b) / sqrt(max(v, b, variance_floor))

    A Poisson z with the EWMA variance as an over-dispersion guard: for Poisson counts the variance
    is at least the mean, and the floor keeps a key with a zero baseline from dividing by zero.

Surge state machine (per key)
    *start*: not in a surge, ``count >= min_count`` and ``score >= z_start`` (and the detector is
    past its warm-up). *end*: in a surge and ``score < z_end`` for ``end_windows`` consecutive windows
    (any window at or above ``z_end`` resets the run). Starts and ends strictly alternate per key.

Warm-up (``warmup_windows``)
    During the detector's first ``warmup_windows`` windows no start is emitted, and a key first seen
    then is seeded with its first count (``m = x, v = max(x, floor)``) instead of zero, because the
    detector did not see its history. After warm-up, a key seen for the first time has been absent,
    i.e. at zero, for as long as the detector has watched: it starts from ``m = v = 0`` and only the
    absolute ``min_count`` (together with ``z_start``) decides whether its first burst is a surge.
    The same holds for a key returning from a long silence or from eviction: a normal small count is
    not a surge (below ``min_count``), a burst of ``min_count`` or more is.

Defaults and why
    ``window_seconds=60``; ``half_life_windows=30`` (30 min: follows a diurnal curve, ignores a
    minute); ``variance_floor=1.0``; ``z_start=6.0``; ``z_end=2.0``; ``end_windows=2``;
    ``min_count=10`` (lower than 20 so a 2 -> 20 per-window step, whose Poisson draws fall below 20
    about half the time, is still flagged within three windows; at a baseline of 1 a count of 10 is
    a ~1e-7 event, and z_start already needs 29+ at a baseline of 10); ``warmup_windows=10``;
    ``diurnal_weight=0.5``; ``idle_seconds=25 h`` (a key idle that long has a fully stale hour ring
    and a mean decayed by 2**-50, so evicting it loses nothing); ``max_keys=20_000``.

Bounded memory
    :class:`SurgeDetector` tracks at most ``max_keys`` keys, in least-recently-observed order. Keys
    idle for more than ``idle_seconds`` of event time are evicted first; when a new key would exceed
    the cap, the least recently observed key is evicted (its baseline is the most decayed, so
    treating it as new later is the smallest error). Keys in a surge are observed every window (an
    absent one with count zero) and so are evicted last; if one is evicted anyway, an ``end`` is
    emitted for it with its last observation, keeping starts and ends paired.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

SurgeState = Literal["start", "end"]

SECONDS_PER_HOUR = 3600
HOURS_PER_DAY = 24
# The ring holds the current (partial) hour and the 24 before it: hour h and h-24 never share a slot.
RING_HOURS = HOURS_PER_DAY + 1
_NO_HOUR = -(2**62)


@dataclass(frozen=True, slots=True)
class SurgeParams:
    """Parameters of the surge scorer (see the module docstring for the formulas and defaults)."""

    window_seconds: int = 60
    half_life_windows: float = 30.0
    variance_floor: float = 1.0
    z_start: float = 6.0
    z_end: float = 2.0
    end_windows: int = 2
    min_count: int = 10
    warmup_windows: int = 10
    diurnal_weight: float = 0.5
    idle_seconds: int = 25 * SECONDS_PER_HOUR
    max_keys: int = 20_000

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or SECONDS_PER_HOUR % self.window_seconds:
            raise ValueError(
                f"window_seconds={self.window_seconds}: must be positive and divide 3600"
            )
        if not self.half_life_windows > 0:
            raise ValueError(f"half_life_windows={self.half_life_windows}: must be positive")
        if not self.variance_floor > 0:
            raise ValueError(f"variance_floor={self.variance_floor}: must be positive")
        if not self.z_end < self.z_start:
            raise ValueError(f"z_end={self.z_end} must be below z_start={self.z_start}")
        if self.end_windows < 1 or self.warmup_windows < 0 or self.max_keys < 1:
            raise ValueError("end_windows and max_keys must be >= 1, warmup_windows >= 0")
        if not 0.0 <= self.diurnal_weight <= 1.0:
            raise ValueError(f"diurnal_weight={self.diurnal_weight}: must be in [0, 1]")

    @property
    def alpha(self) -> float:
        """EWMA weight of the newest window."""
        return 1.0 - math.pow(2.0, -1.0 / self.half_life_windows)

    @property
    def windows_per_hour(self) -> int:
        """Windows in one event-time hour."""
        return SECONDS_PER_HOUR // self.window_seconds


@dataclass(frozen=True, slots=True)
class SurgeEvent:
    """A surge of one key starting or ending, at the window that decided it."""

    key: str
    state: SurgeState
    window_start: int
    count: int
    baseline: float
    score: float

    def as_dict(self, metric: str) -> dict[str, object]:
        """The record value on the surges topic."""
        return {
            "metric": metric,
            "key": self.key,
            "state": self.state,
            "window_start": self.window_start,
            "count": self.count,
            "baseline": self.baseline,
            "score": self.score,
        }


@dataclass(frozen=True, slots=True)
class Observation:
    """The score of one window of one key, and the surge transition it caused, if any."""

    window_start: int
    count: int
    baseline: float
    score: float
    transition: SurgeState | None


class KeyScorer:
    """Baseline, hour ring and surge state of one key."""

    __slots__ = (
        "_alpha",
        "_calm_windows",
        "_hour_ids",
        "_hour_sums",
        "_mean",
        "_var",
        "first_window_start",
        "in_surge",
        "last",
        "last_window_start",
        "params",
    )

    def __init__(
        self, params: SurgeParams, first_window_start: int, seed_count: int | None = None
    ) -> None:
        """Track a key from ``first_window_start``; ``seed_count`` seeds the baseline (warm-up)."""
        self.params = params
        self._alpha = params.alpha
        self.first_window_start = first_window_start
        self.last_window_start: int | None = None
        self._mean = 0.0
        self._var = 0.0
        if seed_count is not None:
            self._mean = float(seed_count)
            self._var = max(float(seed_count), params.variance_floor)
        self._hour_sums = array("d", [0.0] * RING_HOURS)
        self._hour_ids = array("q", [_NO_HOUR] * RING_HOURS)
        self.in_surge = False
        self._calm_windows = 0
        self.last: Observation | None = None

    @property
    def mean(self) -> float:
        """EWMA mean count per window, as of the last observed window."""
        return self._mean

    @property
    def variance(self) -> float:
        """EWMA variance of the count, as of the last observed window."""
        return self._var

    def _decay(self, zero_windows: int) -> None:
        r_k = (1.0 - self._alpha) ** zero_windows
        self._var = r_k * (self._var + self._mean * self._mean * (1.0 - r_k))
        self._mean = r_k * self._mean

    def baseline(self, window_start: int) -> float:
        """Expected count of ``window_start`` (call after gaps up to it have been applied)."""
        weight = self.params.diurnal_weight
        hour = window_start // SECONDS_PER_HOUR
        yesterday = hour - HOURS_PER_DAY
        if weight == 0.0 or self.first_window_start > yesterday * SECONDS_PER_HOUR:
            return self._mean
        slot = yesterday % RING_HOURS
        total = self._hour_sums[slot] if self._hour_ids[slot] == yesterday else 0.0
        return (1.0 - weight) * self._mean + weight * total / self.params.windows_per_hour

    def observe(self, window_start: int, count: int, *, can_start: bool = True) -> Observation:
        """Score ``count`` for the window at ``window_start``, then fold it into the baseline."""
        params = self.params
        if count < 0:
            raise ValueError(f"count={count}: window counts cannot be negative")
        if window_start % params.window_seconds:
            raise ValueError(
                f"window_start={window_start} is not aligned to {params.window_seconds} s windows"
            )
        previous = self.last_window_start
        if previous is not None:
            if window_start <= previous:
                raise ValueError(
                    f"window_start={window_start} does not follow the last window {previous}"
                )
            gap = (window_start - previous) // params.window_seconds - 1
            if gap:
                self._decay(gap)
        elif window_start < self.first_window_start:
            raise ValueError(f"window_start={window_start} precedes the key's first window")
        x = float(count)
        base = self.baseline(window_start)
        score = (x - base) / math.sqrt(max(self._var, base, params.variance_floor))

        d = x - self._mean
        self._mean += self._alpha * d
        self._var = (1.0 - self._alpha) * (self._var + self._alpha * d * d)
        hour = window_start // SECONDS_PER_HOUR
        slot = hour % RING_HOURS
        if self._hour_ids[slot] != hour:
            self._hour_ids[slot] = hour
            self._hour_sums[slot] = 0.0
        self._hour_sums[slot] += x
        self.last_window_start = window_start

        transition: SurgeState | None = None
        if not self.in_surge:
            if can_start and count >= params.min_count and score >= params.z_start:
                self.in_surge = True
                self._calm_windows = 0
                transition = "start"
        elif score < params.z_end:
            self._calm_windows += 1
            if self._calm_windows >= params.end_windows:
                self.in_surge = False
                transition = "end"
        else:
            self._calm_windows = 0
        self.last = Observation(window_start, count, base, score, transition)
        return self.last


class SurgeDetector:
    """Surge scorers of many keys of one metric, bounded in number and evicted in event time."""

    def __init__(self, params: SurgeParams | None = None) -> None:
        """Start with no keys; the first observed window begins the warm-up."""
        self.params = params or SurgeParams()
        self._keys: OrderedDict[str, KeyScorer] = OrderedDict()
        self._surging: set[str] = set()
        self._first_window_start: int | None = None
        self._last_window_start: int | None = None
        self.evicted_keys = 0

    def __len__(self) -> int:
        """Number of tracked keys."""
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def scorer(self, key: str) -> KeyScorer | None:
        """The state of ``key``, if tracked."""
        return self._keys.get(key)

    @property
    def surging(self) -> frozenset[str]:
        """Keys currently in a surge."""
        return frozenset(self._surging)

    def observe_window(self, window_start: int, counts: Mapping[str, int]) -> list[SurgeEvent]:
        """Score one closed window (keys absent from ``counts`` had zero); return starts and ends.

        Keys are processed in sorted order, so the result does not depend on the mapping's order.
        """
        params = self.params
        last = self._last_window_start
        if last is not None and window_start <= last:
            raise ValueError(f"window_start={window_start} does not follow the last window {last}")
        if window_start % params.window_seconds:
            raise ValueError(
                f"window_start={window_start} is not aligned to {params.window_seconds} s windows"
            )
        if self._first_window_start is None:
            self._first_window_start = window_start
        self._last_window_start = window_start
        warming = (
            window_start - self._first_window_start
        ) // params.window_seconds < params.warmup_windows
        events: list[SurgeEvent] = []
        self._evict_idle(window_start)

        # Surging keys first: they must see their zero windows, and touching them keeps them
        # at the recent end of the eviction order.
        for key in sorted(self._surging - counts.keys()):
            self._observe(key, self._keys[key], window_start, 0, warming, events)
        for key in sorted(counts):
            scorer = self._keys.get(key)
            if scorer is None:
                scorer = KeyScorer(params, window_start, counts[key] if warming else None)
                self._keys[key] = scorer
                if len(self._keys) > params.max_keys:
                    self._evict_oldest(events)
            self._observe(key, scorer, window_start, counts[key], warming, events)
        return events

    def _observe(
        self,
        key: str,
        scorer: KeyScorer,
        window_start: int,
        count: int,
        warming: bool,
        events: list[SurgeEvent],
    ) -> None:
        seen = scorer.observe(window_start, count, can_start=not warming)
        self._keys.move_to_end(key)
        if seen.transition == "start":
            self._surging.add(key)
        elif seen.transition == "end":
            self._surging.discard(key)
        if seen.transition is not None:
            events.append(
                SurgeEvent(key, seen.transition, window_start, count, seen.baseline, seen.score)
            )

    def _evict_idle(self, window_start: int) -> None:
        oldest_kept = window_start - self.params.idle_seconds
        while self._keys:
            key, scorer = next(iter(self._keys.items()))
            seen = scorer.last_window_start
            if seen is None or seen >= oldest_kept or key in self._surging:
                break
            del self._keys[key]
            self.evicted_keys += 1

    def _evict_oldest(self, events: list[SurgeEvent]) -> None:
        key, scorer = self._keys.popitem(last=False)
        self.evicted_keys += 1
        if key in self._surging:
            self._surging.discard(key)
            seen = scorer.last
            assert seen is not None  # a surging key has been observed
            events.append(
                SurgeEvent(key, "end", seen.window_start, seen.count, seen.baseline, seen.score)
            )
