"""Settings: contract defaults, environment overrides, one-line errors, frozen, Kafka security."""

from __future__ import annotations

import os
import ssl

import pytest
from pydantic import ValidationError

from surgewatch.config import ENV_PREFIX, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``SURGEWATCH_*`` variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_defaults_are_the_contracts() -> None:
    settings = load_settings()
    assert settings.broker == "kafka://127.0.0.1:9092"
    assert settings.app_id == "surgewatch"
    assert settings.posts_topic == "posts"
    assert settings.signups_topic == "signups"
    assert settings.dlq_topic == "surgewatch-dlq"
    assert settings.window_counts_topic == "surgewatch-window-counts"
    assert settings.surges_topic == "surgewatch-surges"
    assert settings.partitions == 4
    assert settings.window_seconds == 60
    assert settings.grace_seconds == 30
    assert settings.top_k == 20
    assert settings.web_port == 6066
    assert settings.store == "memory://"
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_sasl_mechanism is None
    assert settings.partials_topic == "surgewatch-window-partials"
    assert settings.bootstrap_servers == "127.0.0.1:9092"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_WINDOW_SECONDS", "30")
    monkeypatch.setenv("SURGEWATCH_GRACE_SECONDS", "0")
    monkeypatch.setenv("SURGEWATCH_PARTITIONS", "12")
    monkeypatch.setenv("SURGEWATCH_APP_ID", "sw-test")
    monkeypatch.setenv("SURGEWATCH_POSTS_TOPIC", "raw-posts")
    monkeypatch.setenv("SURGEWATCH_BROKER", "kafka://kafka-1:19092")
    monkeypatch.setenv("SURGEWATCH_STORE", "rocksdb://")
    monkeypatch.setenv("SURGEWATCH_TOP_K", "5")
    settings = load_settings()
    assert settings.window_seconds == 30
    assert settings.grace_seconds == 0
    assert settings.partitions == 12
    assert settings.app_id == "sw-test"
    assert settings.partials_topic == "sw-test-window-partials"
    assert settings.posts_topic == "raw-posts"
    assert settings.bootstrap_servers == "kafka-1:19092"
    assert settings.store == "rocksdb://"
    assert settings.top_k == 5
    # Untouched ones keep their defaults.
    assert settings.signups_topic == "signups"
    assert settings.web_port == 6066


def test_overrides_win_over_environment_and_none_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SURGEWATCH_WINDOW_SECONDS", "30")
    monkeypatch.setenv("SURGEWATCH_WEB_PORT", "7000")
    settings = load_settings(window_seconds=10, web_port=None, top_k=None)
    assert settings.window_seconds == 10
    assert settings.web_port == 7000
    assert settings.top_k == 20


def test_bad_integer_names_the_variable_and_value_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SURGEWATCH_WINDOW_SECONDS", "abc")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("invalid setting: ")
    assert "SURGEWATCH_WINDOW_SECONDS" in message
    assert "'abc'" in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SURGEWATCH_WINDOW_SECONDS", "0"),
        ("SURGEWATCH_GRACE_SECONDS", "-1"),
        ("SURGEWATCH_PARTITIONS", "0"),
        ("SURGEWATCH_WEB_PORT", "70000"),
        ("SURGEWATCH_KAFKA_SECURITY_PROTOCOL", "TLS"),
    ],
)
def test_out_of_range_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{name}={value!r}" in message


@pytest.mark.parametrize(
    "broker",
    [
        "http://127.0.0.1:9092",
        "127.0.0.1:9092",
        "kafka://",
        "kafka://host:notaport",
        "kafka://a:9092;redis://b:6379",
    ],
)
def test_bad_broker_url(monkeypatch: pytest.MonkeyPatch, broker: str) -> None:
    monkeypatch.setenv("SURGEWATCH_BROKER", broker)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert f"SURGEWATCH_BROKER={broker!r}" in message
    assert "kafka://" in message or "bad port" in message


def test_bad_broker_url_as_override() -> None:
    with pytest.raises(SettingsError, match="SURGEWATCH_BROKER='tcp://x:1'"):
        load_settings(broker="tcp://x:1")


def test_bad_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_STORE", "redis://localhost")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "SURGEWATCH_STORE='redis://localhost'" in message
    assert "memory:// or rocksdb://" in message


def test_duplicate_topic_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_DLQ_TOPIC", "posts")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "topic names must be distinct" in message
    assert "'posts'" in message


def test_several_problems_still_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_WINDOW_SECONDS", "abc")
    monkeypatch.setenv("SURGEWATCH_STORE", "nope")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "SURGEWATCH_WINDOW_SECONDS='abc'" in message
    assert "SURGEWATCH_STORE='nope'" in message


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.window_seconds = 5  # type: ignore[misc]
    assert settings.window_seconds == 60


def test_bootstrap_servers_joins_every_broker() -> None:
    settings = load_settings(
        broker="kafka://a.example:9092; kafka://b.example:9093;kafka://[::1]:9094"
    )
    assert settings.bootstrap_servers == "a.example:9092,b.example:9093,[::1]:9094"


def test_kafka_security_kwargs_plaintext() -> None:
    assert load_settings().kafka_security_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_kafka_security_kwargs_sasl_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_PASSWORD", "s3cret-pw")
    settings = load_settings()
    assert settings.kafka_security_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret-pw",
    }
    assert "s3cret-pw" not in repr(settings)
    assert "s3cret-pw" not in str(settings)
    assert "alice" in repr(settings)


def test_kafka_security_kwargs_ssl_builds_a_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_KAFKA_SECURITY_PROTOCOL", "SSL")
    kwargs = load_settings().kafka_security_kwargs()
    assert set(kwargs) == {"security_protocol", "ssl_context"}
    assert kwargs["security_protocol"] == "SSL"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


def test_settings_class_reads_the_environment_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_GRACE_SECONDS", "45")
    assert Settings().grace_seconds == 45
