"""Shared fixtures: a real embedded broker per test session and unique Kafka names per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from surgewatch.broker import EmbeddedBroker, free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A tansu broker on a free loopback port, shared by the session's tests."""
    log_path = Path(tmp_path_factory.mktemp("broker")) / "tansu.log"
    with EmbeddedBroker("127.0.0.1", free_port(), log_path=log_path) as running:
        yield running


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory of names no other test uses: ``unique_name("posts")`` -> ``posts-<hex>``."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def isolated_env(
    broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> Callable[[str], dict[str, str]]:
    """Factory of ``SURGEWATCH_*`` environments on the session broker with topics no other test
    uses: ``isolated_env("sw-it")`` -> broker, app id and every topic name."""

    def make(app_prefix: str) -> dict[str, str]:
        return {
            "SURGEWATCH_BROKER": broker.url,
            "SURGEWATCH_APP_ID": unique_name(app_prefix),
            "SURGEWATCH_POSTS_TOPIC": unique_name("posts"),
            "SURGEWATCH_SIGNUPS_TOPIC": unique_name("signups"),
            "SURGEWATCH_DLQ_TOPIC": unique_name("dlq"),
            "SURGEWATCH_WINDOW_COUNTS_TOPIC": unique_name("window-counts"),
            "SURGEWATCH_SURGES_TOPIC": unique_name("surges"),
        }

    return make
