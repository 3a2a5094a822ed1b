"""The frames the suites validate: one day of a lake table, and figures derived from it.

Great Expectations judges rows one by one or a column as a whole; some properties of
factory data are about *sequences* (time going backwards within a machine, a sensor
repeating one value for half an hour) or about rows that are *missing* (a machine
scheduled in a shift that sent nothing).  Those are computed here (DuckDB or Arrow) into
small frames, one row per machine, per (machine, signal) or per (machine, shift
segment), which the suites then hold to their limits: the verdict, the observed values
and the failing rows all come from Great Expectations, and the Data Docs show them.

Pure functions over Arrow tables, except :func:`read_day`, :func:`table_schema` and
:func:`latest_event_ms`, which read the lake.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from plantstream.assets.gold.calendar import DAY_WINDOW, MS_PER_DAY, Window, day_start_ms
from plantstream.orchestration.resources import Lake


def read_day(
    lake: Lake, tier: str, name: str, column: str, day: dt.date, *, columns: Sequence[str] | None = None
) -> pa.Table | None:
    """Rows of ``<tier>/<name>`` whose partition ``column`` is ``day`` (None: no such table)."""
    table = lake.table(tier, name)
    if table is None:
        return None
    dataset = table.to_pyarrow_dataset()
    wanted = None if columns is None else [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=wanted, filter=pc.field(column) == pa.scalar(day, pa.date32()))


def table_schema(lake: Lake, tier: str, name: str) -> pa.Schema | None:
    table = lake.table(tier, name)
    return None if table is None else table.to_pyarrow_dataset().schema


def to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas for validation: strings as categories (a day of telemetry is 17M rows)."""
    return table.to_pandas(strings_to_categorical=True, self_destruct=True, split_blocks=True)


def _type_name(t: pa.DataType) -> str:
    """A type as the lake means it: Delta stores timestamps in µs and strings may come back large."""
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.tz or 'naive'}]"
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_map(t):
        return f"map<{_type_name(t.key_type)}, {_type_name(t.item_type)}>"
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return f"list<{_type_name(t.value_type)}>"
    return str(t)


def schema_frame(expected: pa.Schema, actual: pa.Schema | None) -> pd.DataFrame:
    """One row per column of either schema: its expected and actual type ("missing" / "unexpected")."""
    actual_types = {} if actual is None else {f.name: _type_name(f.type) for f in actual}
    rows = [
        {"column": f.name, "expected_type": _type_name(f.type), "actual_type": actual_types.get(f.name, "missing")}
        for f in expected
    ]
    rows += [
        {"column": name, "expected_type": "unexpected", "actual_type": kind}
        for name, kind in actual_types.items()
        if name not in expected.names
    ]
    return pd.DataFrame(rows, columns=["column", "expected_type", "actual_type"])


def time_order_frame(rows: pa.Table, time_column: str = "event_time") -> pd.DataFrame:
    """Per machine: how far event time goes back between consecutive sequence numbers.

    ``max_step_back_s`` is the largest step backwards (0 when time never decreases in
    ``seq`` order); ``worst_seq`` the sequence number where it happens.  A device clock set
    back or a burst replayed with new sequence numbers shows up here.
    """
    columns = ["machine_id", "max_step_back_s", "steps_back", "worst_seq", "at_time", "previous_time", "readings"]
    if not rows.num_rows:
        return pd.DataFrame(columns=columns)
    with duckdb.connect() as con:
        con.register("t", rows.select(["machine_id", "seq", time_column]))
        frame = con.sql(
            f"""
            WITH steps AS (
                SELECT machine_id, seq, "{time_column}" AS at_time,
                       lag("{time_column}") OVER (PARTITION BY machine_id ORDER BY seq) AS previous_time
                FROM t WHERE machine_id IS NOT NULL AND seq IS NOT NULL
            ), back AS (
                SELECT *, greatest(0, epoch_ms(previous_time) - epoch_ms(at_time)) / 1000.0 AS back_s FROM steps
            )
            SELECT machine_id, max(back_s) AS max_step_back_s, count_if(back_s > 0) AS steps_back,
                   arg_max(seq, back_s) AS worst_seq, arg_max(at_time, back_s) AS at_time,
                   arg_max(previous_time, back_s) AS previous_time, count(*) AS readings
            FROM back GROUP BY machine_id ORDER BY machine_id
            """
        ).df()
    return frame[columns]


