"""Offline reports: the surge table, the SVG charts, escaping, determinism and the command."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from surgewatch.cli import main
from surgewatch.config import ENV_PREFIX, Settings, load_settings
from surgewatch.eventfile import EventRecord, write_events
from surgewatch.offline import StreamTotals, compute
from surgewatch.report import (
    ReportError,
    WindowSeries,
    build_report_data,
    compute_report,
    render_html,
    report_data,
    write_report,
)
from surgewatch.report.svg import downsample_max, nice_scale, text, time_ticks, visible
from surgewatch.trends.partition import ALL_KEY, HASHTAGS, SIGNUPS, Surge
from surgewatch.trends.surge import SurgeEvent
from surgewatch.windows.counting import WindowCount
from tests.report_table import surge_table_rows

WINDOW = 60
START = datetime(2025, 1, 12, tzinfo=UTC)
T0 = int(START.timestamp())
#: The processing clock: a day after the events, so every ts is in range.
NOW = T0 + 86_400
#: A hashtag a producer may send in a ``hashtags`` list: markup, quotes and an entity.
HOSTILE = '<script>alert("x")</script>&amp;'
#: Windows (indexes from T0) of the waves in :func:`wave_records`.
TAG_WAVE = (30, 37)
SIGNUP_WAVE = (30, 36)
HOSTILE_WAVE = (44, 50)
WINDOWS = 60


def clock() -> float:
    return NOW


def at(index: int) -> str:
    """The UTC time of window ``index`` as the page writes it."""
    return datetime.fromtimestamp(T0 + index * WINDOW, UTC).strftime("%Y-%m-%d %H:%M")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``SURGEWATCH_*`` variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    yield


def wave_records(*, windows: int = WINDOWS, open_wave: bool = False) -> list[EventRecord]:
    """An hour of made-up traffic with clear surges.

    Background: 30 posts a window over a dozen tags (emoji and CJK among them) and 4 signups from
    CN/TW/DE. Windows 30-36: #wave from 80 new accounts a window (to the end with ``open_wave``);
    windows 30-35: 60 US signups a window; windows 44-49: the hostile tag and #穿搭, 80 a window.
    """
    rng = random.Random(7)
    tags = ["food", "travel", "穿搭", "cats🐈", "art", "ootd", "music", "news", "tea", "film"]
    timed: list[tuple[float, EventRecord]] = []
    serial = 0

    def add(ts: float, stream: str, key: str, value: dict[str, object]) -> None:
        timed.append((ts, EventRecord(stream, key, {**value, "ts": ts})))

    for index in range(windows):
        start = T0 + WINDOW * index
        for _ in range(30):
            serial += 1
            user = f"u{rng.randrange(200)}"
            picked = rng.sample(tags, rng.randint(1, 3))
            add(start + rng.uniform(0, 59.9), "posts", user, post(serial, user, picked))
        if TAG_WAVE[0] <= index < TAG_WAVE[1] or (open_wave and index >= TAG_WAVE[0]):
            for _ in range(80):
                serial += 1
                user = f"w{serial}"
                add(start + rng.uniform(0, 59.9), "posts", user, post(serial, user, ["#Wave"]))
        if HOSTILE_WAVE[0] <= index < HOSTILE_WAVE[1]:
            for _ in range(80):
                serial += 1
                user = f"h{serial}"
                value = post(serial, user, [HOSTILE, "穿搭"])
                add(start + rng.uniform(0, 59.9), "posts", user, value)
        wave = SIGNUP_WAVE[0] <= index < SIGNUP_WAVE[1]
        for _ in range(60 if wave else 4):
            serial += 1
            country = "US" if wave else rng.choice(["CN", "TW", "DE"])
            value = {"event_id": f"s{serial}", "user_id": f"n{serial}", "country": country}
            add(start + rng.uniform(0, 59.9), "signups", f"n{serial}", value)
    timed.sort(key=lambda item: item[0])
    return [record for _, record in timed]


def post(serial: int, user: str, hashtags: list[str]) -> dict[str, object]:
    return {"event_id": f"p{serial}", "user_id": user, "hashtags": hashtags}


def settings() -> Settings:
    return load_settings()


def render(records: list[EventRecord], **range_seconds: float) -> str:
    data = report_data(records, settings(), ["wave.jsonl"], now=clock, **range_seconds)
    return render_html(data)


def surge_rows(page: str) -> dict[tuple[str, str], dict[str, str]]:
    """The surge table's rows by (metric, key label); each key surges once in these tests."""
    columns = ("metric", "key", "start", "count", "score", "baseline", "basis", "peak")
    columns += ("peak_at", "end", "duration")
    rows = [dict(zip(columns, cells, strict=True)) for cells in surge_table_rows(page)]
    by_key = {(row["metric"], row["key"]): row for row in rows}
    assert len(by_key) == len(rows), "a key surged twice"
    return by_key


