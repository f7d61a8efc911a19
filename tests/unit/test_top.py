"""``surgewatch top``: merging workers' metrics, history and rates, the rendered view, the command."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from rich.console import Console

from surgewatch.cli import main
from surgewatch.top import (
    Scrape,
    TopState,
    fetch,
    merge,
    render,
    run_top,
    samples_from_text,
    sparkline,
)

WINDOW = 1_736_791_140  # 2025-01-13T17:59:00Z
QUOTED = 'say "hi" \\o/'  # exported as say \"hi\" \\o/

# The worker that owns the trend aggregation, as prometheus_client writes it (escapes included).
OWNER = r"""# HELP surgewatch_trend_window_start_seconds Start of the last complete window.
# TYPE surgewatch_trend_window_start_seconds gauge
surgewatch_trend_window_start_seconds 1.73679114e+09
# HELP surgewatch_top_hashtag_posts Posts in the last complete window, top-K hashtags.
# TYPE surgewatch_top_hashtag_posts gauge
surgewatch_top_hashtag_posts{hashtag="tiktokrefugee"} 5120.0
surgewatch_top_hashtag_posts{hashtag="小红书"} 2300.0
surgewatch_top_hashtag_posts{hashtag="say \"hi\" \\o/"} 900.0
surgewatch_top_hashtag_posts{hashtag="🐱cattax"} 450.0
surgewatch_top_hashtag_posts{hashtag="[bold]plain"} 40.0
surgewatch_top_hashtag_posts{hashtag="two\nlines"} 12.0
# HELP surgewatch_hashtag_surge_score Surge score of surging hashtags.
# TYPE surgewatch_hashtag_surge_score gauge
surgewatch_hashtag_surge_score{hashtag="tiktokrefugee"} 41.5
# HELP surgewatch_signups_window Signups in the last complete window by country.
# TYPE surgewatch_signups_window gauge
surgewatch_signups_window{country="CN"} 95.0
surgewatch_signups_window{country="US"} 812.0
surgewatch_signups_window{country="unknown"} 7.0
# HELP surgewatch_signup_surge_score Surge score by country.
# TYPE surgewatch_signup_surge_score gauge
surgewatch_signup_surge_score{country="US"} 30.1
surgewatch_signup_surge_score{country="CN"} -0.4
surgewatch_signup_surge_score{country="unknown"} 0.2
# HELP surgewatch_signup_surging Countries in a surge.
# TYPE surgewatch_signup_surging gauge
surgewatch_signup_surging{country="US"} 1.0
# HELP surgewatch_all_signups_window All signups in the last complete window.
# TYPE surgewatch_all_signups_window gauge
surgewatch_all_signups_window 914.0
# HELP surgewatch_all_signups_surge_score Surge score of all signups.
# TYPE surgewatch_all_signups_surge_score gauge
surgewatch_all_signups_surge_score 22.0
# HELP surgewatch_all_signups_surging 1 while all signups surge.
# TYPE surgewatch_all_signups_surging gauge
surgewatch_all_signups_surging 1.0
# HELP surgewatch_surges_total Surges started and ended.
# TYPE surgewatch_surges_total counter
surgewatch_surges_total{metric="hashtag_posts",state="start"} 3.0
surgewatch_surges_total{metric="hashtag_posts",state="end"} 2.0
surgewatch_surges_total{metric="signups",state="start"} 1.0
# HELP surgewatch_events_received_total Input events read, by stream.
# TYPE surgewatch_events_received_total counter
surgewatch_events_received_total{stream="posts"} 1000.0
surgewatch_events_received_total{stream="signups"} 200.0
# HELP surgewatch_events_rejected_total Rejected.
# TYPE surgewatch_events_rejected_total counter
surgewatch_events_rejected_total{reason="invalid_json",stream="posts"} 3.0
surgewatch_events_rejected_total{reason="invalid_ts",stream="posts"} 1.0
# HELP surgewatch_events_late_total Late.
# TYPE surgewatch_events_late_total counter
surgewatch_events_late_total{stream="posts"} 2.0
# HELP surgewatch_watermark_seconds Watermark.
# TYPE surgewatch_watermark_seconds gauge
surgewatch_watermark_seconds{stream="posts"} 1.73679123e+09
surgewatch_watermark_seconds{stream="signups"} 1.736791228e+09
"""

# Another worker of the app: trend families present but empty, its own counters and watermarks.
OTHER = """# HELP surgewatch_trend_window_start_seconds Start of the last complete window.
# TYPE surgewatch_trend_window_start_seconds gauge
# HELP surgewatch_top_hashtag_posts Posts in the last complete window, top-K hashtags.
# TYPE surgewatch_top_hashtag_posts gauge
# HELP surgewatch_signups_window Signups in the last complete window by country.
# TYPE surgewatch_signups_window gauge
# HELP surgewatch_surges_total Surges started and ended.
# TYPE surgewatch_surges_total counter
surgewatch_surges_total{metric="signups",state="start"} 1.0
# HELP surgewatch_events_received_total Input events read, by stream.
# TYPE surgewatch_events_received_total counter
surgewatch_events_received_total{stream="posts"} 500.0
surgewatch_events_received_total{stream="signups"} 50.0
# HELP surgewatch_events_rejected_total Rejected.
# TYPE surgewatch_events_rejected_total counter
surgewatch_events_rejected_total{reason="invalid_json",stream="posts"} 1.0
# HELP surgewatch_events_late_total Late.
# TYPE surgewatch_events_late_total counter
surgewatch_events_late_total{stream="posts"} 0.0
# HELP surgewatch_watermark_seconds Watermark.
# TYPE surgewatch_watermark_seconds gauge
surgewatch_watermark_seconds{stream="posts"} 1.73679120e+09
surgewatch_watermark_seconds{stream="signups"} 1.73679125e+09
"""


def _window(start: int, us: int, cn: int, total: int) -> str:
    """A minimal owner page describing one window's signups."""
    return f"""# TYPE surgewatch_trend_window_start_seconds gauge
surgewatch_trend_window_start_seconds {start}
# TYPE surgewatch_signups_window gauge
surgewatch_signups_window{{country="US"}} {us}
surgewatch_signups_window{{country="CN"}} {cn}
# TYPE surgewatch_all_signups_window gauge
surgewatch_all_signups_window {total}
"""