def stuck_frame(rows: pa.Table, signals: Iterable[str]) -> pd.DataFrame:
    """Per (machine, signal): the longest run of one repeated, non-zero value, in seconds and readings.

    Only ``signals`` are looked at: those that carry measurement noise whenever they are
    not zero, so an exactly repeated value means a frozen sensor (a stopped machine
    reads 0 torque, which is no fault).  Stale readings (null) break a run.
    """
    columns = ["machine_id", "signal", "value", "run_start", "run_end", "run_s", "readings"]
    wanted = sorted(set(signals))
    if not rows.num_rows or not wanted:
        return pd.DataFrame(columns=columns)
    subset = rows.select(["machine_id", "signal", "seq", "value", "event_time"])
    subset = subset.filter(pc.is_in(subset["signal"], value_set=pa.array(wanted, subset["signal"].type)))
    with duckdb.connect() as con:
        con.register("t", subset)
        frame = con.sql(
            """
            WITH marked AS (
                SELECT machine_id, signal, value, event_time,
                       CASE WHEN value IS NOT DISTINCT FROM lag(value) OVER w THEN 0 ELSE 1 END AS starts
                FROM t WHERE machine_id IS NOT NULL
                WINDOW w AS (PARTITION BY machine_id, signal ORDER BY event_time, seq)
            ), numbered AS (
                SELECT *, sum(starts) OVER (PARTITION BY machine_id, signal ORDER BY event_time
                                            ROWS UNBOUNDED PRECEDING) AS run
                FROM marked
            ), runs AS (
                SELECT machine_id, signal, any_value(value) AS value, min(event_time) AS run_start,
                       max(event_time) AS run_end, count(*) AS readings,
                       (epoch_ms(max(event_time)) - epoch_ms(min(event_time))) / 1000.0 AS run_s
                FROM numbered GROUP BY machine_id, signal, run
                HAVING any_value(value) IS NOT NULL AND any_value(value) <> 0
            )
            SELECT machine_id, signal, arg_max(value, run_s) AS value, arg_max(run_start, run_s) AS run_start,
                   arg_max(run_end, run_s) AS run_end, max(run_s) AS run_s, arg_max(readings, run_s) AS readings
            FROM runs GROUP BY machine_id, signal ORDER BY machine_id, signal
            """
        ).df()
    return frame[columns]


