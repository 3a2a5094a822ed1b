"""The one settings model of PlantStream.

Every endpoint and tunable lives here and is read from environment variables with
the prefix ``PLANTSTREAM_`` (nested keys with ``__``, e.g.
``PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS``).  Nothing else in the code base reads the
environment, and nothing reads it at import time: call :func:`load_settings`.

Two profiles:

* ``local`` (default): embedded services on loopback ports, data under one state
  directory (``PLANTSTREAM_STATE_DIR``, default ``./.state``).
* ``production``: real Kafka, ClickHouse, S3 and an MLflow server.  Every endpoint
  must be given explicitly; loopback defaults are refused so that a production job
  never silently talks to a laptop service.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PLANTSTREAM_"
ENV_NESTED_DELIMITER = "__"


class Profile(StrEnum):
    LOCAL = "local"
    PRODUCTION = "production"


class SettingsError(ValueError):
    """Invalid configuration; the message names every offending environment variable."""


class _Section(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


class KafkaSettings(_Section):
    """Kafka (Tansu locally, any Kafka-protocol cluster in production)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "plantstream"
    # Tansu storage: "s3" keeps topics, data and offsets on the local S3 (durable);
    # "memory" is faster but loses everything when the broker stops.
    local_storage: Literal["s3", "memory"] = "s3"
    broker_bucket: str = "plantstream-broker"
    default_partitions: int = Field(4, ge=1, le=1024)
    topic_partitions: dict[str, int] = Field(default_factory=dict, description="per-topic override")
    replication_factor: int = Field(1, ge=1, le=7)
    # Hooks for the security wave: passed verbatim to every librdkafka client.
    extra_config: dict[str, str] = Field(default_factory=dict)


class HotStoreSettings(_Section):
    """ClickHouse over HTTP (the chDB-backed local service, or a ClickHouse server)."""

    host: str = "127.0.0.1"
    port: int = Field(8123, ge=1, le=65535)
    database: str = "plantstream"
    username: str = "default"
    password: SecretStr = SecretStr("")
    secure: bool = False
    hot_retention_days: int = Field(30, ge=1)
    dedup_window: int = Field(10_000, ge=1, description="non_replicated_deduplication_window of hot tables")


class S3Settings(_Section):
    """S3 endpoint (SeaweedFS locally, AWS S3 or any S3 in production)."""

    endpoint_url: str = "http://127.0.0.1:8333"
    region: str = "us-east-1"
    access_key_id: str = "plantstream"
    secret_access_key: SecretStr = SecretStr("plantstream-local-secret")
    allow_http: bool = True


class LakeSettings(_Section):
    """Where the lakehouse tables live; always an ``s3://`` URI."""

    bucket: str = "plantstream-lake"
    prefix: str = "lake"

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def table_uri(self, tier: str, name: str) -> str:
        return f"{self.root_uri}/{tier}/{name}"


class MlflowSettings(_Section):
    tracking_uri: str = "http://127.0.0.1:5000"
    artifact_bucket: str = "plantstream-mlflow"


class LocalPortsSettings(_Section):
    """Ports of the embedded SeaweedFS parts besides S3 (which is in ``s3.endpoint_url``)."""

    seaweed_master: int = Field(9333, ge=1, le=55535)
    seaweed_volume: int = Field(8080, ge=1, le=55535)
    seaweed_filer: int = Field(8888, ge=1, le=55535)
    seaweed_webdav: int = Field(7333, ge=1, le=55535)
    seaweed_admin: int = Field(23646, ge=1, le=55535)


class StreamSettings(_Section):
    """The telemetry dataflow."""

    consumer_batch_size: int = Field(10_000, ge=1, le=100_000)
    window_seconds: int = Field(60, ge=1)
    second_window_seconds: int = Field(300, ge=1)
    allowed_lateness_seconds: int = Field(30, ge=0)
    idle_key_expiry_seconds: int = Field(3_600, ge=1)
    bronze_flush_rows: int = Field(200_000, ge=1)
    bronze_flush_seconds: float = Field(10.0, gt=0)
    snapshot_interval_seconds: float = Field(30.0, gt=0)
    workers: int = Field(1, ge=1, le=64)
    # Topic names the telemetry dataflow reads and writes.  Defaults equal the contract's
    # catalogue (plantstream.contract.topics; tests/streaming checks they agree); tests
    # and side-by-side deployments point a flow at other topics.
    telemetry_topic: str = "factory.machine.telemetry"
    dead_letter_topic: str = "factory.deadletter"
    late_topic: str = "factory.machine.telemetry.late"


