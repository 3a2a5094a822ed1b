"""The suites, as code: what every lake table must satisfy, per day (bronze, silver, gold).

A :class:`TableSuite` names the Dagster asset it checks, the Dagster checks it reports
(:class:`CheckDef`: name, severity, what it means) and a function that reads one
partition and returns the :class:`~plantstream.quality_checks.expectations.Batch`\\ es to
validate.  :data:`SUITES` is every suite of the tables that exist; a new table gets one
entry (``docs/data-quality.md``, "Adding a table").

Where the limits come from, so that the checks and the rest of the platform cannot
disagree:

* signal ranges and units: :data:`plantstream.contract.signals.SIGNALS`, the same the
  stream's validation dead-letters by;
* schemas: :func:`plantstream.assets.silver.silver_schema`,
  :func:`plantstream.contract.columns.bronze_schema` and the gold schemas;
* machines and shifts: the plant file of the settings (``PLANTSTREAM_PLANT_FILE``) and
  gold's own calendar (:func:`plantstream.assets.gold.calendar.day_windows`);
* enumerations (states, part results, event types, reading quality): ``plantstream.contract``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import dagster as dg
import pandas as pd
import pyarrow as pa

from plantstream.assets.gold.assets import GOLD_TABLES
from plantstream.assets.gold.calendar import GOLD_PARTITIONS, day_windows, plant_of
from plantstream.assets.predictive_maintenance.assets import FEATURES_KEY
from plantstream.assets.predictive_maintenance.features import FEATURES_SCHEMA, FEATURES_TABLE
from plantstream.assets.silver import silver_schema
from plantstream.assets.silver_days import day_key
from plantstream.contract.columns import bronze_schema
from plantstream.contract.events import MachineEventType, PartResult, Quality
from plantstream.contract.machine_tags import MACHINE_STATES
from plantstream.contract.signals import SIGNALS
from plantstream.contract.streams import STREAMS, StreamSpec
from plantstream.models.drift import PSI_SIGNIFICANT
from plantstream.models.features import DERIVED_FEATURES, SIGNAL_FEATURES
from plantstream.orchestration.resources import Lake
from plantstream.quality_checks import frames
from plantstream.quality_checks.expectations import (
    Batch,
    Rule,
    a_at_least_b,
    between,
    equal_pair,
    in_set,
    not_empty,
    not_null,
    quoted,
    unique,
)
from plantstream.settings import Settings
from plantstream.simulator.plant_config import PlantConfig

#: Event time may step back this much between consecutive sequence numbers of a machine
#: (OPC UA subscriptions of one machine deliver a little out of order); a clock set back or
#: a burst replayed under new sequence numbers goes back minutes.
TIME_BACK_TOLERANCE_S = 5.0
#: A noisy signal that repeats one non-zero value for longer than this is frozen.
STUCK_AFTER_S = 1_800.0
#: Signals that carry measurement noise whenever they are not zero.  The others legitimately
#: hold one value: counters and accumulators (``cycle_count``, ``tool_wear``) while a machine
#: waits, and ``power`` / ``current`` at the standby draw of a stopped machine.
NOISY_SIGNALS: frozenset[str] = frozenset(
    {"air_temperature", "process_temperature", "rotational_speed", "torque", "vibration", "pressure", "belt_speed"}
)
#: How far above 1 performance may go before the ideal cycle time is called wrong.  Gold's
#: own flag (``performance_above_one``) is strict; a part whose cycle began before a window
#: counts whole in it, so a short window exceeds 1 by up to one cycle / run time (30 s in a
#: 30-minute segment: 1.7 %, docs/oee.md).  A cycle time typed 10x too long gives ~10.
PERFORMANCE_TOLERANCE = 0.05
#: ... and by up to one part per machine: a window with fewer parts than this per machine
#: (the first seconds of a plant, a demo run) can exceed any tolerance legitimately, so
#: performance (and OEE, its product) is judged on windows with at least this many.
PERFORMANCE_MIN_PARTS_PER_MACHINE = 20
_ENOUGH_PARTS = f"total_count >= {PERFORMANCE_MIN_PARTS_PER_MACHINE} * machines"
STEADY_SIGNALS: frozenset[str] = frozenset({"cycle_count", "tool_wear", "power", "current"})


class Severity(StrEnum):
    ERROR = "ERROR"  # blocks downstream assets where the suite is blocking
    WARN = "WARN"  # reported, never blocks


@dataclass(frozen=True)
class CheckDef:
    name: str
    description: str
    severity: Severity = Severity.ERROR


@dataclass
class SuiteInputs:
    """What a suite may read: the lake and the settings (plant file)."""

    lake: Lake
    settings: Settings

    @cached_property
    def plant(self) -> PlantConfig:
        return plant_of(self.settings)

    @cached_property
    def machines(self) -> list[str]:
        return [m.machine_id for m in self.plant.machines()]


@dataclass(frozen=True)
class TableSuite:
    """The checks of one table, run per partition (``partitioned``) or per day of new data (bronze)."""

    name: str
    asset_key: dg.AssetKey
    checks: tuple[CheckDef, ...]
    batches: Callable[[SuiteInputs, dt.date], list[Batch]]
    #: Failed ERROR checks block the asset's downstream assets (Dagster blocking checks + the write gate).
    blocking: bool = True
    partitioned: bool = True
    description: str = ""

    @property
    def partitions_def(self) -> dg.PartitionsDefinition | None:
        return GOLD_PARTITIONS if self.partitioned else None

    def check(self, name: str) -> CheckDef:
        return next(c for c in self.checks if c.name == name)


# -- the checks, by meaning ---------------------------------------------------------------

SCHEMA = CheckDef("schema", "Every column of the table's declared schema is there with its type, and no other.")
NOT_NULL = CheckDef("not_null", "Identity (site, area, line, machine_id, seq), event time and required fields are set.")
VALID_VALUES = CheckDef("valid_values", "Enumerations hold contract values; physical quantities are not negative.")
SIGNAL_RANGES = CheckDef(
    "signal_ranges",
    "Every reading lies in its signal's valid range and carries its unit (plantstream.contract.signals: the ranges "
    "the stream dead-letters by). A unit change (x1000) after a PLC update fails here.",
)
UNIQUE_KEY = CheckDef(
    "unique_key", "One row per (machine_id, seq); telemetry: one reading per machine, signal and time."
)
TIME_ORDER = CheckDef(
    "time_order",
    f"Per machine, event time does not go back (more than {TIME_BACK_TOLERANCE_S:g} s) from one sequence number to "
    "the next: a clock set back, or a burst replayed under new sequence numbers.",
)
STUCK_SENSOR = CheckDef(
    "stuck_sensor",
    f"No noisy signal repeats one non-zero value for more than {STUCK_AFTER_S / 60:g} minutes (a frozen sensor).",
)
SHIFT_COVERAGE = CheckDef(
    "shift_coverage",
    "Every machine of the plant file has rows in every shift segment of the day that has ended (a machine "
    "scheduled in a shift with no rows fails).",
)
KNOWN_MACHINES = CheckDef(
    "known_machines",
    "Every machine in the day is in the plant file (unknown machines have no calendar or ideal cycle time).",
    Severity.WARN,
)
OEE_BOUNDS = CheckDef("oee_bounds", "Availability, quality and OEE lie in [0, 1].")
PERFORMANCE = CheckDef(
    "performance_at_most_one",
    f"Performance lies in [0, 1 + {PERFORMANCE_TOLERANCE:g}]: above means more parts than the ideal cycle time "
    "allows, i.e. the plant file's ideal cycle time (cycle_s) is wrong (the margin: a part begun before a window "
    "counts whole in it).",
)
AGGREGATE_ORDER = CheckDef("aggregate_order", "Per window: min <= mean <= max, min <= p95 <= max, count >= 1.")


def _schema_batch(expected: pa.Schema, actual: pa.Schema | None) -> Batch:
    return Batch(
        "schema",
        frames.schema_frame(expected, actual),
        [equal_pair("schema", "expected_type", "actual_type", "a column missing, unexpected or of another type")],
    )


# -- bronze and silver: the four streams ---------------------------------------------------

IDENTITY = ("site", "area", "line", "machine_id", "seq", "event_time")
STREAM_COLUMNS: dict[str, tuple[str, ...]] = {
    "telemetry": ("signal", "value", "unit", "quality"),
    "events": ("event_type", "state", "reason"),
    "quality": ("part_id", "result", "defect_code"),
    "energy": ("power_kw", "energy_kwh", "quality"),
}
#: Streams a machine sends whatever its state (so a shift without rows is an outage).
CONTINUOUS_STREAMS = frozenset({"telemetry", "energy"})


def _value_rules(stream: str) -> list[Rule]:
    if stream == "telemetry":
        rules = [
            in_set("valid_values", "quality", [q.value for q in Quality]),
            in_set("signal_ranges", "signal", sorted(SIGNALS)),
        ]
        rules += not_null("not_null", "signal")
        rules += not_null("not_null", "value", row_condition=f"quality=={quoted(Quality.GOOD.value)}")
        for spec in SIGNALS.values():
            condition = f"signal=={quoted(spec.name)}"
            rules.append(
                between(
                    "signal_ranges",
                    "value",
                    spec.valid_min,
                    spec.valid_max,
                    row_condition=condition,
                    notes=f"{spec.name} [{spec.valid_min:g}, {spec.valid_max:g}] {spec.unit}",
                )
            )
            rules.append(in_set("signal_ranges", "unit", [spec.unit], row_condition=condition))
        return rules
    if stream == "events":
        return [
            *not_null("not_null", "event_type"),
            in_set("valid_values", "event_type", [e.value for e in MachineEventType]),
            in_set("valid_values", "state", list(MACHINE_STATES)),
        ]
    if stream == "quality":
        return [
            *not_null("not_null", "part_id", "result"),
            in_set("valid_values", "result", [r.value for r in PartResult]),
        ]
    if stream == "energy":
        return [
            *not_null("not_null", "power_kw", "energy_kwh"),
            between("valid_values", "power_kw", 0.0),
            between("valid_values", "energy_kwh", 0.0),
            in_set("valid_values", "quality", [q.value for q in Quality]),
        ]
    return []


def _row_batch(spec: StreamSpec, rows: pa.Table, *, strict_unique: bool) -> Batch:
    rules = [*not_null("not_null", *IDENTITY), *not_empty("not_null", *IDENTITY[:4]), *_value_rules(spec.name)]
    rules.append(unique("unique_key", "machine_id", "seq", notes="(machine_id, seq): the sinks' and silver's key"))
    if spec.name == "telemetry" and strict_unique:
        rules.append(
            unique("unique_key", "machine_id", "signal", "event_time", notes="a reading sent twice under new seqs")
        )
    return Batch("rows", frames.to_frame(rows), rules, sample_columns=[*IDENTITY, *STREAM_COLUMNS[spec.name]])


def silver_batches(spec: StreamSpec) -> Callable[[SuiteInputs, dt.date], list[Batch]]:
    columns = [*IDENTITY, *STREAM_COLUMNS[spec.name]]

    def batches(inputs: SuiteInputs, day: dt.date) -> list[Batch]:
        lake = inputs.lake
        rows = frames.read_day(lake, "silver", spec.name, "event_date", day, columns=columns)
        if rows is None:
            rows = pa.table({c: pa.array([], silver_schema(spec).field(c).type) for c in columns})
        out = [
            _schema_batch(silver_schema(spec), frames.table_schema(lake, "silver", spec.name)),
            Batch(
                "time_order",
                frames.time_order_frame(rows),
                [between("time_order", "max_step_back_s", 0.0, TIME_BACK_TOLERANCE_S)],
            ),
            Batch("machines", frames.machines_frame(rows), [in_set("known_machines", "machine_id", inputs.machines)]),
        ]
        if spec.name == "telemetry":
            out.append(
                Batch(
                    "stuck",
                    frames.stuck_frame(rows, NOISY_SIGNALS),
                    [between("stuck_sensor", "run_s", 0.0, STUCK_AFTER_S)],
                )
            )
        if spec.name in CONTINUOUS_STREAMS:
            windows = frames.scheduled_windows(day, day_windows(day, list(inputs.plant.shifts)))
            due = frames.latest_event_ms(lake.table("silver", spec.name))
            out.append(
                Batch(
                    "coverage",
                    frames.coverage_frame(rows, inputs.machines, windows, due),
                    [between("shift_coverage", "rows", 1, None)],
                )
            )
        out.append(_row_batch(spec, rows, strict_unique=True))  # last: converting it frees the Arrow rows
        return out

    return batches


def bronze_batches(spec: StreamSpec) -> Callable[[SuiteInputs, dt.date], list[Batch]]:
    columns = [*IDENTITY[:-1], "event_ts", *STREAM_COLUMNS[spec.name]]

    def batches(inputs: SuiteInputs, day: dt.date) -> list[Batch]:
        rows = frames.read_day(inputs.lake, "bronze", spec.name, "event_date", day, columns=columns)
        if rows is None:
            rows = pa.table({c: pa.array([], bronze_schema(spec).field(c).type) for c in columns})
        event_ts = rows["event_ts"]
        if not pa.types.is_timestamp(event_ts.type):  # epoch ms in the contract, a timestamp in Delta
            event_ts = event_ts.cast(pa.int64()).cast(pa.timestamp("ms", "UTC"))
        rows = rows.append_column("event_time", event_ts.cast(pa.timestamp("ms", "UTC")))
        return [
            _schema_batch(bronze_schema(spec), frames.table_schema(inputs.lake, "bronze", spec.name)),
            _row_batch(spec, rows.drop_columns(["event_ts"]), strict_unique=False),
        ]

    return batches


def _stream_checks(spec: StreamSpec, *, silver: bool) -> tuple[CheckDef, ...]:
    checks = [SCHEMA, NOT_NULL, VALID_VALUES, UNIQUE_KEY]
    if spec.name == "telemetry":
        checks.append(SIGNAL_RANGES)
    if silver:
        checks += [TIME_ORDER, KNOWN_MACHINES]
        if spec.name == "telemetry":
            checks.append(STUCK_SENSOR)
        if spec.name in CONTINUOUS_STREAMS:
            checks.append(SHIFT_COVERAGE)
        return tuple(checks)
    # Bronze is at-least-once (a resumed epoch repeats): duplicates and bad rows are reported, silver removes them.
    return tuple(CheckDef(c.name, c.description, Severity.WARN) for c in checks)


SILVER_SUITES = [
    TableSuite(
        f"silver.{spec.name}",
        day_key(spec),
        _stream_checks(spec, silver=True),
        silver_batches(spec),
        description=f"Silver {spec.name}, one event_date at a time (partition D = silver rows of day D). Blocking: a "
        "failed day keeps the gold days that read it from being written.",
    )
    for spec in STREAMS
]
BRONZE_SUITES = [
    TableSuite(
        f"bronze.{spec.name}",
        dg.AssetKey(["bronze", spec.name]),
        _stream_checks(spec, silver=False),
        bronze_batches(spec),
        blocking=False,
        partitioned=False,
        description=f"Bronze {spec.name}: the event_date days that received rows since the previous evaluation. "
        "Warnings only: bronze is at-least-once and silver deduplicates.",
    )
    for spec in STREAMS
]


# -- gold ---------------------------------------------------------------------------------


def _rollup_rules() -> list[Rule]:
    rules = [
        *not_null("not_null", "day", "machine_id", "signal", "window_start"),
        between("aggregate_order", "count", 1),
    ]
    rules += [a_at_least_b("aggregate_order", "max", c) for c in ("mean", "p95", "min")]
    rules += [a_at_least_b("aggregate_order", c, "min") for c in ("mean", "p95")]
    for spec in SIGNALS.values():
        for column in ("min", "max"):
            rules.append(
                between(
                    "signal_ranges",
                    column,
                    spec.valid_min,
                    spec.valid_max,
                    row_condition=f"signal=={quoted(spec.name)}",
                )
            )
    rules.append(unique("unique_key", "machine_id", "signal", "window_start"))
    return rules


_RATIOS_NOTE = "null when nothing was planned or no part was made"
GOLD_RULES: dict[str, Callable[[], list[Rule]]] = {
    "oee": lambda: [
        *not_null("not_null", "day", "scope", "line", "shift", "window_start", "window_end"),
        *not_null("not_null", "machine_id", row_condition='scope=="machine"'),
        in_set("valid_values", "scope", ["machine", "line"]),
        *(between("oee_bounds", c, 0.0, 1.0, notes=_RATIOS_NOTE) for c in ("availability", "quality")),
        between("oee_bounds", "oee", 0.0, None, notes=_RATIOS_NOTE),
        between(
            "oee_bounds",
            "oee",
            0.0,
            1.0 + PERFORMANCE_TOLERANCE,
            row_condition=_ENOUGH_PARTS,
            notes="OEE = A x P x Q: within the performance tolerance, on windows with enough parts",
        ),
        between(
            "performance_at_most_one",
            "performance",
            0.0,
            1.0 + PERFORMANCE_TOLERANCE,
            row_condition=_ENOUGH_PARTS,
            notes="a part started before the window counts whole: edges may exceed 1 by one cycle / run time; "
            f"judged on windows with at least {PERFORMANCE_MIN_PARTS_PER_MACHINE} parts per machine",
        ),
        between("performance_at_most_one", "performance", 0.0, None),
        *(between("valid_values", c, 0.0) for c in ("planned_production_s", "run_s", "total_count", "good_count")),
        unique("unique_key", "scope", "line", "machine_id", "shift", "window_start"),
    ],
    "downtime": lambda: [
        *not_null("not_null", "day", "machine_id", "start", "state", "stop_class"),
        between("valid_values", "duration_s", 0.0),
        in_set("valid_values", "stop_class", ["planned_stop", "unplanned_stop"]),
        in_set("valid_values", "state", list(MACHINE_STATES)),
        a_at_least_b("valid_values", "end", "start"),
        unique("unique_key", "machine_id", "start"),
    ],
    "mtbf_mttr": lambda: [
        *not_null("not_null", "day", "machine_id"),
        *(
            between("valid_values", c, 0.0)
            for c in ("run_s", "failures", "repairs_ended", "repair_s", "mttr_s", "mtbf_s")
        ),
        unique("unique_key", "machine_id"),
    ],
    "quality_pareto": lambda: [
        *not_null("not_null", "day", "scope", "defect_code"),
        *(between("valid_values", c, 0.0, 1.0) for c in ("share_of_defects", "cumulative_share", "defect_rate")),
        *(between("valid_values", c, 0) for c in ("scrap_count", "rework_count", "defect_count", "parts_in_scope")),
        between("valid_values", "rank", 1),
        unique("unique_key", "scope", "line", "machine_id", "defect_code"),
    ],
    "energy_per_part": lambda: [
        *not_null("not_null", "day", "scope", "line", "shift", "window_start"),
        *(between("valid_values", c, 0.0) for c in ("energy_kwh", "covered_s", "kwh_per_good_part", "kwh_per_part")),
        between("valid_values", "meter_resets", 0),
        unique("unique_key", "scope", "line", "machine_id", "shift", "window_start"),
    ],
    "telemetry_hourly": _rollup_rules,
    "telemetry_daily": _rollup_rules,
}


def _gold_checks(table: str) -> tuple[CheckDef, ...]:
    names = {rule.check for rule in GOLD_RULES[table]()}
    known = [SCHEMA, NOT_NULL, VALID_VALUES, OEE_BOUNDS, PERFORMANCE, AGGREGATE_ORDER, SIGNAL_RANGES, UNIQUE_KEY]
    return tuple(c for c in known if c.name in names or c is SCHEMA)


def gold_batches(table: str) -> Callable[[SuiteInputs, dt.date], list[Batch]]:
    schema = GOLD_TABLES[table]

    def batches(inputs: SuiteInputs, day: dt.date) -> list[Batch]:
        rows = frames.read_day(inputs.lake, "gold", table, "day", day)
        rows = schema.empty_table() if rows is None else rows
        keep = [c for c in rows.column_names if not pa.types.is_map(rows.schema.field(c).type)]
        return [
            _schema_batch(schema, frames.table_schema(inputs.lake, "gold", table)),
            Batch("rows", frames.to_frame(rows.select(keep)), GOLD_RULES[table]()),
        ]

    return batches


GOLD_SUITES = [
    TableSuite(
        f"gold.{table}",
        dg.AssetKey(["gold", table]),
        _gold_checks(table),
        gold_batches(table),
        description=f"gold/{table}, one day at a time. Blocking: a failed day keeps warm/{table} from being written.",
    )
    for table in GOLD_TABLES
]


# -- features (the training set's inputs) ---------------------------------------------------

#: The training window a feature day is compared with: the days before it that have features.
DRIFT_REFERENCE_DAYS = 7
#: Features judged for drift: the signal statistics and their physics.  History features
#: (minutes since the last repair, stops in 8 h) follow the maintenance calendar, not the
#: sensors, and legitimately move from one week to the next.
DRIFT_FEATURES: tuple[str, ...] = tuple(f.name for f in (*SIGNAL_FEATURES, *DERIVED_FEATURES))
FEATURE_DRIFT = CheckDef(
    "feature_drift",
    f"Per signal feature, the population stability index of the day's warm samples against the "
    f"{DRIFT_REFERENCE_DAYS} days before it is below PLANTSTREAM_MODELS__DRIFT_PSI_THRESHOLD (default "
    f"{PSI_SIGNIFICANT:g}, plantstream.models.drift: a significant shift; the drift sensor's threshold). A "
    "recalibrated or swapped sensor that stays inside its valid range fails here, before the model trains on it.",
)
FEATURE_COLUMNS_SET = CheckDef("not_null", "Identity (day, machine_id, ts, warm) is set; one row per (machine, ts).")


def _warm_frame(rows: pa.Table | None) -> pd.DataFrame:
    if rows is None or not rows.num_rows:
        return pd.DataFrame(columns=list(DRIFT_FEATURES))
    return rows.filter(rows["warm"]).select(list(DRIFT_FEATURES)).to_pandas()


def feature_batches(inputs: SuiteInputs, day: dt.date) -> list[Batch]:
    lake = inputs.lake
    rows = frames.read_day(lake, "gold", FEATURES_TABLE, "day", day)
    rows = FEATURES_SCHEMA.empty_table() if rows is None else rows
    before = [day - dt.timedelta(days=n) for n in range(1, DRIFT_REFERENCE_DAYS + 1)]
    reference = [frames.read_day(lake, "gold", FEATURES_TABLE, "day", d) for d in before]
    reference_frame = pd.concat([_warm_frame(r) for r in reference], ignore_index=True)
    identity = ["day", "machine_id", "ts", "warm"]
    threshold = inputs.settings.models.drift_psi_threshold
    return [
        _schema_batch(FEATURES_SCHEMA, frames.table_schema(lake, "gold", FEATURES_TABLE)),
        Batch(
            "drift",
            frames.drift_frame(reference_frame, _warm_frame(rows), DRIFT_FEATURES),
            [
                between(
                    "feature_drift",
                    "psi",
                    None,
                    threshold,
                    notes="PLANTSTREAM_MODELS__DRIFT_PSI_THRESHOLD: the drift sensor's threshold, the same number",
                )
            ],
        ),
        Batch(
            "rows",
            frames.to_frame(rows.select(identity)),
            [*not_null("not_null", *identity), unique("unique_key", "machine_id", "ts")],
        ),
    ]


FEATURE_SUITES = [
    TableSuite(
        f"gold.{FEATURES_TABLE}",
        FEATURES_KEY,
        (SCHEMA, FEATURE_COLUMNS_SET, UNIQUE_KEY, FEATURE_DRIFT),
        feature_batches,
        description="The failure model's feature rows, one day at a time. Blocking: a failed day keeps the labels "
        "and the model of the same run from being built on it.",
    )
]

#: Every suite of the tables that exist; a new table is one more entry (docs/data-quality.md).
SUITES: list[TableSuite] = [*BRONZE_SUITES, *SILVER_SUITES, *GOLD_SUITES, *FEATURE_SUITES]
