"""Feature drift: the population stability index (PSI) of each feature against the training window.

At training time :func:`feature_profile` records, per feature, the deciles of the
training part (the bin edges) and the share of rows in each bin, with missing values
(NaN: a machine type without the signal) as a bin of their own.  Later,
:func:`population_stability` puts a new day's feature rows into the same bins and
computes, per feature,

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

with shares floored at :data:`SHARE_FLOOR` so an empty bin does not give infinity.  The
usual reading (Siddiqi, *Credit Risk Scorecards*, 2006): below 0.1 stable, 0.1-0.25 a
moderate shift, above 0.25 a significant one.  The profile is JSON (it is logged with the
model) and small: 58 features x 11 bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from plantstream.models.features import FEATURE_NAMES

DEFAULT_BINS = 10
SHARE_FLOOR = 1e-4
PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.25


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: 0 .. len(edges) for numbers (``edges`` are interior), len(edges) + 1 for NaN."""
    index = np.searchsorted(edges, values, side="right")
    return np.where(np.isnan(values), len(edges) + 1, index)


def _shares(index: np.ndarray, bins: int) -> np.ndarray:
    if not len(index):
        return np.full(bins, np.nan)
    return np.bincount(index, minlength=bins).astype(np.float64) / len(index)


def feature_profile(
    frame: pd.DataFrame, features: Sequence[str] = FEATURE_NAMES, *, bins: int = DEFAULT_BINS
) -> dict[str, object]:
    """Bin edges (interior quantiles of the non-missing values) and shares per feature, as JSON."""
    if not len(frame):
        raise ValueError("a feature profile needs rows")
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    out: dict[str, dict[str, list[float]]] = {}
    for name in features:
        values = frame[name].to_numpy(dtype=np.float64)
        present = values[~np.isnan(values)]
        edges = np.unique(np.quantile(present, quantiles)) if len(present) else np.empty(0)
        shares = _shares(_bin_index(values, edges), len(edges) + 2)
        out[name] = {"edges": edges.tolist(), "shares": shares.tolist()}
    return {"bins": bins, "rows": len(frame), "features": out}


def population_stability(profile: dict[str, object], frame: pd.DataFrame) -> dict[str, float]:
    """PSI per feature of ``frame``'s rows against ``profile`` (NaN for a frame without rows)."""
    features: dict[str, dict[str, list[float]]] = profile["features"]  # type: ignore[assignment]
    out = {}
    for name, spec in features.items():
        if name not in frame.columns:
            raise ValueError(f"feature {name!r} of the profile is not in the frame")
        edges = np.asarray(spec["edges"], dtype=np.float64)
        expected = np.maximum(np.asarray(spec["shares"], dtype=np.float64), SHARE_FLOOR)
        actual = _shares(_bin_index(frame[name].to_numpy(dtype=np.float64), edges), len(edges) + 2)
        if np.isnan(actual).any():
            out[name] = float("nan")
            continue
        actual = np.maximum(actual, SHARE_FLOOR)
        out[name] = float(np.sum((actual - expected) * np.log(actual / expected)))
    return out


def drifting(psi: dict[str, float], threshold: float = PSI_SIGNIFICANT) -> dict[str, float]:
    """The features with a PSI of at least ``threshold``, largest first."""
    found = {name: value for name, value in psi.items() if value >= threshold}
    return dict(sorted(found.items(), key=lambda item: -item[1]))


__all__ = [
    "DEFAULT_BINS",
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "SHARE_FLOOR",
    "drifting",
    "feature_profile",
    "population_stability",
]
