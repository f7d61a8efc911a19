"""Kafka TLS/SASL settings: from the environment to the aiokafka clients Faust builds, password-free
in every repr and error.

Certificates are made per module with the ``openssl`` command; a TLS handshake against a local
server that requires a client certificate proves the certificate and key files are loaded.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.auth import AuthProtocol, SASLMechanism
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from surgewatch.config import ENV_PREFIX, Settings, SettingsError, load_settings
from surgewatch.metrics import Metrics
from surgewatch.worker.app import create_app, faust_credentials
from surgewatch.worker.topics import partitions_of, worker_topics
from tests.tls_files import CA_NAME, CLIENT_NAME, TlsFiles, make_tls_files, openssl_available

PASSWORD = "pw-canary-3b1f9e27"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if not openssl_available():
        pytest.skip("the openssl command is not installed")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str | Path) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"SURGEWATCH_KAFKA_{name}", str(value))
    return load_settings()


def _ca_names(context: ssl.SSLContext) -> list[str]:
    return [
        value
        for cert in context.get_ca_certs()
        for rdn in cert["subject"]
        for key, value in rdn
        if key == "commonName"
    ]


async def _faust_clients(settings: Settings) -> list[Any]:
    """The aiokafka clients of the Faust app's producer and worker consumer, built, not started."""
    counts = {name: partitions_of(settings, name) for name in worker_topics(settings)}
    app, _ = create_app(settings, Metrics(), counts)
    producer = app.producer._new_producer()
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        return [producer.client, consumer._client]
    finally:
        await producer.stop()
        await consumer.stop()


def test_sasl_ssl_with_scram_sha_512_reaches_faust_and_its_clients(
    monkeypatch: pytest.MonkeyPatch, tls: TlsFiles
) -> None:
    settings = _settings(monkeypatch, SECURITY_PROTOCOL="SASL_SSL", SASL_MECHANISM="SCRAM-SHA-512",
                         SASL_USERNAME="alice", SASL_PASSWORD=PASSWORD, SSL_CAFILE=tls.ca)  # fmt: skip
    kwargs = settings.kafka_security_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert _ca_names(context) == [CA_NAME]

    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    assert (credentials.username, credentials.password) == ("alice", PASSWORD)
    auth = dict(credentials_to_aiokafka_auth(credentials))
    assert _ca_names(auth.pop("ssl_context")) == [CA_NAME]
    assert auth == kwargs

    for client in asyncio.run(_faust_clients(settings)):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert (client._sasl_plain_username, client._sasl_plain_password) == ("alice", PASSWORD)
        assert _ca_names(client._ssl_context) == [CA_NAME]

    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert PASSWORD not in repr(credentials)


def test_sasl_plaintext_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, SECURITY_PROTOCOL="SASL_PLAINTEXT", SASL_MECHANISM="PLAIN",
                         SASL_USERNAME="bob", SASL_PASSWORD=PASSWORD)  # fmt: skip
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert credentials.mechanism is SASLMechanism.PLAIN
    assert credentials.ssl_context is None
    assert dict(credentials_to_aiokafka_auth(credentials)) == {
        **settings.kafka_security_kwargs(),
        "ssl_context": None,
    }


class _TlsServer:
    """Accepts one TLS connection that must present a client certificate signed by the test CA."""

    def __init__(self, tls: TlsFiles) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tls.server_cert, tls.server_key)
        self.context.load_verify_locations(tls.ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.peer_subject: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(30)
        try:
            connection, _ = self.listener.accept()
            with self.context.wrap_socket(connection, server_side=True) as tls_connection:
                self.peer_subject = tls_connection.getpeercert()["subject"]
        except (OSError, ssl.SSLError) as exc:
            self.error = exc
        finally:
            self.listener.close()


@pytest.fixture
def tls_server(tls: TlsFiles) -> Iterator[_TlsServer]:
    server = _TlsServer(tls)
    yield server
    server.thread.join(30)


def test_ssl_with_a_client_certificate_reaches_faust_and_completes_a_handshake(
    monkeypatch: pytest.MonkeyPatch, tls: TlsFiles, tls_server: _TlsServer
) -> None:
    settings = _settings(monkeypatch, SECURITY_PROTOCOL="SSL", SSL_CAFILE=tls.ca,
                         SSL_CERTFILE=tls.client_cert, SSL_KEYFILE=tls.client_key)  # fmt: skip
    kwargs = settings.kafka_security_kwargs()
    assert set(kwargs) == {"security_protocol", "ssl_context"}
    assert kwargs["security_protocol"] == "SSL"

    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol is AuthProtocol.SSL
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SSL"
    assert auth["ssl_context"] is credentials.context

    # The context Faust hands to aiokafka verifies the server and presents the client certificate.
    with (
        socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw,
        credentials.context.wrap_socket(raw, server_hostname="127.0.0.1") as client,
    ):
        assert client.version() is not None
    tls_server.thread.join(30)
    assert tls_server.error is None
    assert tls_server.peer_subject == ((("commonName", CLIENT_NAME),),)

    for client_state in asyncio.run(_faust_clients(settings)):
        assert client_state._security_protocol == "SSL"
        assert _ca_names(client_state._ssl_context) == [CA_NAME]


def test_plaintext_means_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.kafka_security_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None
    assert dict(credentials_to_aiokafka_auth(None)) == {"security_protocol": "PLAINTEXT"}
    for client in asyncio.run(_faust_clients(settings)):
        assert client._security_protocol == "PLAINTEXT"
        assert client._ssl_context is None


def test_the_password_is_in_no_repr_and_no_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_PASSWORD", PASSWORD)
    settings = load_settings()
    assert settings.kafka_sasl_password == PASSWORD
    for text in (repr(settings), str(settings), f"{settings!r}", repr(faust_credentials(settings))):
        assert PASSWORD not in text
    monkeypatch.setenv("SURGEWATCH_WINDOW_SECONDS", "abc")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_MECHANISM", "MD5")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "SURGEWATCH_KAFKA_SASL_MECHANISM='MD5'" in message
    assert PASSWORD not in message
