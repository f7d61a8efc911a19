"""Settings: the one frozen configuration object, read from ``SURGEWATCH_*`` environment variables.

This is the only module that reads the environment. Everything else receives a :class:`Settings`.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SURGEWATCH_"


class SettingsError(ValueError):
    """A setting has a value surgewatch cannot use; the message is one readable line."""


class Settings(BaseSettings):
    """Every setting of the contract, validated; immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="ignore",
        case_sensitive=False,
    )

    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = Field(default="surgewatch", min_length=1, max_length=200)
    posts_topic: str = Field(default="posts", min_length=1, max_length=249)
    signups_topic: str = Field(default="signups", min_length=1, max_length=249)
    dlq_topic: str = Field(default="surgewatch-dlq", min_length=1, max_length=249)
    window_counts_topic: str = Field(
        default="surgewatch-window-counts", min_length=1, max_length=249
    )
    surges_topic: str = Field(default="surgewatch-surges", min_length=1, max_length=249)
    partitions: int = Field(default=4, ge=1, le=1024)
    window_seconds: int = Field(default=60, ge=1, le=86_400)
    grace_seconds: int = Field(default=30, ge=0, le=86_400)
    top_k: int = Field(default=20, ge=1, le=1000)
    surge_z_start: float = Field(default=6.0, gt=0, le=1000)
    surge_z_end: float = Field(default=2.0, ge=0, le=1000)
    surge_min_count: int = Field(default=10, ge=1)
    surge_half_life_windows: float = Field(default=30.0, gt=0, le=100_000)
    trend_user_cap: int = Field(default=3, ge=1)
    web_port: int = Field(default=6066, ge=0, le=65_535)
    web_host: str = "127.0.0.1"
    store: str = "memory://"
    #: How long a fetch may wait at the broker. Measured on the embedded broker: it gathers
    #: record batches for about this long, so Faust's fixed 1.5 s stalls a catching-up worker
    #: (40k instead of 86k events/s) and 5 ms returns one small batch a fetch (under 1,000
    #: events/s on a log of small batches); 50 ms serves both. Apache Kafka answers as soon as
    #: data is there, so there a larger value only means fewer empty polls while idle.
    fetch_max_wait_ms: int = Field(default=50, ge=1, le=60_000)
    #: How long a worker waits for a broker that is not up yet at start, and how long a running
    #: worker carries on without an answer from its broker before it stops (exit code 1).
    broker_wait_seconds: float = Field(default=60.0, gt=0, le=86_400)

    # Kafka TLS/SASL pass-through (SURGEWATCH_KAFKA_SECURITY_PROTOCOL, ...).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = Field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        for url in value.split(";"):
            parts = urlsplit(url.strip())
            if parts.scheme != "kafka" or not parts.hostname:
                raise ValueError(
                    f"expected kafka://HOST:PORT (';'-separated for several), got {url!r}"
                )
            try:
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError as exc:
                raise ValueError(f"bad port in {url!r}") from exc
        return value

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not value.startswith(("memory://", "rocksdb://")):
            raise ValueError(f"expected memory:// or rocksdb://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _distinct_topics(self) -> Settings:
        names = [
            self.posts_topic,
            self.signups_topic,
            self.dlq_topic,
            self.window_counts_topic,
            self.surges_topic,
        ]
        if len(set(names)) != len(names):
            raise ValueError(f"topic names must be distinct, got {names}")
        if self.surge_z_end >= self.surge_z_start:
            raise ValueError(
                f"SURGEWATCH_SURGE_Z_END={self.surge_z_end} must be below"
                f" SURGEWATCH_SURGE_Z_START={self.surge_z_start}"
            )
        return self

    @property
    def bootstrap_servers(self) -> str:
        """The broker list as aiokafka wants it: ``host:port,host:port``."""
        return ",".join(urlsplit(url.strip()).netloc for url in self.broker.split(";"))

    @property
    def partials_topic(self) -> str:
        """Internal topic that routes pre-aggregated counts to the partition owning each key."""
        return f"{self.app_id}-window-partials"

    @property
    def summaries_topic(self) -> str:
        """Internal single-partition topic carrying every downstream partition's window summaries
        to the one worker that merges them into the app-wide trend view."""
        return f"{self.app_id}-trend-summaries"

    def reader_kwargs(self, purpose: str) -> dict[str, Any]:
        """aiokafka consumer keyword arguments for reading by offset outside the consumer group
        (``archive``, the counting agent's recounts): the workers' group is never joined."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": f"{self.app_id}-{purpose}",
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "request_timeout_ms": 30_000,
            **self.kafka_security_kwargs(),
        }

    def kafka_security_kwargs(self) -> dict[str, Any]:
        """aiokafka client keyword arguments for TLS/SASL (empty for plaintext)."""
        kwargs: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            kwargs["sasl_mechanism"] = self.kafka_sasl_mechanism
            kwargs["sasl_plain_username"] = self.kafka_sasl_username
            kwargs["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            context = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
            if self.kafka_ssl_certfile:
                context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
            kwargs["ssl_context"] = context
        return kwargs


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment plus explicit overrides (CLI flags).

    Raises :class:`SettingsError` with one line naming the variable, the value and what is expected.
    """
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            name = f"{ENV_PREFIX}{field.upper()}" if error["loc"] else "settings"
            value = error.get("input")
            shown = "" if isinstance(value, dict) else f"={value!r}"
            problems.append(f"{name}{shown}: {error['msg']}")
        raise SettingsError("invalid setting: " + "; ".join(problems)) from None
