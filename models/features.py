"""Predictive-maintenance features: ONE definition, computed offline (Dagster) and online (the stream).

Features are a function of **closed 1-minute window aggregates** per (machine, signal):
the rows :func:`plantstream.domain.aggregates.window_aggregates` produces with
``window_seconds=60`` (``count``, ``min``, ``max``, ``mean``, ``std``, ``last``, ...).
The stream emits exactly these rows when a minute closes, and Dagster recomputes them
from silver telemetry with the same function, so both sides start from the same numbers.
A feature vector "as of" ``t`` uses the windows with ``window_end <= t`` only, plus the
machine's history (tool changes, repairs, maintenance, stops, alerts) up to ``t``.

Parity by construction: :func:`offline_features` (vectorised over samples) and
:class:`OnlineFeatures` (one machine, incremental, bounded) both lay the minutes of a
horizon out as ``(rows, horizon)`` arrays - missing minutes have ``count == 0`` - and
call the same :func:`_window_statistics`, :func:`_derived` and history arithmetic.  The
only difference is how the arrays are gathered (a dense per-machine grid vs. a ring).

Horizons are 5, 15 and 60 minutes for signals and 1 h / 8 h for event counts.  They
follow the simulator's time scales (docs/simulator.md): the drivers of failure are
Ornstein-Uhlenbeck processes with time constants of 5-30 min and a tool lives 20-60
running minutes, so a machine fails about every 20 minutes; an 8-hour signal window
would average over dozens of repairs and tell nothing about the next one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MINUTE_MS = 60_000

Statistic = Literal["mean", "std", "slope", "max", "min", "last"]
HistoryKind = Literal["tool_change", "repair", "maintenance", "stop", "alert"]
HISTORY_KINDS: tuple[HistoryKind, ...] = ("tool_change", "repair", "maintenance", "stop", "alert")


@dataclass(frozen=True, slots=True)
class SignalFeature:
    """A statistic of one signal over the closed minutes ``[t - horizon, t)``.

    * ``mean``: pooled over every reading (``sum(count*mean) / sum(count)``);
    * ``std``: pooled population std of every reading, from each minute's count, mean
      and std (within-minute plus between-minute variance: exact, not an average of stds);
    * ``slope``: least-squares slope of the minute means against time, per minute
      (unweighted, over the minutes that have data; needs two);
    * ``max`` / ``min``: of the minute maxima / minima;
    * ``last``: the newest reading (the ``last`` of the newest minute with data).

    A horizon without any reading gives NaN: e.g. a signal the machine type does not
    have (presses have no torque, conveyors no process temperature).
    """

    name: str
    signal: str
    horizon_min: int
    statistic: Statistic


@dataclass(frozen=True, slots=True)
class DerivedFeature:
    """A function of other features (physics the model would otherwise have to learn)."""

    name: str
    inputs: tuple[str, ...]
    description: str


@dataclass(frozen=True, slots=True)
class HistoryFeature:
    """From the machine's history: minutes since the last event of a kind, or events in a horizon."""

    name: str
    kind: HistoryKind
    statistic: Literal["minutes_since", "count"]
    horizon_min: int = 0  # count only: events with t - horizon < ts <= t


def _signal(signal: str, statistic: Statistic, horizon_min: int, short: str) -> SignalFeature:
    suffix = "last" if statistic == "last" else f"{statistic}_{horizon_min}m"
    return SignalFeature(f"{short}_{suffix}", signal, horizon_min, statistic)