@pytest.fixture(scope="module")
def records() -> list[EventRecord]:
    return wave_records()


@pytest.fixture(scope="module")
def page(records: list[EventRecord]) -> str:
    return render(records)


# --- the table ---------------------------------------------------------------------------------


def test_the_surge_table_names_each_surge_with_its_start_peak_and_end(page: str) -> None:
    rows = surge_rows(page)
    assert set(rows) == {
        ("hashtag", "#wave"),
        ("hashtag", f"#{HOSTILE}"),
        ("hashtag", "#穿搭"),
        ("signups", "US"),
        ("signups", "* all signups"),
    }
    wave = rows["hashtag", "#wave"]
    assert (wave["start"], wave["count"], wave["peak"]) == (at(30), "80", "80")
    # The end record comes with the second calm window after the last wave window (36).
    assert (wave["end"], wave["duration"]) == (at(38), "8 min")
    us = rows["signups", "US"]
    assert (us["start"], us["count"], us["peak"], us["end"]) == (at(30), "60", "60", at(37))
    everyone = rows["signups", "* all signups"]
    assert (everyone["start"], everyone["peak"], everyone["end"]) == (at(30), "60", at(37))
    hostile = rows["hashtag", f"#{HOSTILE}"]
    assert (hostile["start"], hostile["peak"], hostile["end"]) == (at(44), "80", at(51))
    assert all(row["basis"] in ("window", "day over day") for row in rows.values())


def test_the_table_agrees_with_the_surges_of_the_pipeline(
    records: list[EventRecord], page: str
) -> None:
    result = compute(records, settings(), now=clock)
    rows = surge_rows(page)
    for surge in result.surges:
        metric = "hashtag" if surge.metric == HASHTAGS else "signups"
        label = f"#{surge.event.key}" if surge.metric == HASHTAGS else surge.event.key
        row = rows[metric, "* all signups" if label == ALL_KEY else label]
        column = "start" if surge.event.state == "start" else "end"
        assert row[column] == datetime.fromtimestamp(surge.event.window_start, UTC).strftime(
            "%Y-%m-%d %H:%M"
        )
        if surge.event.state == "start":
            assert row["score"] == f"{surge.event.score:.1f}"


def test_a_surge_still_on_at_the_end_of_the_input_is_open() -> None:
    rows = surge_rows(render(wave_records(open_wave=True)))
    wave = rows["hashtag", "#wave"]
    assert (wave["start"], wave["end"], wave["duration"]) == (at(30), "open", "open")
    assert rows["signups", "US"]["end"] == at(37)


# --- the page ----------------------------------------------------------------------------------


