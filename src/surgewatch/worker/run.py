"""Running a worker process: topic set-up, then the Faust worker in the foreground."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from surgewatch.config import Settings
from surgewatch.metrics import Metrics
from surgewatch.worker.app import create_app
from surgewatch.worker.topics import ensure_topics


def data_dir_for(settings: Settings) -> Path:
    """Faust's data directory: throwaway for memory state, under the working directory for RocksDB."""
    if settings.store.startswith("memory://"):
        return Path(tempfile.gettempdir()) / "surgewatch" / settings.app_id
    return Path(".surgewatch") / settings.app_id


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Create the topics if missing and run one worker until SIGINT/SIGTERM."""
    import faust

    partition_counts = asyncio.run(ensure_topics(settings))
    metrics = Metrics()
    data_dir = data_dir_for(settings)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    app, _ = create_app(settings, metrics, partition_counts, data_dir=data_dir)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
