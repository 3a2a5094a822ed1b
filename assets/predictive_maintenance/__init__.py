"""Predictive maintenance in the lakehouse: ground truth, features, labels, the failure model, batch scores.

``assets.py`` holds the Dagster assets; the work is in ``ground_truth.py`` (the simulator's
logs -> ``bronze/ground_truth``), ``features.py`` (a day of features and labels),
``tables.py`` (the training window at pinned Delta versions) and ``scores.py``, over the
model code of :mod:`plantstream.models`.  docs/predictive-maintenance.md describes the lifecycle.
"""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    from plantstream.assets.predictive_maintenance.assets import PREDICTIVE_MAINTENANCE_ASSETS

    return dg.Definitions(assets=PREDICTIVE_MAINTENANCE_ASSETS)
