"""Offline pipeline: exact window counts of an event file, independent of batching and partitions."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from surgewatch import offline
from surgewatch.config import ENV_PREFIX, Settings, load_settings
from surgewatch.eventfile import EventRecord
from surgewatch.events.model import Post, Rejected, Signup
from surgewatch.events.parse import parse_post, parse_signup
from surgewatch.offline import OfflinePipeline, OfflineResult, compute
from surgewatch.partitioner import KafkaPartitioner
from surgewatch.simulate.scenarios import simulate
from surgewatch.trends.partition import ALL_KEY
from surgewatch.windows.counting import WindowCount

WINDOW = 60
GRACE = 30
START = datetime(2025, 1, 12, tzinfo=UTC)
#: The processing clock of every run: a day after the simulated events, so all are in range.
NOW = START.timestamp() + 86_400
HASHTAGS = "hashtag_posts"
SIGNUPS = "signups"


def clock() -> float:
    return NOW


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``SURGEWATCH_*`` variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    yield


@pytest.fixture(scope="module")
def baseline() -> list[EventRecord]:
    """Two hours of the ``baseline`` scenario at 1 % scale (about a thousand events)."""
    return list(simulate("baseline", scale=0.01, hours=2, start=START))


def trend_records() -> list[EventRecord]:
    """Forty windows of made-up traffic with surges: a tag wave, a signup wave, a bot, junk.

    Background: a handful of tags and countries at a steady rate. Windows 20-26: ``wave`` from many
    accounts (a real trend) and US signups x20. Window 30: one bot posting ``freecrypto`` 300 times
    (discounted: published, but no surge). A few malformed values and one late post.
    """
    rng = random.Random(2025)
    t0 = int(START.timestamp())
    records: list[tuple[float, EventRecord]] = []
    serial = 0

    def add(ts: float, stream: str, key: str | None, value: dict[str, object] | str) -> None:
        records.append((ts, EventRecord(stream, key, value)))

    for index in range(40):
        start = t0 + WINDOW * index
        for _ in range(40):
            serial += 1
            user = f"u{rng.randrange(300)}"
            tags = rng.sample(["food", "travel", "穿搭", "ootd", "art", "cats"], rng.randint(0, 2))
            value = {"event_id": f"p{serial}", "user_id": user, "ts": 0.0, "hashtags": tags}
            add(start + rng.uniform(0, 59.9), "posts", user, value)
        if 20 <= index < 27:
            for _ in range(120):
                serial += 1
                user = f"w{serial}"
                value = {"event_id": f"p{serial}", "user_id": user, "ts": 0.0, "text": "#Wave now"}
                add(start + rng.uniform(0, 59.9), "posts", user, value)
        if index == 30:
            for i in range(300):
                value = {"event_id": f"bot{i}", "user_id": "bot-1", "ts": 0.0}
                value["hashtags"] = ["freecrypto"]
                add(start + i * 0.19, "posts", "bot-1", value)
        for _ in range(100 if 20 <= index < 26 else 5):
            serial += 1
            country = "US" if 20 <= index < 26 else rng.choice(["CN", "TW", "us", "zz"])
            value = {"event_id": f"s{serial}", "user_id": f"n{serial}", "ts": 0.0}
            value["country"] = country
            add(start + rng.uniform(0, 59.9), "signups", f"n{serial}", value)
        if index % 10 == 3:
            add(start + 1, "posts", None, "{not json")
            add(start + 2, "signups", "x", {"event_id": "s", "user_id": "x"})  # no ts
    # One post ten minutes older than its neighbours: late on whatever partition it lands.
    late = {"event_id": "late", "user_id": "u1", "ts": 0.0, "hashtags": ["food"]}
    add(t0 + WINDOW * 35 + 30, "posts", "u1", late)
    records.sort(key=lambda item: item[0])
    out: list[EventRecord] = []
    for ts, record in records:
        if isinstance(record.value, dict) and "ts" in record.value:
            stamped = dict(record.value)
            stamped["ts"] = ts - 600 if record.value.get("event_id") == "late" else ts
            record = EventRecord(record.stream, record.key, stamped)
        out.append(record)
    return out


@pytest.fixture(scope="module")
def trending() -> list[EventRecord]:
    return trend_records()


def run(records: list[EventRecord], partitions: int = 4) -> OfflineResult:
    return compute(records, load_settings(partitions=partitions), now=clock)


def counts_of(result: OfflineResult) -> dict[tuple[str, str, int], int]:
    """Window counts by (metric, key, window start); each must be published exactly once."""
    keys = Counter((w.metric, w.key, w.window_start) for w in result.window_counts)
    assert all(n == 1 for n in keys.values()), [k for k, n in keys.items() if n > 1]
    return {(w.metric, w.key, w.window_start): w.count for w in result.window_counts}


def sorted_counts(result: OfflineResult) -> list[WindowCount]:
    return sorted(result.window_counts, key=lambda w: (w.metric, w.window_start, w.key))


def sorted_surges(result: OfflineResult) -> list[dict[str, object]]:
    return sorted(
        (s.as_dict() for s in result.surges),
        key=lambda d: (str(d["metric"]), str(d["key"]), int(str(d["window_start"])), d["state"]),
    )


def brute_force(
    records: list[EventRecord], settings: Settings
) -> tuple[Counter[tuple[str, str, int]], Counter[str]]:
    """Window counts and late events per stream, straight from the contract.

    Each event is parsed; rejected ones are skipped. An event is late when its window's end + grace
    is at or before the largest (clock-capped) event time read before it from its own partition.
    """
    n = settings.partitions
    topic = {"posts": settings.posts_topic, "signups": settings.signups_topic}
    partitioner = KafkaPartitioner({t: list(range(n)) for t in topic.values()})
    watermarks: dict[tuple[str, int], float] = {}
    counts: Counter[tuple[str, str, int]] = Counter()
    late: Counter[str] = Counter()
    for record in records:
        partition = partitioner.partition(topic[record.stream], record.key_bytes())
        event: Post | Signup | Rejected
        if record.stream == "posts":
            event = parse_post(record.value_bytes(), NOW)
        else:
            event = parse_signup(record.value_bytes(), NOW)
        if isinstance(event, Rejected):
            continue
        start = int(event.ts // WINDOW) * WINDOW
        watermark = watermarks.get((record.stream, partition), float("-inf"))
        if start + WINDOW + GRACE <= watermark:
            late[record.stream] += 1
            continue
        watermarks[record.stream, partition] = max(watermark, min(event.ts, NOW))
        if isinstance(event, Post):
            for tag in set(event.hashtags):
                counts[HASHTAGS, tag, start] += 1
        else:
            counts[SIGNUPS, event.country, start] += 1
    return counts, late


def check_totals(records: list[EventRecord], result: OfflineResult) -> None:
    per_stream = Counter(r.stream for r in records)
    for stream in ("posts", "signups"):
        totals = result.totals[stream]
        assert totals.received == per_stream[stream]
        assert totals.counted + totals.rejected + totals.late == totals.received, stream


# --- exact counts ------------------------------------------------------------------------------


def test_window_counts_equal_a_brute_force_count_of_the_simulator(
    baseline: list[EventRecord],
) -> None:
    settings = load_settings()
    result = compute(baseline, settings, now=clock)
    expected, late = brute_force(baseline, settings)
    # The simulator writes in order within a few seconds, far inside the grace: nothing is late.
    assert result.totals["posts"].late == late["posts"] == 0
    assert result.totals["signups"].late == late["signups"] == 0
    assert counts_of(result) == dict(expected)
    check_totals(baseline, result)
    # Two hours of one-minute windows, every one of them closed.
    assert len({w.window_start for w in result.window_counts if w.metric == HASHTAGS}) == 120
    for window in result.window_counts:
        assert window.window_end == window.window_start + WINDOW
        assert window.window_start % WINDOW == 0
        assert window.count > 0
    assert sum(result.totals[s].counted for s in ("posts", "signups")) == len(baseline)


def test_late_and_rejected_events_are_accounted_for(trending: list[EventRecord]) -> None:
    settings = load_settings()
    result = compute(trending, settings, now=clock)
    expected, late = brute_force(trending, settings)
    assert result.totals["posts"].late == late["posts"] == 1
    assert result.totals["signups"].late == late["signups"] == 0
    assert result.totals["posts"].rejected == 4
    assert result.totals["signups"].rejected == 4
    check_totals(trending, result)
    assert counts_of(result) == dict(expected)
    # "us" is upper-cased, "zz" is not a country: unknown.
    countries = {key for metric, key, _ in counts_of(result) if metric == SIGNUPS}
    assert countries == {"CN", "TW", "US", "unknown"}


# --- surges ------------------------------------------------------------------------------------


def test_trend_surges_and_the_bot_is_discounted(trending: list[EventRecord]) -> None:
    result = run(trending)
    t0 = int(START.timestamp())
    starts = {(s.metric, s.event.key): s.event for s in result.surges if s.event.state == "start"}
    ends = {(s.metric, s.event.key) for s in result.surges if s.event.state == "end"}
    assert set(starts) == {(HASHTAGS, "wave"), (SIGNUPS, "US"), (SIGNUPS, ALL_KEY)}
    assert ends == set(starts)
    assert starts[HASHTAGS, "wave"].window_start == t0 + 20 * WINDOW
    assert starts[SIGNUPS, ALL_KEY].window_start == t0 + 20 * WINDOW
    # The bot's posts are published in full, yet never make a surge.
    (bot,) = [w for w in result.window_counts if w.key == "freecrypto"]
    assert (bot.window_start, bot.count, bot.discount) == (t0 + 30 * WINDOW, 300, 297)
    # The last view shows the last windows, all signups together as "*".
    last = result.view
    assert last.hashtag_window == t0 + 39 * WINDOW
    assert last.signup_window == t0 + 39 * WINDOW
    assert last.all_signups is not None
    assert last.all_signups.key == ALL_KEY
    assert last.all_signups.count == 5


# --- independence ------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["baseline", "trending"])
def test_results_do_not_depend_on_the_batch_size(
    fixture: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    records: list[EventRecord] = request.getfixturevalue(fixture)
    monkeypatch.setattr(offline, "BATCH_EVENTS", 7)
    small = run(records)
    monkeypatch.setattr(offline, "BATCH_EVENTS", 4096)
    large = run(records)
    assert sorted_counts(small) == sorted_counts(large)
    assert sorted_surges(small) == sorted_surges(large)
    assert small.totals == large.totals
    if fixture == "trending":
        assert sorted_surges(small)  # the comparison is not vacuous
    # The final view is the same too (how many intermediate views there are is not).
    assert small.view == large.view


@pytest.mark.parametrize("fixture", ["baseline", "trending"])
def test_results_do_not_depend_on_the_number_of_partitions(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    records: list[EventRecord] = request.getfixturevalue(fixture)
    one = run(records, partitions=1)
    four = run(records, partitions=4)
    assert sorted_counts(one) == sorted_counts(four)
    assert sorted_surges(one) == sorted_surges(four)
    assert one.totals == four.totals
    assert one.view == four.view


def test_pipeline_fed_incrementally_equals_compute(trending: list[EventRecord]) -> None:
    settings = load_settings()
    pipeline = OfflinePipeline(settings, now=clock)
    for record in trending[:1000]:
        pipeline.add(record)
    pipeline.extend(trending[1000:])
    result = pipeline.finish()
    again = compute(trending, settings, now=clock)
    assert result.window_counts == again.window_counts
    assert result.surges == again.surges
    # Same inputs, same outputs, record for record: determinism is an API.
    assert [w.kafka_key for w in result.window_counts] == [w.kafka_key for w in again.window_counts]


# --- partitioner -------------------------------------------------------------------------------


def test_partitioner_matches_kafkas_default_for_keyed_records() -> None:
    # murmur2 values from Kafka's own UtilsTest (Java ints), made positive as Utils.toPositive does.
    java = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}
    partitioner = KafkaPartitioner({"posts": [0, 1, 2, 3], "signups": list(range(7))})
    for key, signed in java.items():
        positive = signed & 0x7FFFFFFF
        assert partitioner.partition("posts", key) == positive % 4
        assert partitioner.partition("signups", key) == positive % 7
        assert partitioner.partition("posts", key) == positive % 4  # cached, same answer


def test_partitioner_spreads_keyless_records_round_robin() -> None:
    partitioner = KafkaPartitioner({"posts": [0, 1, 2]})
    picks = [partitioner.partition("posts", None) for _ in range(6)]
    assert sorted(picks) == [0, 0, 1, 1, 2, 2]
    assert picks[:3] == picks[3:]
