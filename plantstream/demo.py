"""The main job on embedded defaults: plant -> Kafka -> dataflow -> hot store + bronze -> silver.

Two sources put the plant's telemetry into Kafka:

* ``edge`` (the default): the shipped plant live over OPC UA, MQTT and Modbus, collected
  by the edge gateway (:mod:`plantstream.live_plant`); its gap report must show nothing
  missing.
* ``direct``: the load generator produces a simulated hour straight to Kafka (volume,
  faster than real time; :mod:`plantstream.simulator.kafka_producer`).

Used by ``plantstream demo`` and by the end-to-end tests.  Counts are measured before
and after, so a run reports what *it* added and consecutive runs add up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from plantstream.settings import Settings

Progress = Callable[[str, int | None, int | None], None]  # (step, done, total)
Source = Literal["edge", "direct"]


@dataclass(frozen=True)
class StoreCounts:
    hot_rows: int
    hot_windows: int
    bronze_rows: int
    silver_rows: int


@dataclass(frozen=True)
class DemoResult:
    events_produced: int
    kafka_events_consumed: int
    dead_letters: int
    late_events: int
    hot_rows: int
    hot_windows: int
    bronze_rows: int
    silver_rows: int
    totals: StoreCounts
    machines: int
    platform_started_by_demo: bool
    platform_start_s: float
    wall_s: float
    source: Source = "edge"
    events_by_protocol: dict[str, int] = field(default_factory=dict)
    gaps_missing: int = 0  # edge source: sequence numbers the gateway produced that never reached Kafka

    @property
    def counts_agree(self) -> bool:
        """Every produced reading is in Kafka, the hot store, bronze and silver exactly once
        (and, from the edge, the gateway's gap report shows nothing missing)."""
        return (
            self.events_produced == self.kafka_events_consumed == self.hot_rows == self.bronze_rows == self.silver_rows
            and self.gaps_missing == 0
        )

    def summary(self) -> dict[str, int | float]:
        """The one-line JSON figures of ``plantstream demo --json`` (counts for this run)."""
        return {
            "events_produced": self.events_produced,
            "hot_rows": self.hot_rows,
            "bronze_rows": self.bronze_rows,
            "silver_rows": self.silver_rows,
            "wall_s": round(self.wall_s, 2),
            "kafka_events_consumed": self.kafka_events_consumed,
            "hot_windows": self.hot_windows,
            "dead_letters": self.dead_letters,
            "late_events": self.late_events,
            "counts_agree": self.counts_agree,
            "source": self.source,
            "events_by_protocol": self.events_by_protocol,
            "gaps_missing": self.gaps_missing,
            "totals": asdict(self.totals),
        }


def measure_counts(settings: Settings) -> StoreCounts:
    """Row counts in the hot store (deduplicated view), bronze and silver."""
    from plantstream.orchestration.resources import HotStore, Lake

    lake, hot = Lake(settings), HotStore(settings)
    return StoreCounts(
        hot_rows=int(hot.scalar("SELECT count() FROM telemetry_raw FINAL")),  # type: ignore[arg-type]
        hot_windows=int(hot.scalar("SELECT count() FROM telemetry_windows FINAL")),  # type: ignore[arg-type]
        bronze_rows=lake.row_count("bronze", "telemetry"),
        silver_rows=lake.row_count("silver", "telemetry"),
    )


def materialize_lakehouse(settings: Settings) -> None:
    """Observe the stream's outputs and materialise silver, in process."""
    import dagster as dg

    from plantstream.assets.stream_outputs import stream_outputs
    from plantstream.assets.telemetry_silver import telemetry_silver
    from plantstream.orchestration.resources import build_resources

    result = dg.materialize(
        [stream_outputs, telemetry_silver],
        resources=build_resources(settings),
        raise_on_error=True,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},  # progress is ours to show
    )
    if not result.success:
        raise RuntimeError("materialising the lakehouse assets failed")


@dataclass(frozen=True)
class _Produced:
    events: int
    machines: int
    by_protocol: dict[str, int]
    gaps_missing: int


def _produce(settings: Settings, source: Source, progress: Progress) -> _Produced:
    if source == "edge":
        from plantstream.live_plant import run_live_plant

        live = run_live_plant(
            settings, seconds=settings.simulator.live_seconds, on_progress=lambda d, t: progress("live", d, t)
        )
        return _Produced(live.events, live.machines, live.by_protocol, live.gaps_missing)
    from plantstream.simulator.kafka_producer import produce_simulated_telemetry

    direct = produce_simulated_telemetry(settings, on_progress=lambda d, t: progress("produce", d, t))
    return _Produced(direct.events, direct.machines, {}, 0)


def run_demo(
    settings: Settings, progress: Progress = lambda _s, _d, _t: None, *, source: Source = "edge"
) -> DemoResult:
    from plantstream.contract.topics import ensure_topics
    from plantstream.services.supervisor import CORE_SERVICES, ensure_running
    from plantstream.streaming.hot_tables import ensure_hot_tables
    from plantstream.streaming.runner import run_telemetry_flow

    started = time.perf_counter()
    progress("platform", None, None)
    # The demo needs S3, Kafka and the hot store; MLflow joins when the ML wave uses it.
    with ensure_running(settings, services=CORE_SERVICES) as platform:
        platform_start_s = time.perf_counter() - started
        ensure_topics(settings)
        ensure_hot_tables(settings)
        before = measure_counts(settings)
        produced = _produce(settings, source, progress)
        progress("stream", None, None)
        stats = run_telemetry_flow(settings, stop_at_end=True)
        progress("lakehouse", None, None)
        materialize_lakehouse(settings)
        after = measure_counts(settings)
        started_by_demo = bool(platform.started)
    return DemoResult(
        events_produced=produced.events,
        kafka_events_consumed=stats.events_in,
        dead_letters=stats.dead_letters,
        late_events=stats.late,
        hot_rows=after.hot_rows - before.hot_rows,
        hot_windows=after.hot_windows - before.hot_windows,
        bronze_rows=after.bronze_rows - before.bronze_rows,
        silver_rows=after.silver_rows - before.silver_rows,
        totals=after,
        machines=produced.machines,
        platform_started_by_demo=started_by_demo,
        platform_start_s=platform_start_s,
        wall_s=time.perf_counter() - started,
        source=source,
        events_by_protocol=produced.by_protocol,
        gaps_missing=produced.gaps_missing,
    )
