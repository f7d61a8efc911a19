"""`surgewatch dashboards push` against a recording stand-in for Grafana's HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from surgewatch.broker import free_port


@dataclass
class Recorded:
    """One request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    """What the stand-in answers (folders it has, a status to fail with) and what it saw."""

    url: str
    folders: list[dict[str, Any]] = field(default_factory=list)
    fail_status: int | None = None
    requests: list[Recorded] = field(default_factory=list)


def _handler(grafana: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _record(self) -> Recorded:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Recorded(
                self.command, self.path, dict(self.headers), json.loads(raw) if raw else None
            )
            grafana.requests.append(request)
            return request

        def do_GET(self) -> None:
            request = self._record()
            if grafana.fail_status is not None:
                self._answer(grafana.fail_status, {"message": "no"})
            elif request.path.split("?")[0] == "/api/folders":
                self._answer(200, grafana.folders)
            else:
                self._answer(404, {"message": "Not found"})

        def do_POST(self) -> None:
            request = self._record()
            if request.path == "/api/folders":
                folder = {"id": 7, "uid": request.body.get("uid", "generated"), **request.body}
                grafana.folders.append(folder)
                self._answer(200, folder)
            elif request.path == "/api/dashboards/db":
                uid = request.body["dashboard"]["uid"]
                self._answer(
                    200,
                    {
                        "id": 1,
                        "uid": uid,
                        "url": f"/d/{uid}/{uid}",
                        "status": "success",
                        "version": 3,
                    },
                )
            else:
                self._answer(404, {"message": "Not found"})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake_grafana() -> Iterator[FakeGrafana]:
    grafana = FakeGrafana(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(grafana))
    grafana.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield grafana
    server.shutdown()
    server.server_close()


@pytest.fixture
def push() -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GRAFANA_")}
        return subprocess.run(
            [sys.executable, "-m", "surgewatch", "dashboards", "push"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
            env={**clean, "NO_PROXY": "127.0.0.1", **env},
        )

    return run


def _token() -> str:
    return f"glsa_{uuid.uuid4().hex}"


def test_push_creates_the_folder_and_overwrites_both_dashboards(
    fake_grafana: FakeGrafana, push: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    token = _token()
    result = push({"GRAFANA_URL": fake_grafana.url, "GRAFANA_TOKEN": token})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"pushed {uid} to folder surgewatch: {fake_grafana.url}/d/{uid}/{uid} (version 3)"
        for uid in ("surgewatch-overview", "surgewatch-pipeline")
    ]
    assert token not in result.stdout + result.stderr
    calls = [(r.method, r.path.split("?")[0]) for r in fake_grafana.requests]
    assert calls == [
        ("GET", "/api/folders"),
        ("POST", "/api/folders"),
        ("POST", "/api/dashboards/db"),
        ("POST", "/api/dashboards/db"),
    ]
    assert fake_grafana.requests[1].body == {"title": "surgewatch", "uid": "surgewatch"}
    saves = [r.body for r in fake_grafana.requests[2:]]
    assert [body["dashboard"]["uid"] for body in saves] == [
        "surgewatch-overview",
        "surgewatch-pipeline",
    ]
    for body in saves:
        assert body["overwrite"] is True
        assert body["folderUid"] == "surgewatch"
        assert body["dashboard"]["id"] is None
        assert body["dashboard"]["panels"]
    for request in fake_grafana.requests:
        assert request.headers["Authorization"] == f"Bearer {token}"


def test_push_reuses_an_existing_folder(
    fake_grafana: FakeGrafana, push: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    fake_grafana.folders.append({"id": 3, "uid": "f00", "title": "surgewatch"})
    result = push({"GRAFANA_URL": fake_grafana.url, "GRAFANA_TOKEN": _token()})
    assert result.returncode == 0, result.stderr
    assert [r.method for r in fake_grafana.requests] == ["GET", "POST", "POST"]
    assert {r.body["folderUid"] for r in fake_grafana.requests[1:]} == {"f00"}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "refused the token (401 Unauthorized): check GRAFANA_TOKEN"),
        (403, "forbids listing folders (403): the token needs the Editor role"),
        (500, "refused listing folders (500 no)"),
    ],
)
def test_a_refusal_fails_in_one_line_without_showing_the_token(
    status: int,
    expected: str,
    fake_grafana: FakeGrafana,
    push: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    fake_grafana.fail_status = status
    token = _token()
    result = push({"GRAFANA_URL": fake_grafana.url, "GRAFANA_TOKEN": token})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"Error: Grafana at {fake_grafana.url} {expected}"
    ]
    assert token not in result.stderr


def test_an_unreachable_grafana_fails_in_one_line(
    push: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    token = _token()
    url = f"http://127.0.0.1:{free_port()}"
    result = push({"GRAFANA_URL": url, "GRAFANA_TOKEN": token})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: cannot reach Grafana at {url}: ")
    assert lines[0].endswith("; check GRAFANA_URL")
    assert "Traceback" not in result.stderr
    assert token not in result.stdout + result.stderr


def test_credentials_in_the_url_are_not_echoed(
    push: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    port = free_port()
    result = push(
        {"GRAFANA_URL": f"http://admin:s3cret@127.0.0.1:{port}", "GRAFANA_TOKEN": _token()}
    )
    assert result.returncode == 1
    assert "s3cret" not in result.stderr
    assert f"http://127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"GRAFANA_TOKEN": "x"}, "GRAFANA_URL"),
        ({"GRAFANA_URL": "http://127.0.0.1:1"}, "GRAFANA_TOKEN"),
    ],
)
def test_missing_settings_are_named(
    env: dict[str, str], missing: str, push: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = push(env)
    assert result.returncode == 2
    assert f"set {missing}" in result.stderr
