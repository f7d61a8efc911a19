"""Trend metrics: the top-K collector's exposition, hostile hashtags as labels, fresh families."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from surgewatch.metrics import MAX_LABEL_CHARS, Metrics, TrendCollector, hashtag_label
from surgewatch.trends.aggregate import TrendView
from surgewatch.trends.partition import ALL_KEY, KeyTrend

T0 = 1_700_000_040
PROMTOOL = "/usr/bin/promtool"
TREND_FAMILIES = {
    "surgewatch_trend_window_start_seconds",
    "surgewatch_top_hashtag_posts",
    "surgewatch_hashtag_surge_score",
    "surgewatch_signups_window",
    "surgewatch_signup_surge_score",
    "surgewatch_signup_surging",
    "surgewatch_all_signups_window",
    "surgewatch_all_signups_surge_score",
    "surgewatch_all_signups_surging",
}
LONG = "x" * 10_000
HOSTILE = [
    'say "hi"',
    "back\\slash",
    "new\nline",
    "}",
    'a"} 1\nfake_metric{b="',
    "🚀🔥",
    "小红书",
    "\ud800",  # a lone surrogate: not UTF-8 encodable
    "lone\udfffend",
    LONG,
    LONG + "y",  # shares the first 10,000 characters with LONG
    "\\ud800",  # literally backslash-u-d-8-0-0
    "# not a comment",
    "tab\there",
    "",
]


def registry_for(view: Callable[[], TrendView | None], top_k: int = 20) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(TrendCollector(view, top_k))
    return registry


def families(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse the exposition back: family name -> (labels, value) of each sample."""
    text = generate_latest(registry).decode()
    return {
        family.name: [(dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def trend(key: str, score: float, count: int = 40, surging: bool = True) -> KeyTrend:
    return KeyTrend(key, count, 2.0, score, surging)


def full_view(tags: list[str]) -> TrendView:
    return TrendView(
        hashtag_window=T0,
        top_hashtags=tuple((tag, 100 - i) for i, tag in enumerate(tags)),
        surging_hashtags=tuple(trend(tag, 50.0 - i) for i, tag in enumerate(tags[:5])),
        signup_window=T0 - 60,
        signups=(trend("CN", 1.5, 9, False), trend("US", 12.25, 300, True)),
        all_signups=trend(ALL_KEY, 8.5, 309, True),
    )


# --- labels ------------------------------------------------------------------------------------


def test_hashtag_label_keeps_ordinary_tags_and_bounds_the_rest() -> None:
    for tag in ("tiktokrefugee", "小红书", "🚀", 'say "hi"', "new\nline", "x" * MAX_LABEL_CHARS):
        assert hashtag_label(tag) == tag
    assert hashtag_label("\ud800") == "\\ud800"
    assert hashtag_label("a\udfffb") == "a\\udfffb"
    long_a, long_b = hashtag_label(LONG), hashtag_label(LONG + "y")
    assert len(long_a) <= MAX_LABEL_CHARS
    assert len(long_b) <= MAX_LABEL_CHARS
    assert long_a != long_b
    assert long_a.startswith("x" * 100)
    assert hashtag_label(LONG) == long_a  # stable across calls
    assert len(hashtag_label("x" * (MAX_LABEL_CHARS + 1))) <= MAX_LABEL_CHARS


# --- exposition --------------------------------------------------------------------------------


def test_hostile_hashtags_parse_back_to_their_labels() -> None:
    view = full_view(HOSTILE)
    parsed = families(registry_for(lambda: view, top_k=len(HOSTILE)))
    top = parsed["surgewatch_top_hashtag_posts"]
    assert [labels for labels, _ in top] == [{"hashtag": hashtag_label(tag)} for tag in HOSTILE]
    assert [value for _, value in top] == [float(100 - i) for i in range(len(HOSTILE))]
    labels = [labels["hashtag"] for labels, _ in top]
    assert labels[HOSTILE.index("\ud800")] == "\\ud800"
    assert all(len(label) <= MAX_LABEL_CHARS for label in labels)
    assert labels[HOSTILE.index(LONG)] != labels[HOSTILE.index(LONG + "y")]
    # No injected series: the hostile tag with a newline and a brace stays one label value.
    assert "fake_metric" not in parsed
    scores = parsed["surgewatch_hashtag_surge_score"]
    assert scores == [({"hashtag": hashtag_label(t)}, 50.0 - i) for i, t in enumerate(HOSTILE[:5])]


@pytest.mark.skipif(
    shutil.which(PROMTOOL) is None,
    reason=f"{PROMTOOL} not installed (Debian package 'prometheus'; `make setup` installs it)",
)
def test_exposition_with_hostile_hashtags_passes_promtool() -> None:
    unique = [tag for tag in HOSTILE if tag != "\\ud800"]  # same label as the lone surrogate
    view = full_view(unique)
    registry = registry_for(lambda: view, top_k=len(unique))
    Metrics(registry)  # the worker's other series beside them
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_families_are_built_fresh_on_every_scrape() -> None:
    current = {"view": full_view(["old", "kept"])}
    registry = registry_for(lambda: current["view"])
    first = families(registry)["surgewatch_top_hashtag_posts"]
    assert [labels["hashtag"] for labels, _ in first] == ["old", "kept"]
    current["view"] = TrendView(hashtag_window=T0 + 60, top_hashtags=(("kept", 7), ("new", 3)))
    parsed = families(registry)
    assert parsed["surgewatch_top_hashtag_posts"] == [
        ({"hashtag": "kept"}, 7.0),
        ({"hashtag": "new"}, 3.0),
    ]
    # The surging tags and signups of the old view left with it.
    assert parsed["surgewatch_hashtag_surge_score"] == []
    assert parsed["surgewatch_signups_window"] == []
    assert parsed["surgewatch_all_signups_window"] == []
    assert parsed["surgewatch_trend_window_start_seconds"] == [({}, float(T0 + 60))]
    # Scraping again changes nothing: nothing piles up.
    assert families(registry) == parsed


def test_a_worker_without_the_view_serves_the_families_without_samples() -> None:
    registry = registry_for(lambda: None)
    parsed = families(registry)
    assert set(parsed) == TREND_FAMILIES
    assert all(samples == [] for samples in parsed.values())
    text = generate_latest(registry).decode()
    assert "# TYPE surgewatch_top_hashtag_posts gauge" in text
    assert "# HELP surgewatch_top_hashtag_posts" in text


def test_a_view_gives_exactly_its_series() -> None:
    tags = [f"tag{i}" for i in range(13)]
    view = full_view(tags)
    registry = registry_for(lambda: view, top_k=13)
    parsed = families(registry)
    assert len(parsed["surgewatch_top_hashtag_posts"]) == len(view.top_hashtags) == 13
    assert len(parsed["surgewatch_hashtag_surge_score"]) == 5
    assert parsed["surgewatch_trend_window_start_seconds"] == [({}, float(T0))]  # the newer one
    assert parsed["surgewatch_signups_window"] == [
        ({"country": "CN"}, 9.0),
        ({"country": "US"}, 300.0),
    ]
    assert parsed["surgewatch_signup_surge_score"] == [
        ({"country": "CN"}, 1.5),
        ({"country": "US"}, 12.25),
    ]
    assert parsed["surgewatch_signup_surging"] == [({"country": "US"}, 1.0)]
    assert parsed["surgewatch_all_signups_window"] == [({}, 309.0)]
    assert parsed["surgewatch_all_signups_surge_score"] == [({}, 8.5)]
    assert parsed["surgewatch_all_signups_surging"] == [({}, 1.0)]
    get = registry.get_sample_value
    assert get("surgewatch_top_hashtag_posts", {"hashtag": "tag0"}) == 100.0
    assert get("surgewatch_top_hashtag_posts", {"hashtag": "tag12"}) == 88.0
    assert get("surgewatch_hashtag_surge_score", {"hashtag": "tag4"}) == 46.0
    assert get("surgewatch_hashtag_surge_score", {"hashtag": "tag5"}) is None
    # A calm "*" reads 0, not absent.
    calm = TrendView(signup_window=T0, all_signups=trend(ALL_KEY, 0.5, 3, False))
    assert registry_for(lambda: calm).get_sample_value("surgewatch_all_signups_surging") == 0.0


def test_metrics_watch_trends_and_the_surges_counter() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for metric in ("hashtag_posts", "signups"):
        for state in ("start", "end"):
            labels = {"metric": metric, "state": state}
            assert registry.get_sample_value("surgewatch_surges_total", labels) == 0.0
    metrics.surges.labels("signups", "start").inc()
    labels = {"metric": "signups", "state": "start"}
    assert registry.get_sample_value("surgewatch_surges_total", labels) == 1.0
    # No trend series until a view is watched; then the registry serves them.
    assert registry.get_sample_value("surgewatch_top_hashtag_posts", {"hashtag": "a"}) is None
    views: list[TrendView | None] = [None]
    metrics.watch_trends(lambda: views[-1], top_k=3)
    assert registry.get_sample_value("surgewatch_top_hashtag_posts", {"hashtag": "a"}) is None
    views.append(TrendView(hashtag_window=T0, top_hashtags=(("a", 4),)))
    assert registry.get_sample_value("surgewatch_top_hashtag_posts", {"hashtag": "a"}) == 4.0
    assert "top 3 hashtags" in generate_latest(registry).decode()


@given(
    tag=st.text(max_size=200) | st.text(min_size=MAX_LABEL_CHARS, max_size=400),
    count=st.integers(0, 2**53),
    score=st.floats(-1e9, 1e9, allow_nan=False),
)
@settings(max_examples=300, deadline=None)
def test_any_text_tag_round_trips_through_the_exposition(
    tag: str, count: int, score: float
) -> None:
    view = TrendView(
        hashtag_window=T0, top_hashtags=((tag, count),), surging_hashtags=(trend(tag, score),)
    )
    parsed = families(registry_for(lambda: view))
    assert parsed["surgewatch_top_hashtag_posts"] == [({"hashtag": hashtag_label(tag)}, count)]
    assert parsed["surgewatch_hashtag_surge_score"] == [({"hashtag": hashtag_label(tag)}, score)]
    assert len(hashtag_label(tag)) <= MAX_LABEL_CHARS
