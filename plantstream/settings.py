"""The one settings model of PlantStream.

Every endpoint and tunable lives here and is read from environment variables with
the prefix ``PLANTSTREAM_`` (nested keys with ``__``, e.g.
``PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS``).  Nothing else in the code base reads the
environment, and nothing reads it at import time: call :func:`load_settings`.

Two profiles:

* ``local`` (default): embedded services on loopback ports, data under one state
  directory (``PLANTSTREAM_STATE_DIR``, default per user: ``$XDG_STATE_HOME/plantstream``,
  i.e. ``~/.local/state/plantstream``, so every command finds the same platform
  whatever directory it runs in).
* ``production``: real Kafka, ClickHouse, S3 and an MLflow server.  Every endpoint
  must be given explicitly; loopback and unspecified addresses (``127.0.0.0/8``, ``::1``,
  ``0.0.0.0``, ``localhost``) are refused in every host of every endpoint so that a
  production job never silently talks to a laptop service.

Every ``PLANTSTREAM_*`` variable must name a setting: a misspelled section or key is an
error naming it (with the closest valid name), never silently ignored.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import socket
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as EnvSourceError

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
    # Put before every topic name of the catalogue (e.g. "site3." or a test's private
    # namespace); the catalogue itself stays the one list of names.
    topic_prefix: str = Field("", max_length=100, pattern=r"^[A-Za-z0-9._-]*$")
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
    """Ports of local services no endpoint setting names: the embedded SeaweedFS parts besides
    S3 (which is in ``s3.endpoint_url``) and the platform's Dagster webserver."""

    seaweed_master: int = Field(9333, ge=1, le=55535)
    seaweed_volume: int = Field(8080, ge=1, le=55535)
    seaweed_filer: int = Field(8888, ge=1, le=55535)
    seaweed_webdav: int = Field(7333, ge=1, le=55535)
    seaweed_admin: int = Field(23646, ge=1, le=55535)
    dagster_webserver: int = Field(3000, ge=1, le=65535)


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
    # An event whose time (source, else read time) lies further ahead of the time it was
    # handed to Kafka is dead-lettered: it would move its partition's watermark into the
    # future and make every later event of the partition late.
    max_event_time_ahead_seconds: int = Field(300, ge=0)
    # How long a sink waits out its service (hot store, S3, Kafka) with retries before the
    # process stops cleanly (exit 75; a restart resumes from the last snapshot).
    sink_retry_seconds: float = Field(120.0, gt=0)
    # How long the broker may report a partition's end below what the flow already read
    # (offsets lost or reused) before the flow stops instead of silently skipping them.
    offset_regression_grace_seconds: float = Field(60.0, ge=0)
    # Live OEE (docs/oee.md, "Live OEE"): provisional rows and the rolling hour move in steps of
    # this much event time; a stream silent this long (wall time) stops holding the OEE clock.
    oee_step_seconds: int = Field(60, ge=1, le=3_600)
    oee_idle_stream_seconds: float = Field(30.0, gt=0)
    # The digital twin (docs/streaming.md, "Digital twin"): a partition's changed machines are
    # published at most this often; a reading older than this (event time) is shown stale.
    twin_emit_interval_ms: int = Field(200, ge=10, le=60_000)
    twin_stale_after_seconds: float = Field(15.0, gt=0)


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
    # How long the load generator keeps resending what Kafka does not hold before it gives
    # up (failing loudly, its checkpoint untouched).
    produce_timeout_s: float = Field(600.0, gt=0)
    # Cap on the load generator's send rate (events/s, all streams); unset = as fast as
    # the broker takes them.  A paced run behaves like a plant, not a bulk import.
    produce_rate: float | None = Field(None, gt=0)


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
    # One EnergyUsage per machine per this many seconds of event time (meter readings).
    energy_interval_s: float = Field(60.0, gt=0)
    # Rows sent in this long after every (re)connection to Kafka are read back before they are
    # deleted (a restarted local broker acknowledged writes it then did not hold); 0 = off.
    verify_after_reconnect_s: float = Field(10.0, ge=0)