_SIGNAL_SPEC: tuple[tuple[str, str, tuple[tuple[Statistic, int], ...]], ...] = (
    # (signal, short name, ((statistic, horizon minutes), ...)); "last" looks back 15 min.
    ("air_temperature", "air_temp", (("last", 15), ("mean", 5), ("mean", 15), ("slope", 15))),
    ("process_temperature", "process_temp", (("last", 15), ("mean", 5), ("mean", 15), ("slope", 15))),
    ("rotational_speed", "speed", (("last", 15), ("mean", 5), ("mean", 15), ("std", 15))),
    (
        "torque",
        "torque",
        (("last", 15), ("mean", 5), ("mean", 15), ("mean", 60), ("std", 15), ("max", 5), ("slope", 15)),
    ),
    ("tool_wear", "tool_wear", (("last", 15), ("slope", 15))),
    (
        "vibration",
        "vibration",
        (("last", 15), ("mean", 5), ("mean", 15), ("mean", 60), ("max", 5), ("std", 15), ("slope", 60)),
    ),
    ("power", "power", (("last", 15), ("mean", 5), ("mean", 15), ("std", 15), ("max", 5))),
    ("current", "current", (("mean", 5), ("std", 15), ("max", 5))),
    ("pressure", "pressure", (("mean", 5), ("mean", 15), ("std", 15), ("max", 5))),
    ("belt_speed", "belt_speed", (("mean", 5), ("mean", 15), ("std", 15))),
)

SIGNAL_FEATURES: tuple[SignalFeature, ...] = tuple(
    _signal(signal, stat, horizon, short) for signal, short, stats in _SIGNAL_SPEC for stat, horizon in stats
)

DERIVED_FEATURES: tuple[DerivedFeature, ...] = (
    DerivedFeature(
        "temp_margin_last", ("process_temp_last", "air_temp_last"), "process - air temperature, K (HDF < 8.6 K)"
    ),
    DerivedFeature("temp_margin_mean_5m", ("process_temp_mean_5m", "air_temp_mean_5m"), "HDF precursor, 5 min"),
    DerivedFeature("temp_margin_mean_15m", ("process_temp_mean_15m", "air_temp_mean_15m"), "HDF precursor, 15 min"),
    DerivedFeature(
        "temp_margin_slope_15m", ("process_temp_slope_15m", "air_temp_slope_15m"), "drift of the margin, K/min"
    ),
    DerivedFeature(
        "mech_power_last_w", ("torque_last", "speed_last"), "torque x angular speed, W (PWF outside 3500-9000 W)"
    ),
    DerivedFeature("mech_power_mean_5m_w", ("torque_mean_5m", "speed_mean_5m"), "mechanical power from 5-min means"),
    DerivedFeature(
        "strain_last", ("tool_wear_last", "torque_mean_5m"), "tool wear x torque, min*Nm (OSF limit 11-13k)"
    ),
)

HISTORY_FEATURES: tuple[HistoryFeature, ...] = (
    HistoryFeature("minutes_since_tool_change", "tool_change", "minutes_since"),
    HistoryFeature("minutes_since_repair", "repair", "minutes_since"),
    HistoryFeature("minutes_since_maintenance", "maintenance", "minutes_since"),
    HistoryFeature("repairs_480m", "repair", "count", 480),
    HistoryFeature("stops_60m", "stop", "count", 60),
    HistoryFeature("stops_480m", "stop", "count", 480),
    HistoryFeature("alerts_60m", "alert", "count", 60),
    HistoryFeature("alerts_480m", "alert", "count", 480),
)

FEATURES: tuple[SignalFeature | DerivedFeature | HistoryFeature, ...] = (
    *SIGNAL_FEATURES,
    *DERIVED_FEATURES,
    *HISTORY_FEATURES,
)
"""Every feature, in model column order (the declarative spec both sides compute)."""

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_SIGNALS: tuple[str, ...] = tuple(dict.fromkeys(f.signal for f in SIGNAL_FEATURES))
"""The signals the features read (others in the minute aggregates are ignored)."""

MAX_SIGNAL_HORIZON_MIN = max(f.horizon_min for f in SIGNAL_FEATURES)
MAX_HISTORY_HORIZON_MIN = max(f.horizon_min for f in HISTORY_FEATURES)
LOOKBACK_MIN = max(MAX_SIGNAL_HORIZON_MIN, MAX_HISTORY_HORIZON_MIN)
"""How far back any count or window looks (the purge gap of the split must cover it)."""

