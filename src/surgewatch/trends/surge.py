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
    Each key keeps a ring of per-hour count sums for the last 26 hours (fixed size, event-time hours
    ``window_start // 3600``). When the key has been tracked since the start of the same hour 24 h
    earlier, ``y`` = that hour's mean count per window (zero windows included; for ``relative``
    detectors times the metric's growth since yesterday) and the baseline is
    ``b = (1 - diurnal_weight) * m + diurnal_weight * y``; otherwise ``b = m``.

Score (stated formula; always finite)::

    z_var  = (x - b) / sqrt(max(v, b, variance_floor))
    z_tail = 3 * sqrt(x) * (1 - 1 / (9 x) - (max(b, mean_floor) / x) ** (1/3))     (x > b only)
    score  = min(z_var, z_tail) if x > b else z_var

    ``z_tail`` is the Poisson upper tail ``P(X >= x | mean)`` expressed as a normal z, by the
    Wilson-Hilferty form of ``P(X >= x) = P(chi2(2x) <= 2 mean)``: at low counts the Poisson tail is
    far heavier than a normal one (10 posts against a baseline of 1.8 is z 6.1 but p 1.4e-5, a daily
    event among thousands of tags), and this keeps ``z_start=6`` meaning "about one in a billion".
    ``z_var`` is the over-dispersion guard: when the key's own EWMA variance exceeds its mean, that
    variance decides. ``mean_floor`` stands in for a zero baseline.

Day-over-day score (when the key has a day of history)
    ``S`` = the previous hour's count plus this hour's so far; ``Y`` = the same span 24 h earlier,
    times the metric's own growth since then (``relative`` detectors, i.e. hashtags: a platform
    twice as busy as yesterday does not make every hashtag surge, only those whose share grew);
    scored as ``min(z_tail(S, Y), (S - Y) / sqrt(Y + (day_over_day_spread * Y)**2 + floor))``. The
    window's score is the larger of the two, the day-over-day one counting only while ``x > b`` (a
    one-minute burst stays in the span for two hours). This is what catches a slow ramp, which the EWMA
    follows too closely to ever find unusual.

Surge state machine (per key)
    *start*: not in a surge, past the detector's warm-up, ``score >= z_start``, and large enough:
    ``count >= min_count``, or (when the day-over-day score decided) ``S >= 10 * min_count``.
    *end*: in a surge and ``score < z_end`` for ``end_windows`` consecutive windows (any window at
    or above ``z_end`` resets the run), where the score is the one that started the surge (its
    ``basis``): a burst ends with its windows, a slow ramp with its hours. The day-over-day score may
    start a surge only while the window itself is above its baseline (right after a one-minute burst
    the span still holds it). Starts and ends strictly alternate per key. While a key is in
    a surge its mean learns ``surge_slowdown`` times more slowly and its variance not at all, so a
    sustained wave stays a surge for hours instead of becoming the new normal within a half-life.

