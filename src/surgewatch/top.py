"""``surgewatch top``: a live terminal view of the trends and pipeline health read from workers' ``/metrics``.

The core does no I/O: :func:`merge` turns the scrapes of every worker into one :class:`Snapshot`,
:class:`TopState` keeps what one scrape cannot tell (signups of earlier windows for the sparklines,
event rates from counter deltas), and :func:`render` draws a state. :func:`run_top` is the thin loop
that polls the workers and shows the frames.
"""

from __future__ import annotations

import http.client
import math
import time
import unicodedata
import urllib.error
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from surgewatch.config import Settings
from surgewatch.scrape import scrape

__all__ = [
    "HISTORY_WINDOWS",
    "SPARK",
    "STREAMS",
    "Scrape",
    "Snapshot",
    "StreamHealth",
    "TopError",
    "TopState",
    "WindowSignups",
    "default_metrics_url",
    "fetch",
    "merge",
    "poll",
    "render",
    "rows_that_fit",
    "run_top",
    "samples_from_text",
    "sparkline",
]

SPARK = "▁▂▃▄▅▆▇█"
#: Windows kept for the sparklines: an hour of the default 60 s windows.
HISTORY_WINDOWS = 60
#: Streams shown in the health table even before a worker has reported them, in this order.
STREAMS = ("posts", "signups")
#: Rows of the hashtag and country tables; the top-K default of the worker.
DEFAULT_ROWS = 20
#: Below this width the two hashtag tables are stacked rather than side by side.
SIDE_BY_SIDE_MIN_WIDTH = 100

SampleKey = tuple[str, frozenset[tuple[str, str]]]
Samples = Mapping[SampleKey, float]

WINDOW_START = "surgewatch_trend_window_start_seconds"
TOP_POSTS = "surgewatch_top_hashtag_posts"
HASHTAG_SCORE = "surgewatch_hashtag_surge_score"
SIGNUPS_WINDOW = "surgewatch_signups_window"
SIGNUP_SCORE = "surgewatch_signup_surge_score"
SIGNUP_SURGING = "surgewatch_signup_surging"
ALL_SIGNUPS = "surgewatch_all_signups_window"
ALL_SIGNUPS_SCORE = "surgewatch_all_signups_surge_score"
ALL_SIGNUPS_SURGING = "surgewatch_all_signups_surging"
SURGES = "surgewatch_surges_total"
RECEIVED = "surgewatch_events_received_total"
REJECTED = "surgewatch_events_rejected_total"
LATE = "surgewatch_events_late_total"
WATERMARK = "surgewatch_watermark_seconds"


class TopError(Exception):
    """No worker answered; the message is one line saying what to do."""


@dataclass(frozen=True)
class Scrape:
    """One worker's answer: its samples, or why there are none."""

    url: str
    samples: Samples | None
    error: str | None = None


@dataclass(frozen=True)
class StreamHealth:
    """One input stream over all workers: counter totals and the watermark."""

    received: float = 0.0
    rejected: float = 0.0
    late: float = 0.0
    #: Event time (Unix seconds) of the stream's watermark: the smallest over the workers.
    watermark_seconds: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything one poll of the workers tells, merged."""

    #: URL → error of the workers that did not answer.
    unreachable: Mapping[str, str] = field(default_factory=dict)
    answered: tuple[str, ...] = ()
    #: Start (Unix seconds) of the last complete window the trend series describe.
    window_start_seconds: int | None = None
    #: hashtag → posts in that window, global top-K.
    top_hashtags: Mapping[str, float] = field(default_factory=dict)
    #: hashtag → surge score, for the hashtags in a surge.
    hashtag_surge_scores: Mapping[str, float] = field(default_factory=dict)
    signups: Mapping[str, float] = field(default_factory=dict)
    signup_surge_scores: Mapping[str, float] = field(default_factory=dict)
    signup_surging: frozenset[str] = frozenset()
    all_signups: float | None = None
    all_signups_surge_score: float | None = None
    all_signups_surging: bool = False
    #: (metric, state) → surges counted, e.g. ``("signups", "start")``.
    surges: Mapping[tuple[str, str], float] = field(default_factory=dict)
    streams: Mapping[str, StreamHealth] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowSignups:
    """Signups of one complete window, kept for the sparklines."""

    window_start_seconds: int
    by_country: Mapping[str, float]
    total: float | None


def samples_from_text(text: str) -> dict[SampleKey, float]:
    """Every sample of a Prometheus text exposition, keyed like :func:`surgewatch.scrape.scrape`."""
    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for one in family.samples:
            samples[(one.name, frozenset(one.labels.items()))] = one.value
    return samples


def _describe(exc: BaseException) -> str:
    """A short reason a scrape failed, for one line of the view."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, TimeoutError):
            return "no answer in time"
        return str(getattr(reason, "strerror", None) or reason)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ValueError):
        return f"not a Prometheus metrics page ({exc})"
    return str(exc) or type(exc).__name__


