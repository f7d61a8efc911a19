"""Helpers the benchmarks share: a worker's environment with unique names, a process's CPU and memory."""

from __future__ import annotations

import os
from pathlib import Path


def worker_env(
    broker_url: str,
    name: str,
    *,
    partitions: int,
    window_seconds: int,
    grace_seconds: int,
    posts_topic: str | None = None,
) -> dict[str, str]:
    """``SURGEWATCH_*`` variables of a worker whose app id and topics all end in ``name``."""
    return {
        "SURGEWATCH_BROKER": broker_url,
        "SURGEWATCH_APP_ID": name,
        "SURGEWATCH_POSTS_TOPIC": posts_topic or f"{name}-posts",
        "SURGEWATCH_SIGNUPS_TOPIC": f"{name}-signups",
        "SURGEWATCH_DLQ_TOPIC": f"{name}-dlq",
        "SURGEWATCH_WINDOW_COUNTS_TOPIC": f"{name}-counts",
        "SURGEWATCH_SURGES_TOPIC": f"{name}-surges",
        "SURGEWATCH_PARTITIONS": str(partitions),
        "SURGEWATCH_WINDOW_SECONDS": str(window_seconds),
        "SURGEWATCH_GRACE_SECONDS": str(grace_seconds),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int, field: str) -> float:
    """A ``kB`` line of ``/proc/PID/status`` in MiB (0.0 when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    """Resident set size of a process now, MiB."""
    return _status_mb(pid, "VmRSS:")


def peak_rss_mb(pid: int) -> float:
    """Largest resident set size of a process so far, MiB."""
    return _status_mb(pid, "VmHWM:")
