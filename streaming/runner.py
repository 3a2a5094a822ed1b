"""Run the telemetry dataflow in this process, with Bytewax recovery on.

``run_telemetry_flow(settings, stop_at_end=True)`` drains the topic and returns the
counts of the run (the demo and tests use it); ``stop_at_end=False`` runs until killed.
Recovery state lives in ``settings.recovery_dir / "telemetry"`` (created on first run);
a run after a crash resumes from the last snapshot.  Several processes: see
docs/streaming.md (``python -m bytewax.run … -i K -a …``).

``python -m plantstream.streaming.runner [--drain]`` does the same from the command
line with settings from the environment and prints the counts as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from plantstream.connect.s3 import ensure_buckets
from plantstream.contract.topics import DEAD_LETTERS, LATE_EVENTS, TELEMETRY, TopicSpec, ensure_topics
from plantstream.settings import Settings, load_settings
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.hot_tables import ensure_hot_tables
from plantstream.streaming.metrics import serve_metrics
from plantstream.streaming.telemetry_flow import FLOW_NAME, build_telemetry_flow

log = logging.getLogger(__name__)

RECOVERY_PARTITIONS = 1


def telemetry_topics(settings: Settings) -> tuple[TopicSpec, ...]:
    """The catalogue's specs of the flow's topics, under the names the settings give."""
    s = settings.stream
    return (
        dataclasses.replace(TELEMETRY, name=s.telemetry_topic),
        dataclasses.replace(DEAD_LETTERS, name=s.dead_letter_topic),
        dataclasses.replace(LATE_EVENTS, name=s.late_topic),
    )


def prepare_telemetry_flow(settings: Settings) -> None:
    """Create what the flow writes to and reads from, if missing (idempotent)."""
    ensure_topics(settings, telemetry_topics(settings))
    ensure_hot_tables(settings)
    ensure_buckets(settings, [settings.lake.bucket])


def recovery_dir(settings: Settings) -> Path:
    return settings.recovery_dir / FLOW_NAME


def ensure_recovery_dir(path: Path, partitions: int = RECOVERY_PARTITIONS) -> Path:
    """Initialise Bytewax recovery partitions in ``path`` unless already there."""
    if not path.is_dir() or not any(path.iterdir()):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, partitions)
    return path


def run_telemetry_flow(settings: Settings, *, stop_at_end: bool) -> FlowStats:
    """Run the telemetry flow in this process (one worker) with recovery on.

    Returns this run's counts (after a resume, replayed events are counted again; the
    sinks deduplicate what they write).
    """
    prepare_telemetry_flow(settings)
    if settings.metrics_port:
        serve_metrics(settings.metrics_port)
    stats = FlowStats()
    flow = build_telemetry_flow(settings, stop_at_end=stop_at_end, stats=stats)
    interval = timedelta(seconds=settings.stream.snapshot_interval_seconds)
    recovery = RecoveryConfig(ensure_recovery_dir(recovery_dir(settings)), backup_interval=timedelta(0))
    run_main(flow, epoch_interval=interval, recovery_config=recovery)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plantstream.streaming.runner", description=__doc__)
    parser.add_argument("--drain", action="store_true", help="stop once every partition reached its end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stats = run_telemetry_flow(load_settings(), stop_at_end=args.drain)
    print(json.dumps(stats.as_dict()), flush=True)


if __name__ == "__main__":
    main()