def _received(posts: float, signups: float) -> str:
    return f"""# TYPE surgewatch_events_received_total counter
surgewatch_events_received_total{{stream="posts"}} {posts}
surgewatch_events_received_total{{stream="signups"}} {signups}
"""


def _text(state: TopState, width: int = 140) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(render(state))
    return console.export_text()


def _row(lines: list[str], *first_words: str) -> str:
    """The one line that starts with ``first_words``."""
    (line,) = [line for line in lines if line.split()[: len(first_words)] == list(first_words)]
    return line


def _two_workers() -> TopState:
    state = TopState()
    state.update(
        merge(
            [
                Scrape("http://a/metrics", samples_from_text(OTHER)),
                Scrape("http://b/metrics", samples_from_text(OWNER)),
            ]
        ),
        now_seconds=1_736_791_260.0,
    )
    return state


def test_labels_come_back_unescaped() -> None:
    snapshot = merge([Scrape("http://b/metrics", samples_from_text(OWNER))])
    assert set(snapshot.top_hashtags) == {
        "tiktokrefugee",
        "小红书",
        QUOTED,
        "🐱cattax",
        "[bold]plain",
        "two\nlines",
    }
    assert snapshot.top_hashtags[QUOTED] == 900


def test_merge_sums_counters_and_takes_trends_from_the_worker_that_has_them() -> None:
    snapshot = merge(
        [
            Scrape("http://a/metrics", samples_from_text(OTHER)),
            Scrape("http://b/metrics", samples_from_text(OWNER)),
        ]
    )
    posts, signups = snapshot.streams["posts"], snapshot.streams["signups"]
    assert (posts.received, posts.rejected, posts.late) == (1500, 5, 2)
    assert (signups.received, signups.rejected, signups.late) == (250, 0, 0)
    # The stream's watermark is the smallest of the workers' (each reads some partitions).
    assert posts.watermark_seconds == 1_736_791_200
    assert signups.watermark_seconds == 1_736_791_228
    assert snapshot.surges == {
        ("hashtag_posts", "start"): 3,
        ("hashtag_posts", "end"): 2,
        ("signups", "start"): 2,
    }
    assert snapshot.window_start_seconds == WINDOW
    assert snapshot.top_hashtags["tiktokrefugee"] == 5120
    assert snapshot.hashtag_surge_scores == {"tiktokrefugee": 41.5}
    assert snapshot.signups == {"US": 812, "CN": 95, "unknown": 7}
    assert snapshot.signup_surge_scores["CN"] == -0.4
    assert snapshot.signup_surging == {"US"}
    assert (snapshot.all_signups, snapshot.all_signups_surge_score) == (914, 22)
    assert snapshot.all_signups_surging
    assert snapshot.answered == ("http://a/metrics", "http://b/metrics")


def test_while_the_trends_move_the_newest_window_wins() -> None:
    old = _window(WINDOW, us=1, cn=1, total=2)
    new = _window(WINDOW + 60, us=5, cn=3, total=8)
    for order in ([old, new], [new, old]):
        snapshot = merge(
            Scrape(f"http://{i}/metrics", samples_from_text(t)) for i, t in enumerate(order)
        )
        assert snapshot.window_start_seconds == WINDOW + 60
        assert snapshot.signups == {"US": 5, "CN": 3}