class MetricsSettings(_Section):
    """``/metrics`` and ``/healthz`` of every long-running component (docs/observability.md).

    No port is set per component: ``plantstream.observability.ports.metrics_port`` derives
    each one from ``base_port`` (a block of 72 ports), and the Prometheus scrape config is
    generated from the same function, so a component and its scrape target never disagree.
    """

    enabled: bool = False
    base_port: int = Field(9400, ge=1024, le=65_400)
    # Prometheus scrape and rule-evaluation interval of the local monitoring (and the
    # platform exporter's collection cycle).
    scrape_interval_seconds: float = Field(5.0, ge=0.5, le=300)


class WarmSettings(_Section):
    """The warm tier (operational reporting store, docs/warm-tier.md): DuckDB file or PostgreSQL."""

    # duckdb: one file on this machine (local profile); postgres: a server (required in production).
    backend: Literal["duckdb", "postgres"] = "duckdb"
    # Empty = <state_dir>/warm/warm.duckdb.
    duckdb_path: str = ""
    # libpq string or URI (postgresql://user:password@host:5432/db): it usually holds a password.
    postgres_dsn: SecretStr = SecretStr("")
    # How long a writer waits for another (DuckDB's one-process file lock, PostgreSQL lock waits).
    lock_timeout_s: float = Field(120.0, gt=0, le=3_600)

    @model_validator(mode="after")
    def _postgres_needs_a_dsn(self) -> WarmSettings:
        if self.backend == "postgres":
            if not self.postgres_dsn.get_secret_value().strip():
                raise ValueError("backend=postgres needs PLANTSTREAM_WARM__POSTGRES_DSN")
            _warm_dsn_hosts(self.postgres_dsn)  # unparsable is an error now, not at the first write
        return self


class ModelSettings(_Section):
    """Predictive maintenance: the failure model's lifecycle (docs/predictive-maintenance.md)."""

    registered_model: str = Field("plantstream-failure", min_length=1, max_length=128)
    experiment: str = Field("plantstream-predictive-maintenance", min_length=1, max_length=256)
    # H of "fails within H minutes"; samples every sample_every_min while the machine runs.
    horizon_min: int = Field(10, ge=1, le=240)
    sample_every_min: int = Field(2, ge=1, le=60)
    # The retraining window: the last training_days days with labels.
    training_days: int = Field(21, ge=2, le=366)
    # The gate: a candidate replaces the champion only if its PR-AUC on the same held-out
    # period is at least this much higher (and its F1 at its threshold is not lower).
    gate_margin: float = Field(0.005, ge=0, le=1)
    # Where the simulator's ground-truth logs are (**/ground_truth.jsonl); empty = <state_dir>/simulator.
    ground_truth_dir: str = ""
    # The drift sensor: retrain when at least drift_min_features features have a PSI of at least
    # drift_psi_threshold on the latest day against the champion's training window, or when the
    # champion's precision on the latest labelled day is precision_drop below its test precision.
    drift_psi_threshold: float = Field(0.25, gt=0)
    drift_min_features: int = Field(3, ge=1)
    precision_drop: float = Field(0.15, gt=0, le=1)
    # The stream's inference branch (streaming/failure_scoring.py): "auto" = on when the registry
    # has a champion when the flow is built (the stream must run without any model), "on" = always
    # (scores nothing until a champion exists), "off" = never.
    stream_scoring: Literal["auto", "on", "off"] = "auto"
    # Besides the announcements on factory.models.promotions, the branch polls the champion alias this often.
    champion_poll_seconds: float = Field(10.0, gt=0, le=3_600)