def fetch(url: str, timeout_seconds: float = 2.0) -> Scrape:
    """Scrape one worker; an unreachable or broken one becomes a :class:`Scrape` with an error."""
    try:
        return Scrape(url, scrape(url, timeout_seconds))
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return Scrape(url, None, _describe(exc))


def poll(urls: Sequence[str], timeout_seconds: float = 2.0) -> list[Scrape]:
    """Scrape every URL at once, so one slow worker costs one timeout, not one each."""
    if len(urls) == 1:
        return [fetch(urls[0], timeout_seconds)]
    with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
        return list(pool.map(lambda url: fetch(url, timeout_seconds), urls))


def _series(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {
        dict(labels)[label]: value
        for (sample_name, labels), value in samples.items()
        if sample_name == name and label in dict(labels)
    }


def _single(samples: Samples, name: str) -> float | None:
    return samples.get((name, frozenset()))


def _trend_source(answers: Sequence[Scrape]) -> Samples | None:
    """The samples of the worker that owns the trend series: the one with the newest window.

    Only one worker exports them at a time; while the aggregation moves to another worker both
    may, briefly, and the newer window is the one to believe.
    """
    best: tuple[float, Samples] | None = None
    for answer in answers:
        if answer.samples is None:
            continue
        start = _single(answer.samples, WINDOW_START)
        if start is not None and (best is None or start > best[0]):
            best = (start, answer.samples)
    return None if best is None else best[1]


def merge(scrapes: Iterable[Scrape]) -> Snapshot:
    """One snapshot of all workers: counters summed, watermarks the smallest, trends from their owner."""
    scrapes = list(scrapes)
    answers = [s for s in scrapes if s.samples is not None]
    unreachable = {s.url: s.error or "no answer" for s in scrapes if s.samples is None}
    totals: dict[tuple[str, str], float] = {}
    surges: dict[tuple[str, str], float] = {}
    watermarks: dict[str, float] = {}
    for answer in answers:
        assert answer.samples is not None
        for (name, label_set), value in answer.samples.items():
            labels = dict(label_set)
            if name in (RECEIVED, REJECTED, LATE) and "stream" in labels:
                key = (name, labels["stream"])
                totals[key] = totals.get(key, 0.0) + value
            elif name == SURGES and "metric" in labels and "state" in labels:
                key = (labels["metric"], labels["state"])
                surges[key] = surges.get(key, 0.0) + value
            elif name == WATERMARK and "stream" in labels and math.isfinite(value) and value > 0:
                stream = labels["stream"]
                watermarks[stream] = min(value, watermarks.get(stream, math.inf))
    seen = {stream for _, stream in totals} | set(watermarks)
    streams = {
        stream: StreamHealth(
            received=totals.get((RECEIVED, stream), 0.0),
            rejected=totals.get((REJECTED, stream), 0.0),
            late=totals.get((LATE, stream), 0.0),
            watermark_seconds=watermarks.get(stream),
        )
        for stream in [*STREAMS, *sorted(seen - set(STREAMS))]
    }
    trends = _trend_source(answers) or {}
    start = _single(trends, WINDOW_START)
    return Snapshot(
        unreachable=unreachable,
        answered=tuple(s.url for s in answers),
        window_start_seconds=None if start is None else int(start),
        top_hashtags=_series(trends, TOP_POSTS, "hashtag"),
        hashtag_surge_scores=_series(trends, HASHTAG_SCORE, "hashtag"),
        signups=_series(trends, SIGNUPS_WINDOW, "country"),
        signup_surge_scores=_series(trends, SIGNUP_SCORE, "country"),
        signup_surging=frozenset(
            country for country, flag in _series(trends, SIGNUP_SURGING, "country").items() if flag
        ),
        all_signups=_single(trends, ALL_SIGNUPS),
        all_signups_surge_score=_single(trends, ALL_SIGNUPS_SCORE),
        all_signups_surging=bool(_single(trends, ALL_SIGNUPS_SURGING)),
        surges=surges,
        streams=streams,
    )


def sparkline(values: Sequence[float]) -> str:
    """Unicode bars, one per value, scaled to the largest (negative values draw as the lowest bar)."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    last = len(SPARK) - 1
    return "".join(SPARK[min(last, max(0, math.floor(v * last / top)))] for v in values)


class TopState:
    """What the view knows after a sequence of polls: the latest snapshot, history and rates."""

    def __init__(self, history_windows: int = HISTORY_WINDOWS) -> None:
        self.history_windows = history_windows
        self.snapshot: Snapshot | None = None
        #: Wall-clock time (Unix seconds) of the latest poll; the watermark lag is measured from it.
        self.now_seconds: float | None = None
        self._history: OrderedDict[int, WindowSignups] = OrderedDict()
        #: (stream, "received"|"rejected"|"late") → events per second between the last two polls.
        self.rates: dict[tuple[str, str], float] = {}

    @property
    def history(self) -> list[WindowSignups]:
        """The complete windows seen, oldest first (one entry per window start polled)."""
        return list(self._history.values())

    def update(self, snapshot: Snapshot, now_seconds: float) -> None:
        """Take in one poll made at ``now_seconds`` (Unix seconds)."""
        previous, previous_now = self.snapshot, self.now_seconds
        self.rates = {}
        if (
            previous is not None
            and previous_now is not None
            and now_seconds > previous_now
            # A worker that went or came makes the sums jump: no rate for this poll.
            and set(previous.answered) == set(snapshot.answered)
            and snapshot.answered
        ):
            elapsed = now_seconds - previous_now
            for stream, health in snapshot.streams.items():
                before = previous.streams.get(stream, StreamHealth())
                for kind in ("received", "rejected", "late"):
                    delta = getattr(health, kind) - getattr(before, kind)
                    if delta >= 0:  # a restarted worker resets its counters: skip that poll
                        self.rates[(stream, kind)] = delta / elapsed
        self.snapshot, self.now_seconds = snapshot, now_seconds
        start = snapshot.window_start_seconds
        if start is None:
            return
        newest = next(reversed(self._history), None)
        self._history[start] = WindowSignups(start, dict(snapshot.signups), snapshot.all_signups)
        if newest is not None and start < newest:  # the trends moved to a worker that is behind
            self._history = OrderedDict(sorted(self._history.items()))
        while len(self._history) > self.history_windows:
            self._history.popitem(last=False)

    def signup_history(self, country: str) -> list[float]:
        """Signups of ``country`` in each window of :attr:`history` (0 where it had none)."""
        return [w.by_country.get(country, 0.0) for w in self._history.values()]

    def all_signups_history(self) -> list[float]:
        """All signups in each window of :attr:`history`."""
        return [w.total or 0.0 for w in self._history.values()]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    """``42 s``, ``12 min 5 s``, ``3 h 12 min``, ``402 d 3 h``; a minus sign when ahead."""
    sign = "-" if seconds < 0 else ""
    left = round(abs(seconds))
    days, left = divmod(left, 86_400)
    hours, left = divmod(left, 3_600)
    minutes, secs = divmod(left, 60)
    if days:
        return f"{sign}{days} d {hours} h"
    if hours:
        return f"{sign}{hours} h {minutes} min"
    if minutes:
        return f"{sign}{minutes} min {secs} s"
    return f"{sign}{secs} s"


def _count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "–/s"
    if value == 0:
        return "0/s"
    if value >= 10_000:
        return f"{value / 1000:,.0f}k/s"
    return f"{value:,.0f}/s" if value >= 10 else f"{value:.1f}/s"


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}"


def _visible(tag: str) -> str:
    """Control characters as escapes (``\\n``), so a tag stays on its row; everything else as is."""
    out = []
    for char in tag:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            escaped = char.encode("unicode_escape").decode("ascii")
            out.append(escaped)
        else:
            out.append(char)
    return "".join(out)


def _hashtag(tag: str) -> Text:
    # Text, not markup: a tag such as "[bold]" is shown as typed.
    return Text("#" + _visible(tag))


def _flag(surging: bool, score: float | None = None) -> Text:
    if not surging:
        return Text("")
    label = "▲ surging" if score is None else f"▲ {_score(score)}"
    return Text(label, style="bold red")


class _Pair:
    """Two renderables side by side on a wide console, one above the other on a narrow one."""

    def __init__(self, left: RenderableType, right: RenderableType) -> None:
        self.left, self.right = left, right

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width >= SIDE_BY_SIDE_MIN_WIDTH:
            grid = Table.grid(expand=True, padding=(0, 1))
            grid.add_column(ratio=3)
            grid.add_column(ratio=2)
            grid.add_row(self.left, self.right)
            yield grid
        else:
            yield self.left
            yield self.right


def _header(state: TopState, snapshot: Snapshot) -> Text:
    header = Text("surgewatch top", style="bold")
    start = snapshot.window_start_seconds
    header.append(f"   window {_iso(start)}" if start is not None else "   window –")
    total = len(snapshot.answered) + len(snapshot.unreachable)
    header.append(f"   {len(snapshot.answered)}/{total} workers")
    if state.now_seconds is not None:
        clock = datetime.fromtimestamp(state.now_seconds, UTC).strftime("%H:%M:%S UTC")
        header.append(f"   {clock}", style="dim")
    return header


def _notes(state: TopState) -> list[Text]:
    snapshot = state.snapshot
    if snapshot is None:
        return [Text("waiting for the first scrape ...", style="dim")]
    notes = [
        Text(f"unreachable: {url}: {error}", style="bold red")
        for url, error in snapshot.unreachable.items()
    ]
    if not snapshot.answered:
        notes.append(
            Text(
                "no worker answered: start one with `surgewatch worker`, or give its "
                "/metrics URL with --url",
                style="yellow",
            )
        )
    elif snapshot.window_start_seconds is None:
        notes.append(
            Text(
                "no window has completed yet: the trends appear when the first window closes "
                "(window + grace after the first events)",
                style="yellow",
            )
        )
    return notes


def _top_table(snapshot: Snapshot, rows: int) -> Table:
    table = Table(
        title="top hashtags, last window", box=box.SIMPLE_HEAD, show_edge=False, expand=True
    )
    table.add_column("hashtag", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("posts", justify="right", no_wrap=True)
    table.add_column("surge", no_wrap=True)
    ranked = sorted(snapshot.top_hashtags.items(), key=lambda kv: (-kv[1], kv[0]))[:rows]
    scores = snapshot.hashtag_surge_scores
    for tag, posts in ranked:
        table.add_row(_hashtag(tag), _count(posts), _flag(tag in scores, scores.get(tag)))
    return table


def _surging_table(snapshot: Snapshot, rows: int) -> Table:
    table = Table(title="surging hashtags", box=box.SIMPLE_HEAD, show_edge=False, expand=True)
    table.add_column("hashtag", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("posts", justify="right", no_wrap=True)
    ranked = sorted(snapshot.hashtag_surge_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:rows]
    for tag, score in ranked:
        posts = snapshot.top_hashtags.get(tag)
        table.add_row(_hashtag(tag), Text(_score(score), style="bold red"), _count(posts))
    if not ranked:
        table.add_row(Text("none", style="dim"))
    return table


def _country_table(state: TopState, snapshot: Snapshot, rows: int) -> Table:
    windows = len(state.history)
    table = Table(
        title="signups by country, last window", box=box.SIMPLE_HEAD, show_edge=False, expand=True
    )
    table.add_column("country", no_wrap=True)
    table.add_column("signups", justify="right", no_wrap=True)
    table.add_column(f"last {windows} windows seen", no_wrap=True, overflow="crop", ratio=1)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("surge", no_wrap=True)
    countries = set(snapshot.signups) | snapshot.signup_surging
    ranked = sorted(countries, key=lambda c: (-snapshot.signups.get(c, 0.0), c))[:rows]
    for country in ranked:
        table.add_row(
            Text(country),
            _count(snapshot.signups.get(country, 0.0)),
            sparkline(state.signup_history(country)),
            _score(snapshot.signup_surge_scores.get(country)),
            _flag(country in snapshot.signup_surging),
        )
    table.add_section()
    table.add_row(
        Text("all", style="bold"),
        _count(snapshot.all_signups),
        sparkline(state.all_signups_history()),
        _score(snapshot.all_signups_surge_score),
        _flag(snapshot.all_signups_surging),
        style="bold",
    )
    return table


def _health_table(state: TopState, snapshot: Snapshot) -> Table:
    table = Table(title="pipeline", box=box.SIMPLE_HEAD, show_edge=False, expand=True)
    table.add_column("stream", no_wrap=True)
    table.add_column("watermark", no_wrap=True)
    table.add_column("lag", justify="right", no_wrap=True)
    for kind in ("received", "rejected", "late"):
        table.add_column(kind, justify="right", no_wrap=True)
    for stream, health in snapshot.streams.items():
        watermark = health.watermark_seconds
        lag = (
            _duration(state.now_seconds - watermark)
            if watermark is not None and state.now_seconds is not None
            else "–"
        )
        cells = [
            f"{_count(getattr(health, kind))} {_rate(state.rates.get((stream, kind)))}"
            for kind in ("received", "rejected", "late")
        ]
        table.add_row(stream, _iso(watermark) if watermark is not None else "–", lag, *cells)
    surges = snapshot.surges
    table.caption = "surges started/ended: " + ", ".join(
        f"{label} {surges.get((metric, 'start'), 0):,.0f}/{surges.get((metric, 'end'), 0):,.0f}"
        for metric, label in (("hashtag_posts", "hashtags"), ("signups", "signups"))
    )
    return table


def render(state: TopState, rows: int = DEFAULT_ROWS) -> RenderableType:
    """The view of ``state``: header, notes, hashtag and country tables, pipeline health."""
    snapshot = state.snapshot or Snapshot()
    parts: list[RenderableType] = [_header(state, snapshot), *_notes(state)]
    if snapshot.window_start_seconds is not None:
        parts.append(_Pair(_top_table(snapshot, rows), _surging_table(snapshot, rows)))
        parts.append(_country_table(state, snapshot, rows))
    parts.append(_health_table(state, snapshot))
    return Group(*parts)


def rows_that_fit(width: int, height: int, unreachable: int = 0) -> int:
    """Rows per table so that the whole view fits a ``width`` x ``height`` terminal (at least 2)."""
    # Header, table titles, column heads and rules, the all-signups row, the pipeline table and
    # the cursor's line: 20 lines, plus one per unreachable worker.
    spare = height - 20 - unreachable
    tables = 2 if width >= SIDE_BY_SIDE_MIN_WIDTH else 3
    return max(2, min(DEFAULT_ROWS, spare // tables))


def default_metrics_url(settings: Settings) -> str:
    """The local worker's ``/metrics`` URL from the web host and port settings."""
    host = settings.web_host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}/metrics"


