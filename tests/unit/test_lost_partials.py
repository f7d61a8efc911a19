"""Partials the broker acknowledged and lost: a downstream partition notices the gap in its
sources' input offsets and recounts exactly those records from the input."""

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
from surgewatch.windows.counting import WindowCount

from .test_recovery import DOWNSTREAM, GRACE, NOW, WINDOW, downstream, events, truth


def sent_with_heartbeats(
    values: list[bytes], size: int, heartbeat_every: int
) -> list[tuple[int, Partial]]:
    """Everything one owner of input partition 0 sends: its batches of ``size``, a heartbeat
    after every ``heartbeat_every``-th batch (0: none), and the end of input."""
    owner = StreamIngest("posts", WINDOW, GRACE, DOWNSTREAM, 1)
    out: list[tuple[int, Partial]] = []
    for number, start in enumerate(range(0, len(values), size), 1):
        chunk = values[start : start + size]
        _, partials = owner.process(0, chunk, start, start + len(chunk) - 1, None, NOW)
        out.extend(partials)
        if heartbeat_every and number % heartbeat_every == 0:
            out.extend(owner.heartbeats(NOW, force=True))
    return out + owner.close_all(NOW)


def deliver(
    stores: list[Downstream], partials: list[tuple[int, Partial]], values: list[bytes]
) -> tuple[Counter[str], int]:
    """Apply ``partials`` as the counting agent does, first recounting from ``values`` (input
    partition 0) what :meth:`Downstream.missing` reports. The published records, the recounts."""
    out: Counter[str] = Counter()
    recounts = 0

    def publish(windows: list[WindowCount]) -> None:
        for window in windows:
            assert window.kafka_key not in out, f"{window.kafka_key} published twice"
            out[window.kafka_key] = window.count

    for dest, sent in partials:
        partial = Partial.decode(sent.encode())
        store = stores[dest]
        lost = store.missing(partial)
        if lost is not None:
            first, last, replaces = lost
            recounts += 1
            records = [(offset, values[offset]) for offset in range(first, last + 1)]
            watermark = store.store.source_watermark_seconds(partial.metric, 0)
            counter = StreamIngest("posts", WINDOW, GRACE, DOWNSTREAM, 1)
            for recounted in counter.recount(0, dest, records, first, last, watermark, NOW):
                publish(store.apply(recounted))
            if replaces:
                continue
        publish(store.apply(partial))
    return out, recounts


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 1_000),
    size=st.integers(1, 40),
    heartbeat_every=st.integers(0, 4),
    loss=st.floats(0.0, 0.5),
    tiny_pieces=st.booleans(),
)
def test_lost_partials_are_recounted_and_every_record_counts_once(
    seed: int, size: int, heartbeat_every: int, loss: float, tiny_pieces: bool
) -> None:
    """Any partial, piece or heartbeat may be lost, except each destination's first (before it
    there is nothing to notice a gap against) and the end of input (a live sender re-announces
    its position every few seconds, so one heartbeat always gets through eventually)."""
    values = events(seed, 300)
    rnd = random.Random(seed)
    with pytest.MonkeyPatch.context() as patch:
        if tiny_pieces:
            patch.setattr(ingest, "MAX_PARTIAL_BYTES", 60)
        sent = sent_with_heartbeats(values, size, heartbeat_every)
        end = len(sent) - DOWNSTREAM
        first_of = {dest: sent.index(next(s for s in sent if s[0] == dest)) for dest in range(2)}
        kept = [
            item
            for index, item in enumerate(sent)
            if index >= end or index in first_of.values() or rnd.random() >= loss
        ]
        got, recounts = deliver([downstream(0), downstream(1)], kept, values)
    assert got == truth(values, 7)
    assert sum(got.values()) == sum(len(orjson.loads(v)["hashtags"]) for v in values)
    if len(kept) == len(sent):
        assert recounts == 0


def pieces_to_0(seed: int) -> tuple[Downstream, list[Partial]]:
    """Downstream partition 0 after the first of two 20-record batches sent in 60-byte pieces,
    and the pieces of the second batch."""
    values = events(seed, 40)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest, "MAX_PARTIAL_BYTES", 60)
        sent = sent_with_heartbeats(values, 20, 0)
    to_0 = [p for dest, p in sent if dest == 0]
    second = [p for p in to_0 if p.first_offset == 20]
    assert len(second) >= 3, "the batch is split into pieces"
    store = downstream(0)
    for partial in to_0[: to_0.index(second[0])]:
        assert store.missing(partial) is None
        store.apply(partial)
    return store, second


def test_a_batch_that_lost_its_first_piece_is_recounted_when_its_last_piece_comes() -> None:
    store, second = pieces_to_0(3)
    # Its first piece is lost: the next ones are dropped, the last one asks for the whole batch.
    for piece in second[1:-1]:
        assert store.missing(piece) is None
        assert store.apply(piece) == []
    assert store.missing(second[-1]) == (20, 39, True)
    assert store.duplicates == 0


def test_a_heartbeat_covering_more_than_arrived_reports_the_gap() -> None:
    values = events(4, 30)
    sent = sent_with_heartbeats(values, 10, 1)
    to_1 = [p for dest, p in sent if dest == 1]
    store = downstream(1)
    store.apply(to_1[0])  # offsets 0-9
    heartbeat = to_1[1]
    assert heartbeat.first_offset == -1 and heartbeat.covered == 9
    assert store.missing(heartbeat) is None
    # The batch 10-19 is lost; the heartbeat after it covers it.
    assert store.missing(to_1[3]) == (10, 19, False)
    # A batch after the gap reports it as well.
    assert store.missing(to_1[4]) == (10, 19, False)


def test_a_broken_batch_survives_a_snapshot() -> None:
    store, second = pieces_to_0(5)
    store.apply(second[1])  # the first piece is lost
    restored = downstream(0)
    restored.import_state(orjson.loads(orjson.dumps(store.export_state())))
    assert restored.missing(second[-1]) == (20, 39, True)
    assert restored.apply(second[-1]) == []
