"""Local Prometheus, Alertmanager and a webhook receiver, for the demo and the end-to-end tests.

Runs the Debian binaries (``prometheus``, ``prometheus-alertmanager``) on loopback ports with the
project's own rules (``deploy/prometheus/rules``) and a configuration derived from the deploy files:
the worker targets and addresses change, the rules and routing do not. Prometheus scrapes and
evaluates every second and resends alerts every second, so an alert shows within seconds of its
``for:``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from surgewatch.broker import free_port
from surgewatch.paths import project_root
from surgewatch.processes import Supervised, spawn, terminate, wait_for

#: The repository's deploy folder (rules and Alertmanager routing).
DEPLOY_DIR = project_root() / "deploy"
RULES_DIR = DEPLOY_DIR / "prometheus" / "rules"
ALERTMANAGER_CONFIG = DEPLOY_DIR / "alertmanager" / "alertmanager.yml"

PROMETHEUS_BIN = "prometheus"
#: Debian names the Alertmanager binary after its package.
ALERTMANAGER_BINS = ("prometheus-alertmanager", "alertmanager")


def alertmanager_binary() -> str | None:
    """The Alertmanager executable on PATH, if installed."""
    for name in ALERTMANAGER_BINS:
        found = shutil.which(name)
        if found:
            return found
    return None


def monitoring_available() -> bool:
    """Prometheus and Alertmanager are installed (``make setup`` installs them)."""
    return shutil.which(PROMETHEUS_BIN) is not None and alertmanager_binary() is not None


def _read_json(url: str, timeout_seconds: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
        return json.loads(response.read())


class WebhookReceiver:
    """An HTTP server on loopback that keeps every Alertmanager notification it is sent."""

    def __init__(self, port: int = 0) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.notifications.append(payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where Alertmanager should post."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification so far, oldest first."""
        with self._lock:
            return [alert for n in self.notifications for alert in n.get("alerts", [])]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The deploy routing and inhibition, with every receiver posting to ``webhook_url`` and
    notifications grouped within a second (the production timers would hold them for minutes)."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config.get("receivers", []):
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = webhook_url

    def quicken(route: dict[str, Any]) -> None:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        for child in route.get("routes", []):
            quicken(child)

    quicken(config["route"])
    return config


def prometheus_config(
    worker_targets: Sequence[str], alertmanager_target: str | None
) -> dict[str, Any]:
    """Scrape the workers (job ``surgewatch``) every second and load the project's rules."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_DIR / "*.yml")],
        "scrape_configs": [
            {"job_name": "surgewatch", "static_configs": [{"targets": list(worker_targets)}]}
        ],
    }
    if alertmanager_target:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager_target]}]}]
        }
    return config


class _Server(Supervised):
    """A monitoring binary on a free loopback port, its files under ``workdir``."""

    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, argv: list[str], ready_path: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = spawn(argv, self.workdir / f"{self.name}.log")

        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            with urllib.request.urlopen(self.url + ready_path, timeout=1.0) as response:
                return bool(response.status == 200)

        try:
            wait_for(ready, 60, what=f"{self.name} to be ready")
        except BaseException:
            self.stop()
            raise

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / f"{self.name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = terminate(self.process, 10)
        self.process = None
        return code


class AlertmanagerProcess(_Server):
    """``prometheus-alertmanager`` with the deploy routing, posting to ``webhook_url``."""

    name = "alertmanager"

    def __init__(self, workdir: Path, webhook_url: str) -> None:
        super().__init__(workdir)
        self.webhook_url = webhook_url

    def start(self) -> None:
        binary = alertmanager_binary()
        if binary is None:
            raise RuntimeError("Alertmanager is not installed: run `make setup`")
        config = self.workdir / "alertmanager.yml"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(alertmanager_config(self.webhook_url), sort_keys=False))
        self._run(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            "/-/ready",
        )


class PrometheusProcess(_Server):
    """``prometheus`` scraping ``worker_targets`` with the project's rules."""

    name = "prometheus"

    def __init__(
        self,
        workdir: Path,
        worker_targets: Sequence[str],
        alertmanager_url: str | None = None,
        tsdb_dir: Path | None = None,
    ) -> None:
        """``tsdb_dir``: serve an existing TSDB (e.g. backfilled blocks) and keep all of it."""
        super().__init__(workdir)
        self.worker_targets = list(worker_targets)
        self.alertmanager_url = alertmanager_url
        self.tsdb_dir = tsdb_dir

    def start(self) -> None:
        binary = shutil.which(PROMETHEUS_BIN)
        if binary is None:
            raise RuntimeError("Prometheus is not installed: run `make setup`")
        target = (
            urllib.parse.urlsplit(self.alertmanager_url).netloc if self.alertmanager_url else None
        )
        config = self.workdir / "prometheus.yml"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config.write_text(
            yaml.safe_dump(prometheus_config(self.worker_targets, target), sort_keys=False)
        )
        self._run(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.tsdb_dir or self.workdir / 'data'}",
                # Backfilled history is years old: time-based retention must not drop it.
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--rules.alert.resend-delay=1s",
                "--web.enable-lifecycle",
            ],
            "/-/ready",
        )

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result of an instant query, now or at ``at`` (raises on a query error)."""
        params = {"query": expr} if at is None else {"query": expr, "time": repr(at)}
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params)
        body = _read_json(url)
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_range(
        self, expr: str, start: float, end: float, step_seconds: float
    ) -> list[dict[str, Any]]:
        """The result of a range query (raises on a query error)."""
        params = {"query": expr, "start": repr(start), "end": repr(end), "step": repr(step_seconds)}
        url = f"{self.url}/api/v1/query_range?" + urllib.parse.urlencode(params)
        body = _read_json(url)
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts, as the rules API reports them."""
        body = _read_json(f"{self.url}/api/v1/alerts")
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts

    def targets_up(self) -> int:
        """How many worker targets the last scrape reached."""
        return sum(1 for r in self.query('up{job="surgewatch"} == 1'))
