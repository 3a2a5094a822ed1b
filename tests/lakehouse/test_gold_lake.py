"""A simulated plant materialised bronze -> silver -> gold, checked two independent ways.

* against a recomputation in plain SQL over silver (``recompute.py``): OEE, downtime,
  MTBF/MTTR and energy per good part;
* against the simulator's ground truth (what really happened: state intervals, parts,
  meter readings), which never went through the lake.

The default tier runs two days of 12 machines at a 30 s step; ``-m slow`` adds a week of
24 machines at a 10 s step.  Both go through the real Dagster assets on the real local
services (SeaweedFS).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from lakehouse_data import GOLD, Lake, build_lake
from recompute import SilverSql

from plantstream.assets.gold import rollups
from plantstream.assets.gold.tables import read_gold_days, table_checksum
from plantstream.settings import child_env
from plantstream.simulator.ground_truth import read_ground_truth
from plantstream.simulator.plant_config import load_plant

pytestmark = pytest.mark.integration
REL = 1e-9


@pytest.fixture(
    scope="module",
    params=[
        pytest.param({"machines": 12, "days": 2, "sample_period_s": 30.0}, id="two-days"),
        pytest.param({"machines": 24, "days": 7, "sample_period_s": 10.0}, id="week", marks=pytest.mark.slow),
    ],
)
def lake(request: pytest.FixtureRequest, platform_settings, tmp_path_factory) -> Lake:
    folder = tmp_path_factory.mktemp("lake")
    prefix = f"test/gold-{request.param['days']}d-{folder.name}"
    base = platform_settings.model_copy(
        update={
            "lake": platform_settings.lake.model_copy(update={"prefix": prefix}),
            "state_dir": folder / "state",
            "warm": platform_settings.warm.model_copy(update={"duckdb_path": str(folder / "warm.duckdb")}),
        }
    )
    return build_lake(base, folder, **request.param)


def _silver(lake: Lake, stream: str) -> pa.Table:
    table = lake.defs.resources["lake"].table("silver", stream)
    return table.to_pyarrow_dataset().to_table()


@pytest.fixture(scope="module")
def silver_sql(lake: Lake) -> SilverSql:
    plant = load_plant(lake.settings.plant_file)
    return SilverSql(_silver(lake, "events"), _silver(lake, "quality"), _silver(lake, "energy"), plant)


def _gold(lake: Lake, name: str, day: dt.date) -> pa.Table:
    return read_gold_days(lake.defs.resources["lake"], name, day, day)


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def _close(a: float | None, b: float | None, what: str) -> None:
    if a is None or b is None:
        assert a is None and b is None, what
    else:
        assert math.isclose(a, b, rel_tol=REL, abs_tol=1e-6), f"{what}: {a} != {b}"


def test_every_day_has_gold_for_every_machine_and_line(lake: Lake) -> None:
    machines = {m.machine_id for m in load_plant(lake.settings.plant_file).machines()}
    assert len(machines) >= 12
    for day in lake.days:
        oee = _gold(lake, "oee", day)
        day_rows = oee.filter(pc.and_(pc.equal(oee["scope"], "machine"), pc.equal(oee["shift"], "day")))
        assert set(day_rows["machine_id"].to_pylist()) == machines, day
        shifts = set(oee["shift"].to_pylist())
        assert shifts == {"day", "early", "late", "night"}, shifts


def test_oee_equals_a_recomputation_in_sql(lake: Lake, silver_sql: SilverSql) -> None:
    for day in lake.days:
        gold = _gold(lake, "oee", day)
        expected = {
            (r["scope"], r["line"], r["machine_id"], r["shift"], r["ws"]): r for r in silver_sql.oee(day).to_pylist()
        }
        got = {
            (r["scope"], r["line"], r["machine_id"], r["shift"], _ms(r["window_start"])): r for r in gold.to_pylist()
        }
        assert got.keys() == expected.keys(), day
        for key, row in got.items():
            want = expected[key]
            for column in ("run_s", "planned_production_s", "net_run_s", "fully_productive_s"):
                _close(row[column], want[column], f"{day} {key} {column}")
            _close(row["unplanned_stop_s"], want["unplanned_s"], f"{day} {key} unplanned")
            _close(row["planned_stop_s"], want["planned_s"], f"{day} {key} planned")
            assert (row["total_count"], row["good_count"]) == (want["total"], want["good"]), key
            for ratio in ("availability", "performance", "quality"):
                _close(row[ratio], want[ratio], f"{day} {key} {ratio}")
            if want["availability"] is None:
                want_oee = None
            elif want["performance"] is None:
                want_oee = 0.0
            else:
                want_oee = want["availability"] * want["performance"] * (want["quality"] or 0.0)
            _close(row["oee"], want_oee, f"{day} {key} oee")
            losses = dict(row["availability_loss_s"])
            assert math.isclose(sum(losses.values()), row["unplanned_stop_s"], rel_tol=REL, abs_tol=1e-6)


def test_downtime_mtbf_and_mttr_equal_a_recomputation_in_sql(lake: Lake, silver_sql: SilverSql) -> None:
    failures = 0
    for day in lake.days:
        stops = _gold(lake, "downtime", day).sort_by([("machine_id", "ascending"), ("start", "ascending")])
        want = silver_sql.downtime(day)
        got = [
            (r["machine_id"], _ms(r["start"]), _ms(r["end"]), r["state"], r["reason"], r["open"])
            for r in stops.to_pylist()
        ]
        assert got == [
            (r["machine_id"], r["start_ms"], r["end_ms"], r["state"], r["reason"], r["open"]) for r in want.to_pylist()
        ], day
        kpis = {r["machine_id"]: r for r in _gold(lake, "mtbf_mttr", day).to_pylist()}
        expected = {r["machine_id"]: r for r in silver_sql.reliability(day).to_pylist()}
        assert kpis.keys() == expected.keys()
        for machine, row in kpis.items():
            assert (row["failures"], row["repairs_ended"]) == (
                expected[machine]["failures"],
                expected[machine]["repairs_ended"],
            )
            for column in ("run_s", "mttr_s", "mtbf_s"):
                _close(row[column], expected[machine][column], f"{day} {machine} {column}")
            failures += row["failures"]
    assert failures > 0, "the simulated plant had no failure: the MTBF/MTTR comparison compared nothing"


def test_energy_per_good_part_equals_a_recomputation_in_sql(lake: Lake, silver_sql: SilverSql) -> None:
    for day in lake.days:
        gold = _gold(lake, "energy_per_part", day)
        rows = gold.filter(pc.equal(gold["scope"], "machine")).to_pylist()
        expected = {(r["machine_id"], r["shift"], r["ws"]): r for r in silver_sql.energy(day).to_pylist()}
        got = {(r["machine_id"], r["shift"], _ms(r["window_start"])): r for r in rows if r["covered_s"] > 0}
        assert got.keys() == expected.keys(), day
        for key, row in got.items():
            _close(row["energy_kwh"], expected[key]["energy_kwh"], f"{day} {key} kWh")
            assert row["good_count"] == expected[key]["good"], key
            _close(row["kwh_per_good_part"], expected[key]["kwh_per_good_part"], f"{day} {key} kWh/part")


def test_gold_matches_the_simulators_ground_truth(lake: Lake) -> None:
    """States, parts and energy as the simulator logged them, never through Kafka or the lake."""
    truth = read_ground_truth(lake.ground_truth)
    end_ms = lake.history.end_ms
    states: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    parts: dict[tuple[str, dt.date], list[bool]] = defaultdict(list)
    meter: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for entry in truth:
        if entry.kind == "state":
            states[entry.machine_id].append((entry.ts, entry.mode, entry.reason))
        elif entry.kind == "part":
            parts[entry.machine_id, dt.datetime.fromtimestamp(entry.ts / 1000, dt.UTC).date()].append(
                entry.mode == "good"
            )
        elif entry.kind == "energy":
            meter[entry.machine_id].append((entry.ts, entry.detail["energy_kwh"]))
    for day in lake.days:
        d0 = _ms(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))
        d1 = d0 + 86_400_000
        oee = _gold(lake, "oee", day)
        rows = oee.filter(pc.and_(pc.equal(oee["scope"], "machine"), pc.equal(oee["shift"], "day"))).to_pylist()
        energy = _gold(lake, "energy_per_part", day)
        energy_by_machine = {
            r["machine_id"]: r["energy_kwh"]
            for r in energy.filter(
                pc.and_(pc.equal(energy["scope"], "machine"), pc.equal(energy["shift"], "day"))
            ).to_pylist()
        }
        for row in rows:
            machine = row["machine_id"]
            seconds = {"run": 0.0, "planned": 0.0, "unplanned": 0.0}
            history = states[machine]
            for (ts, state, reason), nxt in zip(history, [*history[1:], (end_ms, "", "")], strict=True):
                overlap = (min(nxt[0], d1) - max(ts, d0)) / 1000
                if overlap > 0:
                    kind = "run" if state == "running" else (
                        "planned" if reason == "off_shift" or reason.startswith("planned:") else "unplanned"
                    )  # fmt: skip
                    seconds[kind] += overlap
            if day == lake.days[-1]:  # the data ends before the day: gold knows states up to its last event
                slack = row["unknown_s"]
                assert slack < 600, slack
                assert row["run_s"] <= seconds["run"] + 1e-6 and row["run_s"] >= seconds["run"] - slack - 1e-6
            else:
                assert row["unknown_s"] == 0, (day, machine)
                assert math.isclose(row["run_s"], seconds["run"], abs_tol=1e-6), (day, machine)
                assert math.isclose(row["planned_stop_s"], seconds["planned"], abs_tol=1e-6), (day, machine)
                assert math.isclose(row["unplanned_stop_s"], seconds["unplanned"], abs_tol=1e-6), (day, machine)
            made = parts[machine, day]
            assert (row["total_count"], row["good_count"]) == (len(made), sum(made)), (day, machine)
            readings = [(ts, kwh) for ts, kwh in meter[machine] if d0 <= ts <= d1]
            if day != lake.days[-1]:  # readings at every full minute: the day is its first to its next day's first
                used = readings[-1][1] - readings[0][1]
                assert readings[0][0] == d0 and readings[-1][0] == d1
                assert math.isclose(energy_by_machine[machine], used, rel_tol=1e-6), (day, machine)


def test_materialising_a_day_again_gives_an_identical_partition(lake: Lake) -> None:
    day = lake.days[0]
    names = ("oee", "downtime", "mtbf_mttr", "quality_pareto", "energy_per_part", "telemetry_hourly", "telemetry_daily")
    before = {name: table_checksum(_gold(lake, name, day)) for name in names}
    lake.materialize(GOLD, day.isoformat())
    assert {name: table_checksum(_gold(lake, name, day)) for name in names} == before
    other = lake.days[1]
    assert _gold(lake, "oee", other).num_rows > 0  # the other day was left alone


def test_telemetry_rollups_agree_with_sql_over_silver(lake: Lake) -> None:
    day = lake.days[0]
    telemetry = lake.defs.resources["lake"].table("silver", "telemetry").to_pyarrow_dataset()
    con = duckdb.connect()
    con.register("t", telemetry)
    want = {
        (m, s): (n, lo, hi, mean, p95)
        for m, s, n, lo, hi, mean, p95 in con.sql(
            f"SELECT machine_id, signal, count(value), min(value), max(value), avg(value), quantile_cont(value, 0.95) "
            f"FROM t WHERE event_date = DATE '{day}' AND value IS NOT NULL GROUP BY ALL"
        ).fetchall()
    }
    daily = _gold(lake, "telemetry_daily", day).to_pylist()
    assert {(r["machine_id"], r["signal"]) for r in daily} == want.keys()
    for r in daily:
        n, lo, hi, mean, p95 = want[r["machine_id"], r["signal"]]
        assert (r["count"], r["min"], r["max"]) == (n, lo, hi)
        assert math.isclose(r["mean"], mean, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(r["p95"], p95, rel_tol=1e-9, abs_tol=1e-9)
    hourly = _gold(lake, "telemetry_hourly", day)
    summed = hourly.group_by(["machine_id", "signal"]).aggregate([("count", "sum")])
    assert {
        (m, s): n
        for m, s, n in zip(*(summed[c].to_pylist() for c in ("machine_id", "signal", "count_sum")), strict=True)
    } == {k: v[0] for k, v in want.items()}


def test_plantstream_sql_reads_the_tables_by_name(lake: Lake, tmp_path: Path) -> None:
    lake.materialize(dg.AssetSelection.groups("warm"), lake.days[0].isoformat())
    env = child_env(lake.settings)
    cli = str(Path(sys.executable).parent / "plantstream")

    def run(*args: str) -> str:
        done = subprocess.run([cli, "sql", *args], capture_output=True, text=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    day = lake.days[0].isoformat()
    query = (
        "SELECT line, round(oee, 6) AS oee FROM gold.oee "
        f"WHERE scope = 'line' AND shift = 'day' AND day = DATE '{day}' ORDER BY line"
    )
    from_lake = json.loads(run(query, "--format", "json"))
    gold = _gold(lake, "oee", lake.days[0])
    lines = gold.filter(pc.and_(pc.equal(gold["scope"], "line"), pc.equal(gold["shift"], "day"))).sort_by("line")
    assert from_lake == [
        {"line": line, "oee": round(v, 6)}
        for line, v in zip(lines["line"].to_pylist(), lines["oee"].to_pylist(), strict=True)
    ]
    warm = [line.split(",") for line in run(query.replace("gold.oee", "warm.oee"), "--format", "csv").splitlines()]
    assert warm[0] == ['"line"', '"oee"']
    assert [(name.strip('"'), float(value)) for name, value in warm[1:]] == [(r["line"], r["oee"]) for r in from_lake]
    counted = json.loads(
        run(f"SELECT count(*) AS n FROM silver.telemetry WHERE event_date = DATE '{day}'", "--format", "json")
    )
    silver = lake.defs.resources["lake"].table("silver", "telemetry").to_pyarrow_dataset()
    assert counted == [{"n": silver.count_rows(filter=pc.field("event_date") == pa.scalar(lake.days[0], pa.date32()))}]
    assert "oee" in run(query)  # the default: a table on the terminal
    assert json.loads(run("--hot", "SELECT 1 + 1 AS two", "--format", "json")) == [{"two": 2}]  # ClickHouse SQL
    missing = subprocess.run(
        [cli, "sql", "SELECT * FROM gold.nope"], capture_output=True, text=True, env=env, check=False
    )
    assert missing.returncode == 1 and "gold.nope does not exist" in missing.stderr
    script = tmp_path / "lake.sql"
    run("--init-script", str(script), "--mirror", str(tmp_path / "mirror"), "--tiers", "gold,warm")
    con = duckdb.connect()
    con.execute(script.read_text())
    assert con.execute(f"SELECT count(*) FROM gold.oee WHERE day = DATE '{day}'").fetchall() == [(gold.num_rows,)]
    assert con.execute(f"SELECT count(*) FROM warm.oee WHERE day = DATE '{day}'").fetchall() == [(gold.num_rows,)]


def test_rollups_of_a_big_day_split_by_machine_equal_one_pass(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """A day bigger than one group is split by machine into files: the tables are the same."""
    day = lake.days[0]
    silver = lake.defs.resources["lake"]
    hourly, daily, readings = rollups.telemetry_rollups(silver, day)  # one pass: the small plant is one group
    monkeypatch.setattr(rollups, "GROUP_ROWS", 20_000)  # many groups even for the small plant
    split_hourly, split_daily, split_readings = rollups.telemetry_rollups(silver, day)
    assert split_hourly.equals(hourly) and split_daily.equals(daily)
    assert split_readings == readings == lake.history.rows["telemetry"] // len(lake.days)
    assert daily.num_rows == _gold(lake, "telemetry_daily", day).num_rows
