"""The main job on embedded defaults: plant -> Kafka -> dataflow -> hot store + bronze -> silver.

Two sources put the plant's four streams (telemetry, machine events, part quality,
energy) into Kafka:

* ``edge`` (the default): the shipped plant live over OPC UA, MQTT and Modbus, collected
  by the edge gateway (:mod:`plantstream.cli.live_plant`); its gap report must show nothing
  missing.
* ``direct``: the load generator produces a simulated hour straight to Kafka (volume,
  faster than real time; :mod:`plantstream.simulator.kafka_producer`).

Before the plant, the model step (:mod:`plantstream.cli.demo_model`): past days of the
plant in bronze on the first run and a failure model trained on them and promoted as the
champion, which the dataflow's scoring branch then scores the live plant with.

Used by ``plantstream demo`` and by the end-to-end tests.  Counts are measured before
and after, so a run reports what *it* added and consecutive runs add up; every count is
per stream (:data:`plantstream.contract.streams.STREAMS`), so a stream that loses or
doubles events shows by name.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from plantstream.cli.demo_insights import GoldResult, StreamInsights, materialize_gold, stream_insights
from plantstream.cli.demo_model import ModelResult, prepare_model, read_stream_scores, settings_for_run
from plantstream.cli.live_plant import Produced
from plantstream.contract.streams import STREAMS, StreamSpec
from plantstream.settings import Settings

Progress = Callable[[str, int | None, int | None], None]  # (step, done, total)
Source = Literal["edge", "direct"]


@dataclass(frozen=True)
class StoreCounts:
    """Rows of one stream in the hot store (deduplicated view), bronze and silver."""

    hot_rows: int
    bronze_rows: int
    silver_rows: int

    def minus(self, before: StoreCounts) -> StoreCounts:
        return StoreCounts(
            self.hot_rows - before.hot_rows,
            self.bronze_rows - before.bronze_rows,
            self.silver_rows - before.silver_rows,
        )


@dataclass(frozen=True)
class StreamResult:
    """One stream's counts of this run, hop by hop."""

    produced: int  # handed to Kafka and acknowledged by the gateway / load generator
    kafka: int  # read from Kafka by the dataflow
    hot_rows: int
    bronze_rows: int
    silver_rows: int
    gaps_missing: int  # sequence numbers produced that are neither in Kafka nor buffered
    dead_letters: int

    @property
    def agrees(self) -> bool:
        return (
            self.produced == self.kafka == self.hot_rows == self.bronze_rows == self.silver_rows
            and self.gaps_missing == 0
        )


@dataclass(frozen=True)
class DemoResult:
    streams: dict[str, StreamResult]
    totals: dict[str, StoreCounts]  # per stream, everything the stores hold after the run
    hot_windows: int
    late_events: int
    machines: int
    platform_started_by_demo: bool
    platform_start_s: float
    wall_s: float
    source: Source = "edge"
    events_by_protocol: dict[str, int] = field(default_factory=dict)
    ground_truth_parts: int | None = None  # parts the simulator made (edge source)
    silver_parts: int | None = None  # good + scrap parts in silver quality for this run
    insights: StreamInsights | None = None  # alerts, live OEE, the twin (hot store)
    gold: GoldResult | None = None  # the gold tables of the run's days
    model: ModelResult | None = None  # the failure model trained / used and the stream's scores

    @property
    def telemetry(self) -> StreamResult:
        return self.streams["telemetry"]

    @property
    def counts_agree(self) -> bool:
        """Every produced event of every stream is in Kafka, the hot store, bronze and silver
        exactly once, the gateway's gap report shows nothing missing, and (from the edge)
        the parts in silver are the parts the plant made."""
        parts_agree = self.ground_truth_parts is None or self.ground_truth_parts == self.silver_parts
        return all(s.agrees for s in self.streams.values()) and parts_agree

    def summary(self) -> dict[str, Any]:
        """The one-line JSON figures of ``plantstream demo --json`` (counts for this run)."""
        t = self.telemetry
        return {
            # Telemetry at the top level, as before the four streams.
            "events_produced": t.produced,
            "hot_rows": t.hot_rows,
            "bronze_rows": t.bronze_rows,
            "silver_rows": t.silver_rows,
            "kafka_events_consumed": t.kafka,
            "gaps_missing": t.gaps_missing,
            "dead_letters": sum(s.dead_letters for s in self.streams.values()),
            "wall_s": round(self.wall_s, 2),
            "hot_windows": self.hot_windows,
            "late_events": self.late_events,
            "counts_agree": self.counts_agree,
            "source": self.source,
            "events_by_protocol": self.events_by_protocol,
            "streams": {name: asdict(s) for name, s in self.streams.items()},
            "ground_truth_parts": self.ground_truth_parts,
            "silver_parts": self.silver_parts,
            "totals": {name: asdict(c) for name, c in self.totals.items()},
            **(self.insights.summary() if self.insights is not None else {}),
            "gold": self.gold.summary() if self.gold is not None else None,
            "model": self.model.summary() if self.model is not None else None,
        }


