"""What the model predicts, and when it is asked: the sample grid and "fails within H minutes".

* **Sample grid** (:func:`sample_grid`): one sample per machine every ``every_min``
  minutes (epoch-aligned), only while the machine is producing (state ``running`` per
  its machine events).  A stopped machine cannot fail, and asking the model about it
  would only add easy negatives.
* **Label** (:func:`label_samples`): 1 if the machine's next failure (ground truth kind
  ``failure``) happens in ``(t, t + H]``.  The next failure's mode(s) and the minutes to
  it stay on the row for analysis and for the lead-time metric.  Samples inside a
  failure's repair interval ``[ts, ts + duration_s)`` are dropped (the machine is down:
  neither a positive nor a negative), and by default also those inside planned
  downtime and maintenance intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plantstream.models.features import MINUTE_MS, to_epoch_ms
from plantstream.simulator.physics import FAILURE_MODES

DEFAULT_HORIZON_MIN = 10
"""H: see docs/predictive-maintenance.md for why 10 minutes on the simulated plant."""

PRODUCING = "running"


def machine_states(machine_events: pd.DataFrame) -> pd.DataFrame:
    """State changes (``machine_id``, ``ts``, ``state``) from machine events that carry a state."""
    ev = machine_events
    ts = to_epoch_ms(ev["ts"] if "ts" in ev.columns else ev["source_ts"])
    states = pd.DataFrame({"machine_id": ev["machine_id"].astype(str).to_numpy(), "ts": ts, "state": ev["state"]})
    states = states[states["state"].notna() & (states["state"].astype(str) != "")]
    return states.sort_values(["machine_id", "ts"], kind="stable", ignore_index=True)


def sample_grid(
    machine_events: pd.DataFrame,
    machines: list[str] | np.ndarray,
    start_ms: int,
    end_ms: int,
    *,
    every_min: int = 5,
    initial_state: str = PRODUCING,
) -> pd.DataFrame:
    """Sample times (``machine_id``, ``ts``) every ``every_min`` minutes in ``[start_ms, end_ms]``
    at which the machine is producing.

    The state at ``t`` is that of the machine's last state event at or before ``t``
    (an event at ``t`` has already taken effect); before its first event a machine is
    in ``initial_state``.
    """
    step = every_min * MINUTE_MS
    grid = np.arange(-(-start_ms // step) * step, end_ms + 1, step, dtype=np.int64)
    states = machine_states(machine_events) if len(machine_events) else None
    by_machine = dict(tuple(states.groupby("machine_id", sort=False))) if states is not None else {}
    parts = []
    for machine in machines:
        rows = by_machine.get(str(machine))
        if rows is None:
            producing = np.full(len(grid), initial_state == PRODUCING)
        else:
            ts = rows["ts"].to_numpy()
            state = np.append(initial_state, rows["state"].astype(str).to_numpy())
            producing = state[np.searchsorted(ts, grid, side="right")] == PRODUCING
        parts.append(pd.DataFrame({"machine_id": str(machine), "ts": grid[producing]}))
    if not parts:
        return pd.DataFrame({"machine_id": pd.Series(dtype=str), "ts": pd.Series(dtype=np.int64)})
    return pd.concat(parts, ignore_index=True)


def _intervals(truth: pd.DataFrame, kinds: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows = truth[truth["kind"].isin(kinds)]
    out = {}
    for machine, g in rows.groupby("machine_id", sort=False):
        start = to_epoch_ms(g["ts"])
        out[str(machine)] = (start, start + np.round(g["duration_s"].to_numpy() * 1000).astype(np.int64))
    return out


def _inside(t: np.ndarray, intervals: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Whether each time lies in any of the half-open intervals (which may overlap)."""
    if intervals is None or not len(intervals[0]):
        return np.zeros(len(t), dtype=bool)
    order = np.argsort(intervals[0], kind="stable")
    start, reach = intervals[0][order], np.maximum.accumulate(intervals[1][order])
    before = np.searchsorted(start, t, side="right") - 1  # the last interval starting at or before t
    return (before >= 0) & (reach[np.maximum(before, 0)] > t)


