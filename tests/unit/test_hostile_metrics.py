"""/metrics after hostile input: a valid exposition (promtool), bounded labels, identities that hold.

The trend series come from the pure pipeline fed posts whose hashtags break label formats, are
very long, or were crafted to share a label under a 32-bit checksum.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from surgewatch.config import ENV_PREFIX, load_settings
from surgewatch.eventfile import EventRecord
from surgewatch.events.hashtags import normalise_tag
from surgewatch.ingest import StreamIngest
from surgewatch.labels import MAX_LABEL_CHARS, hashtag_label
from surgewatch.metrics import Metrics
from surgewatch.offline import OfflinePipeline
from surgewatch.trends.aggregate import TrendView
from tests.hostile import LABEL_BREAKING_TAGS, LONG_TAG, OK, corpus

PROMTOOL = "/usr/bin/promtool"
WINDOW = 60
GRACE = 30
#: 2025-01-16T04:00:00Z, a multiple of the window.
T0 = 1_737_000_000
NOW = T0 + 86_400.0
STREAMS = ("posts", "signups")
#: Two tags of 136 characters with the same first 120 and the same CRC-32 (found by a birthday
#: search in a fraction of a second): a label cut to a prefix and a CRC-32 gives both one series.
CRC_TWINS = ("x" * 120 + "c944b26e78f03c8d", "x" * 120 + "df6ce07a2a9ed378")
#: Hashtags of the surge: label-breaking, long, CRC-32 twins, control and format characters.
SURGING_TAGS = [
    *(tag.strip("#").casefold() for tag in LABEL_BREAKING_TAGS),
    LONG_TAG,
    *CRC_TWINS,
    "\x00",
    "\u2028",
    "\ufeff",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``SURGEWATCH_*`` variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    yield


def test_crc32_twins_are_a_real_collision_and_get_distinct_labels() -> None:
    first, second = CRC_TWINS
    assert zlib.crc32(first.encode()) == zlib.crc32(second.encode())
    assert first[:MAX_LABEL_CHARS] == second[:MAX_LABEL_CHARS]
    labels = {hashtag_label(first), hashtag_label(second)}
    assert len(labels) == 2
    assert all(len(label) == MAX_LABEL_CHARS and label.startswith("x" * 100) for label in labels)
    assert {hashtag_label(label) for label in labels} == labels  # a label is its own label


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    prefix=st.text(min_size=MAX_LABEL_CHARS - 10, max_size=MAX_LABEL_CHARS + 10),
    ends=st.lists(st.text(max_size=12), min_size=2, max_size=2, unique=True),
)
def test_parsed_tags_with_a_long_common_prefix_keep_distinct_labels(
    prefix: str, ends: list[str]
) -> None:
    tags = {normalise_tag(prefix + end) for end in ends} - {""}
    labels = {tag: hashtag_label(tag) for tag in tags}
    assert len(set(labels.values())) == len(tags)
    for tag, label in labels.items():
        assert len(label) <= MAX_LABEL_CHARS
        # Only a cut label holds "…": a parsed tag never does (NFKC makes it "..."), so a cut
        # label is never the whole label of another tag.
        assert ("…" in label) == (len(tag) > MAX_LABEL_CHARS)


def surge_view() -> TrendView:
    """Twelve quiet windows of ordinary tags, then one where every surging tag is posted 20
    times by 20 accounts: the trend view once every window has closed."""
    settings = load_settings(
        window_seconds=WINDOW, grace_seconds=GRACE, partitions=2, top_k=len(SURGING_TAGS) + 5
    )
    pipeline = OfflinePipeline(settings, lambda: NOW)
    serial = 0

    def add(ts: float, user: str, tag: str) -> None:
        nonlocal serial
        serial += 1
        body = {"event_id": f"e{serial}", "user_id": user, "ts": ts, "hashtags": [tag]}
        pipeline.add(EventRecord("posts", user, body))

    for window in range(12):
        for i in range(30):
            add(T0 + window * WINDOW + i, f"u{i}", f"quiet{i % 5}")
    burst = T0 + 12 * WINDOW
    for i, tag in enumerate(SURGING_TAGS):
        for account in range(20):
            add(burst + account + i / 100, f"fan{account}", tag)
    return pipeline.finish().view


def ingest_corpus(metrics: Metrics) -> dict[str, Counter[str]]:
    """Every hostile value (and a valid event per value) through ingest into ``metrics``; the
    verdicts expected by stream."""
    expected: dict[str, Counter[str]] = {}
    for stream in STREAMS:
        hostile = corpus(float(T0), prefix=stream)
        ingest = StreamIngest(stream, WINDOW, GRACE, 2, 1)
        values: list[bytes | None] = [h.value for h in hostile]
        values += [
            orjson.dumps({"event_id": f"v{i}", "user_id": "u", "ts": T0 + i}) for i in range(5)
        ]
        values.append(None)
        outcome, _ = ingest.process(0, values, 0, len(values) - 1, None, NOW)
        metrics.record_batch(stream, outcome)
        metrics.set_watermark(stream, ingest.watermarks.stream_watermark_seconds())
        verdicts = Counter(h.post if stream == "posts" else h.signup for h in hostile)
        verdicts.update({OK: 5, "invalid_json": 1})
        expected[stream] = verdicts
    return expected


@pytest.mark.skipif(
    shutil.which(PROMTOOL) is None,
    reason=f"{PROMTOOL} not installed (Debian package 'prometheus'; `make setup` installs it)",
)
def test_metrics_after_hostile_input_pass_promtool_and_add_up() -> None:
    view = surge_view()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    expected = ingest_corpus(metrics)
    metrics.watch_trends(lambda: view, top_k=len(SURGING_TAGS) + 5)
    exposition = generate_latest(registry)

    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()

    families = {f.name: f for f in text_string_to_metric_families(exposition.decode())}
    assert not any("fake_metric" in name for name in families)
    labels = {tag: hashtag_label(tag) for tag in SURGING_TAGS}
    for family in ("surgewatch_top_hashtag_posts", "surgewatch_hashtag_surge_score"):
        samples = families[family].samples
        got = Counter(sample.labels["hashtag"] for sample in samples)
        assert all(n == 1 for n in got.values()), got  # no label set twice
        assert set(labels.values()) <= set(got), family
        assert all(len(label) <= MAX_LABEL_CHARS for label in got)
    assert len(set(labels.values())) == len(SURGING_TAGS)  # one series per tag
    top = {s.labels["hashtag"]: s.value for s in families["surgewatch_top_hashtag_posts"].samples}
    assert all(top[label] == 20.0 for label in labels.values())

    get = registry.get_sample_value
    for stream in STREAMS:
        received = get("surgewatch_events_received_total", {"stream": stream})
        late = get("surgewatch_events_late_total", {"stream": stream})
        rejected = {
            reason: get("surgewatch_events_rejected_total", {"stream": stream, "reason": reason})
            for reason in expected[stream]
            if reason != OK
        }
        if stream == "posts":
            counted = get("surgewatch_posts_total")
        else:
            counted = sum(
                s.value for s in families["surgewatch_signups"].samples if s.name.endswith("_total")
            )
        assert received == sum(expected[stream].values())
        assert (counted, late) == (expected[stream][OK], 0.0)
        assert rejected == {r: float(n) for r, n in expected[stream].items() if r != OK}
        assert received == counted + late + sum(rejected.values())
