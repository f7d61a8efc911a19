"""Hand-written SVG charts of per-window counts: a UTC time axis, a line chart, small multiples.

No script, no external asset: each chart is one ``<svg>`` element inlined in the page. Long
series are drawn at most one point per pixel column (the largest count of the windows the column
covers, so a one-window spike stays visible); surge spans are placed by their exact times. Every
text goes through :func:`text`, which escapes it for HTML and SVG alike and makes invisible or
unencodable characters visible. Output depends on the inputs only: same data, same bytes.
"""

from __future__ import annotations

import html
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

#: Tick steps a time axis may use, in seconds (1 min ... 7 days).
TICK_STEPS_SECONDS: Final = (
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)
SECONDS_PER_DAY: Final = 86400
FONT_PX: Final = 11
#: Colour-blind-safe categorical palette (Tableau 10), one colour per series in rank order.
PALETTE: Final = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#17becf",
    "#8c564b",
    "#bcbd22",
)
OTHER_COLOR: Final = "#9a9a9a"
SURGE_COLOR: Final = "#d62728"
AXIS_COLOR: Final = "#888888"
GRID_COLOR: Final = "#e6e6e6"
INK: Final = "#222222"
#: Characters kept although Unicode calls them format characters: they join emoji and scripts.
_JOINERS: Final = frozenset("\u200c\u200d")


def visible(value: str) -> str:
    """``value`` with control, format (bidi overrides...) and lone surrogate characters written
    as ``\\uXXXX``, so nothing in a key can hide, reorder or break the page."""
    out: list[str] = []
    for char in value:
        category = unicodedata.category(char)
        if category in ("Cc", "Cs", "Co", "Cn") or (category == "Cf" and char not in _JOINERS):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def text(value: str) -> str:
    """``value`` as HTML/SVG text or attribute content (quotes included), made :func:`visible`."""
    return html.escape(visible(value), quote=True)


def shorten(value: str, max_chars: int) -> str:
    """``value`` cut to ``max_chars`` characters, ending with an ellipsis when cut."""
    return value if len(value) <= max_chars else value[: max_chars - 1] + "…"


def text_width_px(value: str, font_px: float = FONT_PX) -> float:
    """An estimate of the rendered width of ``value``: wide (CJK) characters count double."""
    width = 0.0
    for char in value:
        if unicodedata.east_asian_width(char) in ("W", "F"):
            width += font_px
        elif unicodedata.combining(char) or char in _JOINERS:
            continue
        else:
            width += 0.6 * font_px
    return width


