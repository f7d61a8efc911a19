"""Broker watch verdicts: a lost broker, a broker that lost its data, and checked security settings."""

from __future__ import annotations

import os

import pytest

from surgewatch.config import ENV_PREFIX, SettingsError, load_settings
from surgewatch.worker.broker_watch import (
    BrokerHealth,
    BrokerSnapshot,
    describe_error,
    security_kwargs,
)

BROKER = "kafka://127.0.0.1:9092"
TOPICS = ["posts", "signups", "sw-window-partials"]
FIRST = BrokerSnapshot("cluster-a", frozenset([*TOPICS, "other"]))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def health(wait_seconds: float = 60.0, confirm_seconds: float = 10.0) -> BrokerHealth:
    return BrokerHealth(
        BROKER, TOPICS, FIRST, wait_seconds, now_seconds=1000.0, confirm_seconds=confirm_seconds
    )


def test_the_same_cluster_with_its_topics_is_healthy() -> None:
    watch = health()
    assert watch.answered(1001.0, FIRST) is None
    assert watch.answered(1002.0, BrokerSnapshot("cluster-a", frozenset(TOPICS))) is None


def test_a_new_cluster_id_means_the_broker_lost_its_data() -> None:
    reason = health().answered(1001.0, BrokerSnapshot("cluster-b", FIRST.topics))
    assert reason is not None
    assert "\n" not in reason
    assert reason.startswith(f"the broker at {BROKER} lost its data: ")
    assert "cluster id changed from 'cluster-a' to 'cluster-b'" in reason
    assert "restart the worker" in reason


def test_a_broker_without_cluster_ids_is_judged_by_its_topics() -> None:
    watch = BrokerHealth(BROKER, TOPICS, BrokerSnapshot(None, FIRST.topics), 60.0, 0.0)
    assert watch.answered(1.0, BrokerSnapshot("x", FIRST.topics)) is None
    assert watch.answered(2.0, BrokerSnapshot(None, frozenset(TOPICS))) is None


def test_one_missing_topic_is_named() -> None:
    reason = health().answered(1001.0, BrokerSnapshot("cluster-a", frozenset(TOPICS[1:])))
    assert reason is not None
    assert "lost its data: topic 'posts' is gone" in reason


def test_many_missing_topics_are_summed_up() -> None:
    watch = BrokerHealth(BROKER, ["a", "b", "c", "d", "e"], BrokerSnapshot("c", frozenset()), 60, 0)
    reason = watch.answered(1.0, BrokerSnapshot("c", frozenset(["c"])))
    assert reason is not None
    assert "topics 'a', 'b', 'd' and 1 more are gone" in reason


def test_silence_is_fatal_only_after_the_whole_wait() -> None:
    watch = health(wait_seconds=5.0)
    error = ConnectionRefusedError(111, "Connect call failed")
    assert watch.unanswered(1004.9, error) is None
    reason = watch.unanswered(1005.0, error)
    assert reason is not None
    assert "\n" not in reason
    assert reason.startswith(f"lost the broker at {BROKER}: no answer for 5 s (")
    assert "ConnectionRefusedError" in reason
    assert "SURGEWATCH_BROKER_WAIT_SECONDS" in reason


def test_an_answer_restarts_the_silence_clock() -> None:
    watch = health(wait_seconds=5.0)
    error = TimeoutError()
    assert watch.unanswered(1004.0, error) is None
    assert watch.answered(1004.5, FIRST) is None
    assert watch.unanswered(1009.0, error) is None
    assert watch.unanswered(1009.5, error) is not None


def test_a_falling_end_offset_is_reported_once_it_stays_low() -> None:
    watch = health(confirm_seconds=10.0)
    assert watch.end_offsets(1000.0, {("posts", 0): 500, ("posts", 1): 70}) is None
    assert watch.end_offsets(1001.0, {("posts", 0): 520, ("posts", 1): 70}) is None
    assert watch.end_offsets(1002.0, {("posts", 0): 0, ("posts", 1): 71}) is None
    assert watch.end_offsets(1011.9, {("posts", 0): 3}) is None
    reason = watch.end_offsets(1012.0, {("posts", 0): 3})
    assert reason is not None
    assert "the end offset of posts[0] fell from 520 to 3" in reason
    assert reason.startswith(f"the broker at {BROKER} lost its data: ")


def test_an_end_offset_that_recovers_is_forgiven() -> None:
    """A new leader's high watermark may lag the old one's for a moment after an election."""
    watch = health(confirm_seconds=10.0)
    assert watch.end_offsets(1000.0, {("posts", 0): 500}) is None
    assert watch.end_offsets(1001.0, {("posts", 0): 498}) is None
    assert watch.end_offsets(1002.0, {("posts", 0): 501}) is None
    assert watch.end_offsets(1011.5, {("posts", 0): 499}) is None
    assert watch.end_offsets(1021.4, {("posts", 0): 499}) is None
    assert watch.end_offsets(1021.5, {("posts", 0): 499}) is not None


def test_describe_error_is_one_short_line_without_the_secret() -> None:
    error = RuntimeError("auth failed for alice with\npassword hunter2-long-enough")
    text = describe_error(error, "hunter2-long-enough")
    assert text == "RuntimeError: auth failed for alice with password ***"
    assert describe_error(TimeoutError()) == "TimeoutError"
    assert len(describe_error(ValueError("x" * 1000))) == 200


def test_describe_error_does_not_repeat_a_name_the_message_carries() -> None:
    class KafkaConnectionError(Exception):
        def __str__(self) -> str:
            return "KafkaConnectionError: Unable to bootstrap"

    assert describe_error(KafkaConnectionError()) == "KafkaConnectionError: Unable to bootstrap"


def test_sasl_without_a_password_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_USERNAME", "alice")
    with pytest.raises(SettingsError) as caught:
        security_kwargs(load_settings())
    assert str(caught.value) == (
        "invalid setting: SURGEWATCH_KAFKA_SECURITY_PROTOCOL='SASL_SSL' with SASL mechanism "
        "SCRAM-SHA-512 needs SURGEWATCH_KAFKA_SASL_PASSWORD"
    )


def test_sasl_without_credentials_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(SettingsError, match="PLAIN needs SURGEWATCH_KAFKA_SASL_USERNAME and "):
        security_kwargs(load_settings())


def test_a_missing_tls_file_fails_in_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGEWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SASL_PASSWORD", "pw-canary-7f3a")
    monkeypatch.setenv("SURGEWATCH_KAFKA_SSL_CAFILE", "/nonexistent/ca.pem")
    with pytest.raises(SettingsError) as caught:
        security_kwargs(load_settings())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "invalid setting: cannot load the Kafka TLS files "
        "(SURGEWATCH_KAFKA_SSL_CAFILE='/nonexistent/ca.pem'): FileNotFoundError"
    )
    assert "pw-canary-7f3a" not in message


def test_plaintext_needs_nothing() -> None:
    assert security_kwargs(load_settings()) == {"security_protocol": "PLAINTEXT"}
