"""Child processes: starting them so they die with their parent, stopping them, running a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from surgewatch.scrape import scrape


def die_with_parent() -> None:
    """In a child before exec: ask Linux to SIGTERM it when its parent dies, so nothing leaks."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:  # not Linux: the parent's own clean-up still stops the child
        pass


def spawn(
    argv: list[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output appended to ``log_path``; it dies with this process."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )


def wait_for(
    condition: Callable[[], Any],
    timeout_seconds: float,
    interval_seconds: float = 0.2,
    what: str = "",
) -> Any:
    """Poll ``condition`` until it returns something truthy; raise ``TimeoutError`` at the deadline."""
    deadline = time.monotonic() + timeout_seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as exc:  # the thing polled is not up yet
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(interval_seconds)
    raise TimeoutError(f"timed out after {timeout_seconds:.0f} s waiting for {what} ({last_error})")


class Supervised:
    """A child process wrapper usable as ``with X(...) as x:``: ``start`` on entry, ``stop`` on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def terminate(process: subprocess.Popen[bytes], timeout_seconds: float) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_seconds``; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class WorkerProcess(Supervised):
    """``surgewatch worker`` in a subprocess with the given ``SURGEWATCH_*`` environment."""

    def __init__(self, env: Mapping[str, str], web_port: int, log_path: Path) -> None:
        self.env = {**os.environ, **env, "SURGEWATCH_WEB_PORT": str(web_port)}
        self.web_port = web_port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/metrics"

    def start(self, ready_timeout_seconds: float = 60.0) -> None:
        """Start the worker and wait until ``/metrics`` answers."""
        self.process = spawn(
            [sys.executable, "-m", "surgewatch", "worker", "--loglevel", "warn"],
            self.log_path,
            self.env,
        )

        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                return True  # exited: reported below
            scrape(self.metrics_url, timeout_seconds=1.0)
            return True

        try:
            wait_for(ready, ready_timeout_seconds, what="the worker's /metrics")
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the worker exited early:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_seconds: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if needed; returns the exit code."""
        process, self.process = self.process, None
        return terminate(process, timeout_seconds) if process is not None else None