def run_top(
    urls: Sequence[str],
    interval_seconds: float = 1.0,
    once: bool = False,
    console: Console | None = None,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Show the view: one frame with ``once``, else a frame every ``interval_seconds`` until Ctrl-C.

    ``now`` gives the wall-clock time (Unix seconds) the watermark lag is measured from.
    Raises :class:`TopError` when ``once`` and no worker answered; with Ctrl-C it returns.
    """
    console = console or Console()
    state = TopState()
    timeout_seconds = min(max(interval_seconds, 1.0), 5.0)
    if once:
        state.update(merge(poll(urls, timeout_seconds)), now())
        snapshot = state.snapshot
        assert snapshot is not None
        if not snapshot.answered:
            reasons = "; ".join(f"{url}: {error}" for url, error in snapshot.unreachable.items())
            raise TopError(
                f"no worker answered ({reasons}): start one with `surgewatch worker`, "
                "or point --url at a running worker's /metrics"
            )
        console.print(render(state))
        return
    try:
        with Live(render(state), console=console, auto_refresh=False) as live:
            while True:
                began = time.monotonic()
                state.update(merge(poll(urls, timeout_seconds)), now())
                snapshot = state.snapshot
                assert snapshot is not None
                width, height = console.size
                rows = rows_that_fit(width, height, len(snapshot.unreachable))
                live.update(render(state, rows), refresh=True)
                sleep(max(0.0, interval_seconds - (time.monotonic() - began)))
    except KeyboardInterrupt:
        pass