class AlertSettings(_Section):
    """The stream's alert branches (docs/alerts.md): anomalies on telemetry, quality on parts."""

    # Telemetry is judged once the machine events of its partition have passed its event
    # time (the machine's running state is then known, and a replay decides the same);
    # if the events fall silent, after at most this much telemetry event time.
    machine_state_wait_seconds: float = Field(120.0, ge=0, le=3_600)
    # Engineering limits over the defaults (docs/anomaly.md), JSON:
    # {"<machine type, or * for all>": {"<signal>": {"low": 5, "high": 90, "max_rise_per_s": 1}}}.
    limits: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    # Scrap rate p-chart per machine and per line over a rolling window of event-time buckets;
    # the centre line comes from the unit's own history (or scrap_rate_center when set).
    scrap_bucket_minutes: int = Field(5, ge=1, le=1_440)
    scrap_window_buckets: int = Field(12, ge=1, le=1_000)
    scrap_history_buckets: int = Field(96, ge=1, le=10_000)
    scrap_sigma: float = Field(3.0, gt=0)
    scrap_clear_sigma: float = Field(2.0, ge=0)
    scrap_min_window_parts: int = Field(30, ge=1)
    scrap_min_history_parts: int = Field(200, ge=1)
    scrap_rate_center: float | None = Field(None, gt=0, lt=1)
    # Consecutive defective parts of one defect code that raise, and other parts that clear.
    defect_run_parts: int = Field(3, ge=2)
    defect_clear_parts: int = Field(3, ge=1)
    # A line's buckets wait for every partition's parts; for a silent partition at most this long (wall clock).
    line_partition_wait_seconds: float = Field(60.0, gt=0)

    @field_validator("limits")
    @classmethod
    def _limits_are_limits(cls, value: dict[str, dict[str, dict[str, float]]]) -> dict:
        from plantstream.domain.anomaly import Limits

        for machine_type, signals in value.items():
            for signal, limits in signals.items():
                try:
                    Limits(**limits)
                except TypeError:
                    raise ValueError(
                        f"{machine_type}.{signal}: limits take low, high, max_rise_per_s, max_fall_per_s"
                    ) from None
        return value

    @model_validator(mode="after")
    def _clear_below_raise(self) -> AlertSettings:
        if self.scrap_clear_sigma > self.scrap_sigma:
            raise ValueError("scrap_clear_sigma must not exceed scrap_sigma")
        return self


def _warm_dsn_hosts(dsn: SecretStr) -> list[str]:
    """Hosts a libpq DSN names ("" = libpq's default, a local socket); never echoes the DSN."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn.get_secret_value())
    except ProgrammingError:
        raise ValueError("PLANTSTREAM_WARM__POSTGRES_DSN is not a valid libpq connection string or URI") from None
    named = str(params.get("hostaddr") or params.get("host") or "")
    return named.split(",")


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/plantstream`` (``~/.local/state/plantstream`` when unset): one per user.

    Not ``./.state``: a default relative to the current directory made every other folder
    look like a stopped platform (and ``status`` created an empty one there).  Read when
    settings are built, never at import time.
    """
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "plantstream"


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
    state_dir: Path = Field(default_factory=default_state_dir)
    site: str = "plant-1"
    # The plant file the lakehouse's gold tables are computed against (lines, shifts,
    # planned downtime, ideal cycle time per machine type); empty = the shipped plant.
    plant_file: str = ""
    metrics: MetricsSettings = MetricsSettings()
    kafka: KafkaSettings = KafkaSettings()
    hotstore: HotStoreSettings = HotStoreSettings()
    s3: S3Settings = S3Settings()
    lake: LakeSettings = LakeSettings()
    mlflow: MlflowSettings = MlflowSettings()
    local_ports: LocalPortsSettings = LocalPortsSettings()
    stream: StreamSettings = StreamSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    edge: EdgeSettings = EdgeSettings()
    warm: WarmSettings = WarmSettings()
    models: ModelSettings = ModelSettings()
    alerts: AlertSettings = AlertSettings()

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _production_needs_real_endpoints(self) -> Settings:
        # Every host of every endpoint is checked (a bootstrap list is only as safe as its
        # worst entry); a prefix test missed "::1", "0.0.0.0", "LOCALHOST" and later entries.
        if self.profile is Profile.PRODUCTION:
            endpoints = {
                "kafka__bootstrap_servers": self.kafka.bootstrap_servers.split(","),
                "hotstore__host": [self.hotstore.host],
                "s3__endpoint_url": [self.s3.endpoint_url],
                "mlflow__tracking_uri": [self.mlflow.tracking_uri],
            }
            if self.warm.backend == "postgres":  # a DuckDB file would live (and die) on one worker
                endpoints["warm__postgres_dsn"] = _warm_dsn_hosts(self.warm.postgres_dsn)
            bad = []
            for key, entries in endpoints.items():
                hosts = entries if key == "warm__postgres_dsn" else [h for e in entries for h in _endpoint_hosts(e)]
                local = [host for host in hosts if _is_local_host(host)]
                if local:
                    bad.append(f"{_env_name((key,))} ({', '.join(repr(h) for h in dict.fromkeys(local))})")
            problems = []
            if self.warm.backend != "postgres":
                problems.append(
                    f"profile=production needs PLANTSTREAM_WARM__BACKEND=postgres (got {self.warm.backend})"
                )
            if bad:
                problems.append("profile=production refuses loopback and unspecified addresses; set " + ", ".join(bad))
            if problems:
                raise ValueError("; ".join(problems))
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


