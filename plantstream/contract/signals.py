"""Signals and their valid ranges: the one definition shared by the stream's
validation and the lakehouse's quality checks.

A value outside ``[valid_min, valid_max]`` is physically impossible for that signal
(a broken sensor or a bad conversion), not merely abnormal: such readings are
dead-lettered by the stream and fail the data-quality checks.  Abnormal-but-possible
values are the anomaly detector's business, not validation's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class SignalSpec:
    name: str
    unit: str
    valid_min: float
    valid_max: float
    description: str


SIGNALS: dict[str, SignalSpec] = {
    s.name: s
    for s in (
        SignalSpec("air_temperature", "K", 250.0, 350.0, "ambient air temperature at the machine"),
        SignalSpec("process_temperature", "K", 250.0, 400.0, "process (cutting zone / die) temperature"),
        SignalSpec("rotational_speed", "rpm", 0.0, 30_000.0, "spindle or drive speed"),
        SignalSpec("torque", "Nm", 0.0, 500.0, "spindle or drive torque"),
        SignalSpec("tool_wear", "min", 0.0, 1_000.0, "minutes of cutting on the current tool"),
        SignalSpec("vibration", "mm/s", 0.0, 100.0, "vibration velocity RMS (ISO 10816)"),
        SignalSpec("current", "A", 0.0, 1_000.0, "motor current"),
        SignalSpec("power", "kW", 0.0, 2_000.0, "electrical power draw"),
        SignalSpec("pressure", "bar", 0.0, 1_000.0, "hydraulic or pneumatic pressure"),
        SignalSpec("belt_speed", "m/s", 0.0, 20.0, "conveyor belt speed"),
        SignalSpec("cycle_count", "1", 0.0, 1e12, "cycles completed since commissioning"),
    )
}


def valid_range(signal: str) -> tuple[float, float] | None:
    spec = SIGNALS.get(signal)
    return None if spec is None else (spec.valid_min, spec.valid_max)


def impossible_mask(signals: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Vectorised: True where a value lies outside its signal's valid range.

    NaN (a missing value, e.g. a stale reading) is not impossible; unknown signals
    are not judged here.
    """
    bad = np.zeros(len(values), dtype=bool)
    for name in np.unique(signals):
        spec = SIGNALS.get(str(name))
        if spec is None:
            continue
        rows = signals == name
        vals = values[rows]
        bad[rows] = (vals < spec.valid_min) | (vals > spec.valid_max)
    return bad