def utc(seconds: float, *, date: bool = True) -> str:
    """``2025-01-13 15:02`` (UTC), or ``15:02`` without the date."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%d %H:%M" if date else "%H:%M")


def duration(seconds: float) -> str:
    """``45 min``, ``7 h 25 min``, ``2 d 3 h``."""
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def count_label(value: float) -> str:
    """``950``, ``12,400``: counts with thousands separators."""
    return f"{value:,.0f}"


def _num(value: float) -> str:
    """A coordinate with one decimal, without a trailing ``.0``."""
    rounded = round(value, 1)
    if rounded == int(rounded):
        return str(int(rounded))
    return f"{rounded:.1f}"


@dataclass(frozen=True, slots=True)
class TimeScale:
    """Maps event time to x: ``[start_seconds, end_seconds)`` onto ``[left, left + width]``."""

    start_seconds: int
    end_seconds: int
    left: float
    width: float

    def x(self, seconds: float) -> float:
        """The x of ``seconds``, clamped to the plot."""
        span = max(1, self.end_seconds - self.start_seconds)
        ratio = min(1.0, max(0.0, (seconds - self.start_seconds) / span))
        return self.left + ratio * self.width


def tick_step_seconds(span_seconds: float, max_ticks: int = 12) -> int:
    """The smallest step of :data:`TICK_STEPS_SECONDS` giving at most ``max_ticks`` ticks."""
    for step in TICK_STEPS_SECONDS:
        if span_seconds / step <= max_ticks:
            return step
    return TICK_STEPS_SECONDS[-1] * math.ceil(span_seconds / max_ticks / TICK_STEPS_SECONDS[-1])


def time_ticks(start_seconds: int, end_seconds: int, max_ticks: int = 12) -> tuple[int, list[int]]:
    """``(step, ticks)``: UTC-aligned tick times (multiples of the step) within the range."""
    step = tick_step_seconds(end_seconds - start_seconds, max_ticks)
    first = -(-start_seconds // step) * step
    return step, list(range(first, end_seconds + 1, step))


def nice_scale(max_value: float, ticks: int = 5) -> tuple[int, int]:
    """``(top, step)`` of a count axis from 0: a step of 1, 2 or 5 times a power of ten."""
    if max_value <= 0:
        return 1, 1
    raw = max_value / ticks
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, int(step))
    return step * math.ceil(max_value / step), step


def downsample_max(values: Sequence[int], max_points: int) -> tuple[int, list[int]]:
    """``(windows_per_point, points)``: the largest value of each run of windows, so at most
    ``max_points`` remain and a one-window spike is never averaged away."""
    if len(values) <= max_points:
        return 1, list(values)
    per = math.ceil(len(values) / max_points)
    return per, [max(values[i : i + per]) for i in range(0, len(values), per)]


def assign_lanes(intervals: Sequence[tuple[float, float]], max_lanes: int) -> list[int]:
    """A lane for each ``(x0, x1)`` such that intervals in one lane do not overlap (greedy, in
    the given order); past ``max_lanes`` the lane that frees first is shared."""
    ends: list[float] = []
    lanes: list[int] = []
    for x0, x1 in intervals:
        for lane, end in enumerate(ends):
            if end <= x0:
                ends[lane] = x1
                lanes.append(lane)
                break
        else:
            if len(ends) < max_lanes:
                ends.append(x1)
                lanes.append(len(ends) - 1)
            else:
                lane = min(range(len(ends)), key=lambda i: (ends[i], i))
                ends[lane] = max(ends[lane], x1)
                lanes.append(lane)
    return lanes


@dataclass(frozen=True, slots=True)
class Line:
    """One series of a line chart: one value per window."""

    label: str
    color: str
    values: Sequence[int]
    emphasis: bool = False
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Span:
    """A surge drawn from ``start_seconds`` to ``end_seconds`` (event time)."""

    label: str
    color: str
    start_seconds: int
    end_seconds: int
    tooltip: str
    open: bool = False


@dataclass(frozen=True, slots=True)
class Strip:
    """One row of small multiples: an area of per-window values with its own scale."""

    label: str
    tooltip: str
    values: Sequence[int]
    note: str
    spans: Sequence[Span] = ()
    emphasis: bool = False


@dataclass(frozen=True, slots=True)
class Frame:
    """The time range of a chart: ``windows`` windows of ``window_seconds`` from ``start_seconds``."""

    start_seconds: int
    window_seconds: int
    windows: int

    @property
    def end_seconds(self) -> int:
        """End of the last window."""
        return self.start_seconds + self.windows * self.window_seconds


def _points(values: Sequence[int], frame: Frame, scale: TimeScale, max_points: int) -> list[float]:
    """The x of each point :func:`downsample_max` keeps: the middle of its window or run."""
    per, _ = downsample_max(values, max_points)
    xs: list[float] = []
    size = frame.window_seconds
    for first in range(0, len(values), per):
        covered = min(per, len(values) - first)
        xs.append(scale.x(frame.start_seconds + (first + covered / 2) * size))
    return xs


def _time_axis(frame: Frame, scale: TimeScale, top: float, bottom: float) -> list[str]:
    """Grid lines over ``[top, bottom]`` and UTC labels below ``bottom``."""
    step, ticks = time_ticks(frame.start_seconds, frame.end_seconds)
    parts = [f'<g class="x-axis" fill="{AXIS_COLOR}" font-size="{FONT_PX}">']
    previous_day: int | None = None
    for tick in ticks:
        x = _num(scale.x(tick))
        parts.append(
            f'<line x1="{x}" y1="{_num(top)}" x2="{x}" y2="{_num(bottom)}" stroke="{GRID_COLOR}"/>'
        )
        day = tick // SECONDS_PER_DAY
        if step >= SECONDS_PER_DAY:
            first_line, second_line = datetime.fromtimestamp(tick, UTC).strftime("%b %d"), ""
        else:
            first_line = utc(tick, date=False)
            second_line = (
                datetime.fromtimestamp(tick, UTC).strftime("%a %b %d")
                if day != previous_day
                else ""
            )
        previous_day = day
        parts.append(
            f'<text x="{x}" y="{_num(bottom + 14)}" text-anchor="middle">{first_line}</text>'
        )
        if second_line:
            parts.append(
                f'<text x="{x}" y="{_num(bottom + 27)}" text-anchor="middle" '
                f'fill="{INK}">{second_line}</text>'
            )
    parts.append("</g>")
    return parts


def _span_x(span: Span, scale: TimeScale) -> tuple[float, float]:
    x0 = scale.x(span.start_seconds)
    x1 = max(scale.x(span.end_seconds), x0 + 2.0)
    return x0, x1


def line_chart(
    lines: Sequence[Line],
    spans: Sequence[Span],
    frame: Frame,
    *,
    caption: str,
    width: int = 1160,
    plot_height: int = 300,
    max_lanes: int = 12,
) -> str:
    """Lines of per-window counts against UTC time, surge spans as labelled lanes above the plot
    and shaded columns in it. Emphasised lines are drawn last, thicker."""
    left, right = 60.0, 40.0
    plot_width = width - left - right
    scale = TimeScale(frame.start_seconds, frame.end_seconds, left, plot_width)
    lane_height = 17.0
    # A label starts at its span but never runs off the right edge; a lane holds both.
    label_xs: list[float] = []
    intervals = []
    for span in spans:
        x0, x1 = _span_x(span, scale)
        label_width = text_width_px(span.label) * 1.1 + 4  # bold
        label_x = max(2.0, min(x0 + 1, width - 2 - label_width))
        label_xs.append(label_x)
        intervals.append((min(x0, label_x), max(x1, label_x + label_width) + 4))
    lanes = assign_lanes(intervals, max_lanes)
    lane_count = max(lanes, default=-1) + 1
    caption_height = 18.0
    plot_top = caption_height + lane_count * lane_height + (6.0 if lane_count else 0.0)
    plot_bottom = plot_top + plot_height
    height = plot_bottom + 34

    max_points = int(plot_width)
    drawn = [downsample_max(line.values, max_points) for line in lines]
    per = max((d[0] for d in drawn), default=1)
    peak = max((max(d[1], default=0) for d in drawn), default=0)
    top_value, step = nice_scale(peak)

    def y(value: float) -> float:
        return plot_bottom - value / top_value * plot_height

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {_num(height)}" width="{width}" '
        f'height="{_num(height)}" role="img" aria-label="{text(caption)}" '
        f'font-size="{FONT_PX}">'
    ]
    note = f" (each point: the largest of {per} windows)" if per > 1 else ""
    out.append(f'<text x="{_num(left)}" y="12" fill="{INK}">{text(caption + note)}</text>')
    # Shaded surge columns behind everything, then the grid and the lines.
    for span in spans:
        x0, x1 = _span_x(span, scale)
        out.append(
            f'<rect class="surge-span" x="{_num(x0)}" y="{_num(plot_top)}" '
            f'width="{_num(x1 - x0)}" height="{_num(plot_height)}" fill="{span.color}" '
            f'fill-opacity="0.09"><title>{text(span.tooltip)}</title></rect>'
        )
    out.extend(_time_axis(frame, scale, plot_top, plot_bottom))
    out.append(f'<g class="y-axis" fill="{AXIS_COLOR}" text-anchor="end">')
    for tick in range(0, top_value + 1, step):
        ty = _num(y(tick))
        out.append(
            f'<line x1="{_num(left)}" y1="{ty}" x2="{_num(left + plot_width)}" y2="{ty}" '
            f'stroke="{GRID_COLOR}"/>'
        )
        out.append(f'<text x="{_num(left - 6)}" y="{_num(y(tick) + 4)}">{count_label(tick)}</text>')
    out.append("</g>")
    out.append(
        f'<line x1="{_num(left)}" y1="{_num(plot_bottom)}" x2="{_num(left + plot_width)}" '
        f'y2="{_num(plot_bottom)}" stroke="{AXIS_COLOR}"/>'
    )
    # Lines that surged are drawn last and thicker; with any of them, the others fade a little.
    fade = ' stroke-opacity="0.75"' if any(line.emphasis for line in lines) else ""
    order = sorted(range(len(lines)), key=lambda i: (lines[i].emphasis, -i))
    for index in order:
        line = lines[index]
        _, values = drawn[index]
        xs = _points(line.values, frame, scale, max_points)
        points = " ".join(f"{_num(x)},{_num(y(v))}" for x, v in zip(xs, values, strict=True))
        dash = ' stroke-dasharray="4 3"' if line.dashed else ""
        stroke = ' stroke-width="2.4"' if line.emphasis else f' stroke-width="1.4"{fade}'
        out.append(
            f'<polyline class="series" fill="none" stroke="{line.color}"{stroke} '
            f'stroke-linejoin="round"{dash} points="{points}">'
            f"<title>{text(line.label)}</title></polyline>"
        )
    for span, lane, label_x in zip(spans, lanes, label_xs, strict=True):
        x0, x1 = _span_x(span, scale)
        lane_top = caption_height + lane * lane_height
        out.append(
            f'<g class="surge-mark"><title>{text(span.tooltip)}</title>'
            f'<rect x="{_num(x0)}" y="{_num(lane_top + 12)}" width="{_num(x1 - x0)}" '
            f'height="4" fill="{span.color}"/>'
            f'<text x="{_num(label_x)}" y="{_num(lane_top + 10)}" fill="{INK}" '
            f'font-weight="600">{text(span.label)}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def strips(
    rows: Sequence[Strip],
    frame: Frame,
    *,
    caption: str,
    width: int = 1160,
    row_height: int = 34,
    label_width: int = 190,
    note_width: int = 150,
    label_chars: int = 26,
) -> str:
    """Small multiples: one area per row on its own scale (its peak written at the right), surge
    spans shaded red in their row, one shared UTC axis below."""
    gap = 8
    left = float(label_width)
    plot_width = width - label_width - note_width
    scale = TimeScale(frame.start_seconds, frame.end_seconds, left, plot_width)
    caption_height = 18.0
    plots_top = caption_height
    plots_bottom = plots_top + len(rows) * (row_height + gap)
    height = plots_bottom + 30
    max_points = int(plot_width)
    per = max((downsample_max(row.values, max_points)[0] for row in rows), default=1)
    note = f" (each point: the largest of {per} windows)" if per > 1 else ""
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {_num(height)}" width="{width}" '
        f'height="{_num(height)}" role="img" aria-label="{text(caption)}" '
        f'font-size="{FONT_PX}">',
        f'<text x="{_num(left)}" y="12" fill="{INK}">{text(caption + note)}</text>',
    ]
    out.extend(_time_axis(frame, scale, plots_top, plots_bottom - gap))
    for index, row in enumerate(rows):
        top = plots_top + index * (row_height + gap)
        bottom = top + row_height
        _, values = downsample_max(row.values, max_points)
        row_peak = max(values, default=0)
        out.append(f'<g class="strip"><title>{text(row.tooltip)}</title>')
        out.append(
            f'<rect x="{_num(left)}" y="{_num(top)}" width="{_num(plot_width)}" '
            f'height="{row_height}" fill="#f7f7f7"/>'
        )
        for span in row.spans:
            x0, x1 = _span_x(span, scale)
            out.append(
                f'<rect class="surge-span" x="{_num(x0)}" y="{_num(top)}" '
                f'width="{_num(x1 - x0)}" height="{row_height}" fill="{span.color}" '
                f'fill-opacity="0.14"><title>{text(span.tooltip)}</title></rect>'
                f'<rect x="{_num(x0)}" y="{_num(top)}" width="{_num(x1 - x0)}" height="3" '
                f'fill="{span.color}"/>'
            )
        if row_peak > 0:
            xs = _points(row.values, frame, scale, max_points)
            unit = (row_height - 4) / row_peak
            path = " ".join(
                f"L{_num(x)},{_num(bottom - v * unit)}" for x, v in zip(xs, values, strict=True)
            )
            colour = PALETTE[0]
            out.append(
                f'<path d="M{_num(xs[0])},{_num(bottom)} {path} L{_num(xs[-1])},{_num(bottom)} Z" '
                f'fill="{colour}" fill-opacity="0.35" stroke="{colour}" stroke-width="1"/>'
            )
        weight = ' font-weight="600"' if row.emphasis else ""
        out.append(
            f'<text x="{_num(left - 8)}" y="{_num(top + row_height / 2 + 4)}" text-anchor="end" '
            f'fill="{INK}"{weight}>{text(shorten(row.label, label_chars))}</text>'
        )
        out.append(
            f'<text x="{_num(left + plot_width + 8)}" y="{_num(top + row_height / 2 + 4)}" '
            f'fill="{AXIS_COLOR}">{text(row.note)}</text>'
        )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