def _endpoint_hosts(entry: str) -> list[str]:
    """The host part(s) of one endpoint: ``host``, ``host:port``, ``[v6]:port`` or a URL.

    A bare IPv6 literal with a port is ambiguous (``::1:9092``): both readings are
    returned, so the guard errs on the side of refusing.
    """
    rest = entry.strip()
    rest = rest.split("://", 1)[1] if "://" in rest else rest
    rest = rest.split("/", 1)[0].rsplit("@", 1)[-1]  # drop the path and any user:password@
    if rest.startswith("["):
        return [rest[1:].split("]", 1)[0]]
    if rest.count(":") > 1:
        return [rest, rest.rsplit(":", 1)[0]]
    return [rest.rsplit(":", 1)[0] if ":" in rest else rest]


def _is_local_host(host: str) -> bool:
    """True for a name or address that can only mean this machine (or any of its interfaces).

    Literals go through :mod:`ipaddress` (loopback or unspecified, IPv4-mapped IPv6
    included); shorthand IPv4 that resolvers accept (``127.1``, ``2130706433``) through
    ``inet_aton``; ``localhost`` and ``*.localhost`` case-insensitively; an empty host
    too (clients then default to the local machine).  DNS is not consulted: a production
    configuration is checked where it is written, not where it resolves.
    """
    name = host.strip().rstrip(".").lower()
    if not name or name == "localhost" or name.endswith(".localhost"):
        return True
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])  # without an IPv6 zone id
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _is_json_field(info: FieldInfo) -> bool:
    """Fields pydantic-settings reads as JSON from one variable (dicts, lists, sets)."""
    annotation = info.annotation
    return (get_origin(annotation) or annotation) in (dict, list, set, frozenset, tuple)


