"""``surgewatch demo`` end to end: it counts the wave, then stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from surgewatch.broker import free_port, port_in_use
from surgewatch.monitoring import monitoring_available
from surgewatch.testing import wait_for

pytestmark = pytest.mark.e2e


def _demo(tmp_path: Path, broker_port: int, web_port: int, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "SURGEWATCH_WEB_PORT": str(web_port),
        "SURGEWATCH_WINDOW_SECONDS": "60",
        "SURGEWATCH_GRACE_SECONDS": "2",
        "CI": "true",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "surgewatch",
            "demo",
            "--port",
            str(broker_port),
            "--workdir",
            str(tmp_path),
            "--scale",
            "0.02",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_demo_counts_the_wave_and_stops_everything(tmp_path: Path) -> None:
    broker_port, web_port = free_port(), free_port()
    demo = _demo(tmp_path, broker_port, web_port, "--hours", "6", "--speed", "3000")
    output, _ = demo.communicate(timeout=240)
    assert demo.returncode == 0, output
    assert "replay done" in output
    assert "closing the last windows" not in output.split("replay done")[-1]
    assert "2025-01-13 17:59 UTC" in output  # the slice's last window closed and was shown
    assert f"http://127.0.0.1:{web_port}/metrics" in output
    assert "#tiktokrefugee" in output
    assert "US" in output
    if monitoring_available():
        assert re.search(r"prometheus: http://127\.0\.0\.1:\d+/classic/alerts", output)
        assert "alertmanager: http://127.0.0.1:" in output
    assert not port_in_use("127.0.0.1", broker_port)
    assert not port_in_use("127.0.0.1", web_port)


def test_ctrl_c_stops_the_broker_and_the_worker(tmp_path: Path) -> None:
    broker_port, web_port = free_port(), free_port()
    demo = _demo(tmp_path, broker_port, web_port, "--hours", "12", "--speed", "60")
    try:
        wait_for(lambda: port_in_use("127.0.0.1", web_port), 120, what="the demo's worker")
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, output
    assert "stopped the worker and the broker" in output
    assert not port_in_use("127.0.0.1", broker_port)
    assert not port_in_use("127.0.0.1", web_port)
