"""The report page: one self-contained HTML document (inline CSS and SVG, no script, no link out).

Sections, top to bottom: what was read and the range shown (UTC), the event totals per stream and
the keys that surged; signups per window (all together, then by country, with surge marks); the
top hashtags over time; the table of surges. Deterministic: the same :class:`ReportData` gives the
same bytes (no generation time is written).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from surgewatch import __version__
from surgewatch.report.data import OTHER_KEY, ReportData, Series, SurgeSpan
from surgewatch.report.svg import (
    OTHER_COLOR,
    PALETTE,
    SURGE_COLOR,
    Frame,
    Line,
    Span,
    Strip,
    count_label,
    duration,
    line_chart,
    strips,
    text,
    utc,
)
from surgewatch.trends.partition import ALL_KEY, HASHTAGS, SIGNUPS

#: Rows of the surge table; a run with more says how many were left out.
MAX_TABLE_ROWS: Final = 1000
#: Sources named in the title; more are counted.
MAX_TITLE_SOURCES: Final = 3
ALL_SIGNUPS_COLOR: Final = "#444444"

_CSS: Final = """
:root { color-scheme: light; }
body { margin: 0; background: #fff; color: #222;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC",
    "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 40px; }
h1 { font-size: 22px; margin: 0 0 2px; overflow-wrap: anywhere; }
h2 { font-size: 17px; margin: 30px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
p { margin: 6px 0; }
.meta, .note { color: #555; }
.note { font-size: 12.5px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { font-weight: 600; border-bottom: 1px solid #ccc; white-space: nowrap; }
.num { text-align: right; }
.key { font-weight: 600; overflow-wrap: anywhere; max-width: 22em; }
.open { color: #d62728; font-weight: 600; }
.surged { display: flex; flex-wrap: wrap; gap: 6px; margin: 8px 0; }
.surged span { border: 1px solid #e3b7b7; background: #fbeeee; border-radius: 4px;
  padding: 1px 8px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 18px; margin: 4px 0 0 60px; font-size: 13px; }
.swatch { display: inline-block; width: 18px; height: 3px; margin-right: 6px;
  vertical-align: middle; }
.legend .dashed { background: none !important; border-top: 2px dashed #9a9a9a; height: 0; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg.chart text { font-family: inherit; }
footer { margin-top: 32px; color: #666; font-size: 12.5px; }
@media print { main { padding: 0; } h2 { break-after: avoid; } svg.chart, tr { break-inside: avoid; } }
"""


def _key_label(metric: str, key: str) -> str:
    if metric == HASHTAGS:
        return f"#{key}"
    return "* all signups" if key == ALL_KEY else key


def _metric_label(metric: str) -> str:
    return "hashtag" if metric == HASHTAGS else "signups"


def _title(sources: Sequence[str]) -> str:
    if not sources:
        return "(no input)"
    if len(sources) <= MAX_TITLE_SOURCES:
        return ", ".join(sources)
    return f"{', '.join(sources[:MAX_TITLE_SOURCES])} and {len(sources) - MAX_TITLE_SOURCES} more"


def _tooltip(span: SurgeSpan) -> str:
    end = "still open" if span.end_seconds is None else utc(span.end_seconds)
    return (
        f"{_key_label(span.metric, span.key)} ({_metric_label(span.metric)}) surge: "
        f"{utc(span.start_seconds)} to {end} UTC; peak {count_label(span.peak_count)} at "
        f"{utc(span.peak_seconds)}; start score {span.start_score:.1f}"
    )


def _span(span: SurgeSpan, color: str, data: ReportData) -> Span:
    return Span(
        label=_key_label(span.metric, span.key),
        color=color,
        start_seconds=span.start_seconds,
        end_seconds=span.until_seconds(data.end_seconds),
        tooltip=_tooltip(span),
        open=span.end_seconds is None,
    )


def _colors(countries: Sequence[Series]) -> dict[str, str]:
    colors: dict[str, str] = {}
    for index, series in enumerate(s for s in countries if s.key != OTHER_KEY):
        colors[series.key] = PALETTE[index % len(PALETTE)]
    colors[OTHER_KEY] = OTHER_COLOR
    return colors


def _header(data: ReportData) -> list[str]:
    title = _title(data.sources)
    out = [f"<header><h1>Surge report: {text(title)}</h1>"]
    if data.windows:
        span = data.end_seconds - data.start_seconds
        out.append(
            f'<p class="meta">{utc(data.start_seconds)} to {utc(data.end_seconds)} UTC '
            f"({duration(span)}): {count_label(data.windows)} windows of "
            f"{data.window_seconds} s</p>"
        )
    else:
        out.append('<p class="meta">No counted event in the range: nothing to draw.</p>')
    out.append("</header>")
    return out


def _totals(data: ReportData) -> list[str]:
    out = [
        '<section id="totals"><h2>Events</h2>',
        '<table class="totals"><thead><tr><th>stream</th><th class="num">received</th>'
        '<th class="num">counted</th><th class="num">late</th><th class="num">rejected</th>'
        "</tr></thead><tbody>",
    ]
    for stream, totals in sorted(data.totals.items()):
        out.append(
            f"<tr><td>{text(stream)}</td><td class='num'>{count_label(totals.received)}</td>"
            f"<td class='num'>{count_label(totals.counted)}</td>"
            f"<td class='num'>{count_label(totals.late)}</td>"
            f"<td class='num'>{count_label(totals.rejected)}</td></tr>"
        )
    out.append("</tbody></table>")
    notes = [
        "Totals are for the whole input.",
        f"{count_label(data.distinct_hashtags)} distinct hashtags and "
        f"{count_label(data.distinct_countries)} countries in the range.",
    ]
    if data.unreadable_lines:
        notes.append(f"{count_label(data.unreadable_lines)} unreadable file lines were skipped.")
    out.append(f'<p class="note">{" ".join(notes)}</p>')
    out.append(_surged(data.surges))
    out.append("</section>")
    return out


def _surged(spans: Sequence[SurgeSpan]) -> str:
    if not spans:
        return "<p><strong>No surge</strong> in this range.</p>"
    first: dict[tuple[str, str], SurgeSpan] = {}
    for span in spans:
        first.setdefault((span.metric, span.key), span)
    chips = [
        f"<span>{text(_key_label(metric, key))} <small>({_metric_label(metric)}, from "
        f"{utc(span.start_seconds)})</small></span>"
        for (metric, key), span in sorted(
            first.items(), key=lambda item: (item[1].start_seconds, item[0])
        )
    ]
    count = len(spans)
    return (
        f"<p><strong>{count} surge{'s' if count != 1 else ''}</strong> of "
        f"{len(first)} key{'s' if len(first) != 1 else ''}:</p>"
        f'<div class="surged">{"".join(chips)}</div>'
    )


def _signups(data: ReportData, frame: Frame) -> list[str]:
    colors = _colors(data.countries)
    signup_spans = [span for span in data.surges if span.metric == SIGNUPS]
    all_spans = [_span(span, SURGE_COLOR, data) for span in signup_spans if span.key == ALL_KEY]
    strip = Strip(
        label="all signups",
        tooltip=f"all signups: {count_label(data.all_signups.total)} in the range",
        values=data.all_signups.counts,
        note=f"peak {count_label(data.all_signups.peak)}",
        spans=all_spans,
        emphasis=data.all_signups.surged,
    )
    marks = [
        _span(
            span,
            ALL_SIGNUPS_COLOR if span.key == ALL_KEY else colors.get(span.key, OTHER_COLOR),
            data,
        )
        for span in signup_spans
    ]
    lines = [
        Line(
            label=f"{series.key}: {count_label(series.total)} signups",
            color=colors.get(series.key, OTHER_COLOR),
            values=series.counts,
            emphasis=series.surged,
            dashed=series.key == OTHER_KEY,
        )
        for series in data.countries
    ]
    out = [
        '<section id="signups"><h2>Signups per window</h2>',
        strips(
            [strip],
            frame,
            caption=f"All signups per {data.window_seconds} s window (surges of * in red)",
        ),
        line_chart(
            lines,
            marks,
            frame,
            caption=f"Signups per {data.window_seconds} s window by country; bars above: surges",
        ),
        '<div class="legend">',
    ]
    for series in data.countries:
        dashed = " dashed" if series.key == OTHER_KEY else ""
        color = colors.get(series.key, OTHER_COLOR)
        label = "other countries" if series.key == OTHER_KEY else series.key
        weight = ' style="font-weight:600"' if series.surged else ""
        out.append(
            f'<span{weight}><span class="swatch{dashed}" style="background:{color}"></span>'
            f"{text(label)} {count_label(series.total)}</span>"
        )
    out.append("</div></section>")
    return out


def _hashtags(data: ReportData, frame: Frame) -> list[str]:
    spans_of: dict[str, list[Span]] = {}
    for span in data.surges:
        if span.metric == HASHTAGS:
            spans_of.setdefault(span.key, []).append(_span(span, SURGE_COLOR, data))
    rows = [
        Strip(
            label=f"#{series.key}",
            tooltip=f"#{series.key}: {count_label(series.total)} posts in the range, "
            f"peak {count_label(series.peak)} in a window",
            values=series.counts,
            note=f"peak {count_label(series.peak)} · {count_label(series.total)}",
            spans=spans_of.get(series.key, ()),
            emphasis=series.surged,
        )
        for series in data.hashtags
    ]
    out = ['<section id="hashtags"><h2>Top hashtags over time</h2>']
    if rows:
        out.append(
            strips(
                rows,
                frame,
                caption=f"Posts per {data.window_seconds} s window, each row on its own scale "
                "(right: peak · total); surges in red",
            )
        )
        out.append(
            '<p class="note">The busiest hashtags of the range by posts, and every hashtag that '
            "surged in it (in bold).</p>"
        )
    else:
        out.append("<p>No hashtag in this range.</p>")
    out.append("</section>")
    return out


def _table(spans: Sequence[SurgeSpan]) -> list[str]:
    out = ['<section id="surges"><h2>Surges</h2>']
    if not spans:
        out.append("<p>No surge in this range.</p></section>")
        return out
    out.append(
        '<table id="surge-table"><thead><tr><th>metric</th><th>key</th><th>start (UTC)</th>'
        '<th class="num">count</th><th class="num">score</th><th class="num">baseline</th>'
        '<th>basis</th><th class="num">peak</th><th>peak at (UTC)</th><th>end (UTC)</th>'
        '<th class="num">duration</th></tr></thead><tbody>'
    )
    for span in spans[:MAX_TABLE_ROWS]:
        if span.end_seconds is None:
            end = '<td class="open">open</td>'
            lasted = "open"
        else:
            end = f"<td>{utc(span.end_seconds)}</td>"
            lasted = duration(span.end_seconds - span.start_seconds)
        out.append(
            f"<tr><td>{_metric_label(span.metric)}</td>"
            f'<td class="key">{text(_key_label(span.metric, span.key))}</td>'
            f"<td>{utc(span.start_seconds)}</td>"
            f'<td class="num">{count_label(span.start_count)}</td>'
            f'<td class="num">{span.start_score:.1f}</td>'
            f'<td class="num">{span.baseline:.1f}</td>'
            f"<td>{text(span.basis.replace('_', ' '))}</td>"
            f'<td class="num">{count_label(span.peak_count)}</td>'
            f"<td>{utc(span.peak_seconds)}</td>{end}"
            f'<td class="num">{lasted}</td></tr>'
        )
    out.append("</tbody></table>")
    if len(spans) > MAX_TABLE_ROWS:
        out.append(
            f'<p class="note">{len(spans) - MAX_TABLE_ROWS:,} more surges are not listed.</p>'
        )
    out.append(
        '<p class="note">Start and end are the windows of the surge\'s start and end records '
        "(the end comes with the second calm window); count, score, baseline and basis are those "
        "of the start; peak is the largest window count from start to end.</p></section>"
    )
    return out


def render_html(data: ReportData) -> str:
    """The whole page for ``data``."""
    frame = Frame(data.start_seconds, data.window_seconds, data.windows)
    body: list[str] = []
    body.extend(_header(data))
    body.extend(_totals(data))
    if data.windows:
        body.extend(_signups(data, frame))
        body.extend(_hashtags(data, frame))
    body.extend(_table(data.surges))
    footer = (
        f"Computed offline by surgewatch {text(__version__)} with the worker's code; surges are "
        f"scored with the whole input as history. Settings: {text(data.settings_note)}."
    )
    body.append(f"<footer>{footer}</footer>")
    title = text(f"Surge report: {_title(data.sources)}")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="surgewatch {text(__version__)}">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )
