"""A late reading in an old day makes exactly the gold days that read it stale, in the UI.

Asked the way the Dagster UI asks: GraphQL ``staleStatusByPartition`` / ``staleCausesByPartition``
on the code location (``orchestration/definitions.py``, loaded out of process like the
webserver does) and the same instance the materialisations ran on.  Then the stale day is
materialised again and is fresh, and its gold has the late event in it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import write_deltalake
from lakehouse_data import GOLD, SILVER, build_lake

from plantstream.assets.gold.tables import read_gold_days
from plantstream.connect.s3 import delta_storage_options
from plantstream.contract.columns import BRONZE_PARTITION_COLUMNS, bronze_schema
from plantstream.contract.streams import EVENTS_STREAM
from plantstream.settings import child_env
from plantstream.simulator.plant_config import load_plant

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
QUERY = """
query Stale($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      staleStatusByPartition(partitions: $partitions)
      staleCausesByPartition(partitions: $partitions) {
        reason key { path } partitionKey dependency { path } dependencyPartitionKey
      }
    }
  }
}
"""


def _late_stop(lake, machine: str, at: dt.datetime, seq: int) -> pa.Table:
    """One MachineStopped event of ``machine`` at ``at``, as the stream would have written it to bronze late."""
    ms = int(at.timestamp() * 1000)
    (info,) = [m for m in load_plant(lake.settings.plant_file).machines() if m.machine_id == machine]
    site, area, line = info.site, info.area, info.line
    row = {
        "event_type": "MachineStopped",
        "state": "stopped",
        "reason": "failure:late-test",
        "attributes": [],
        "v": 1,
        "site": site,
        "area": area,
        "line": line,
        "machine_id": machine,
        "seq": seq,
        "source_ts": ms,
        "read_ts": ms + 5,
        "ingest_ts": ms + 86_400_000,  # handed over a day later: a late event
        "kafka_partition": 0,
        "kafka_offset": 0,
        "event_ts": ms,
        "event_date": at.date(),
    }
    return pa.Table.from_pylist([row], schema=bronze_schema(EVENTS_STREAM))


def test_a_late_event_makes_its_day_and_the_days_reading_it_stale(
    platform_settings, tmp_path, monkeypatch, request
) -> None:
    from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql

    base = platform_settings.model_copy(
        update={
            "lake": platform_settings.lake.model_copy(update={"prefix": f"test/stale-{tmp_path.name}"}),
            "state_dir": tmp_path / "state",
            "warm": platform_settings.warm.model_copy(update={"duckdb_path": str(tmp_path / "warm.duckdb")}),
        }
    )
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    request.addfinalizer(instance.dispose)
    lake = build_lake(
        base, tmp_path, machines=4, days=3, sample_period_s=60.0, start=dt.date(2026, 1, 5), instance=instance
    )
    days = [d.isoformat() for d in lake.days]
    for key, value in child_env(lake.settings).items():
        if key.startswith("PLANTSTREAM_"):
            monkeypatch.setenv(key, value)

    with define_out_of_process_workspace(str(ROOT / "orchestration" / "definitions.py"), "defs", lake.instance) as ui:

        def stale(asset: str) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
            # A request context per question, as the webserver has per HTTP request (it caches stale status).
            result = execute_dagster_graphql(
                ui.create_request_context(), QUERY, variables={"key": {"path": ["gold", asset]}, "partitions": days}
            )
            assert not result.errors, result.errors
            node = result.data["assetNodeOrError"]
            causes = [
                sorted(
                    {("/".join(c["key"]["path"]), c["partitionKey"] or "", c["reason"]) for c in found or []}
                    | {
                        ("/".join(c["dependency"]["path"]), c["dependencyPartitionKey"] or "", c["reason"])
                        for c in found or []
                        if c["dependency"]
                    }
                )
                for found in node["staleCausesByPartition"]
            ]
            return dict(zip(days, zip(node["staleStatusByPartition"], causes, strict=True), strict=True))

        assert {d: s for d, (s, _) in stale("oee").items()} == dict.fromkeys(days, "FRESH")

        # A stop of one machine at 10:00 on the first day arrives late (bronze, then silver).
        late_day = lake.days[0]
        machine = "cnc-mill-001"
        events = lake.defs.resources["lake"].table("silver", "events").to_pyarrow_dataset()
        mine = events.to_table(columns=["seq"], filter=pc.field("machine_id") == machine)
        seq = int(pc.max(mine["seq"]).as_py()) + 1
        at = dt.datetime(late_day.year, late_day.month, late_day.day, 10, 0, tzinfo=dt.UTC)
        write_deltalake(
            lake.settings.lake.table_uri("bronze", "events"),
            _late_stop(lake, machine, at, seq),
            mode="append",
            partition_by=list(BRONZE_PARTITION_COLUMNS),
            storage_options=delta_storage_options(lake.settings),
        )
        lake.materialize(SILVER)

        oee = stale("oee")
        # Day 1 holds the event; day 2 reads day 1 (the state at its start); day 3 does not read it.
        assert {d: s for d, (s, _) in oee.items()} == {days[0]: "STALE", days[1]: "STALE", days[2]: "FRESH"}
        causes = {(key, partition) for key, partition, _ in oee[days[0]][1]}
        assert ("silver/events_by_day", days[0]) in causes, oee[days[0]][1]
        # Telemetry rollups read their own day of telemetry only: nothing changed for them.
        assert {d: s for d, (s, _) in stale("telemetry_daily").items()} == dict.fromkeys(days, "FRESH")

        before = read_gold_days(lake.defs.resources["lake"], "downtime", late_day, late_day)
        assert "failure:late-test" not in before["reason"].to_pylist()
        lake.materialize(GOLD, days[0])
        after_status = stale("oee")
        assert (after_status[days[0]][0], after_status[days[1]][0]) == ("FRESH", "STALE")
        stops = read_gold_days(lake.defs.resources["lake"], "downtime", late_day, late_day)
        late = stops.filter(pc.equal(stops["reason"], "failure:late-test")).to_pylist()
        assert [(r["machine_id"], r["start"]) for r in late] == [(machine, at)]