def failure_episodes(ground_truth: pd.DataFrame) -> pd.DataFrame:
    """One row per failure event (``machine_id``, ``ts``, ``mode``, ``duration_s``).

    Several rules can fire in the same cycle (e.g. TWF and OSF at a worn tool): the
    ground truth then has one entry per mode with the same time; they are one failure
    here, with the modes joined by ``+`` in AI4I order and the longest repair.
    """
    failures = ground_truth[ground_truth["kind"] == "failure"]
    if not len(failures):
        return pd.DataFrame(
            {
                "machine_id": pd.Series(dtype=str),
                "ts": pd.Series(dtype=np.int64),
                "mode": pd.Series(dtype=str),
                "duration_s": pd.Series(dtype=float),
            }
        )
    order = {m: i for i, m in enumerate(FAILURE_MODES)}
    frame = pd.DataFrame(
        {
            "machine_id": failures["machine_id"].astype(str).to_numpy(),
            "ts": to_epoch_ms(failures["ts"]),
            "mode": failures["mode"].astype(str).to_numpy(),
            "duration_s": failures["duration_s"].to_numpy(dtype=float),
        }
    )
    grouped = frame.groupby(["machine_id", "ts"], sort=True)
    return pd.DataFrame(
        {
            "mode": grouped["mode"].agg(lambda m: "+".join(sorted(set(m), key=lambda x: order.get(x, len(order))))),
            "duration_s": grouped["duration_s"].max(),
        }
    ).reset_index()


def label_samples(
    samples: pd.DataFrame,
    ground_truth: pd.DataFrame,
    *,
    horizon_min: int = DEFAULT_HORIZON_MIN,
    drop_planned_downtime: bool = True,
) -> pd.DataFrame:
    """``samples`` (any columns, at least ``machine_id`` and ``ts``) with the label columns added.

    Adds ``label`` (int8: the next failure is in ``(ts, ts + H]``), ``minutes_to_failure``
    (to the next failure, NaN if none follows), ``failure_ts`` and ``failure_mode`` (of
    that next failure; ``""`` if none).  Drops samples inside a repair interval and, with
    ``drop_planned_downtime``, inside planned downtime or maintenance (tool changes).
    Row order is kept; the index is reset.
    """
    if horizon_min <= 0:
        raise ValueError("horizon_min must be positive")
    episodes = failure_episodes(ground_truth)
    by_machine = dict(tuple(episodes.groupby("machine_id", sort=False)))
    repairs = _intervals(ground_truth, ("failure",))
    planned = _intervals(ground_truth, ("planned_downtime", "maintenance")) if drop_planned_downtime else {}
    t_all = to_epoch_ms(samples["ts"])
    machine_all = samples["machine_id"].astype(str).to_numpy()
    keep = np.ones(len(samples), dtype=bool)
    minutes_to = np.full(len(samples), np.nan)
    failure_ts = np.full(len(samples), -1, dtype=np.int64)
    mode = np.full(len(samples), "", dtype=object)
    for machine in pd.unique(machine_all):
        where = np.flatnonzero(machine_all == machine)
        t = t_all[where]
        keep[where] = ~_inside(t, repairs.get(machine)) & ~_inside(t, planned.get(machine))
        ep = by_machine.get(machine)
        if ep is None:
            continue
        f_ts = ep["ts"].to_numpy()
        nxt = np.searchsorted(f_ts, t, side="right")  # first failure strictly after t
        has = nxt < len(f_ts)
        idx = np.minimum(nxt, len(f_ts) - 1)
        minutes_to[where] = np.where(has, (f_ts[idx] - t) / MINUTE_MS, np.nan)
        failure_ts[where] = np.where(has, f_ts[idx], -1)
        mode[where] = np.where(has, ep["mode"].to_numpy()[idx], "")
    out = samples.assign(
        label=(minutes_to <= horizon_min).astype(np.int8),
        minutes_to_failure=minutes_to,
        failure_ts=failure_ts,
        failure_mode=mode,
    )
    return out.loc[keep].reset_index(drop=True)


__all__ = [
    "DEFAULT_HORIZON_MIN",
    "failure_episodes",
    "label_samples",
    "machine_states",
    "sample_grid",
]
