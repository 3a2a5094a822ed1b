"""Gold: daily-partitioned tables for people, computed from silver (OEE, downtime, quality, energy, rollups).

``assets.py`` holds the Dagster assets; everything they compute is in pure modules
(``states.py``, ``parts.py``, ``rollups.py``) over what ``inputs.py`` reads from silver,
against the plant calendar of ``calendar.py``; ``tables.py`` writes a day atomically.
docs/lakehouse.md describes the tables.
"""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    from plantstream.assets.gold.assets import GOLD_ASSETS

    return dg.Definitions(assets=GOLD_ASSETS)
