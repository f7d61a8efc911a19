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
