"""Embedded broker benchmark: how a fetch's latency grows with the record batches a partition holds.

The embedded broker (tansu, memory storage) keeps every record batch. This appends batches of ten
250-byte records to one partition and, at a few sizes, times a fetch of the partition's last records
(median and max of ten). Apache Kafka finds a fetch's position through an offset index, so there
the cost does not depend on how much the partition holds. Prints a JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from surgewatch.broker import EmbeddedBroker, free_port

RECORDS_PER_BATCH = 10
VALUE = b"x" * 250
#: Batches sent before their acknowledgements are awaited.
IN_FLIGHT_BATCHES = 200
FETCHES = 10


async def measure(bootstrap: str, sizes: list[int]) -> list[dict[str, float]]:
    """Append batches up to each of ``sizes`` and time tail fetches there."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("batches", 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=500, enable_auto_commit=False
    )
    await producer.start()
    await consumer.start()
    tp = TopicPartition("batches", 0)
    consumer.assign([tp])
    rows: list[dict[str, float]] = []
    batches = 0
    try:
        for size in sizes:
            while batches < size:
                futures = []
                for _ in range(min(IN_FLIGHT_BATCHES, size - batches)):
                    batch = producer.create_batch()
                    for _ in range(RECORDS_PER_BATCH):
                        batch.append(key=None, value=VALUE, timestamp=None)
                    futures.append(await producer.send_batch(batch, "batches", partition=0))
                    batches += 1
                await asyncio.gather(*futures)
            end = (await consumer.end_offsets([tp]))[tp]
            seconds = []
            for _ in range(FETCHES):
                consumer.seek(tp, max(0, end - 5))
                started = time.monotonic()
                got = await consumer.getmany(tp, timeout_ms=10_000)
                seconds.append(time.monotonic() - started)
                if not got:
                    raise RuntimeError(f"a fetch at offset {end - 5} returned nothing")
            row = {
                "batches": batches,
                "fetch_median_ms": round(1000 * statistics.median(seconds), 1),
                "fetch_max_ms": round(1000 * max(seconds), 1),
            }
            print(
                f"{batches:>8,} batches: a fetch at the tail takes {row['fetch_median_ms']:6.1f} ms"
                f" (median), {row['fetch_max_ms']:6.1f} ms (max)",
                file=sys.stderr,
            )
            rows.append(row)
    finally:
        await producer.stop()
        await consumer.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="2000,10000,25000,50000,100000",
        help="batch counts to measure at, comma-separated (default 2000,...,100000)",
    )
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="surgewatch-broker-fetch-") as tmp:
        log = Path(tmp) / "tansu.log"
        with EmbeddedBroker("127.0.0.1", free_port(), log_path=log) as broker:
            rows = asyncio.run(measure(broker.bootstrap, sizes))
    first, last = rows[0], rows[-1]
    per_thousand = (last["fetch_median_ms"] - first["fetch_median_ms"]) / (
        (last["batches"] - first["batches"]) / 1000
    )
    print(json.dumps({"rows": rows, "ms_per_1000_batches": round(per_thousand, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