Warm-up (``warmup_windows``)
    During the detector's first ``warmup_windows`` windows no start is emitted, and a key first seen
    then is seeded with its first count (``m = x, v = max(x, floor)``) instead of zero, because the
    detector did not see its history. After warm-up, a key seen for the first time has been absent,
    i.e. at zero, for as long as the detector has watched (its history starts with the detector's):
    it starts from ``m = v = 0``, and ``min_count`` with the Poisson tail decides whether its first
    burst is a surge (against ``mean_floor`` 0.5 a first window needs 11 or more).

Defaults and why
    ``window_seconds=60``; ``half_life_windows=30`` (30 min: follows a diurnal curve, ignores a
    minute); ``variance_floor=1.0``; ``mean_floor=0.5``; ``z_start=6.0`` (about one in a billion
    under the Poisson tail: thousands of keys times 1,440 windows a day stay clear of it);
    ``z_end=2.0``; ``end_windows=2``; ``min_count=10``; ``warmup_windows=10``;
    ``diurnal_weight=0.5``; ``surge_slowdown=16`` (half-life 8 h in a surge);
    ``day_over_day_spread=0.25`` (ordinary days differ by up to a quarter); ``idle_seconds=25 h``
    (a key idle that long has a fully stale hour ring and a mean decayed by 2**-50, so evicting it
    loses nothing); ``max_keys=20_000``.

Bounded memory
    :class:`SurgeDetector` tracks at most ``max_keys`` keys, in least-recently-observed order. Keys
    idle for more than ``idle_seconds`` of event time are evicted first; when a new key would exceed
    the cap, the least recently observed key is evicted (its baseline is the most decayed, so
    treating it as new later is the smallest error). Keys in a surge are observed every window (an
    absent one with count zero) and so are evicted last; if one is evicted anyway, an ``end`` is
    emitted for it with its last observation, keeping starts and ends paired. A key over
    ``MAX_KEY_CHARS`` is filed under a 128-bit digest, so each tracked key costs a bounded number of
    bytes however long it is; only while such a key is in a surge is its whole text kept too, so its
    ``end`` names it even in a window without it.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

SurgeState = Literal["start", "end"]
#: Which score decided: the window against its baseline, or the last hour against yesterday's.
ScoreBasis = Literal["window", "day_over_day"]

SECONDS_PER_HOUR = 3600
HOURS_PER_DAY = 24
# The ring holds the current (partial) hour and the 25 before it: hours h, h-1, h-24 and h-25
# never share a slot.
RING_HOURS = HOURS_PER_DAY + 2
_NO_HOUR = -(2**62)
_EMPTY_RING = bytes(8 * RING_HOURS)
#: The day-over-day span may start a surge when it holds this many times ``min_count``.
SLOW_MIN_COUNT_WINDOWS = 10
#: Longest key a :class:`SurgeDetector` files as written; a longer one (a hashtag may fill most of a
#: 64 KiB value) is filed under :func:`key_id`, so thousands of them cost kilobytes, not gigabytes.
MAX_KEY_CHARS = 256


@dataclass(frozen=True, slots=True)
class SurgeParams:
    """Parameters of the surge scorer (see the module docstring for the formulas and defaults)."""

    window_seconds: int = 60
    half_life_windows: float = 30.0
    variance_floor: float = 1.0
    mean_floor: float = 0.5
    z_start: float = 6.0
    z_end: float = 2.0
    end_windows: int = 2
    min_count: int = 10
    warmup_windows: int = 10
    diurnal_weight: float = 0.5
    surge_slowdown: float = 16.0
    day_over_day_spread: float = 0.25
    idle_seconds: int = 25 * SECONDS_PER_HOUR
    max_keys: int = 20_000

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError(f"window_seconds={self.window_seconds}: must be positive")
        if not self.half_life_windows > 0:
            raise ValueError(f"half_life_windows={self.half_life_windows}: must be positive")
        if not self.mean_floor > 0:
            raise ValueError(f"mean_floor={self.mean_floor}: must be positive")
        if not self.variance_floor > 0:
            raise ValueError(f"variance_floor={self.variance_floor}: must be positive")
        if not self.z_end < self.z_start:
            raise ValueError(f"z_end={self.z_end} must be below z_start={self.z_start}")
        if self.end_windows < 1 or self.warmup_windows < 0 or self.max_keys < 1:
            raise ValueError("end_windows and max_keys must be >= 1, warmup_windows >= 0")
        if not self.surge_slowdown >= 1.0 or not self.day_over_day_spread >= 0.0:
            raise ValueError("surge_slowdown must be >= 1 and day_over_day_spread >= 0")
        if not 0.0 <= self.diurnal_weight <= 1.0:
            raise ValueError(f"diurnal_weight={self.diurnal_weight}: must be in [0, 1]")

    @property
    def alpha(self) -> float:
        """EWMA weight of the newest window."""
        return 1.0 - math.pow(2.0, -1.0 / self.half_life_windows)

    @property
    def hourly(self) -> bool:
        """Windows fit in an hour, so per-hour history (diurnal, day-over-day) means something;
        with longer windows the scorer uses the EWMA baseline alone."""
        return self.window_seconds <= SECONDS_PER_HOUR

    @property
    def windows_per_hour(self) -> float:
        """Windows in one event-time hour (a window is filed under the hour it starts in)."""
        return SECONDS_PER_HOUR / self.window_seconds


@dataclass(frozen=True, slots=True)
class SurgeEvent:
    """A surge of one key starting or ending, at the window that decided it."""

    key: str
    state: SurgeState
    window_start: int
    count: int
    baseline: float
    score: float
    basis: ScoreBasis = "window"
    #: What the score judged, when it differs from ``count`` (posts over the per-account cap).
    trend_count: int | None = None

    def as_dict(self, metric: str) -> dict[str, object]:
        """The record value on the surges topic: the contract's fields, plus ``basis`` and
        ``trend_count`` (``count`` less the posts over the per-account cap)."""
        return {
            "metric": metric,
            "key": self.key,
            "state": self.state,
            "window_start": self.window_start,
            "count": self.count,
            "baseline": self.baseline,
            "score": self.score,
            "basis": self.basis,
            "trend_count": self.count if self.trend_count is None else self.trend_count,
        }


@dataclass(frozen=True, slots=True)
class Observation:
    """The score of one window of one key, and the surge transition it caused, if any."""

    window_start: int
    count: int
    baseline: float
    score: float
    transition: SurgeState | None
    basis: ScoreBasis = "window"


class ScorerState(NamedTuple):
    """Everything a :class:`KeyScorer` holds besides its parameters (see :meth:`KeyScorer.state`)."""

    first_window_start: int
    last_window_start: int | None
    mean: float
    variance: float
    newest_hour: int
    #: Per-hour count sums; slot ``h % RING_HOURS`` holds hour ``h``.
    hour_sums: tuple[float, ...]
    in_surge: bool
    surge_basis: ScoreBasis
    calm_windows: int
    last: Observation | None


def poisson_tail_z(count: float, mean: float) -> float:
    """``P(X >= count)`` for ``X ~ Poisson(mean)`` as a normal z (Wilson-Hilferty); ``count > 0``."""
    return 3.0 * math.sqrt(count) * (1.0 - 1.0 / (9.0 * count) - math.pow(mean / count, 1.0 / 3.0))


def key_id(key: str) -> str:
    """The key a :class:`SurgeDetector` files ``key`` under: itself, or past :data:`MAX_KEY_CHARS`
    ``…`` and 128 bits of BLAKE2b of it. A parsed hashtag never contains ``…`` (NFKC turns it into
    ``...``), so a digest is never the key of another tag as written."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16)
    return "…" + digest.hexdigest()


class KeyScorer:
    """Baseline, hour ring and surge state of one key."""

    __slots__ = (
        "_alpha",
        "_calm_windows",
        "_hour_sums",
        "_mean",
        "_newest_hour",
        "_surge_basis",
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
        # Slot ``h % RING_HOURS`` holds hour ``h`` for the RING_HOURS hours up to the newest.
        self._hour_sums = array("d", _EMPTY_RING)
        self._newest_hour = _NO_HOUR
        self.in_surge = False
        self._surge_basis: ScoreBasis = "window"
        self._calm_windows = 0
        self.last: Observation | None = None

    @property
    def mean(self) -> float:
        """EWMA mean count per window, as of the last observed window."""
        return self._mean

    def state(self) -> ScorerState:
        """The scorer's state; :meth:`from_state` continues from it exactly."""
        return ScorerState(
            self.first_window_start,
            self.last_window_start,
            self._mean,
            self._var,
            self._newest_hour,
            tuple(self._hour_sums),
            self.in_surge,
            self._surge_basis,
            self._calm_windows,
            self.last,
        )

    @classmethod
    def from_state(cls, params: SurgeParams, state: ScorerState) -> KeyScorer:
        """A scorer that continues from ``state`` (taken with the same ``params``)."""
        if len(state.hour_sums) != RING_HOURS:
            raise ValueError(f"{len(state.hour_sums)} hour sums, expected {RING_HOURS}")
        scorer = cls(params, state.first_window_start)
        scorer.last_window_start = state.last_window_start
        scorer._mean = state.mean
        scorer._var = state.variance
        scorer._newest_hour = state.newest_hour
        scorer._hour_sums = array("d", state.hour_sums)
        scorer.in_surge = state.in_surge
        scorer._surge_basis = state.surge_basis
        scorer._calm_windows = state.calm_windows
        scorer.last = state.last
        return scorer

    @property
    def variance(self) -> float:
        """EWMA variance of the count, as of the last observed window."""
        return self._var

    def _decay(self, zero_windows: int) -> None:
        r_k = (1.0 - self._alpha) ** zero_windows
        self._var = r_k * (self._var + self._mean * self._mean * (1.0 - r_k))
        self._mean = r_k * self._mean

    def baseline(self, window_start: int, volume_ratio: float = 1.0) -> float:
        """Expected count of ``window_start`` (call after gaps up to it have been applied).

        ``volume_ratio`` scales yesterday's level by the metric's growth since (hashtags).
        """
        weight = self.params.diurnal_weight if self.params.hourly else 0.0
        hour = window_start // SECONDS_PER_HOUR
        yesterday = hour - HOURS_PER_DAY
        if weight == 0.0 or self.first_window_start > yesterday * SECONDS_PER_HOUR:
            return self._mean
        total = self._hour_sum(yesterday)
        expected = volume_ratio * total / self.params.windows_per_hour
        return (1.0 - weight) * self._mean + weight * expected

    def _hour_sum(self, hour: int) -> float:
        newest = self._newest_hour
        if hour > newest or hour <= newest - RING_HOURS:
            return 0.0
        return self._hour_sums[hour % RING_HOURS]

    def _add_to_hour(self, hour: int, count: float) -> None:
        """Add to ``hour`` (never older than the newest hour held), clearing the hours skipped."""
        sums = self._hour_sums
        newest = self._newest_hour
        if hour > newest:
            if hour - newest >= RING_HOURS:
                sums[:] = array("d", _EMPTY_RING)
            else:
                for skipped in range(newest + 1, hour + 1):
                    sums[skipped % RING_HOURS] = 0.0
            self._newest_hour = hour
        sums[hour % RING_HOURS] += count

    def day_over_day_sums(self, window_start: int, count: float) -> tuple[float, float] | None:
        """``(S, Y)`` of :meth:`day_over_day_score`, or ``None`` without a day of history."""
        if not self.params.hourly:
            return None
        hour = window_start // SECONDS_PER_HOUR
        if self.first_window_start > (hour - HOURS_PER_DAY - 1) * SECONDS_PER_HOUR:
            return None
        elapsed = (
            (window_start % SECONDS_PER_HOUR) + self.params.window_seconds
        ) / SECONDS_PER_HOUR
        recent = self._hour_sum(hour - 1) + self._hour_sum(hour) + count
        yesterday = self._hour_sum(hour - HOURS_PER_DAY - 1) + elapsed * self._hour_sum(
            hour - HOURS_PER_DAY
        )
        return recent, yesterday

    def day_over_day_score(
        self, window_start: int, count: float, volume_ratio: float = 1.0
    ) -> tuple[float, float] | None:
        """The last hour or so against the same span yesterday (``None`` without that history).

        ``S`` = the previous hour's count plus this hour's so far (``count`` included); ``Y`` = the
        same span 24 h earlier. Scored like a window, with a relative spread for ordinary day-to-day
        variation: ``min(z_tail(S, Y), (S - Y) / sqrt(Y + (spread * Y)**2 + variance_floor))``.
        Returns ``(score, S)``.
        """
        params = self.params
        sums = self.day_over_day_sums(window_start, count)
        if sums is None:
            return None
        recent, yesterday = sums[0], sums[1] * volume_ratio
        spread = params.day_over_day_spread * yesterday
        score = (recent - yesterday) / math.sqrt(
            yesterday + spread * spread + params.variance_floor
        )
        if recent > yesterday:
            score = min(score, poisson_tail_z(recent, max(yesterday, params.mean_floor)))
        return score, recent

    def observe(
        self, window_start: int, count: int, *, can_start: bool = True, volume_ratio: float = 1.0
    ) -> Observation:
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
        base = self.baseline(window_start, volume_ratio)
        score = (x - base) / math.sqrt(max(self._var, base, params.variance_floor))
        if x > base:
            score = min(score, poisson_tail_z(x, max(base, params.mean_floor)))
        basis: ScoreBasis = "window"
        transition: SurgeState | None = None
        if not self.in_surge:
            # Large enough to count: this window alone, or the day-over-day span (ten windows'
            # worth). The span may start a surge only while this window is itself above its
            # baseline: right after a one-minute burst the span still holds it, the window does not.
            large = count >= params.min_count
            slow = self.day_over_day_score(window_start, x, volume_ratio) if x > base else None
            if slow is not None and slow[0] > score:
                score = slow[0]
                basis = "day_over_day"
                large = large or slow[1] >= SLOW_MIN_COUNT_WINDOWS * params.min_count
            if can_start and large and score >= params.z_start:
                self.in_surge = True
                self._surge_basis = basis
                self._calm_windows = 0
                transition = "start"
        else:
            # A surge is judged to its end by the score that started it: a burst ends with its
            # windows, a slow ramp with its hours (one quiet window does not end it).
            basis = self._surge_basis
            if basis == "day_over_day":
                slow = self.day_over_day_score(window_start, x, volume_ratio)
                if slow is not None:
                    score = slow[0]
            if score >= params.z_end:
                self._calm_windows = 0
            else:
                self._calm_windows += 1
                if self._calm_windows >= params.end_windows:
                    self.in_surge = False
                    transition = "end"

        d = x - self._mean
        if self.in_surge:
            # In a surge the mean learns slowly and the spread not at all, so a sustained wave
            # stays a surge for hours instead of becoming the new normal (or the new variance)
            # within one half-life.
            self._mean += self._alpha / params.surge_slowdown * d
        else:
            self._mean += self._alpha * d
            self._var = (1.0 - self._alpha) * (self._var + self._alpha * d * d)
        self._add_to_hour(window_start // SECONDS_PER_HOUR, x)
        self.last_window_start = window_start
        self.last = Observation(window_start, count, base, score, transition, basis)
        return self.last


class SurgeDetector:
    """Surge scorers of many keys of one metric, bounded in number and evicted in event time."""

    def __init__(self, params: SurgeParams | None = None, *, relative: bool = False) -> None:
        """Start with no keys; the first observed window begins the warm-up.

        ``relative``: judge the day-over-day score against the metric's own growth since yesterday
        (all keys together), so a platform twice as busy as yesterday does not make every hashtag
        a surge; only keys whose share grew do. For many keys of one kind (hashtags), not for a
        handful where one key can be most of the total (countries).
        """
        self.params = params or SurgeParams()
        self._volume: KeyScorer | None = None
        self._relative = relative
        #: By :func:`key_id`, as are ``_surging`` and ``evicted_log``.
        self._keys: OrderedDict[str, KeyScorer] = OrderedDict()
        self._surging: set[str] = set()
        #: The whole key of each surging key filed under a digest: its ``end`` may come in a window
        #: without it.
        self._names: dict[str, str] = {}
        self._first_window_start: int | None = None
        self._last_window_start: int | None = None
        self.evicted_keys = 0
        #: When a list, every evicted key is appended to it (a checkpoint deletes them).
        self.evicted_log: list[str] | None = None

    def __len__(self) -> int:
        """Number of tracked keys."""
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key_id(key) in self._keys

    def scorer(self, key: str) -> KeyScorer | None:
        """The state of ``key``, if tracked."""
        return self._keys.get(key_id(key))

    @property
    def surging(self) -> frozenset[str]:
        """Keys currently in a surge (whole, also those filed under a digest)."""
        names = self._names
        return frozenset(names.get(ident, ident) for ident in self._surging)

    @property
    def last_window_start(self) -> int | None:
        """The last window observed."""
        return self._last_window_start

    @property
    def first_window_start(self) -> int | None:
        """The window the warm-up is dated from."""
        return self._first_window_start

    @property
    def relative(self) -> bool:
        """Whether day-over-day scores are judged against the metric's growth."""
        return self._relative

    @property
    def volume_scorer(self) -> KeyScorer | None:
        """The metric's total per window (``relative`` detectors), scored like a key."""
        return self._volume

    def observed_since(self, window_start: int | None) -> list[tuple[str, KeyScorer]]:
        """The keys observed in windows after ``window_start`` (all with ``None``), in the
        least-recently-observed order the detector keeps; costs only the keys returned."""
        found: list[tuple[str, KeyScorer]] = []
        for key in reversed(self._keys):
            scorer = self._keys[key]
            seen = scorer.last_window_start
            if window_start is not None and (seen is None or seen <= window_start):
                break
            found.append((key, scorer))
        found.reverse()
        return found

    def restore(
        self,
        first_window_start: int | None,
        last_window_start: int | None,
        keys: Iterable[tuple[str, KeyScorer]],
        volume: KeyScorer | None = None,
        evicted_keys: int = 0,
        names: Mapping[str, str] | None = None,
    ) -> None:
        """Continue from persisted state; ``keys`` (by :func:`key_id`) in least-recently-observed
        order (the order eviction follows), as :meth:`observed_since` gives them; ``names``: the
        whole key of surging ones filed under a digest (see :meth:`whole_key`)."""
        self._first_window_start = first_window_start
        self._last_window_start = last_window_start
        self._keys = OrderedDict(keys)
        self._surging = {key for key, scorer in self._keys.items() if scorer.in_surge}
        self._names = {i: name for i, name in (names or {}).items() if i in self._surging}
        self._volume = volume
        self.evicted_keys = evicted_keys

    def whole_key(self, ident: str) -> str:
        """The key filed under ``ident`` when it is known in full (a surging one), else ``ident``."""
        return self._names.get(ident, ident)

    def set_origin(self, window_start: int) -> None:
        """Date the warm-up from ``window_start`` (the stream's first window) instead of from the
        first window this detector observes; only before the first observation."""
        if self._last_window_start is None:
            self._first_window_start = window_start

    def observe_through(self, window_start: int, counts: Mapping[str, int]) -> list[SurgeEvent]:
        """Like :meth:`observe_window`, first scoring the empty windows since the last observed one
        while keys are surging (at most ``end_windows`` of them: by then every surge has ended),
        so a surge whose key falls silent ends on time rather than with the next data."""
        events: list[SurgeEvent] = []
        last = self._last_window_start
        size = self.params.window_seconds
        if last is not None:
            empty = last + size
            limit = min(window_start, last + (self.params.end_windows + 1) * size)
            while self._surging and empty < limit:
                events.extend(self.observe_window(empty, {}))
                empty += size
        events.extend(self.observe_window(window_start, counts))
        return events

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
        ratio = self._volume_ratio(window_start, counts)
        long_ids = {key: key_id(key) for key in counts if len(key) > MAX_KEY_CHARS}
        present = counts.keys() | long_ids.values() if long_ids else counts.keys()
        names = self._names
        for ident in sorted(self._surging - present, key=lambda ident: names.get(ident, ident)):
            key = names.get(ident, ident)
            self._observe(key, ident, self._keys[ident], window_start, 0, warming, events, ratio)
        for key in sorted(counts):
            ident = long_ids[key] if long_ids and key in long_ids else key
            scorer = self._keys.get(ident)
            if scorer is None:
                # After warm-up a new key was absent (zero) all along: its history starts
                # with the detector's, so yesterday's same hour is known to be zero.
                scorer = (
                    KeyScorer(params, window_start, counts[key])
                    if warming
                    else KeyScorer(params, self._first_window_start)
                )
                self._keys[ident] = scorer
            self._observe(key, ident, scorer, window_start, counts[key], warming, events, ratio)
        # Evict only after the window is scored: the least recently observed keys go first, and a
        # key of this window can never be reset half-way through it.
        while len(self._keys) > params.max_keys:
            self._evict_oldest(events)
        return events

    def _volume_ratio(self, window_start: int, counts: Mapping[str, int]) -> float:
        """How much busier the metric is than at this time yesterday (at least 1)."""
        if not self._relative:
            return 1.0
        total = sum(counts.values())
        if self._volume is None:
            assert self._first_window_start is not None
            self._volume = KeyScorer(self.params, self._first_window_start)
        sums = self._volume.day_over_day_sums(window_start, float(total))
        self._volume.observe(window_start, total, can_start=False)
        if sums is None or sums[1] <= 0:
            return 1.0
        return max(1.0, sums[0] / sums[1])

    def _observe(
        self,
        key: str,
        ident: str,
        scorer: KeyScorer,
        window_start: int,
        count: int,
        warming: bool,
        events: list[SurgeEvent],
        volume_ratio: float = 1.0,
    ) -> None:
        """Score ``key`` (filed under ``ident``, its :func:`key_id`) in one window."""
        seen = scorer.observe(window_start, count, can_start=not warming, volume_ratio=volume_ratio)
        self._keys.move_to_end(ident)
        if seen.transition == "start":
            self._surging.add(ident)
        elif seen.transition == "end":
            self._surging.discard(ident)
            self._names.pop(ident, None)
        if ident != key and scorer.in_surge:
            self._names[ident] = key
        if seen.transition is not None:
            events.append(
                SurgeEvent(
                    key,
                    seen.transition,
                    window_start,
                    count,
                    seen.baseline,
                    seen.score,
                    seen.basis,
                )
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
            if self.evicted_log is not None:
                self.evicted_log.append(key)

    def _evict_oldest(self, events: list[SurgeEvent]) -> None:
        ident, scorer = self._keys.popitem(last=False)
        self.evicted_keys += 1
        if self.evicted_log is not None:
            self.evicted_log.append(ident)
        if ident in self._surging:
            self._surging.discard(ident)
            key = self._names.pop(ident, ident)
            seen = scorer.last
            assert seen is not None  # a surging key has been observed
            events.append(
                SurgeEvent(
                    key,
                    "end",
                    seen.window_start,
                    seen.count,
                    seen.baseline,
                    seen.score,
                    seen.basis,
                )
            )
