"""A test certificate authority with a server and a client certificate, made with ``openssl``
(shared by the unit and integration tests of the Kafka TLS settings)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_NAME = "surgewatch-test-ca"
CLIENT_NAME = "surgewatch-test-client"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_tls_files(folder: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
             "-days", "2", "-subj", f"/CN={CA_NAME}")  # fmt: skip
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    made = {}
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", f"/CN={CLIENT_NAME}")):
        key, request, cert = (folder / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request,
                 "-subj", subject)  # fmt: skip
        extra = ["-extfile", str(extensions)] if name == "server" else []
        _openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                 "-out", cert, "-days", "2", *extra)  # fmt: skip
        made[name] = (cert, key)
    return TlsFiles(ca, *made["server"], *made["client"])
