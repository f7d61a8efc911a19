"""Takeovers: a downstream partition applies each input record once, whoever sent it and however
often, and continues exactly from a snapshot of its state."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch import ingest
from surgewatch.downstream import Downstream
from surgewatch.ingest import Partial, StreamIngest
from surgewatch.trends.surge import SurgeParams
from surgewatch.windows.counting import WindowCount
from surgewatch.worker.snapshots import CHUNK_BYTES, Restore, decode_chunk, encode_chunks, is_chunk

WINDOW = 60
GRACE = 30
T0 = 1_700_000_040.0
NOW = T0 + 86_400
DOWNSTREAM = 2
TAGS = [f"tag{i}" for i in range(12)]


def post(ts: float, *tags: str) -> bytes:
    return orjson.dumps({"event_id": "e", "user_id": "u", "ts": ts, "hashtags": list(tags)})


def events(seed: int, count: int) -> list[bytes]:
    """Posts in time order, a few seconds out of order, spanning several windows."""
    rnd = random.Random(seed)
    return [
        post(T0 + i * 0.9 + rnd.uniform(-5, 5), *rnd.sample(TAGS, rnd.randint(1, 3)))
        for i in range(count)
    ]


def downstream(partition: int) -> Downstream:
    return Downstream(partition, DOWNSTREAM, WINDOW, GRACE, SurgeParams(window_seconds=WINDOW), 5)


def send(
    owner: StreamIngest, values: list[bytes], first: int, size: int, granular_until: int = -1
) -> list[tuple[int, Partial]]:
    """``values[first:]`` of input partition 0 in batches of ``size``; granular below ``granular_until``."""
    out: list[tuple[int, Partial]] = []
    for start in range(first, len(values), size):
        chunk = values[start : start + size]
        offsets = list(range(start, start + len(chunk)))
        _, partials = owner.process(
            0,
            chunk,
            start,
            start + len(chunk) - 1,
            None,
            NOW,
            offsets=offsets if start < granular_until else None,
        )
        out.extend(partials)
    return out


def finish(owner: StreamIngest) -> list[tuple[int, Partial]]:
    return owner.close_all(NOW)


def closed_counts(stores: list[Downstream], partials: list[tuple[int, Partial]]) -> Counter[str]:
    """Wire-encode each partial (as the worker does), apply it; the published records."""
    out: Counter[str] = Counter()
    for dest, partial in partials:
        for window in stores[dest].apply(Partial.decode(partial.encode())):
            assert window.kafka_key not in out, f"{window.kafka_key} published twice"
            out[window.kafka_key] = window.count
    return out


def truth(values: list[bytes], size: int) -> Counter[str]:
    owner = StreamIngest("posts", WINDOW, GRACE, DOWNSTREAM, 1)
    return closed_counts(
        [downstream(0), downstream(1)], send(owner, values, 0, size) + finish(owner)
    )


@settings(max_examples=120, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 1_000),
    old_size=st.integers(1, 40),
    new_size=st.integers(1, 40),
    committed=st.integers(0, 150),
    reach=st.integers(0, 150),
    lost_sends=st.integers(0, 12),
    tiny_pieces=st.booleans(),
)
def test_a_new_owner_re_sending_from_the_commit_counts_every_record_once(
    seed: int,
    old_size: int,
    new_size: int,
    committed: int,
    reach: int,
    lost_sends: int,
    tiny_pieces: bool,
) -> None:
    """The old owner sent batches up to ``committed + reach`` (some of its last sends lost in the
    crash) but committed only ``committed``; the new owner reads from ``committed`` in batches of
    another size, granularly over the zone the old one can have reached.

    With ``tiny_pieces`` every partial is split into pieces (a 60-byte size limit), so the crash
    can cut the old owner's sends between the pieces of a batch: the pieces that arrived belong to
    a batch the new owner sends again, and must not count on their own."""
    values = events(seed, 300)
    committed -= committed % old_size  # offsets are committed at the end of a batch
    with pytest.MonkeyPatch.context() as patch:
        if tiny_pieces:
            patch.setattr(ingest, "MAX_PARTIAL_BYTES", 60)
        old = StreamIngest("posts", WINDOW, GRACE, DOWNSTREAM, 1)
        sent = send(old, values[: committed + reach], 0, old_size)
        # A crash loses the last few sends (never of a committed batch: commits wait for the acks).
        acknowledged = sum(1 for _, p in sent if p.first_offset < committed)
        sent = sent[: max(acknowledged, len(sent) - lost_sends)]
        new = StreamIngest("posts", WINDOW, GRACE, DOWNSTREAM, 1)
        resent = send(new, values, committed, new_size, granular_until=committed + reach + old_size)
        stores = [downstream(0), downstream(1)]
        got = closed_counts(stores, sent + resent + finish(new))
    assert got == truth(values, 7)
    assert sum(got.values()) == sum(len(orjson.loads(v)["hashtags"]) for v in values)


def test_pieces_of_a_batch_delivered_twice_are_applied_once() -> None:
    values = events(1, 50)
    owner = StreamIngest("posts", WINDOW, GRACE, DOWNSTREAM, 1)
    partials = send(owner, values, 0, 10)
    doubled = [p for pair in zip(partials, partials, strict=True) for p in pair]
    stores = [downstream(0), downstream(1)]
    assert closed_counts(stores, doubled + finish(owner)) == truth(values, 10)
    assert sum(s.duplicates for s in stores) == len(partials)


def test_a_new_owner_without_the_watermark_cannot_count_what_the_old_one_called_late() -> None:
    """The old owner read up to T0+600 (so T0's window is late for it); a new owner starting
    after that offset does not know it, but the downstream partition does."""
    old = StreamIngest("signups", WINDOW, GRACE, 1, 1)
    store = downstream(0)
    first = orjson.dumps({"event_id": "a", "user_id": "u", "ts": T0 + 600, "country": "US"})
    stale = orjson.dumps({"event_id": "b", "user_id": "u", "ts": T0 + 1, "country": "US"})
    _, partials = old.process(0, [first], 0, 0, None, NOW)
    for _, partial in partials:
        store.apply(partial)
    new = StreamIngest("signups", WINDOW, GRACE, 1, 1)
    outcome, partials = new.process(0, [stale], 1, 1, None, NOW, offsets=[1])
    assert outcome.counted == 1  # the new owner alone would count it
    for _, partial in partials:
        store.apply(partial)
    assert store.store.dropped_updates("signups") == 1
    closed = [w for _, p in new.close_all(NOW) for w in store.apply(p)]
    assert [(w.window_start, w.count) for w in closed] == [(int(T0 + 600) // 60 * 60, 1)]


def test_a_restored_snapshot_continues_exactly_like_the_original() -> None:
    values = events(7, 400)
    owner = StreamIngest("posts", WINDOW, GRACE, DOWNSTREAM, 1)
    partials = send(owner, values, 0, 13) + finish(owner)
    cut = len(partials) // 2
    original = [downstream(0), downstream(1)]
    before = closed_counts(original, partials[:cut])
    restored = [downstream(0), downstream(1)]
    for store, source in zip(restored, original, strict=True):
        chunks = encode_chunks(1234, source.export_state())
        restore = Restore(1234)
        for chunk in chunks:
            restore.add(_Record(chunk))
        state = restore.state()
        assert state is not None
        store.import_state(state)
    after_original = closed_counts(original, partials[cut:])
    after_restored = closed_counts(restored, partials[cut:])
    assert after_restored == after_original
    assert before.keys().isdisjoint(after_restored.keys())
    assert before + after_restored == truth(values, 13)


class _Record:
    def __init__(self, value: bytes, offset: int = 0) -> None:
        self.value = value
        self.offset = offset


def test_a_restore_holds_partials_back_and_ignores_other_snapshots_chunks() -> None:
    state = {"store": {}, "cursors": [], "reported": {}, "pad": "x" * (CHUNK_BYTES + 10)}
    chunks = encode_chunks(50, state)
    assert len(chunks) == 2 and all(is_chunk(c) for c in chunks)
    assert decode_chunk(chunks[1])[:3] == (50, 1, 2)
    restore = Restore(50)
    partial = Partial("signups", 0, 1, T0, [("US", int(T0), 1)], 50, 50).encode()
    assert not is_chunk(partial)
    for offset, value in enumerate([partial, encode_chunks(40, state)[0], chunks[1], partial], 50):
        restore.add(_Record(value, offset))
    assert restore.state() is None  # chunk 0 not read yet
    assert restore.next_offset == 54  # where a batch continuing this takeover must start
    restore.add(_Record(chunks[0], 54))
    assert restore.state() == state
    assert [r.value for r in restore.held] == [partial, partial]


def test_window_counts_survive_the_wire_and_snapshot_types() -> None:
    store = downstream(0)
    assert store.apply(Partial("signups", 0, 1, T0 + 10, [("US", int(T0), 3)], 0, 2)) == []
    copy = downstream(0)
    copy.import_state(orjson.loads(orjson.dumps(store.export_state())))
    closed: list[WindowCount] = copy.apply(Partial("signups", 0, 1, 1e18, [], -1, -1))
    assert [(w.key, w.count) for w in closed] == [("US", 3)]
    assert copy.apply(Partial("signups", 0, 1, T0, [("US", int(T0), 3)], 0, 2)) == []
    assert copy.duplicates == 1


def test_pieces_of_a_batch_wait_for_its_last_piece_also_across_a_snapshot() -> None:
    """A snapshot taken between the pieces of a batch carries the pieces already read, so the
    restored partition completes the batch exactly as the original does."""
    values = events(3, 60)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest, "MAX_PARTIAL_BYTES", 60)
        owner = StreamIngest("posts", WINDOW, GRACE, 1, 1)
        _, partials = owner.process(0, values, 0, len(values) - 1, None, NOW)
    assert len(partials) > 2 and partials[-1][1].last_offset == len(values) - 1
    store = downstream(0)
    for _, partial in partials[:2]:
        assert store.apply(partial) == []
    # Nothing of an incomplete batch is counted yet.
    assert store.store.export_state() == downstream(0).store.export_state()
    copy = downstream(0)
    copy.import_state(orjson.loads(orjson.dumps(store.export_state())))
    closed = []
    for _, partial in partials[2:]:
        published = copy.apply(partial)
        assert store.apply(partial) == published
        closed.extend(window.count for window in published)
    assert copy.export_state() == store.export_state()
    windows = copy.store.export_state()["hashtag_posts"]["win"]
    assert sum(sum(counts) for _, _, counts in windows) + sum(closed) == sum(
        len(orjson.loads(v)["hashtags"]) for v in values
    )


def test_a_restore_whose_snapshot_lost_a_chunk_continues_from_the_next_snapshot() -> None:
    """A chunk of the snapshot at the committed offset never arrived (a broker that lost an
    acknowledged write): the next snapshot serves, and only the records after it are applied."""
    values = events(6, 120)
    owner = StreamIngest("posts", WINDOW, GRACE, DOWNSTREAM, 1)
    to_0 = [p.encode() for dest, p in send(owner, values, 0, 10) + finish(owner) if dest == 0]
    original = downstream(0)
    log: list[bytes] = []  # the partials partition: partials, and snapshots at offsets 3 and 7
    for index, value in enumerate(to_0):
        if index in (3, 7):
            log.extend(encode_chunks(len(log), original.export_state()))
        original.apply(Partial.decode(value))
        log.append(value)
    first_snapshot = next(i for i, v in enumerate(log) if is_chunk(v))
    restore = Restore(first_snapshot)
    lost = first_snapshot  # the only chunk of the snapshot at the committed offset
    for offset in range(first_snapshot, len(log)):
        if offset != lost:
            restore.add(_Record(log[offset], offset))
    state = restore.state()
    assert state is not None and restore.offset > first_snapshot
    assert all(record.offset >= restore.offset for record in restore.held)
    restored = downstream(0)
    restored.import_state(state)
    for record in restore.held:
        restored.apply(Partial.decode(record.value))
    assert restored.export_state() == original.export_state()