def test_no_window_yet_and_unreachable_workers() -> None:
    snapshot = merge(
        [
            Scrape("http://a/metrics", samples_from_text(OTHER)),
            Scrape("http://b/metrics", None, "connection refused"),
        ]
    )
    assert snapshot.window_start_seconds is None
    assert snapshot.top_hashtags == {} and snapshot.all_signups is None
    assert snapshot.unreachable == {"http://b/metrics": "connection refused"}
    assert snapshot.answered == ("http://a/metrics",)


def test_sparkline_scales_to_the_largest_value() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([10, 5, 0]) == "█▄▁"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([-3, 2]) == "▁█"
    assert sparkline([]) == ""


def test_history_adds_a_window_when_the_window_start_changes_and_stays_bounded() -> None:
    state = TopState(history_windows=3)
    polls = [
        (WINDOW, 10, 4, 14),
        (WINDOW, 10, 4, 14),  # the same window polled again: no new entry
        (WINDOW + 60, 20, 4, 24),
        (WINDOW + 120, 40, 0, 40),
        (WINDOW + 180, 80, 2, 82),
    ]
    for second, (start, us, cn, total) in enumerate(polls):
        state.update(merge([Scrape("u", samples_from_text(_window(start, us, cn, total)))]), second)
    assert [w.window_start_seconds for w in state.history] == [
        WINDOW + 60,
        WINDOW + 120,
        WINDOW + 180,
    ]
    assert state.signup_history("US") == [20, 40, 80]
    assert state.signup_history("CN") == [4, 0, 2]
    assert state.signup_history("FR") == [0, 0, 0]
    assert state.all_signups_history() == [24, 40, 82]
    assert sparkline(state.signup_history("US")) == "▂▄█"
    lines = _text(state).splitlines()
    assert "▂▄█" in _row(lines, "US") and "▃▄█" in _row(lines, "all")
    assert "none" in _row(lines, "none")  # no hashtag is surging
    # A window older than the newest (the trends moved to a worker that is behind) goes in order.
    state.update(merge([Scrape("u", samples_from_text(_window(WINDOW + 150, 60, 0, 60)))]), 9)
    assert state.signup_history("US") == [40, 60, 80]
    # A poll with no window yet (a worker restarted) keeps the history.
    state.update(merge([Scrape("u", samples_from_text(OTHER))]), 10)
    assert len(state.history) == 3


def test_rates_come_from_counter_deltas_between_polls() -> None:
    state = TopState()
    state.update(merge([Scrape("u", samples_from_text(_received(100, 10)))]), 1000.0)
    assert state.rates == {}  # one poll: no rate yet
    state.update(merge([Scrape("u", samples_from_text(_received(300, 15)))]), 1002.0)
    assert state.rates[("posts", "received")] == 100.0
    assert state.rates[("signups", "received")] == 2.5
    assert state.rates[("posts", "late")] == 0.0
    assert "300 100/s" in _row(_text(state).splitlines(), "posts")
    # A worker restart resets its counters: no rate rather than a negative one.
    state.update(merge([Scrape("u", samples_from_text(_received(50, 20)))]), 1003.0)
    assert ("posts", "received") not in state.rates
    assert state.rates[("signups", "received")] == 5.0
    # A worker that stops answering makes the sum drop: no rates for that poll, then again.
    two = [
        Scrape("u", samples_from_text(_received(60, 20))),
        Scrape("v", samples_from_text(_received(1000, 100))),
    ]
    state.update(merge(two), 1004.0)
    assert state.rates == {}
    state.update(
        merge(
            [
                Scrape("u", samples_from_text(_received(70, 20))),
                Scrape("v", None, "connection refused"),
            ]
        ),
        1005.0,
    )
    assert state.rates == {}
    state.update(
        merge(
            [
                Scrape("u", samples_from_text(_received(80, 20))),
                Scrape("v", None, "connection refused"),
            ]
        ),
        1006.0,
    )
    assert state.rates[("posts", "received")] == 10.0