def coverage_frame(
    rows: pa.Table, machines: Sequence[str], windows: Sequence[Window], due_before_ms: int | None
) -> pd.DataFrame:
    """Rows per (machine of the plant, shift segment that has ended): a scheduled machine that sent nothing is 0.

    ``windows``: the day's shift segments (or the whole day without shifts); a segment is
    *due* once it ended at or before ``due_before_ms`` (the newest event the table holds),
    so the open day is not blamed for shifts that have not happened yet.  A segment in which
    no machine of the plant sent anything is not judged either: the plant was not running
    or not yet connected (a first day that starts mid-morning, a demo run hours after the
    last), which is not one machine going silent; a whole-plant outage of the edge shows in
    ``plantstream gaps`` (the sequence numbers), not here.
    """
    columns = ["machine_id", "shift", "window_start", "window_end", "rows"]
    due = [w for w in windows if due_before_ms is not None and w.end_ms <= due_before_ms]
    if not due or not machines:
        return pd.DataFrame(columns=columns)
    first = min(w.start_ms for w in due)
    minutes = pa.table({"machine_id": pa.array([], pa.string()), "minute": pa.array([], pa.int64())})
    if rows.num_rows:
        with duckdb.connect() as con:
            con.register("t", rows.select(["machine_id", "event_time"]))
            minutes = (
                con.sql(
                    f"SELECT machine_id::VARCHAR AS machine_id, (epoch_ms(event_time) - {first}) // 60000 AS minute, "
                    "count(*) AS n FROM t WHERE machine_id IS NOT NULL GROUP BY ALL"
                )
                .arrow()
                .read_all()
            )
    counts = minutes.to_pandas() if minutes.num_rows else pd.DataFrame(columns=["machine_id", "minute", "n"])
    out = []
    for window in due:
        lo, hi = (window.start_ms - first) // 60_000, (window.end_ms - first) // 60_000
        inside = counts[(counts["minute"] >= lo) & (counts["minute"] < hi)]
        per_machine = inside.groupby("machine_id")["n"].sum().to_dict() if len(inside) else {}
        if not any(per_machine.get(m, 0) for m in machines):
            continue  # the plant sent nothing in this segment: not running, nothing to blame a machine for
        start = pd.Timestamp(window.start_ms, unit="ms", tz="UTC")
        end = pd.Timestamp(window.end_ms, unit="ms", tz="UTC")
        out += [
            {
                "machine_id": m,
                "shift": window.shift,
                "window_start": start,
                "window_end": end,
                "rows": int(per_machine.get(m, 0)),
            }
            for m in machines
        ]
    return pd.DataFrame(out, columns=columns)


def scheduled_windows(day: dt.date, windows: Sequence[Window]) -> list[Window]:
    """The shift segments of the day, or the whole day when the plant has no shifts."""
    segments = [w for w in windows if w.shift != DAY_WINDOW]
    if segments:
        return segments
    start = day_start_ms(day)
    return [Window(DAY_WINDOW, start, start, start + MS_PER_DAY)]


def machines_frame(rows: pa.Table) -> pd.DataFrame:
    """The machines a day holds, with their row counts."""
    if not rows.num_rows:
        return pd.DataFrame(columns=["machine_id", "rows"])
    with duckdb.connect() as con:
        con.register("t", rows.select(["machine_id"]))
        return con.sql("SELECT machine_id::VARCHAR AS machine_id, count(*) AS rows FROM t GROUP BY ALL ORDER BY 1").df()


def latest_event_ms(table: DeltaTable | None, column: str = "event_time") -> int | None:
    """The newest ``column`` value of a table, from the Delta log's file statistics (no data read)."""
    if table is None:
        return None
    actions = table.get_add_actions(flatten=True)
    actions = actions if isinstance(actions, pa.Table) else pa.table(actions)
    name = f"max.{column}"
    if not actions.num_rows or name not in actions.column_names or actions[name].null_count:
        dataset = table.to_pyarrow_dataset()
        value = pc.max(dataset.to_table(columns=[column])[column]).as_py()
    else:
        value = pc.max(actions[name]).as_py()
    if value is None:
        return None
    return int(value.timestamp() * 1000) if isinstance(value, dt.datetime) else int(value)


def drift_frame(reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """Per feature: the population stability index of ``current`` against ``reference``.

    The bins and the index are :mod:`plantstream.models.drift`'s (the definition the
    failure model's monitoring uses), so the check and the model's own drift report cannot
    disagree.  No reference rows (the lake's first days) or no current rows: no row, nothing
    to judge.
    """
    from plantstream.models.drift import feature_profile, population_stability

    columns = ["feature", "psi", "reference_rows", "rows", "reference_median", "median"]
    if not len(reference) or not len(current):
        return pd.DataFrame(columns=columns)
    psi = population_stability(feature_profile(reference, features), current)
    rows = [
        {
            "feature": name,
            "psi": psi[name],
            "reference_rows": len(reference),
            "rows": len(current),
            "reference_median": reference[name].median(),
            "median": current[name].median(),
        }
        for name in features
    ]
    return pd.DataFrame(rows, columns=columns)
