"""Running a worker process: wait for the broker, set up topics, then the Faust worker in the
foreground, watched by :class:`~surgewatch.worker.broker_watch.BrokerWatch`."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from surgewatch.config import Settings
from surgewatch.metrics import Metrics
from surgewatch.runtime import tune_gc
from surgewatch.worker.app import create_app
from surgewatch.worker.broker_watch import (
    BrokerLost,
    BrokerWatch,
    Partition,
    security_kwargs,
    wait_for_broker,
)
from surgewatch.worker.topics import ensure_topics, worker_topics

#: Faust's own log format, so the lines before Faust starts look like the ones after.
LOG_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s]: %(message)s"
#: The ``--loglevel`` choices of ``surgewatch worker`` as :mod:`logging` levels.
LOG_LEVELS = {
    "crit": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


def data_dir_for(settings: Settings) -> Path:
    """Faust's data directory: throwaway for memory state, under the working directory for RocksDB."""
    if settings.store.startswith("memory://"):
        return Path(tempfile.gettempdir()) / "surgewatch" / settings.app_id
    return Path(".surgewatch") / settings.app_id


def fetched_end_offsets(app: Any) -> dict[Partition, int]:
    """End offset of each partition this worker reads, as its last fetch response reported it."""
    # Read the attribute, not ``app.consumer``: that property would build a consumer, and this runs
    # on the broker watch's thread.
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return {}
    ends: dict[Partition, int] = {}
    for tp in consumer.assignment():
        highwater = consumer.fetch_state(tp).highwater
        if highwater is not None:
            ends[(tp.topic, tp.partition)] = highwater
    return ends


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Wait for the broker, create the topics if missing and run one worker until SIGINT/SIGTERM.

    Raises :class:`~surgewatch.config.SettingsError` when the Kafka TLS/SASL settings cannot work,
    :class:`~surgewatch.worker.topics.BrokerUnreachable` when no broker answers within
    ``settings.broker_wait_seconds``, and :class:`~surgewatch.worker.broker_watch.BrokerLost` when
    the running worker lost its broker or the broker lost its data.
    """
    import faust

    security_kwargs(settings)
    # Faust replaces this set-up with its own (same format) once it starts.
    level = LOG_LEVELS.get(loglevel.lower(), logging.INFO)
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    try:
        first = asyncio.run(wait_for_broker(settings))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    partition_counts = asyncio.run(ensure_topics(settings))
    metrics = Metrics()
    data_dir = data_dir_for(settings)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    app, _ = create_app(settings, metrics, partition_counts, data_dir=data_dir)
    tune_gc()
    # A number: mode does not know the name "crit" that the CLI offers.
    worker = faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False)
    watch = BrokerWatch(settings, worker_topics(settings), first, lambda: fetched_end_offsets(app))
    watch.start()
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if watch.failure is not None:
            raise BrokerLost(watch.failure) from None
        raise
    finally:
        watch.stop()