def _env_fields(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> dict[str, FieldInfo]:
    """Every leaf setting as its environment variable name, from the model classes.

    Derived from the classes (not from a built ``Settings``, which would read the very
    environment being checked), so new fields and sections are known without a list here.
    """
    names: dict[str, FieldInfo] = {}
    for field_name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(_env_fields(annotation, (*prefix, field_name)))
        else:
            names[_env_name((*prefix, field_name))] = info
    return names


def _is_sensitive(name: str, fields: Mapping[str, FieldInfo]) -> bool:
    """Whether a value under ``name`` may hold a secret (never echoed in messages).

    Secret fields, anything named like one, and ``extra_config`` (librdkafka settings
    carry ``sasl.password`` and key material); names that are no known setting too,
    since their value cannot be judged.
    """
    upper = name.upper()
    if any(marker in upper for marker in ("SECRET", "PASSWORD", "TOKEN", "EXTRA_CONFIG", "CREDENTIAL")):
        return True
    leaf = next((known for known in fields if upper == known or upper.startswith(known + ENV_NESTED_DELIMITER)), None)
    return leaf is None or fields[leaf].annotation is SecretStr


def _environment_problems(environ: Mapping[str, str], fields: Mapping[str, FieldInfo]) -> list[tuple[str, str]]:
    """(variable, problem) for every ``PLANTSTREAM_*`` variable that names no setting or
    holds unparsable JSON; values are never quoted (they may be secrets)."""
    sections = {name.rsplit(ENV_NESTED_DELIMITER, 1)[0] for name in fields if ENV_NESTED_DELIMITER in name}
    suffixes = {name[len(ENV_PREFIX) :]: name for name in fields}
    problems: list[tuple[str, str]] = []
    for variable, value in sorted(environ.items()):
        name = variable.upper()  # the model is case-insensitive, and so is this check
        if not name.startswith(ENV_PREFIX):
            continue
        info = fields.get(name)
        if info is None:
            parent = next((k for k in fields if name.startswith(k + ENV_NESTED_DELIMITER)), None)
            if parent is not None and _is_json_field(fields[parent]):
                problem = f"not a setting; {parent} takes the whole value as one JSON object"
            elif name in sections:
                example = next(k for k in fields if k.startswith(name + ENV_NESTED_DELIMITER))
                problem = f"is a section, not a setting; set its settings one by one (e.g. {example})"
            else:
                close = difflib.get_close_matches(name[len(ENV_PREFIX) :], suffixes, n=1, cutoff=0.6)
                hint = f"did you mean {suffixes[close[0]]}?" if close else "`plantstream settings` lists them"
                problem = f"not a PlantStream setting; {hint}"
            problems.append((variable, problem))
        elif _is_json_field(info):
            if not value.strip():
                problems.append((variable, "is empty, which is not valid JSON; unset it or give {} for none"))
                continue
            try:
                json.loads(value)
            except ValueError as exc:
                detail = f"{exc.msg} at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else "unparsable"
                problems.append((variable, f'is not valid JSON ({detail}); expected an object like {{"name": value}}'))
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (plus explicit overrides for tests and tools).

    Raises :class:`SettingsError` naming each invalid environment variable: unknown names
    (with the closest valid one), unparsable JSON, invalid values.  Values of secret
    settings (and of names that are no setting) are never shown.
    """
    fields = _env_fields()
    problems = _environment_problems(os.environ, fields)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            name = _env_name(loc) if loc else "settings"
            shown = "" if _is_sensitive(name, fields) else f" (got {err.get('input')!r})"
            problems.append((name, f"{err['msg'].removeprefix('Value error, ')}{shown}"))
    except EnvSourceError as exc:
        # pydantic-settings could not parse a variable the check above let through; its
        # message names the section only, and its traceback is of no use to a user.
        if not problems:
            problems.append(("settings", f"{exc} (check that section's PLANTSTREAM_* variables)"))
    else:
        if not problems:
            return settings
    # One line per variable: the environment check's (unknown name, bad JSON) says more
    # than pydantic's "Extra inputs are not permitted" for the same name.
    seen: set[str] = set()
    lines = []
    for name, problem in problems:
        if name == "settings" or name.upper() not in seen:
            seen.add(name.upper())
            lines.append(f"{name}: {problem}")
    raise SettingsError("invalid PlantStream settings:\n  " + "\n  ".join(lines))


def _flatten(settings: Settings, *, reveal_secrets: bool) -> dict[str, str]:
    flat: dict[str, str] = {}

    def walk(prefix: tuple[str, ...], value: Any) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk((*prefix, name), getattr(value, name))
        elif isinstance(value, SecretStr):
            secret = value.get_secret_value()
            flat[_env_name(prefix)] = secret if reveal_secrets else ("********" if secret else "")
        elif value is None:  # unset optional: the variable stays unset (its default is None)
            return
        elif isinstance(value, dict | list | tuple):
            flat[_env_name(prefix)] = json.dumps(value, default=str)
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
