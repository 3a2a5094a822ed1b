"""Gold tables published to the warm tier through the ``WarmTier`` resource, on both backends.

The ``warm/<table>`` assets run as Dagster would run them (the code location's definitions,
``warm`` built by ``build_resources``); what lands in the DuckDB file or the real
PostgreSQL server is read back and compared with the lake's gold rows.  Publishing again,
and publishing a two-day range in one run, leave exactly one copy of every row.
"""

from __future__ import annotations

import datetime as dt
import math

import dagster as dg
import pyarrow as pa
import pytest
from lakehouse_data import Lake, build_lake

from plantstream.assets.gold.tables import read_gold_days
from plantstream.assets.warm import flat_for_warm
from plantstream.connect.warm import warm_store
from plantstream.orchestration.definitions import build_definitions
from plantstream.orchestration.warm_io import WarmTier

pytestmark = pytest.mark.integration
WARM = dg.AssetSelection.groups("warm")
TABLES = ("oee", "downtime", "mtbf_mttr", "quality_pareto", "energy_per_part", "telemetry_hourly", "telemetry_daily")


def _rows(table: pa.Table, order: list[str]) -> list[tuple]:
    keyed = table.select(order + [c for c in table.column_names if c not in order])
    return sorted(tuple(_plain(v) for v in row.values()) for row in keyed.to_pylist())


def _plain(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(microsecond=value.microsecond // 1000 * 1000)
    return value


@pytest.fixture(scope="module")
def gold_lake(platform_settings, tmp_path_factory) -> Lake:
    """Two days of gold in a private lake (shared by both backends: only the warm tier differs)."""
    folder = tmp_path_factory.mktemp("warm-gold")
    base = platform_settings.model_copy(
        update={
            "lake": platform_settings.lake.model_copy(update={"prefix": f"test/warm-{folder.name}"}),
            "state_dir": folder / "state",
        }
    )
    return build_lake(base, folder, machines=4, days=2, sample_period_s=60.0, start=dt.date(2026, 2, 2))


def test_gold_days_land_in_the_warm_tier_once(gold_lake: Lake, warm_settings) -> None:
    settings = gold_lake.settings.model_copy(update={"warm": warm_settings.warm, "state_dir": warm_settings.state_dir})
    defs = build_definitions(settings)
    lake = Lake(
        settings, gold_lake.history, defs, dg.DagsterInstance.ephemeral(), gold_lake.ground_truth, gold_lake.days
    )
    assert isinstance(lake.defs.resources["warm"], WarmTier)
    first, second = lake.days
    lake.materialize(WARM, first.isoformat())
    lake.materialize(WARM, first.isoformat())  # again: replaces the day, never doubles it
    store = warm_store(lake.settings)
    assert set(TABLES) <= set(store.tables())
    gold_lake = lake.defs.resources["lake"]
    for table in TABLES:
        gold = flat_for_warm(read_gold_days(gold_lake, table, first, first))
        warm = store.read(f'SELECT * FROM "{table}" WHERE day = $1', [first])
        assert warm.num_rows == gold.num_rows > 0, table
        assert _rows(warm.select(gold.column_names), ["day"]) == _rows(gold, ["day"]), table

    # Both days in one run (a single-run backfill of a range): each day replaced on its own.
    lake.materialize(WARM, days=[first, second])
    for table in TABLES:
        counts = store.read(f'SELECT day, count(*) AS n FROM "{table}" GROUP BY day ORDER BY day')
        expected = [read_gold_days(gold_lake, table, d, d).num_rows for d in (first, second)]
        assert counts["day"].to_pylist() == [first, second], table
        assert counts["n"].to_pylist() == expected, table
    losses = store.read('SELECT availability_loss_s FROM "oee" WHERE scope = $1 AND shift = $2', ["line", "day"])
    assert all(text.startswith("{") for text in losses["availability_loss_s"].to_pylist())  # maps as JSON text