def test_render_shows_hashtags_surges_countries_and_health() -> None:
    state = _two_workers()
    text = _text(state)
    lines = text.splitlines()
    for tag in ("#tiktokrefugee", "#小红书", f"#{QUOTED}", "#🐱cattax"):
        assert tag in text
    assert "#[bold]plain" in text  # markup in a tag is shown as typed
    assert "#two\\nlines" in text  # a newline in a tag is shown escaped, on one row
    # Top hashtags in order of posts, the surging one flagged with its score.
    (surging_row,) = [line for line in lines if "#tiktokrefugee" in line and "5,120" in line]
    assert "▲ +41.5" in surging_row
    (cjk_row,) = [line for line in lines if "#小红书" in line]
    assert "2,300" in cjk_row and "▲" not in cjk_row
    assert text.index("#tiktokrefugee") < text.index("#小红书") < text.index(f"#{QUOTED}")
    assert "surging hashtags" in text and "none" not in text
    # Countries by signups in the last window, then the all-signups row.
    firsts = [line.split()[0] for line in lines if line.split()]
    assert [w for w in firsts if w in ("US", "CN", "unknown", "all")] == [
        "US",
        "CN",
        "unknown",
        "all",
    ]
    us, cn, everyone = _row(lines, "US"), _row(lines, "CN"), _row(lines, "all")
    assert "812" in us and "+30.1" in us and "▲ surging" in us
    assert "95" in cn and "-0.4" in cn and "▲" not in cn
    assert "914" in everyone and "+22.0" in everyone and "▲ surging" in everyone
    assert "window 2025-01-13T17:59:00Z" in text
    assert "2/2 workers" in text
    # Health: watermark as ISO time and its lag from now (18:01:00Z), totals over workers.
    posts = _row(lines, "posts")
    assert "2025-01-13T18:00:00Z" in posts and "1 min 0 s" in posts and "1,500" in posts
    assert "32 s" in _row(lines, "signups", "2025-01-13T18:00:28Z")
    assert "hashtags 3/2, signups 2/0" in text


def test_render_on_a_narrow_terminal_keeps_the_tags_readable() -> None:
    text = _text(_two_workers(), width=80)
    for tag in ("#tiktokrefugee", "#小红书", f"#{QUOTED}"):
        assert tag in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_render_says_when_no_window_has_completed_or_no_worker_answered() -> None:
    state = TopState()
    assert "waiting for the first scrape" in _text(state)
    state.update(merge([Scrape("http://a/metrics", samples_from_text(OTHER))]), 1_736_791_260)
    text = _text(state)
    assert "no window has completed yet" in text
    assert "top hashtags" not in text
    assert "1,500" not in text and "500" in text  # health is still shown
    state.update(merge([Scrape("http://a/metrics", None, "connection refused")]), 1_736_791_261)
    text = _text(state)
    assert "unreachable: http://a/metrics: connection refused" in text
    assert "no worker answered" in text


@pytest.fixture
def metrics_server() -> Iterator[Callable[[str], str]]:
    """Serve texts on a loopback port: ``serve(text)`` returns the URL of a page serving ``text``."""
    pages: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(text: str) -> str:
        path = f"/{len(pages)}/metrics"
        pages[path] = text.encode()
        return f"http://127.0.0.1:{server.server_address[1]}{path}"

    try:
        yield serve
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL whose port is bound but not listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"


def test_fetch_reads_a_page_and_describes_failures(
    metrics_server: Callable[[str], str], refused_url: str
) -> None:
    url = metrics_server(OWNER)
    assert fetch(url).samples == samples_from_text(OWNER)
    missing = fetch(url.replace("/metrics", "/nothing"))
    assert missing.samples is None and missing.error is not None and "404" in missing.error
    assert fetch(refused_url).error == "connection refused"


def test_top_once_prints_the_view_of_every_worker(
    metrics_server: Callable[[str], str], refused_url: str
) -> None:
    urls = [metrics_server(OTHER), metrics_server(OWNER), refused_url]
    args = ["top", "--once"] + [arg for url in urls for arg in ("--url", url)]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for tag in ("#tiktokrefugee", "#小红书", f"#{QUOTED}", "#[bold]plain"):
        assert tag in result.output
    assert "2/3 workers" in result.output
    assert f"unreachable: {refused_url}: connection refused" in result.output


def test_top_once_with_no_worker_says_so_and_fails(refused_url: str) -> None:
    result = CliRunner().invoke(main, ["top", "--once", "--url", refused_url])
    assert result.exit_code == 1
    assert f"no worker answered ({refused_url}: connection refused)" in result.output
    assert "surgewatch worker" in result.output
    assert "Traceback" not in result.output


def test_top_rejects_a_url_that_is_not_http() -> None:
    result = CliRunner().invoke(main, ["top", "--once", "--url", "127.0.0.1:6066"])
    assert result.exit_code == 2
    assert "is not an http:// URL" in result.output


def test_live_view_refreshes_until_ctrl_c_and_returns(metrics_server: Callable[[str], str]) -> None:
    url = metrics_server(OWNER)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    console = Console(record=True, width=120, color_system=None)
    run_top([url], interval_seconds=1.0, console=console, now=lambda: 1_736_791_260.0, sleep=sleep)
    assert len(sleeps) == 2 and all(0 <= s <= 1.0 for s in sleeps)
    text = console.export_text()
    assert "#tiktokrefugee" in text and "1/1 workers" in text
