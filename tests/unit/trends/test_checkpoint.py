"""Checkpoints of surge detectors: exact round trip, windows scored once, damaged state ignored."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surgewatch.trends.checkpoint import (
    FORMAT_VERSION,
    Changes,
    MemoryStateStore,
    PartitionCheckpoint,
    UnreadableEntry,
    decode_key_entry,
    decode_scorer,
    detector_prefix,
    encode_key_entry,
    encode_scorer,
)
from surgewatch.trends.partition import HASHTAGS, SIGNUPS, PartitionTrends, Surge
from surgewatch.trends.surge import RING_HOURS, Observation, ScorerState, SurgeParams
from surgewatch.windows.counting import WindowCount

WINDOW = 60
T0 = 1_699_920_000
PARAMS = SurgeParams(max_keys=200)
#: The partition's counting state has closed every window up to ``start`` + this (grace 5 s).
CLOSED_AFTER = WINDOW + 5


def traffic(
    seed: int, windows: int, burst: range, tag: str = "boom"
) -> list[dict[str, list[WindowCount]]]:
    """Closed windows of both metrics: Zipf-like hashtags (more than ``max_keys``, so keys are
    evicted) with ``#boom`` bursting in the windows of ``burst``, and a few countries."""
    rnd = random.Random(seed)
    out = []
    for index in range(windows):
        start = T0 + index * WINDOW
        tags = Counter(f"tag{int(rnd.paretovariate(0.8)) % 400}" for _ in range(500))
        tags.update(f"rare{rnd.randrange(2000)}" for _ in range(100))
        tags[tag] += 150 if index in burst else rnd.randrange(3)
        countries = Counter(rnd.choice(("US", "DE", "BR", "JP")) for _ in range(40))
        out.append(
            {
                metric: [
                    WindowCount(metric, key, start, start + WINDOW, count)
                    for key, count in sorted(counts.items())
                ]
                for metric, counts in ((HASHTAGS, tags), (SIGNUPS, countries))
            }
        )
    return out


def close(trends: PartitionTrends, windows: dict[str, list[WindowCount]]) -> list[Surge]:
    surges: list[Surge] = []
    for metric in (HASHTAGS, SIGNUPS):
        surges.extend(trends.close(metric, windows[metric], origin=T0)[0])
    return surges


def boundary(windows: dict[str, list[WindowCount]]) -> dict[str, float]:
    start = windows[HASHTAGS][0].window_start
    return {HASHTAGS: start + CLOSED_AFTER, SIGNUPS: start + CLOSED_AFTER}


def assert_same_detectors(one: PartitionTrends, other: PartitionTrends) -> None:
    for metric in (HASHTAGS, SIGNUPS):
        a, b = one.detectors[metric], other.detectors[metric]
        assert list(a.observed_since(None)) and len(a) == len(b)
        assert [k for k, _ in a.observed_since(None)] == [k for k, _ in b.observed_since(None)]
        for (_, x), (_, y) in zip(a.observed_since(None), b.observed_since(None), strict=True):
            assert x.state() == y.state()
        assert a.surging == b.surging and a.evicted_keys == b.evicted_keys
        assert a.last_window_start == b.last_window_start
        assert a.first_window_start == b.first_window_start
        volume_a, volume_b = a.volume_scorer, b.volume_scorer
        assert (volume_a and volume_a.state()) == (volume_b and volume_b.state())


scorer_states = st.builds(
    ScorerState,
    first_window_start=st.integers(0, 2**40).map(lambda n: n * WINDOW),
    last_window_start=st.none() | st.integers(0, 2**40).map(lambda n: n * WINDOW),
    mean=st.floats(0, 1e9),
    variance=st.floats(0, 1e12),
    newest_hour=st.integers(-(2**62), 2**40),
    hour_sums=st.lists(
        st.sampled_from([0.0]) | st.floats(0, 1e9), min_size=RING_HOURS, max_size=RING_HOURS
    ).map(tuple),
    in_surge=st.booleans(),
    surge_basis=st.sampled_from(["window", "day_over_day"]),
    calm_windows=st.integers(0, 2**31),
    last=st.none(),
)


def checkpointed(partition: int, windows: list[dict[str, list[WindowCount]]]) -> MemoryStateStore:
    """A store holding the checkpoints of a partition that closed ``windows``."""
    store = MemoryStateStore()
    live = PartitionTrends(PARAMS, top_k=5)
    checkpoint = PartitionCheckpoint(partition, live)
    for w in windows:
        close(live, w)
        store.write(checkpoint.changes(boundary(w)))
    return store


@given(scorer_states, st.data())
def test_a_scorer_state_survives_encoding_exactly(state: ScorerState, data: st.DataObject) -> None:
    if state.last_window_start is not None and data.draw(st.booleans()):
        last = Observation(
            state.last_window_start,
            data.draw(st.integers(0, 2**40)),
            data.draw(st.floats(0, 1e9)),
            data.draw(st.floats(-1e9, 1e9)),
            data.draw(st.sampled_from([None, "start", "end"])),
            data.draw(st.sampled_from(["window", "day_over_day"])),
        )
        state = state._replace(last=last)
    assert decode_scorer(encode_scorer(state)) == state
    order, whole, decoded = decode_key_entry(encode_key_entry(7, state))
    assert (order, whole, decoded) == (7, "", state)
    named = decode_key_entry(encode_key_entry(8, state, "#" * 300 + "\udcff"))
    assert named == (8, "#" * 300 + "\udcff", state)


