"""History benchmark: replay of an event file at --max-speed, and backfill of the same file.

Simulates ``rednote-2025`` to a file of about N events (default 1,000,000), replays it into the
embedded broker as fast as the broker takes it, then backfills it (offline windows and scores,
OpenMetrics, ``promtool tsdb create-blocks-from openmetrics``). Prints a JSON line last.
Goals from the issue: replay >= 100k events/s, backfill >= 200k events/s.

The backfill is also timed by stage, each alone and in one process, to show where its time goes:
reading and decoding the file; the worker's ingest (parse, validate, lateness, per-batch counts)
on the decoded values, without the downstream partitions; the whole computation; ``promtool``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from surgewatch.backfill import compute_openmetrics, create_blocks
from surgewatch.broker import EmbeddedBroker, free_port
from surgewatch.config import Settings, load_settings
from surgewatch.eventfile import EventFileError, EventReader, write_events
from surgewatch.offline import BATCH_EVENTS, OfflinePipeline
from surgewatch.replay import replay
from surgewatch.simulate.scenarios import simulate

#: rednote-2025 over 72 h makes about 15.6 M events at scale 1.
EVENTS_PER_SCALE_72H = 15_600_000


def decode_seconds(path: Path) -> float:
    """Seconds to read and decode every line of the event file."""
    started = time.perf_counter()
    with EventReader(path) as reader:
        for _ in reader:
            pass
    return time.perf_counter() - started


def ingest_seconds(path: Path, settings: Settings) -> float:
    """Seconds the worker's ingest takes over the file's values (reading not timed), placed on
    the partitions a producer would pick and handed over in batches of :data:`BATCH_EVENTS`, the
    largest the offline pipeline makes: this is the ingest at its fastest. The offline pipeline's
    own partitioner and ingest run it, without its downstream partitions."""
    pipeline = OfflinePipeline(settings)
    values: dict[tuple[str, int], list[bytes]] = {}
    with EventReader(path) as reader:
        for _, record in reader:
            if isinstance(record, EventFileError):
                continue
            topic = pipeline.topic_of[record.stream]
            partition = pipeline.partitioner.partition(topic, record.key_bytes())
            values.setdefault((record.stream, partition), []).append(record.value_bytes())
    now = time.time()
    started = time.perf_counter()
    for (stream, partition), batch in values.items():
        ingest = pipeline.ingests[stream]
        for first in range(0, len(batch), BATCH_EVENTS):
            chunk = batch[first : first + BATCH_EVENTS]
            ingest.process(partition, chunk, first, first + len(chunk) - 1, None, now)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    scale = args.events / EVENTS_PER_SCALE_72H
    with tempfile.TemporaryDirectory(prefix="surgewatch-history-") as tmp:
        workdir = Path(tmp)
        path = workdir / "wave.jsonl"
        started = time.monotonic()
        count = write_events(path, simulate("rednote-2025", scale=scale, hours=72))
        print(f"simulated {count:,} events in {time.monotonic() - started:.1f} s", file=sys.stderr)

        with EmbeddedBroker("127.0.0.1", free_port(), log_path=workdir / "tansu.log") as broker:
            settings = load_settings(broker=broker.url)
            stats = asyncio.run(replay([str(path)], settings, speed=None, progress=False))
        print(f"replay: {stats.events:,} events at {stats.events_per_s:,.0f}/s", file=sys.stderr)

        settings = load_settings()
        decoding = decode_seconds(path)
        ingesting = ingest_seconds(path, settings)
        print(
            f"backfill stages alone: decode {count / decoding:,.0f}/s,"
            f" ingest {count / ingesting:,.0f}/s",
            file=sys.stderr,
        )
        om = compute_openmetrics([str(path)], settings, workdir / "backfill.om")
        started = time.monotonic()
        blocks = create_blocks(om.openmetrics, workdir / "tsdb")
        promtool_seconds = time.monotonic() - started
        total = om.seconds + promtool_seconds
        print(
            f"backfill: {om.events:,} events, windows and scores in {om.seconds:.1f} s"
            f" ({om.events_per_s:,.0f}/s), {om.samples:,} samples, promtool"
            f" {promtool_seconds:.1f} s, {len(blocks)} blocks",
            file=sys.stderr,
        )
        print(
            json.dumps(
                {
                    "events": count,
                    "replay_events_per_s": round(stats.events_per_s),
                    "backfill_events_per_s": round(om.events / total),
                    "backfill_compute_events_per_s": round(om.events_per_s),
                    "backfill_decode_alone_events_per_s": round(count / decoding),
                    "backfill_ingest_alone_events_per_s": round(count / ingesting),
                    "backfill_samples": om.samples,
                    "promtool_seconds": round(promtool_seconds, 1),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
