"""The rule a maintenance engineer would set up without a model, scored like the model.

Three limits, each from a published rule rather than from this plant's data:

* **tool wear** ``>= 200 min``: AI4I tools reach their end of life between 200 and
  240 minutes of cutting (TWF, and OSF at high torque); only machines that report
  ``tool_wear`` (CNC mills) can use it;
* **temperature margin** (process - air, 5-minute mean) ``< 9.0 K``: AI4I's heat
  dissipation failure needs a margin below 8.6 K; 0.4 K is the safety margin (machines
  with a process temperature: mills and presses);
* **vibration** (5-minute mean) ``>= 4.5 mm/s``: the zone C/D boundary of ISO 10816-1
  for small machines ("unsatisfactory"); every machine type reports vibration.

Alert when any limit is crossed (a missing signal never alerts).  The rule is binary,
so its PR-AUC is that of a two-valued score.  :func:`tune_rule` picks the limits on the
validation part instead (the strongest rule of this form), for a fairer comparison.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from plantstream.models.training import SplitBoundaries, classification_metrics, lead_time_summary, lead_times


@dataclass(frozen=True)
class MaintenanceRule:
    tool_wear_limit_min: float = 200.0
    temp_margin_limit_k: float = 9.0
    vibration_limit_mm_s: float = 4.5

    def alerts(self, features: pd.DataFrame) -> np.ndarray:
        """True where any limit is crossed (comparisons with NaN are false: no signal, no alert)."""
        wear = features["tool_wear_last"].to_numpy(dtype=float)
        margin = features["temp_margin_mean_5m"].to_numpy(dtype=float)
        vibration = features["vibration_mean_5m"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            return (
                (wear >= self.tool_wear_limit_min)
                | (margin < self.temp_margin_limit_k)
                | (vibration >= self.vibration_limit_mm_s)
            )


def evaluate_rule(rule: MaintenanceRule, frame: pd.DataFrame) -> dict[str, float]:
    """The model's metrics (classification and lead time) for the rule on a labelled feature frame."""
    alert = rule.alerts(frame)
    metrics = classification_metrics(frame["label"].to_numpy(), alert.astype(float), alert)
    metrics.update(lead_time_summary(lead_times(frame, alert)))
    return metrics


def tune_rule(
    frame: pd.DataFrame,
    *,
    wear_limits: tuple[float, ...] = (160.0, 170.0, 180.0, 190.0, 200.0, 210.0, 220.0),
    margin_limits: tuple[float, ...] = (8.6, 8.8, 9.0, 9.2, 9.4, 9.6, 9.8, 10.0),
    vibration_limits: tuple[float, ...] = (2.8, 3.5, 4.5, 5.5, 7.1),
) -> MaintenanceRule:
    """The limits (from small grids around the published ones) with the best F1 on ``frame``.

    Call it on the validation part only: the test part must stay unseen.
    """
    y = frame["label"].to_numpy().astype(bool)
    wear = frame["tool_wear_last"].to_numpy(dtype=float)
    margin = frame["temp_margin_mean_5m"].to_numpy(dtype=float)
    vibration = frame["vibration_mean_5m"].to_numpy(dtype=float)
    best, best_f1 = MaintenanceRule(), -1.0
    with np.errstate(invalid="ignore"):
        by_wear = {w: wear >= w for w in wear_limits}
        by_margin = {m: margin < m for m in margin_limits}
        by_vibration = {v: vibration >= v for v in vibration_limits}
    for w, m, v in itertools.product(wear_limits, margin_limits, vibration_limits):
        alert = by_wear[w] | by_margin[m] | by_vibration[v]
        tp = int((alert & y).sum())
        f1 = 2 * tp / (int(alert.sum()) + int(y.sum())) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = MaintenanceRule(w, m, v), f1
    return best


def evaluate_baselines(frame: pd.DataFrame, split: SplitBoundaries) -> dict[str, dict[str, float] | dict]:
    """The fixed rule and the validation-tuned rule, both scored on the test part of ``split``."""
    part = split.parts(frame["ts"].to_numpy(dtype=np.int64))
    validation, test = frame.loc[part == "validation"], frame.loc[part == "test"]
    tuned = tune_rule(validation)
    return {
        "fixed": evaluate_rule(MaintenanceRule(), test),
        "tuned": evaluate_rule(tuned, test),
        "tuned_limits": {
            "tool_wear_limit_min": tuned.tool_wear_limit_min,
            "temp_margin_limit_k": tuned.temp_margin_limit_k,
            "vibration_limit_mm_s": tuned.vibration_limit_mm_s,
        },
    }


__all__ = ["MaintenanceRule", "evaluate_baselines", "evaluate_rule", "tune_rule"]
