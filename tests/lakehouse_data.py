"""A simulated plant's history in a private lake, materialised bronze -> silver -> gold.

Shared by the lakehouse and warm tests: :func:`build_lake` writes the history with the
historian-import path (``plantstream.simulator.history``), writes the plant file gold is
computed against, and runs the real Dagster assets of the code location (silver, then
gold for every day) in process on an ephemeral instance.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from plantstream.orchestration.definitions import build_definitions
from plantstream.settings import Settings
from plantstream.simulator.engine import utc_ms
from plantstream.simulator.history import HistoryResult, history_plant, write_history, write_plant_file

MONDAY = dt.date(2026, 1, 5)
SILVER = dg.AssetSelection.assets(*(["silver", s] for s in ("telemetry", "events", "quality", "energy")))
GOLD = dg.AssetSelection.groups("gold")


@dataclass
class Lake:
    settings: Settings
    history: HistoryResult
    defs: dg.Definitions
    instance: dg.DagsterInstance
    ground_truth: Path
    days: list[dt.date]

    @property
    def assets(self) -> list:
        return list(self.defs.assets or [])

    def materialize(
        self, selection: dg.AssetSelection, partition: str | None = None, *, days: list[dt.date] | None = None
    ) -> dg.ExecuteInProcessResult:
        """One run of ``selection``: unpartitioned, one ``partition``, or a range of ``days`` (single-run backfill)."""
        tags = (
            {
                "dagster/asset_partition_range_start": days[0].isoformat(),
                "dagster/asset_partition_range_end": days[-1].isoformat(),
            }
            if days
            else None
        )
        result = dg.materialize(
            self.assets,
            selection=selection,
            partition_key=partition,
            instance=self.instance,
            resources=self.defs.resources,
            tags=tags,
        )
        assert result.success
        return result


def lake_settings(base: Settings, folder: Path, machines: int, sample_period_s: float) -> Settings:
    """``base`` (a private lake prefix) with the plant file of a ``machines``-machine history plant."""
    plant = history_plant(machines, sample_period_s=sample_period_s)
    plant_file = write_plant_file(plant, folder / "plant.yaml")
    return base.model_copy(update={"plant_file": str(plant_file)})


def build_lake(
    base: Settings,
    folder: Path,
    *,
    machines: int,
    days: int,
    sample_period_s: float,
    start: dt.date = MONDAY,
    gold: bool = True,
    silver: bool = True,
    instance: dg.DagsterInstance | None = None,
) -> Lake:
    """``days`` of ``machines`` machines from ``start``, in bronze, (``silver``) silver and (``gold``) gold.

    ``silver=False`` leaves the history in bronze only, so a test can change bronze first
    (silver merges insert-if-absent: a row already in silver is not replaced).

    ``instance``: the Dagster instance to run on (default: an ephemeral one; a test that
    asks the code location out of process needs a persistent one).
    """
    settings = lake_settings(base, folder, machines, sample_period_s)
    ground_truth = folder / "ground_truth.jsonl"
    start_ms = utc_ms(start.year, start.month, start.day)
    history = write_history(settings, start_ms=start_ms, hours=24 * days, ground_truth=ground_truth)
    defs = build_definitions(settings)
    lake = Lake(
        settings,
        history,
        defs,
        dg.DagsterInstance.ephemeral() if instance is None else instance,
        ground_truth,
        [start + dt.timedelta(days=d) for d in range(days)],
    )
    if silver:
        lake.materialize(SILVER)
    if gold:
        lake.materialize(GOLD, days=lake.days)
    return lake