def test_an_empty_hour_ring_costs_no_bytes() -> None:
    quiet = ScorerState(T0, T0, 0.5, 1.0, T0 // 3600, (0.0,) * RING_HOURS, False, "window", 0, None)
    busy = quiet._replace(hour_sums=(3.0,) * RING_HOURS)
    assert len(encode_scorer(busy)) - len(encode_scorer(quiet)) == 8 * RING_HOURS


@pytest.mark.parametrize("tag", ["boom", "b" + "o" * 400 + "m"])  # the long one: by digest
def test_restored_detectors_continue_exactly_and_end_the_open_surge(tag: str) -> None:
    windows = traffic(seed=3, windows=60, burst=range(30, 38), tag=tag)
    reference = PartitionTrends(PARAMS, top_k=5)
    expected = [close(reference, w) for w in windows]
    assert any(s.event.state == "start" and s.event.key == tag for s in expected[30])

    store = MemoryStateStore()
    live = PartitionTrends(PARAMS, top_k=5)
    checkpoint = PartitionCheckpoint(2, live)
    checkpoint.discard(store)
    for w in windows[:33]:  # the burst is under way
        assert close(live, w) == expected[windows.index(w)]
        store.write(checkpoint.changes(boundary(w)))
    assert tag in live.detectors[HASHTAGS].surging

    restarted = PartitionTrends(PARAMS, top_k=5)
    outcomes = PartitionCheckpoint(2, restarted).load(store, boundary(windows[32]))
    assert outcomes == {HASHTAGS: "restored", SIGNUPS: "restored"}
    assert_same_detectors(restarted, live)
    after = [close(restarted, w) for w in windows[33:]]
    assert after == expected[33:]
    assert any(s.event.state == "end" and s.event.key == tag for found in after for s in found)


def test_windows_already_scored_are_skipped_and_older_checkpoints_score_them_identically() -> None:
    windows = traffic(seed=5, windows=45, burst=range(30, 34))
    store = MemoryStateStore()
    live = PartitionTrends(PARAMS, top_k=5)
    checkpoint = PartitionCheckpoint(0, live)
    published = []
    for w in windows[:30]:
        published.append(close(live, w))
        store.write(checkpoint.changes(boundary(w)))
    # Closed and published, but the process dies before the checkpoint of these is written.
    unwritten = [close(live, w) for w in windows[30:33]]
    assert any(s.event.state == "start" for found in unwritten for s in found)

    # The log snapshot the next owner restores is older still: windows 25.. close again.
    restarted = PartitionTrends(PARAMS, top_k=5)
    loaded = PartitionCheckpoint(0, restarted).load(store, boundary(windows[24]))
    assert loaded == {HASHTAGS: "restored", SIGNUPS: "restored"}
    again = [close(restarted, w) for w in windows[25:33]]
    assert again[:5] == [[]] * 5  # scored before the checkpoint: not folded in twice
    assert again[5:] == unwritten  # scored again from the same state: identical records
    assert_same_detectors(restarted, live)


def test_state_behind_the_log_snapshot_is_stale_and_wiped() -> None:
    windows = traffic(seed=1, windows=20, burst=range(0))
    store = checkpointed(1, windows[:10])
    restarted = PartitionTrends(PARAMS, top_k=5)
    # Another owner closed windows 10 and 11 since: this state never scored them.
    outcomes = PartitionCheckpoint(1, restarted).load(store, boundary(windows[11]))
    assert outcomes == {HASHTAGS: "stale", SIGNUPS: "stale"}
    assert len(restarted.detectors[HASHTAGS]) == 0 and not store.entries


def test_other_parameters_make_the_state_stale() -> None:
    windows = traffic(seed=1, windows=3, burst=range(0))
    store = checkpointed(1, windows)
    other = PartitionTrends(SurgeParams(max_keys=200, z_start=7.0), top_k=5)
    assert PartitionCheckpoint(1, other).load(store, boundary(windows[-1]))[HASHTAGS] == "stale"


@pytest.mark.parametrize("damage", ["old_version", "truncated", "meta_version", "bad_key"])
def test_an_unreadable_entry_is_logged_and_the_detector_warms_up(
    damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    windows = traffic(seed=2, windows=12, burst=range(0))
    store = MemoryStateStore()
    live = PartitionTrends(PARAMS, top_k=5)
    checkpoint = PartitionCheckpoint(4, live)
    for w in windows:
        close(live, w)
        store.write(checkpoint.changes(boundary(w)))
    prefix = detector_prefix(4, HASHTAGS)
    some_key = next(k for k in store.entries if k.startswith(prefix + b"k/"))
    if damage == "old_version":
        store.entries[some_key] = bytes([FORMAT_VERSION + 1]) + store.entries[some_key][1:]
    elif damage == "truncated":
        store.entries[some_key] = store.entries[some_key][:-3]
    elif damage == "meta_version":
        store.entries[prefix + b"m"] = b"\x00" + store.entries[prefix + b"m"][1:]
    else:
        store.entries[prefix + b"k/\xff\xfe"] = store.entries[some_key]

    restarted = PartitionTrends(PARAMS, top_k=5)
    outcomes = PartitionCheckpoint(4, restarted).load(store, boundary(windows[-1]))
    assert outcomes == {HASHTAGS: "unreadable", SIGNUPS: "restored"}
    assert "unreadable" in caplog.text
    assert len(restarted.detectors[HASHTAGS]) == 0
    assert not any(k.startswith(prefix) for k in store.entries)
    assert len(restarted.detectors[SIGNUPS]) == len(live.detectors[SIGNUPS])
    # The detector warms up on what comes next, as a new owner's does.
    nxt = traffic(seed=9, windows=14, burst=range(0))[-1]
    assert close(restarted, nxt) == []


def test_decoding_junk_raises_unreadable_entry() -> None:
    for junk in (b"", b"\x01", bytes([FORMAT_VERSION]) + b"\x00" * 40, b"\x07" * 200):
        with pytest.raises(UnreadableEntry):
            decode_key_entry(junk)


def test_changes_cover_only_the_keys_observed_since_and_delete_evicted_ones() -> None:
    windows = traffic(seed=4, windows=8, burst=range(0))
    live = PartitionTrends(PARAMS, top_k=5)
    checkpoint = PartitionCheckpoint(0, live)
    store = MemoryStateStore()
    for w in windows:
        close(live, w)
        changes = checkpoint.changes(boundary(w))
        observed = {w.key for w in w[HASHTAGS]} | {w.key for w in w[SIGNUPS]}
        written = {key.rsplit(b"/", 1)[-1].decode() for key, _ in changes.puts}
        assert written - {"m"} == observed
        store.write(changes)
    detector = live.detectors[HASHTAGS]
    assert detector.evicted_keys > 0
    stored = {k for k in store.entries if k.startswith(detector_prefix(0, HASHTAGS) + b"k/")}
    assert len(stored) == len(detector) <= PARAMS.max_keys
    # Nothing closed, the boundary did not cross a window: nothing to write.
    assert checkpoint.changes(boundary(windows[-1])) == Changes()
    moved = {m: t + WINDOW for m, t in boundary(windows[-1]).items()}
    assert [key for key, _ in checkpoint.changes(moved).puts] == [
        detector_prefix(0, m) + b"m" for m in (HASHTAGS, SIGNUPS)
    ]


def test_nothing_stored_means_none() -> None:
    trends = PartitionTrends(PARAMS, top_k=5)
    closed = {HASHTAGS: -math.inf, SIGNUPS: -math.inf}
    assert PartitionCheckpoint(0, trends).load(MemoryStateStore(), closed) == {
        HASHTAGS: "none",
        SIGNUPS: "none",
    }


def test_rocksdb_store_round_trip(tmp_path: Path) -> None:
    from surgewatch.worker.local_state import RocksStateStore

    windows = traffic(seed=6, windows=15, burst=range(11, 15))
    store = RocksStateStore(tmp_path / "surge-state")
    live = PartitionTrends(PARAMS, top_k=5)
    checkpoint = PartitionCheckpoint(3, live)
    other = PartitionCheckpoint(4, PartitionTrends(PARAMS, top_k=5))
    for w in windows:
        close(live, w)
        store.write(checkpoint.changes(boundary(w)))
    close(other.trends, windows[0])
    store.write(other.changes(boundary(windows[0])))
    store.close()

    reopened = RocksStateStore(tmp_path / "surge-state")
    restarted = PartitionTrends(PARAMS, top_k=5)
    assert set(
        PartitionCheckpoint(3, restarted).load(reopened, boundary(windows[-1])).values()
    ) == {"restored"}
    assert_same_detectors(restarted, live)
    PartitionCheckpoint(3, PartitionTrends(PARAMS, top_k=5)).discard(reopened)
    assert not list(reopened.scan(b"00000003/"))
    assert list(reopened.scan(b"00000004/"))  # another partition's state is left alone
    reopened.close()


def test_memory_store_never_loads_rocksdict() -> None:
    code = (
        "import sys\n"
        "from surgewatch.config import Settings\n"
        "from surgewatch.metrics import Metrics\n"
        "from surgewatch.worker.app import create_app\n"
        "from surgewatch.worker.topics import worker_topics\n"
        "settings = Settings(store='memory://')\n"
        "app, pipeline = create_app(settings, Metrics(), dict.fromkeys(worker_topics(settings), 4))\n"
        "assert pipeline.local_state is None\n"
        "assert 'rocksdict' not in sys.modules, 'rocksdict was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