def measure_counts(settings: Settings, streams: tuple[StreamSpec, ...] = STREAMS) -> dict[str, StoreCounts]:
    """Per stream: rows in the hot store (deduplicated view), bronze and silver."""
    from plantstream.orchestration.resources import HotStore, Lake

    lake, hot = Lake(settings), HotStore(settings)
    return {
        spec.name: StoreCounts(
            hot_rows=int(hot.scalar(f"SELECT count() FROM {spec.hot_table} FINAL")),  # type: ignore[arg-type]
            bronze_rows=lake.row_count("bronze", spec.name),
            silver_rows=lake.row_count("silver", spec.name),
        )
        for spec in streams
    }


def count_windows(settings: Settings) -> int:
    from plantstream.orchestration.resources import HotStore

    return int(HotStore(settings).scalar("SELECT count() FROM telemetry_windows FINAL"))  # type: ignore[arg-type]


def materialize_lakehouse(settings: Settings) -> None:
    """Observe the stream's outputs and materialise silver, in process."""
    import dagster as dg

    from plantstream.assets.silver import SILVER_ASSETS
    from plantstream.assets.stream_outputs import stream_outputs
    from plantstream.orchestration.resources import build_resources

    result = dg.materialize(
        [stream_outputs, *SILVER_ASSETS],
        resources=build_resources(settings),
        raise_on_error=True,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},  # progress is ours to show
    )
    if not result.success:
        raise RuntimeError("materialising the lakehouse assets failed")


def _produce(settings: Settings, source: Source, progress: Progress) -> Produced:
    if source == "edge":
        from plantstream.cli.live_plant import run_live_plant

        live = run_live_plant(
            settings, seconds=settings.simulator.live_seconds, on_progress=lambda d, t: progress("live", d, t)
        )
        return live.produced
    from plantstream.simulator.kafka_producer import produce_simulated_plant

    direct = produce_simulated_plant(settings, on_progress=lambda d, t: progress("produce", d, t))
    return Produced(direct.by_stream, direct.machines)


def run_demo(
    settings: Settings,
    progress: Progress = lambda _s, _d, _t: None,
    *,
    source: Source = "edge",
    with_model: bool = True,
    extend_live: bool = True,
) -> DemoResult:
    """The demo's steps; ``with_model``: a trained, promoted failure model the stream scores with
    (:mod:`plantstream.cli.demo_model`; the platform then includes MLflow); ``extend_live``: the
    live plant runs until the stream can score a sample, even if ``live_seconds`` is shorter
    (``plantstream demo --seconds S`` turns this off: S is what the user asked for)."""
    from plantstream.connect.topics import ensure_topics
    from plantstream.services.supervisor import ALL_SERVICES, CORE_SERVICES, ensure_running
    from plantstream.streaming.hot_tables import ensure_hot_tables
    from plantstream.streaming.runner import run_flow

    started = time.perf_counter()
    began = dt.datetime.now(dt.UTC)
    progress("platform", None, None)
    with ensure_running(settings, services=ALL_SERVICES if with_model else CORE_SERVICES) as platform:
        platform_start_s = time.perf_counter() - started
        ensure_topics(settings)
        ensure_hot_tables(settings)
        step = prepare_model(settings, progress) if with_model else None
        settings = settings_for_run(settings, step, live=source == "edge" and extend_live)
        before = measure_counts(settings)
        windows_before = count_windows(settings)
        produced = _produce(settings, source, progress)
        progress("stream", None, None)
        stats = run_flow(settings, stop_at_end=True)
        insights = stream_insights(settings, since=began)
        scores = read_stream_scores(settings, since=began) if step is not None else None
        progress("lakehouse", None, None)
        materialize_lakehouse(settings)
        progress("gold", None, None)
        gold = materialize_gold(settings, run_days(began, dt.datetime.now(dt.UTC)))
        after = measure_counts(settings)
        windows_after = count_windows(settings)
        started_by_demo = bool(platform.started)
    streams = {}
    for spec in STREAMS:
        added = after[spec.name].minus(before[spec.name])
        counts = stats.stream(spec.name)
        streams[spec.name] = StreamResult(
            produced=produced.events.get(spec.name, 0),
            kafka=counts["events_in"],
            hot_rows=added.hot_rows,
            bronze_rows=added.bronze_rows,
            silver_rows=added.silver_rows,
            gaps_missing=produced.gaps_missing.get(spec.name, 0),
            dead_letters=counts["dead_letters"],
        )
    return DemoResult(
        streams=streams,
        totals=after,
        hot_windows=windows_after - windows_before,
        late_events=stats.late,
        machines=produced.machines,
        platform_started_by_demo=started_by_demo,
        platform_start_s=platform_start_s,
        wall_s=time.perf_counter() - started,
        source=source,
        events_by_protocol=produced.by_protocol,
        ground_truth_parts=produced.ground_truth_parts,
        silver_parts=streams["quality"].silver_rows if produced.ground_truth_parts is not None else None,
        insights=insights,
        gold=gold,
        model=None
        if step is None or scores is None
        else ModelResult(
            step, scores, insights.failure_alerts, settings.simulator.live_seconds if source == "edge" else None
        ),
    )


def run_days(began: dt.datetime, ended: dt.datetime) -> list[dt.date]:
    """The UTC days a run's events can fall on (two when it crosses midnight)."""
    days, day = [], began.date()
    while day <= ended.date():
        days.append(day)
        day += dt.timedelta(days=1)
    return days
