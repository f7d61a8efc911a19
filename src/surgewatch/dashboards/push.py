"""Push the dashboard files to a Grafana through its HTTP API (``grafana-client``).

The token authenticates every request as ``Authorization: Bearer ...`` and appears nowhere
else: not in messages, not in exceptions, not in logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: Folder the dashboards go to, created when missing.
FOLDER_TITLE = "surgewatch"
FOLDER_UID = "surgewatch"


class PushError(Exception):
    """Grafana cannot be reached or refused a request; the message is one line, token-free."""


@dataclass(frozen=True)
class Pushed:
    """One dashboard Grafana accepted."""

    uid: str
    title: str
    url: str
    version: int | None


def safe_url(url: str) -> str:
    """``url`` without any user name or password in it, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _origin(url: str) -> str:
    """Scheme, host and port of ``url`` (no credentials, no path)."""
    parts = urlsplit(safe_url(url))
    return f"{parts.scheme}://{parts.netloc}"


def _reason(exc: BaseException) -> str:
    """A short reason for a transport failure ("Connection refused", "timed out")."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno:
        return errno.group(1).strip()
    if "Failed to resolve" in text or "NameResolutionError" in text:
        return "unknown host"
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return "timed out"
    return type(exc).__name__


def _detail(response: Any) -> str:
    """Grafana's own explanation from an error response, on one line and short."""
    if isinstance(response, dict):
        response = response.get("message", "")
    return " ".join(str(response or "").split())[:200]


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


class GrafanaPusher:
    """Finds or creates the folder, then saves dashboards into it with ``overwrite: true``."""

    def __init__(self, url: str, token: str, timeout_seconds: float = 10.0) -> None:
        from grafana_client.api import GrafanaApi

        self.url = url.rstrip("/")
        self.token = token
        self.api = GrafanaApi.from_url(self.url, credential=token, timeout=timeout_seconds)

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        import niquests
        from grafana_client.client import GrafanaException, GrafanaTimeoutError

        where = safe_url(self.url)
        try:
            return call(*args, **kwargs)
        except GrafanaTimeoutError:
            raise PushError(f"Grafana at {where} did not answer in time ({what})") from None
        except GrafanaException as exc:
            status = exc.status_code
            if status == 0:
                reason = _reason(exc.__cause__ or exc)
                raise PushError(
                    f"cannot reach Grafana at {where}: {reason}; check GRAFANA_URL"
                ) from None
            if status == 401:
                raise PushError(
                    f"Grafana at {where} refused the token (401 Unauthorized): check GRAFANA_TOKEN"
                ) from None
            if status == 403:
                raise PushError(
                    f"Grafana at {where} forbids {what} (403): the token needs the Editor role"
                ) from None
            detail = _scrub(_detail(exc.response), self.token)
            hint = ": is GRAFANA_URL a Grafana?" if status == 404 else ""
            raise PushError(
                f"Grafana at {where} refused {what} ({status}{' ' + detail if detail else ''}){hint}"
            ) from None
        except niquests.exceptions.RequestException as exc:
            raise PushError(
                f"cannot reach Grafana at {where}: {_reason(exc)}; check GRAFANA_URL"
            ) from None

    def folder_uid(self, title: str = FOLDER_TITLE, uid: str = FOLDER_UID) -> str:
        """The uid of the folder called ``title`` (or with uid ``uid``), created when missing."""
        folders = self._call("listing folders", self.api.folder.get_all_folders) or []
        for folder in folders:
            if folder.get("title") == title or folder.get("uid") == uid:
                return str(folder["uid"])
        created = self._call(
            f"creating folder {title!r}", self.api.folder.create_folder, title, uid=uid
        )
        return str(created["uid"])

    def push(self, dashboard: Mapping[str, Any], folder_uid: str) -> Pushed:
        """Save one dashboard into the folder, replacing any with the same uid."""
        body = {
            "dashboard": {**dashboard, "id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": "surgewatch dashboards push",
        }
        uid = str(dashboard.get("uid", ""))
        answer = self._call(f"saving dashboard {uid}", self.api.dashboard.update_dashboard, body)
        path = str(answer.get("url") or f"/d/{uid}")
        version = answer.get("version")
        return Pushed(
            uid=str(answer.get("uid") or uid),
            title=str(dashboard.get("title", uid)),
            # Grafana's answer already carries any sub-path it is served under.
            url=f"{_origin(self.url)}{path}" if path.startswith("/") else path,
            version=int(version) if isinstance(version, int) else None,
        )


def push_dashboards(
    url: str,
    token: str,
    dashboards: Sequence[Mapping[str, Any]],
    timeout_seconds: float = 10.0,
) -> list[Pushed]:
    """Push every dashboard into the ``surgewatch`` folder; raises ``PushError`` at the first
    failure."""
    pusher = GrafanaPusher(url, token, timeout_seconds)
    folder_uid = pusher.folder_uid()
    return [pusher.push(dashboard, folder_uid) for dashboard in dashboards]