def test_the_page_has_the_summary_and_svg_charts(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Surge report: wave.jsonl</title>" in page
    assert f"{at(0)} to {at(WINDOWS)} UTC (1 h): 60 windows of 60 s" in page
    assert page.count("<svg") == 3  # all signups, signups by country, hashtags
    # One line per country, the surging one drawn thicker; no "other" with four countries.
    assert page.count('<polyline class="series"') == 4
    assert re.search(r'stroke-width="2.4"[^>]*>\s*<title>US: ', page)
    # Surge spans: 2 signup surges shaded on the country chart and marked in lanes above it, *
    # on the all-signups strip, and the three hashtag surges in their rows.
    assert page.count('class="surge-mark"') == 2
    assert page.count('class="surge-span"') == 2 + 1 + 3
    for label in ("all signups", "#wave", "#food", "#穿搭", "#cats🐈"):
        assert f">{text(label)}</text>" in page
    # Totals per stream: received, counted, late, rejected.
    assert re.search(r"<td>signups</td><td class='num'>576</td><td class='num'>576</td>", page)


def test_a_hostile_hashtag_is_escaped_everywhere(page: str) -> None:
    assert "<script" not in page
    assert HOSTILE not in page
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;"
    assert escaped in page
    # Decoded by an HTML parser, the cell is the tag itself, character for character.
    assert ("hashtag", f"#{HOSTILE}") in surge_rows(page)


def test_invisible_and_unencodable_characters_are_made_visible() -> None:
    assert visible("a\u202eb\x00c\ud800") == "a\\u202eb\\x00c\\ud800"
    # Joiners stay: they hold emoji sequences and scripts together.
    assert visible("👩\u200d💻") == "👩\u200d💻"
    assert text("\"'<&>") == "&quot;&#x27;&lt;&amp;&gt;"
    records = wave_records(windows=40)
    value = {"event_id": "odd", "user_id": "x", "ts": T0 + 5.0, "hashtags": ["rtl\u202eevil"]}
    records.insert(0, EventRecord("posts", "x", value))
    page = render(records)
    page.encode("utf-8")  # nothing unencodable is left
    assert "\u202e" not in page


def test_same_input_same_bytes(records: list[EventRecord], page: str) -> None:
    again = render(list(records))
    assert again == page
    assert again.encode() == page.encode()


def test_the_page_references_nothing_outside_itself(page: str) -> None:
    lowered = page.lower()
    for needle in ("http:", "https:", "//", "src=", "href=", "url(", "@import", "<script"):
        assert needle not in lowered, needle
    for tag in ("<link", "<img", "<iframe", "<object", "<embed"):
        assert tag not in lowered, tag


def test_from_and_until_choose_the_windows_shown(records: list[EventRecord]) -> None:
    page = render(records, since_seconds=T0 + 40 * WINDOW, until_seconds=T0 + 55.5 * WINDOW)
    assert f"{at(40)} to {at(56)} UTC (16 min): 16 windows of 60 s" in page
    # The surges of windows 30-38 are outside; those of 44-51 are in, scored on the whole input.
    assert set(surge_rows(page)) == {("hashtag", f"#{HOSTILE}"), ("hashtag", "#穿搭")}


def test_no_event_gives_a_page_without_charts() -> None:
    page = render([])
    assert "No counted event in the range" in page
    assert "<svg" not in page
    assert "No surge in this range." in page


# --- drawing -----------------------------------------------------------------------------------


def test_downsampling_keeps_a_one_window_spike() -> None:
    values = [1] * 4320
    values[1234] = 500
    per, points = downsample_max(values, 1000)
    assert per == 5
    assert len(points) == 864
    assert points[1234 // 5] == 500
    assert downsample_max([3, 1, 2], 10) == (1, [3, 1, 2])


def test_scales_and_ticks() -> None:
    assert nice_scale(0) == (1, 1)
    assert nice_scale(3) == (3, 1)
    assert nice_scale(73) == (80, 20)
    assert nice_scale(1234) == (1500, 500)
    step, ticks = time_ticks(T0, T0 + 72 * 3600)
    assert step == 6 * 3600
    assert ticks[0] == T0
    assert all(t % step == 0 for t in ticks)


def test_three_days_are_drawn_small_with_exact_surge_marks() -> None:
    """4,320 windows and ten countries fit in a small page; surge marks one window apart stay
    one window apart though both fall in one pixel column's run of windows."""
    windows = 4320
    rng = random.Random(3)
    counts: list[WindowCount] = []
    countries = ["CN", "TW", "HK", "MY", "SG", "JP", "KR", "US", "CA", "GB", "DE"]
    for index in range(windows):
        start = T0 + index * WINDOW
        for country in countries:
            count = rng.randint(0, 5) + (400 if country == "US" and index == 2000 else 0)
            if count:
                counts.append(WindowCount(SIGNUPS, country, start, start + WINDOW, count))
        counts.append(WindowCount(HASHTAGS, "wave", start, start + WINDOW, rng.randint(1, 9)))
    series = WindowSeries()
    series.add(counts)

    def record(key: str, state: str, index: int) -> Surge:
        event = SurgeEvent(key, state, T0 + index * WINDOW, 400, 2.0, 9.0)  # type: ignore[arg-type]
        return Surge(SIGNUPS, event)

    surges = [
        record("US", "start", 2000),
        record("US", "end", 2010),
        record("CA", "start", 2001),
        record("CA", "end", 2011),
    ]
    totals = {"posts": StreamTotals(), "signups": StreamTotals()}
    data = build_report_data(series, surges, totals, window_seconds=WINDOW, sources=["big"])
    assert data.windows == windows
    # Eight countries by total, the surging ones (US, CA) even if not among them, and "other".
    keys = [s.key for s in data.countries]
    assert {"US", "CA", "other"} <= set(keys)
    assert len(keys) <= 8 + 2 + 1
    page = render_html(data)
    assert len(page.encode()) < 400_000
    for points in re.findall(r'<polyline class="series"[^>]*points="([^"]*)"', page):
        assert len(points.split()) <= 1160
    xs = [float(x) for x in re.findall(r'<rect class="surge-span" x="([0-9.]+)"', page)]
    us_x, ca_x = xs[0], xs[1]  # shaded spans on the country chart, in start order
    assert ca_x > us_x
    rows = surge_rows(page)
    assert rows["signups", "US"]["peak"] == str(max(c.count for c in counts if c.key == "US"))


# --- files and the command ---------------------------------------------------------------------


@pytest.fixture
def event_file(tmp_path: Path, records: list[EventRecord]) -> Path:
    path = tmp_path / "wave.jsonl.gz"
    write_events(path, records)
    return path


def test_write_report_writes_the_same_page_as_in_memory(
    event_file: Path, tmp_path: Path, page: str
) -> None:
    out = tmp_path / "report.html"
    stats = write_report([str(event_file)], str(out), settings(), now=clock)
    html = out.read_text(encoding="utf-8")
    assert html == page.replace("wave.jsonl", "wave.jsonl.gz")
    assert (stats.windows, stats.surges, stats.size_bytes) == (60, 5, len(html.encode()))
    assert stats.events == len(wave_records())
    assert not list(tmp_path.glob("*.partial-*"))


def test_bad_lines_are_skipped_and_counted(tmp_path: Path, records: list[EventRecord]) -> None:
    path = tmp_path / "mixed.jsonl"
    write_events(path, records)
    with path.open("ab") as handle:
        handle.write(b"{not json\n")
    data, events = compute_report([str(path)], settings(), now=clock)
    assert (data.unreadable_lines, events) == (1, len(records))
    assert "1 unreadable file lines were skipped." in render_html(data)


def test_the_command_writes_the_page_and_says_so(event_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", str(event_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        rf"report of 3,416 events: 60 windows, 5 surges, wrote {re.escape(str(out))} "
        r"\(\d+ KiB\) in \d+\.\d s\n",
        result.output,
    )
    assert "#wave" in out.read_text(encoding="utf-8")


def test_the_command_shows_a_range(event_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "part.html"
    args = ["report", str(event_file), "--out", str(out)]
    args += ["--from", "2025-01-12T00:40:00Z", "--until", "2025-01-12T00:56:00+00:00"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "16 windows, 2 surges" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.jsonl", "--out", "r.html"], "Error: no such event file: nope.jsonl\n"),
        (["{file}", "--out", "{tmp}/missing/r.html"], "Error: cannot write {tmp}/missing/r.html"),
        (["{file}", "--out", "{tmp}"], "Error: cannot write {tmp}: it is a directory"),
        (
            [
                "{file}",
                "--out",
                "r.html",
                "--from",
                "2025-01-12T01:00Z",
                "--until",
                "2025-01-12T00:30Z",
            ],
            "Error: --from 2025-01-12T01:00Z must be before --until 2025-01-12T00:30Z\n",
        ),
        (
            ["{file}", "--out", "r.html", "--from", "yesterday"],
            "Error: --from: 'yesterday' is not an ISO-8601 time\n",
        ),
    ],
)
def test_the_command_fails_in_one_line(
    args: list[str], message: str, event_file: Path, tmp_path: Path
) -> None:
    fill = {"file": str(event_file), "tmp": str(tmp_path)}
    argv = ["report", *(arg.format(**fill) for arg in args)]
    with CliRunner().isolated_filesystem(temp_dir=tmp_path):
        result = CliRunner().invoke(main, argv)
    assert result.exit_code != 0
    assert message.format(**fill) in result.output
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert result.output.count("\n") == 1


def test_an_unwritable_output_fails_before_the_work(event_file: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        with pytest.raises(ReportError, match="permission denied"):
            write_report([str(event_file)], str(locked / "r.html"), settings())
    finally:
        locked.chmod(0o700)