class SimulatorSettings(_Section):
    # The direct load generator (``plantstream simulate kafka``, ``demo --source direct``):
    # ``machines`` machines sampled every ``sample_period_s``, ``simulated_minutes`` per run.
    seed: int = 42
    machines: int = Field(24, ge=1, le=10_000)
    sample_period_s: float = Field(1.0, gt=0)
    simulated_minutes: float = Field(60.0, gt=0)
    # The live plant (``demo``'s default source): wall seconds the plant file's plant runs
    # over OPC UA / MQTT / Modbus through the edge gateway.
    live_seconds: float = Field(30.0, gt=0, le=86_400)


class EdgeSettings(_Section):
    """The edge gateway (``plantstream gateway``); its state lives in ``<state_dir>/edge``."""

    # Gateway YAML (machines, protocols, endpoints); empty = <state_dir>/edge/gateway.yaml.
    config_file: str = ""
    # Store-and-forward buffer bounds and what happens beyond them (docs/edge.md).
    buffer_max_events: int = Field(2_000_000, ge=100)
    buffer_max_mb: float = Field(1_024.0, gt=0)
    overflow_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    # A machine is stale after this many of its expected intervals without an answer.
    stale_multiple: float = Field(3.0, ge=1.0)
    # Reconnect backoff per peer: exponential from min to max, with full jitter.
    backoff_min_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    # Recreate the Kafka producer when the broker answers but nothing was delivered this long.
    producer_stuck_s: float = Field(15.0, gt=0)
    forward_batch: int = Field(5_000, ge=1, le=100_000)
    metrics_port: int = Field(0, ge=0, le=65535, description="0 = do not serve /metrics and /healthz")


class Settings(BaseSettings):
    """All of PlantStream's configuration.  Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    profile: Profile = Profile.LOCAL
    state_dir: Path = Path(".state")
    site: str = "plant-1"
    metrics_port: int = Field(0, ge=0, le=65535, description="0 = do not serve /metrics")
    kafka: KafkaSettings = KafkaSettings()
    hotstore: HotStoreSettings = HotStoreSettings()
    s3: S3Settings = S3Settings()
    lake: LakeSettings = LakeSettings()
    mlflow: MlflowSettings = MlflowSettings()
    local_ports: LocalPortsSettings = LocalPortsSettings()
    stream: StreamSettings = StreamSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    edge: EdgeSettings = EdgeSettings()

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _production_needs_real_endpoints(self) -> Settings:
        if self.profile is Profile.PRODUCTION:
            loopback = ("127.", "localhost", "[::1]")
            endpoints = {
                "kafka__bootstrap_servers": self.kafka.bootstrap_servers,
                "hotstore__host": self.hotstore.host,
                "s3__endpoint_url": self.s3.endpoint_url.split("//", 1)[-1],
                "mlflow__tracking_uri": self.mlflow.tracking_uri.split("//", 1)[-1],
            }
            bad = [key for key, value in endpoints.items() if value.startswith(loopback)]
            if bad:
                raise ValueError(
                    "profile=production refuses loopback endpoints; set " + ", ".join(_env_name((k,)) for k in bad)
                )
        return self

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def recovery_dir(self) -> Path:
        return self.state_dir / "recovery"

    def redacted(self) -> dict[str, str]:
        """Settings as env-var names to values, secrets masked (safe to print or log)."""
        return _flatten(self, reveal_secrets=False)


def _env_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts).upper()


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (plus explicit overrides for tests and tools).

    Raises :class:`SettingsError` naming each invalid environment variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            name = _env_name(loc) if loc else "settings"
            given = err.get("input")
            shown = "" if "secret" in name.lower() or "password" in name.lower() else f" (got {given!r})"
            problems.append(f"{name}: {err['msg']}{shown}")
        raise SettingsError("invalid PlantStream settings:\n  " + "\n  ".join(problems)) from None


def _flatten(settings: Settings, *, reveal_secrets: bool) -> dict[str, str]:
    flat: dict[str, str] = {}

    def walk(prefix: tuple[str, ...], value: Any) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk((*prefix, name), getattr(value, name))
        elif isinstance(value, SecretStr):
            secret = value.get_secret_value()
            flat[_env_name(prefix)] = secret if reveal_secrets else ("********" if secret else "")
        elif isinstance(value, dict):
            flat[_env_name(prefix)] = json.dumps(value)
        else:
            flat[_env_name(prefix)] = str(value)

    walk((), settings)
    return flat


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The current environment plus ``settings`` as ``PLANTSTREAM_*`` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(_flatten(settings, reveal_secrets=True))
    env.update(extra)
    return env
