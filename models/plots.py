"""Figures of a trained model, as PNG bytes (logged to MLflow, embedded in Dagster metadata).

Presentation only: no number in a figure is used by a computation.  matplotlib with the
Agg backend, imported when a figure is drawn.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

TOP_FEATURES = 20


def _figure(width: float = 7.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def feature_importance_png(importances: pd.DataFrame, *, top: int = TOP_FEATURES) -> bytes:
    """Permutation importance (drop of PR-AUC on the test part) of the ``top`` features, with its std."""
    rows = importances.head(top).iloc[::-1]
    plt, fig, ax = _figure(7.0, 0.25 * len(rows) + 1.2)
    ax.barh(rows["feature"], rows["importance_mean"], xerr=rows["importance_std"], color="#4f81bd")
    ax.set_xlabel("drop of PR-AUC when the feature is shuffled (test part)")
    ax.set_title(f"Permutation importance, top {len(rows)}")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _png(plt, fig)


def lead_time_png(lead_times: pd.DataFrame, horizon_min: int) -> bytes:
    """Lead time of the first alert before each detected test failure; missed failures counted in the title."""
    detected = lead_times.loc[lead_times["detected"], "lead_min"].to_numpy(dtype=float)
    missed = int((~lead_times["detected"]).sum())
    plt, fig, ax = _figure(7.0, 3.2)
    if len(detected):
        ax.hist(detected, bins=np.arange(0, horizon_min + 1.5, 1.0), color="#9bbb59", edgecolor="white")
        ax.axvline(float(np.median(detected)), color="#c0504d", label=f"median {np.median(detected):.1f} min")
        ax.legend(fontsize=8)
    ax.set_xlabel("minutes from the first alert to the failure")
    ax.set_ylabel("failures")
    ax.set_title(f"Lead time: {len(detected):,} failures detected, {missed:,} missed (test part)")
    ax.grid(alpha=0.3)
    return _png(plt, fig)


def probabilities_png(probabilities: np.ndarray, threshold: float, version: str) -> bytes:
    """Histogram of a day's failure probabilities with the alert threshold (batch scoring)."""
    plt, fig, ax = _figure(7.0, 3.2)
    ax.hist(probabilities, bins=np.linspace(0, 1, 41), color="#4f81bd", edgecolor="white")
    ax.axvline(threshold, color="#c0504d", label=f"threshold {threshold:.3f}")
    share = float((probabilities >= threshold).mean()) if len(probabilities) else float("nan")
    ax.set_title(f"Failure probabilities by v{version}: {share:.0%} of samples alert")
    ax.set_xlabel("probability of failing within the horizon")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(plt, fig)


__all__ = ["feature_importance_png", "lead_time_png", "probabilities_png"]