_STATS: tuple[str, ...] = ("count", "mean", "std", "max", "min", "last")
_SIGNAL_INDEX = {s: i for i, s in enumerate(FEATURE_SIGNALS)}
# Per (signal, horizon): the features computed from one gather of its minutes, and the
# minute statistics they read (count and mean always: the mean is pooled with counts).
_GROUPS: dict[tuple[str, int], list[SignalFeature]] = {}
for _f in SIGNAL_FEATURES:
    _GROUPS.setdefault((_f.signal, _f.horizon_min), []).append(_f)
_READS: dict[str, tuple[str, ...]] = {
    "mean": (),
    "slope": (),
    "std": ("std",),
    "max": ("max",),
    "min": ("min",),
    "last": ("last",),
}
_GROUP_READS: dict[tuple[str, int], tuple[str, ...]] = {
    key: tuple(dict.fromkeys(("count", "mean", *(r for f in fs for r in _READS[f.statistic]))))
    for key, fs in _GROUPS.items()
}
_TWO_PI_PER_MIN = 2 * math.pi / 60


# -- the shared arithmetic -------------------------------------------------------------


def _window_statistics(minutes: Mapping[str, np.ndarray], wanted: Iterable[Statistic]) -> dict[Statistic, np.ndarray]:
    """Statistics over a horizon, one row per sample.

    ``minutes`` maps ``count`` / ``mean`` / ``std`` / ``max`` / ``min`` / ``last`` to
    ``(rows, horizon)`` arrays in time order (oldest minute first); a minute without
    data has ``count == 0`` (its other values are ignored).  Both the offline and the
    online path call this, which is what makes them agree.
    """
    count = minutes["count"]
    present = count > 0
    n = count.sum(axis=1)
    k = present.sum(axis=1)
    mean = np.where(present, minutes["mean"], 0.0)
    out: dict[Statistic, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (count * mean).sum(axis=1) / n
        for stat in wanted:
            if stat == "mean":
                out[stat] = pooled
            elif stat == "std":
                # Within-minute plus between-minute variance: two-pass, no cancellation.
                std = np.where(present, minutes["std"], 0.0)
                between = np.where(present, mean - pooled[:, None], 0.0)
                out[stat] = np.sqrt((count * (std * std + between * between)).sum(axis=1) / n)
            elif stat == "slope":
                x = np.broadcast_to(np.arange(count.shape[1], dtype=np.float64), count.shape)
                x_bar = np.where(present, x, 0.0).sum(axis=1) / k
                y_bar = mean.sum(axis=1) / k
                dx = np.where(present, x - x_bar[:, None], 0.0)
                dy = np.where(present, mean - y_bar[:, None], 0.0)
                sxx = (dx * dx).sum(axis=1)
                out[stat] = np.where(k >= 2, (dx * dy).sum(axis=1) / sxx, np.nan)
            elif stat == "max":
                out[stat] = np.where(k > 0, np.where(present, minutes["max"], -np.inf).max(axis=1), np.nan)
            elif stat == "min":
                out[stat] = np.where(k > 0, np.where(present, minutes["min"], np.inf).min(axis=1), np.nan)
            elif stat == "last":
                newest = count.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
                out[stat] = np.where(k > 0, minutes["last"][np.arange(count.shape[0]), newest], np.nan)
            else:  # pragma: no cover - Statistic is a closed set
                raise ValueError(f"unknown statistic {stat!r}")
    return out


def _derived(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The derived features from the signal features (arrays, one entry per sample)."""
    return {
        "temp_margin_last": values["process_temp_last"] - values["air_temp_last"],
        "temp_margin_mean_5m": values["process_temp_mean_5m"] - values["air_temp_mean_5m"],
        "temp_margin_mean_15m": values["process_temp_mean_15m"] - values["air_temp_mean_15m"],
        "temp_margin_slope_15m": values["process_temp_slope_15m"] - values["air_temp_slope_15m"],
        "mech_power_last_w": values["torque_last"] * values["speed_last"] * _TWO_PI_PER_MIN,
        "mech_power_mean_5m_w": values["torque_mean_5m"] * values["speed_mean_5m"] * _TWO_PI_PER_MIN,
        "strain_last": values["tool_wear_last"] * values["torque_mean_5m"],
    }


def _history_values(times: Mapping[str, np.ndarray], as_of_ms: np.ndarray) -> dict[str, np.ndarray]:
    """History features for sample times ``as_of_ms``; ``times[kind]`` sorted epoch ms."""
    out: dict[str, np.ndarray] = {}
    for feature in HISTORY_FEATURES:
        ts = times.get(feature.kind, np.empty(0, dtype=np.int64))
        upto = np.searchsorted(ts, as_of_ms, side="right")  # events with ts <= t
        if feature.statistic == "minutes_since":
            last = ts[np.maximum(upto - 1, 0)] if len(ts) else np.zeros_like(as_of_ms)
            out[feature.name] = np.where(upto > 0, (as_of_ms - last) / MINUTE_MS, np.nan)
        else:
            since = np.searchsorted(ts, as_of_ms - feature.horizon_min * MINUTE_MS, side="right")
            out[feature.name] = (upto - since).astype(np.float64)
    return out


# -- inputs ------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_epoch_ms(values: Any) -> np.ndarray:
    """Epoch milliseconds (int64) from ints, datetimes (naive = UTC) or Arrow timestamps."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        values = values.to_pandas()
    series = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        if getattr(series.dt, "tz", None) is None:
            series = series.dt.tz_localize("UTC")
        return series.dt.tz_convert("UTC").astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    return series.to_numpy(dtype=np.int64)


def _scalar_ms(value: Any) -> int:
    """One timestamp as epoch ms (the online path: no pandas per row)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ms]").astype(np.int64))
    return int(value)


@dataclass(frozen=True)
class _MinuteColumns:
    """Minute aggregates as numpy columns, rows grouped by machine (``bounds`` per machine)."""

    minute: np.ndarray  # epoch minute of window_start
    signal: np.ndarray  # index into FEATURE_SIGNALS
    stats: dict[str, np.ndarray]
    bounds: dict[str, tuple[int, int]]


def _minute_columns(minute_aggs: pa.Table | pd.DataFrame) -> _MinuteColumns:
    """The columns the features read, for the signals they read, without a pandas copy of the strings.

    Weeks of a plant are millions of rows: ``machine_id`` and ``signal`` are dictionary
    codes here, and everything else is a float or int column.
    """
    columns = ["machine_id", "signal", "window_start", *_STATS]
    table = (
        minute_aggs if isinstance(minute_aggs, pa.Table) else pa.Table.from_pandas(minute_aggs, preserve_index=False)
    )
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"minute aggregates lack columns {missing}")
    if "window_seconds" in table.column_names:
        widths = pc.unique(table.column("window_seconds")).to_pylist()
        if any(w != 60 for w in widths):
            raise ValueError(f"features are defined on 60 s windows, got window_seconds {widths}")
    signal = table.column("signal")
    wanted = pc.is_in(signal, value_set=pa.array(FEATURE_SIGNALS).cast(signal.type))
    table = table.select(columns)
    if not pc.all(wanted).as_py():  # filtering copies every column: only when something goes
        table = table.filter(wanted)
    start = to_epoch_ms(table.column("window_start")) if table.num_rows else np.empty(0, dtype=np.int64)
    if (start % MINUTE_MS != 0).any():
        raise ValueError("window_start must be minute-aligned (60 s tumbling windows)")

    def codes(name: str) -> tuple[np.ndarray, list[str]]:
        encoded = table.column(name).combine_chunks().cast(pa.string()).dictionary_encode()
        return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()

    machine, machine_names = codes("machine_id")
    signal_codes, signal_names = codes("signal")
    signal_index = np.array([_SIGNAL_INDEX[s] for s in signal_names], dtype=np.int64)[signal_codes]
    order = np.argsort(machine, kind="stable")
    machine = machine[order]
    edges = np.flatnonzero(np.diff(machine)) + 1
    starts = np.r_[0, edges] if len(machine) else np.empty(0, dtype=np.int64)
    ends = np.r_[edges, len(machine)] if len(machine) else np.empty(0, dtype=np.int64)
    bounds = {machine_names[machine[i]]: (int(i), int(j)) for i, j in zip(starts, ends, strict=True)}
    stats = {
        stat: table.column(stat).combine_chunks().cast(pa.float64()).to_numpy(zero_copy_only=False)[order]
        for stat in _STATS
    }
    return _MinuteColumns(start[order] // MINUTE_MS, signal_index[order], stats, bounds)


_EMPTY_HISTORY = {"machine_id": pd.Series(dtype=str), "ts": pd.Series(dtype=np.int64), "kind": pd.Series(dtype=str)}


def history_kinds(event_type: str, reason: str | None) -> tuple[HistoryKind, ...]:
    """What one machine event (``factory.machine.events``) means for the history features.

    ``MaintenanceStarted`` -> maintenance (+ tool_change when the reason is
    ``tool_change``); ``FaultRaised`` -> repair (+ tool_change when the mode is TWF or
    OSF, because that repair fits a new tool); ``MachineStopped`` other than
    ``off_shift`` -> stop (failures and micro-stops).  The stream calls this per event
    (then :meth:`OnlineFeatures.add_history`); :func:`history_from_events` per row.
    """
    reason = reason or ""
    if event_type == "MaintenanceStarted":
        return ("maintenance", "tool_change") if reason == "tool_change" else ("maintenance",)
    if event_type == "FaultRaised":
        return ("repair", "tool_change") if "TWF" in reason or "OSF" in reason else ("repair",)
    if event_type == "MachineStopped" and reason != "off_shift":
        return ("stop",)
    return ()


def history_from_events(
    machine_events: pd.DataFrame | None = None,
    maintenance: pd.DataFrame | None = None,
    alerts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The machine history the features read: one row per (machine_id, ts, kind).

    * ``machine_events`` (``machine_id``, ``ts`` or ``source_ts``, ``event_type``,
      ``reason``): mapped by :func:`history_kinds`;
    * ``maintenance``: a plain table of maintenance timestamps (``machine_id``, ``ts``,
      ``kind`` in :data:`HISTORY_KINDS`), for plants whose maintenance log is elsewhere;
    * ``alerts`` (``machine_id``, ``ts``): alerts raised about the machine; may be empty.
    """
    parts: list[pd.DataFrame] = []
    if machine_events is not None and len(machine_events):
        ev = machine_events
        ts = to_epoch_ms(ev["ts"] if "ts" in ev.columns else ev["source_ts"])
        rows: list[tuple[str, int, str]] = []
        for machine, t, event_type, reason in zip(
            ev["machine_id"].astype(str), ts.tolist(), ev["event_type"].astype(str), ev["reason"], strict=True
        ):
            rows += [
                (machine, t, kind) for kind in history_kinds(event_type, reason if isinstance(reason, str) else None)
            ]
        if rows:
            parts.append(pd.DataFrame(rows, columns=["machine_id", "ts", "kind"]))
    if maintenance is not None and len(maintenance):
        unknown = set(maintenance["kind"]) - set(HISTORY_KINDS)
        if unknown:
            raise ValueError(f"unknown history kinds {sorted(unknown)} (known: {HISTORY_KINDS})")
        parts.append(
            pd.DataFrame(
                {
                    "machine_id": maintenance["machine_id"].astype(str).to_numpy(),
                    "ts": to_epoch_ms(maintenance["ts"]),
                    "kind": maintenance["kind"].astype(str).to_numpy(),
                }
            )
        )
    if alerts is not None and len(alerts):
        machine = alerts["machine_id"].astype(str).to_numpy()
        parts.append(pd.DataFrame({"machine_id": machine, "ts": to_epoch_ms(alerts["ts"]), "kind": "alert"}))
    if not parts:
        return pd.DataFrame(_EMPTY_HISTORY)
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["machine_id", "ts", "kind"], kind="stable", ignore_index=True)


# -- offline ------------------------------------------------------------------------------


def _dense_minutes(
    minute: np.ndarray, signal: np.ndarray, stats: Mapping[str, np.ndarray], first_minute: int, n_minutes: int
) -> dict[str, np.ndarray]:
    """One machine's minute aggregates as ``(minutes, signals)`` arrays (count 0 = no data).

    Two versions of the same window (a provisional and a final one) keep the fuller one,
    as the hot store does (``version = 2*count + final``); on a tie the later row wins,
    as in :meth:`OnlineFeatures.add`.
    """
    grid = {s: np.zeros((n_minutes, len(FEATURE_SIGNALS))) for s in _STATS}
    order = np.lexsort((np.arange(len(minute)), stats["count"], signal, minute))
    minute, signal = minute[order], signal[order]
    last_of_key = np.ones(len(minute), dtype=bool)
    last_of_key[:-1] = (minute[1:] != minute[:-1]) | (signal[1:] != signal[:-1])
    row, col = minute[last_of_key] - first_minute, signal[last_of_key]
    for stat in _STATS:
        grid[stat][row, col] = stats[stat][order][last_of_key]
    return grid


def offline_features(
    minute_aggs: pa.Table | pd.DataFrame,
    samples: pd.DataFrame,
    history: pd.DataFrame | None = None,
    *,
    chunk_rows: int = 4096,
) -> pd.DataFrame:
    """Feature vectors for ``samples`` (``machine_id``, ``ts`` epoch ms or timestamp).

    ``minute_aggs``: 60 s window aggregates (``window_aggregates(silver, 60)``: at least
    ``machine_id``, ``signal``, ``window_start``, ``count``, ``mean``, ``std``, ``max``,
    ``min``, ``last``).  ``history``: :func:`history_from_events` output (``None`` or
    empty: no events, so "minutes since" is NaN and counts are 0).

    Returns ``machine_id``, ``ts`` (epoch ms) and the :data:`FEATURE_NAMES` columns, one
    row per sample in the order given.  Vectorised per machine: a dense minute grid,
    then per (signal, horizon) one ``(samples, horizon)`` gather, in chunks of
    ``chunk_rows`` samples so memory stays bounded whatever the horizon.
    """
    data = _minute_columns(minute_aggs)
    sample_ms = to_epoch_ms(samples["ts"])
    sample_machine = samples["machine_id"].astype(str).to_numpy()
    result = np.full((len(samples), len(FEATURE_NAMES)), np.nan)
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    hist = history if history is not None else history_from_events()
    history_of = dict(tuple(hist.groupby("machine_id", sort=False))) if len(hist) else {}
    for machine in pd.unique(sample_machine):
        where = np.flatnonzero(sample_machine == machine)
        t = sample_ms[where]
        end_minute = t // MINUTE_MS  # windows with window_end <= t are the minutes < end_minute
        if machine in data.bounds:
            lo, hi = data.bounds[machine]
            minute = data.minute[lo:hi]
            first = int(minute.min())
            last = int(max(minute.max(), end_minute.max()))
            stats = {stat: values[lo:hi] for stat, values in data.stats.items()}
            dense = _dense_minutes(minute, data.signal[lo:hi], stats, first, last - first + 1)
            values = _gather_signal_features(dense, end_minute - first, chunk_rows)
        else:
            values = {f.name: np.full(len(where), np.nan) for f in SIGNAL_FEATURES}
        values.update(_derived(values))
        events = history_of.get(machine)
        times = {}
        if events is not None:
            times = {str(k): np.sort(g["ts"].to_numpy(dtype=np.int64)) for k, g in events.groupby("kind")}
        values.update(_history_values(times, t))
        for name, array in values.items():
            result[where, column[name]] = array
    out = pd.DataFrame(result, columns=list(FEATURE_NAMES))
    out.insert(0, "ts", sample_ms)
    out.insert(0, "machine_id", sample_machine)
    return out


def _gather_signal_features(dense: Mapping[str, np.ndarray], end: np.ndarray, chunk_rows: int) -> dict[str, np.ndarray]:
    """Signal features for minute indices ``end`` (exclusive) of a dense minute grid."""
    n_minutes = dense["count"].shape[0]
    out = {f.name: np.empty(len(end)) for f in SIGNAL_FEATURES}
    for lo in range(0, len(end), chunk_rows):
        e = end[lo : lo + chunk_rows]
        for (signal, horizon), features in _GROUPS.items():
            s = _SIGNAL_INDEX[signal]
            index = e[:, None] - horizon + np.arange(horizon)
            inside = (index >= 0) & (index < n_minutes)
            safe = np.clip(index, 0, n_minutes - 1)
            minutes = {stat: dense[stat][safe, s] for stat in _GROUP_READS[signal, horizon]}
            minutes["count"] = np.where(inside, minutes["count"], 0.0)
            stats = _window_statistics(minutes, [f.statistic for f in features])
            for f in features:
                out[f.name][lo : lo + len(e)] = stats[f.statistic]
    return out


# -- online -------------------------------------------------------------------------------


class OnlineFeatures:
    """One machine's feature state for the stream: bounded, picklable, incremental.

    ``add(minute_rows)`` takes closed 1-minute window aggregates of this machine as they
    arrive (any order within the ring; signals the features do not read are ignored; a
    second version of a window replaces the first if it counts at least as many
    readings).  ``add_history`` records tool changes, repairs, maintenance, stops and
    alerts in time order.  ``features(as_of)`` returns what :func:`offline_features`
    computes for this machine and time (``tests/unit/test_features.py`` checks it).

    The state is a ring of the last ``capacity_min`` minutes (default: the longest
    signal horizon plus 15 minutes of slack, so ``as_of`` may lag the newest window)
    and the history events of the last 8 hours plus that slack: its size does not grow
    with time (about 40 kB pickled), which matters because it lives in Bytewax recovery
    snapshots.  A request that would need evicted data raises instead of answering wrong.
    """

    def __init__(self, machine_id: str, *, capacity_min: int = MAX_SIGNAL_HORIZON_MIN + 15) -> None:
        if capacity_min <= MAX_SIGNAL_HORIZON_MIN:
            raise ValueError(f"capacity_min must exceed the longest horizon ({MAX_SIGNAL_HORIZON_MIN} min)")
        self.machine_id = machine_id
        self.capacity_min = capacity_min
        self._slot_minute = np.full(capacity_min, -1, dtype=np.int64)
        self._ring = {s: np.zeros((capacity_min, len(FEATURE_SIGNALS))) for s in _STATS}
        self._newest_minute = -1
        self._history: dict[str, deque[int]] = {k: deque() for k in HISTORY_KINDS}
        self._evicted_last: dict[str, int] = {}
        self._retain_ms = (MAX_HISTORY_HORIZON_MIN + capacity_min) * MINUTE_MS
        self.dropped_rows = 0  # windows that arrived after they left the ring

    def add(self, minute_rows: Iterable[Mapping[str, Any]] | pa.Table | pd.DataFrame) -> int:
        """Store closed minute aggregates of this machine; returns how many rows were kept."""
        if isinstance(minute_rows, pa.Table):
            minute_rows = minute_rows.to_pylist()
        elif isinstance(minute_rows, pd.DataFrame):
            minute_rows = minute_rows.to_dict("records")
        kept = 0
        for row in minute_rows:
            signal = _SIGNAL_INDEX.get(str(row["signal"]))
            if signal is None:
                continue
            if "machine_id" in row and row["machine_id"] != self.machine_id:
                raise ValueError(f"a row of {row['machine_id']!r} given to the features of {self.machine_id!r}")
            if int(row.get("window_seconds", 60)) != 60:
                raise ValueError("features are defined on 60 s windows")
            start = _scalar_ms(row["window_start"])
            if start % MINUTE_MS:
                raise ValueError("window_start must be minute-aligned")
            minute = start // MINUTE_MS
            if minute <= self._newest_minute - self.capacity_min:
                self.dropped_rows += 1
                continue
            slot = minute % self.capacity_min
            if self._slot_minute[slot] != minute:  # the slot held a minute that has left the ring
                for stat in _STATS:
                    self._ring[stat][slot, :] = 0.0
                self._slot_minute[slot] = minute
            if float(row["count"]) < self._ring["count"][slot, signal]:
                continue
            for stat in _STATS:
                self._ring[stat][slot, signal] = float(row[stat])
            self._newest_minute = max(self._newest_minute, minute)
            kept += 1
        return kept

    def add_history(self, kind: HistoryKind, ts_ms: int) -> None:
        """Record one history event (the kinds of :func:`history_from_events`), in time order."""
        if kind not in self._history:
            raise ValueError(f"unknown history kind {kind!r} (known: {HISTORY_KINDS})")
        events = self._history[kind]
        ts_ms = int(ts_ms)
        if events and ts_ms < events[-1]:
            raise ValueError(f"{kind} events must arrive in time order ({ts_ms} < {events[-1]})")
        events.append(ts_ms)
        while events and events[0] <= ts_ms - self._retain_ms:
            self._evicted_last[kind] = events.popleft()

    def features(self, as_of_ms: int) -> dict[str, float]:
        """The feature vector as of ``as_of_ms`` (windows with ``window_end <= as_of_ms``)."""
        as_of_ms = int(as_of_ms)
        end_minute = as_of_ms // MINUTE_MS
        if self._newest_minute >= 0 and end_minute - MAX_SIGNAL_HORIZON_MIN <= self._newest_minute - self.capacity_min:
            raise ValueError(
                f"as_of {as_of_ms} needs minutes that have left the ring (newest minute {self._newest_minute}, "
                f"capacity {self.capacity_min} min): ask for times near the newest window"
            )
        counted_from = as_of_ms - MAX_HISTORY_HORIZON_MIN * MINUTE_MS
        if any(ts > counted_from for ts in self._evicted_last.values()):
            raise ValueError(f"as_of {as_of_ms} needs history events that have been evicted")
        values: dict[str, np.ndarray] = {}
        for (signal, horizon), features in _GROUPS.items():
            s = _SIGNAL_INDEX[signal]
            wanted = np.arange(end_minute - horizon, end_minute)
            slots = wanted % self.capacity_min
            valid = self._slot_minute[slots] == wanted
            minutes = {stat: self._ring[stat][slots, s][None, :] for stat in _GROUP_READS[signal, horizon]}
            minutes["count"] = np.where(valid[None, :], minutes["count"], 0.0)
            stats = _window_statistics(minutes, [f.statistic for f in features])
            for f in features:
                values[f.name] = stats[f.statistic]
        values.update(_derived(values))
        times = {}
        for kind, events in self._history.items():
            before = [self._evicted_last[kind]] if kind in self._evicted_last else []
            times[kind] = np.asarray([*before, *events], dtype=np.int64)
        values.update(_history_values(times, np.array([as_of_ms], dtype=np.int64)))
        return {name: float(values[name][0]) for name in FEATURE_NAMES}


def feature_matrix(frame: pd.DataFrame, names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    """The model input (float64, NaN = missing) from a feature frame, in ``names`` order."""
    return frame.loc[:, list(names)].to_numpy(dtype=np.float64)


__all__ = [
    "DERIVED_FEATURES",
    "FEATURES",
    "FEATURE_NAMES",
    "FEATURE_SIGNALS",
    "HISTORY_FEATURES",
    "HISTORY_KINDS",
    "LOOKBACK_MIN",
    "MAX_SIGNAL_HORIZON_MIN",
    "SIGNAL_FEATURES",
    "DerivedFeature",
    "HistoryFeature",
    "OnlineFeatures",
    "SignalFeature",
    "feature_matrix",
    "history_from_events",
    "history_kinds",
    "offline_features",
    "to_epoch_ms",
]
