"""One day of the failure model's feature and label tables, computed from silver and the ground truth.

``gold/failure_features`` day ``D`` is :func:`plantstream.models.features.offline_features`
at the sample grid of ``D`` (:func:`plantstream.models.labels.sample_grid`: every
``PLANTSTREAM_MODELS__SAMPLE_EVERY_MIN`` minutes while the machine is running), from

* 60 s window aggregates of silver telemetry over ``[D - 60 min, D + 1)`` (the longest
  signal horizon), computed with :func:`plantstream.domain.aggregates.window_aggregates`,
  the function the stream's windows use;
* silver machine events of ``D - 1 .. D``: the state at each sample time, and the history
  (tool changes, repairs, maintenance, stops) of the last 8 hours; for machines whose last
  state change, tool change, repair or maintenance is older, the lookback widens (7, 31
  days; 365 for the state), so "minutes since" is right for anything within a month.

``warm`` marks samples whose machine has events in the lake at least 8 hours before
(:data:`~plantstream.models.features.LOOKBACK_MIN`): earlier samples see a history that
starts with the data, which never happens to a plant that has been running; training
leaves them out, scoring flags them.

``gold/failure_labels`` day ``D`` is :func:`plantstream.models.labels.label_samples` of
those samples against ``bronze/ground_truth`` of ``D - 1 .. D + 1``: "fails within H"
(``PLANTSTREAM_MODELS__HORIZON_MIN``), samples inside a repair or planned downtime
dropped, and also samples whose label window ``(t, t + H]`` reaches past what the ground
truth is known for (its latest entry): their label is not known yet.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from plantstream.assets.gold.inputs import LOOKBACK_DAYS, STATE_ENTRY_EVENTS, silver_rows
from plantstream.assets.predictive_maintenance.ground_truth import read_ground_truth
from plantstream.contract.columns import TIMESTAMP_MS_UTC
from plantstream.contract.events import MachineEventType
from plantstream.domain.aggregates import window_aggregates
from plantstream.models.features import (
    FEATURE_NAMES,
    FEATURE_SIGNALS,
    LOOKBACK_MIN,
    MAX_SIGNAL_HORIZON_MIN,
    MINUTE_MS,
    history_from_events,
    offline_features,
)
from plantstream.models.labels import label_samples, sample_grid
from plantstream.orchestration.resources import Lake

MS_PER_DAY = 86_400_000
FEATURES_TABLE, LABELS_TABLE = "failure_features", "failure_labels"
#: How far back "minutes since the last tool change / repair / maintenance" is looked for.
HISTORY_LOOKBACK_DAYS = (7, 31)
_HISTORY_EVENTS = (MachineEventType.MAINTENANCE_STARTED.value, MachineEventType.FAULT_RAISED.value)
_EVENT_COLUMNS = ["machine_id", "event_time", "seq", "event_type", "state", "reason"]

FEATURES_SCHEMA = pa.schema(
    [
        pa.field("day", pa.date32()),
        pa.field("machine_id", pa.string()),
        pa.field("ts", TIMESTAMP_MS_UTC),
        pa.field("warm", pa.bool_()),
        *(pa.field(name, pa.float64()) for name in FEATURE_NAMES),
    ]
)
LABELS_SCHEMA = pa.schema(
    [
        pa.field("day", pa.date32()),
        pa.field("machine_id", pa.string()),
        pa.field("ts", TIMESTAMP_MS_UTC),
        pa.field("label", pa.int8()),
        pa.field("horizon_min", pa.int32()),
        pa.field("minutes_to_failure", pa.float64()),
        pa.field("failure_ts", TIMESTAMP_MS_UTC),  # null: no failure follows in the known ground truth
        pa.field("failure_mode", pa.string()),
    ]
)


def day_start_ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * MS_PER_DAY


def _epoch_ms(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(TIMESTAMP_MS_UTC).cast(pa.int64()).to_numpy(zero_copy_only=False)


def _events_frame(rows: pa.Table) -> pd.DataFrame:
    frame = rows.drop_columns(["event_time"]).to_pandas()
    frame.insert(1, "ts", _epoch_ms(rows["event_time"]))
    return frame


def _minute_aggregates(lake: Lake, day: dt.date) -> pa.Table:
    start = day_start_ms(day)
    since = pa.scalar(start - MAX_SIGNAL_HORIZON_MIN * MINUTE_MS, pa.int64()).cast(TIMESTAMP_MS_UTC)
    until = pa.scalar(start + MS_PER_DAY, pa.int64()).cast(TIMESTAMP_MS_UTC)
    where = (pc.field("event_time") >= since) & (pc.field("event_time") < until)
    columns = ["machine_id", "signal", "seq", "event_time", "value", "kafka_offset"]
    telemetry = silver_rows(
        lake, "telemetry", day - dt.timedelta(days=1), day, columns, where=where, keep={"signal": FEATURE_SIGNALS}
    )
    telemetry = telemetry.rename_columns(["event_ts" if c == "event_time" else c for c in telemetry.column_names])
    return window_aggregates(telemetry, 60)


def _last_state_before(lake: Lake, day: dt.date, machines: list[str]) -> pd.DataFrame:
    """The newest state event before ``day - 1`` of each machine (looking back 7, 31, 365 days)."""
    found: list[pd.DataFrame] = []
    for back in LOOKBACK_DAYS:
        if not machines:
            break
        keep = {"event_type": list(STATE_ENTRY_EVENTS), "machine_id": list(machines)}
        rows = silver_rows(
            lake, "events", day - dt.timedelta(days=back), day - dt.timedelta(days=2), _EVENT_COLUMNS, keep=keep
        )
        if rows.num_rows:
            last = _events_frame(rows).sort_values(["machine_id", "ts", "seq"], kind="stable")
            last = last.groupby("machine_id", sort=False).tail(1)
            found.append(last)
            machines = sorted(set(machines) - set(last["machine_id"]))
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=[*_EVENT_COLUMNS, "ts"])


def _history_before(lake: Lake, day: dt.date, missing: dict[str, set[str]]) -> pd.DataFrame:
    """Older tool changes, repairs and maintenance of machines that had none of a kind in ``day - 1 .. day``."""
    found: list[pd.DataFrame] = []
    missing = {m: set(kinds) for m, kinds in missing.items() if kinds}
    for back in HISTORY_LOOKBACK_DAYS:
        if not missing:
            break
        keep = {"event_type": list(_HISTORY_EVENTS), "machine_id": sorted(missing)}
        rows = silver_rows(
            lake, "events", day - dt.timedelta(days=back), day - dt.timedelta(days=2), _EVENT_COLUMNS, keep=keep
        )
        if not rows.num_rows:
            continue
        frame = _events_frame(rows)
        found.append(frame)
        for machine, kinds in history_from_events(frame).groupby("machine_id")["kind"]:
            missing[machine] -= set(kinds)
        missing = {m: kinds for m, kinds in missing.items() if kinds}
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=[*_EVENT_COLUMNS, "ts"])


def _with_events_before(lake: Lake, day: dt.date, machines: list[str]) -> set[str]:
    """The machines that have any silver event in ``day - 7 .. day - 2``."""
    if not machines:
        return set()
    rows = silver_rows(
        lake,
        "events",
        day - dt.timedelta(days=LOOKBACK_DAYS[0]),
        day - dt.timedelta(days=2),
        ["machine_id"],
        keep={"machine_id": machines},
    )
    return set(pc.unique(rows["machine_id"]).to_pylist()) if rows.num_rows else set()


@dataclass(frozen=True)
class FeatureDay:
    rows: pa.Table  # FEATURES_SCHEMA
    machines: int
    minute_rows: int  # 60 s window aggregates the features were computed from


def feature_day(lake: Lake, day: dt.date, *, every_min: int) -> FeatureDay:
    """The feature rows of ``day`` (see the module docstring)."""
    start = day_start_ms(day)
    aggregates = _minute_aggregates(lake, day)
    until = pa.scalar(start + MS_PER_DAY, pa.int64()).cast(TIMESTAMP_MS_UTC)
    recent = silver_rows(
        lake, "events", day - dt.timedelta(days=1), day, _EVENT_COLUMNS, where=pc.field("event_time") < until
    )
    events = _events_frame(recent).sort_values(["machine_id", "ts", "seq"], kind="stable", ignore_index=True)
    machines = sorted(set(pc.unique(aggregates["machine_id"]).to_pylist()) | set(events["machine_id"]))
    if not machines:
        return FeatureDay(FEATURES_SCHEMA.empty_table(), 0, aggregates.num_rows)
    # What the two days cannot answer: the state before them, and the last tool change,
    # repair and maintenance of a machine that had none in them.
    entries = events["event_type"].isin(STATE_ENTRY_EVENTS) & (events["ts"] <= start)
    state_unknown = sorted(set(machines) - set(events.loc[entries, "machine_id"]))
    history = history_from_events(events)
    kinds_known = history.groupby("machine_id")["kind"].agg(set).to_dict() if len(history) else {}
    minutes_since = {"tool_change", "repair", "maintenance"}
    older = [
        _last_state_before(lake, day, state_unknown),
        _history_before(lake, day, {m: minutes_since - kinds_known.get(m, set()) for m in machines}),
    ]
    older = [frame for frame in older if len(frame)]
    if older:
        events = pd.concat([*(frame[events.columns] for frame in older), events], ignore_index=True)
        events = events.sort_values(["machine_id", "ts", "seq"], kind="stable", ignore_index=True)
    samples = sample_grid(events, machines, start, start + MS_PER_DAY - 1, every_min=every_min)
    # A machine is asked about only while it reports: up to the end of its newest minute of telemetry.
    newest = aggregates.group_by("machine_id").aggregate([("window_end", "max")])
    newest_ms = dict(zip(newest["machine_id"].to_pylist(), _epoch_ms(newest["window_end_max"]).tolist(), strict=True))
    reporting = samples["ts"].to_numpy() <= samples["machine_id"].map(newest_ms).fillna(-1).to_numpy()
    samples = samples.loc[reporting].reset_index(drop=True)
    features = offline_features(aggregates, samples, history_from_events(events))
    # Warm: the lake holds an event of the machine at least LOOKBACK_MIN before the sample.
    warm_from = start - LOOKBACK_MIN * MINUTE_MS
    first = events.groupby("machine_id")["ts"].min().reindex(machines).to_numpy(dtype=np.float64)
    first = dict(zip(machines, first, strict=True))
    late_starters = [m for m in machines if not first[m] <= warm_from]
    for machine in _with_events_before(lake, day, late_starters):
        first[machine] = -np.inf
    first_of_row = np.array([first[m] for m in features["machine_id"]], dtype=np.float64)
    warm = features["ts"].to_numpy(dtype=np.float64) - LOOKBACK_MIN * MINUTE_MS >= np.nan_to_num(
        first_of_row, nan=np.inf
    )
    columns = {
        "day": pa.array(np.full(len(features), day), pa.date32()),
        "machine_id": pa.array(features["machine_id"].to_numpy(), pa.string()),
        "ts": pa.array(features["ts"].to_numpy(dtype=np.int64)).cast(TIMESTAMP_MS_UTC),
        "warm": pa.array(warm),
        **{name: pa.array(features[name].to_numpy(dtype=np.float64)) for name in FEATURE_NAMES},
    }
    rows = pa.Table.from_pydict(columns, schema=FEATURES_SCHEMA)
    rows = rows.sort_by([("machine_id", "ascending"), ("ts", "ascending")])
    return FeatureDay(rows, len(machines), aggregates.num_rows)


@dataclass(frozen=True)
class LabelDay:
    rows: pa.Table  # LABELS_SCHEMA
    samples: int  # feature rows of the day
    dropped_downtime: int  # inside a repair, planned downtime or maintenance
    dropped_unknown: int  # label window past the known ground truth
    known_until_ms: int | None  # the latest ground-truth entry read


def label_day(lake: Lake, day: dt.date, features: pa.Table, *, horizon_min: int) -> LabelDay:
    """Labels for the feature rows of ``day`` from ``bronze/ground_truth``."""
    truth = read_ground_truth(lake, day - dt.timedelta(days=1), day + dt.timedelta(days=1))
    known_until = int(pc.max(truth["ts"].cast(TIMESTAMP_MS_UTC)).cast(pa.int64()).as_py()) if truth.num_rows else None
    samples = pd.DataFrame(
        {"machine_id": features["machine_id"].to_numpy(zero_copy_only=False), "ts": _epoch_ms(features["ts"])}
    )
    truth_frame = truth.drop_columns(["ts"]).to_pandas()
    truth_frame.insert(0, "ts", _epoch_ms(truth["ts"]))
    labelled = label_samples(samples, truth_frame, horizon_min=horizon_min)
    kept_after_downtime = len(labelled)
    horizon_ms = horizon_min * MINUTE_MS
    known = labelled["ts"].to_numpy() + horizon_ms <= (known_until if known_until is not None else -1)
    labelled = labelled.loc[known].reset_index(drop=True)
    failure_ts = labelled["failure_ts"].to_numpy(dtype=np.int64)
    columns = {
        "day": pa.array(np.full(len(labelled), day), pa.date32()),
        "machine_id": pa.array(labelled["machine_id"].to_numpy(), pa.string()),
        "ts": pa.array(labelled["ts"].to_numpy(dtype=np.int64)).cast(TIMESTAMP_MS_UTC),
        "label": pa.array(labelled["label"].to_numpy(dtype=np.int8)),
        "horizon_min": pa.array(np.full(len(labelled), horizon_min, dtype=np.int32)),
        "minutes_to_failure": pa.array(labelled["minutes_to_failure"].to_numpy(dtype=np.float64)),
        "failure_ts": pa.array(failure_ts, mask=failure_ts < 0).cast(TIMESTAMP_MS_UTC),
        "failure_mode": pa.array(labelled["failure_mode"].astype(str).to_numpy(), pa.string()),
    }
    rows = pa.Table.from_pydict(columns, schema=LABELS_SCHEMA)
    return LabelDay(
        rows,
        samples=len(samples),
        dropped_downtime=len(samples) - kept_after_downtime,
        dropped_unknown=kept_after_downtime - len(labelled),
        known_until_ms=known_until,
    )
