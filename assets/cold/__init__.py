"""The cold tier: the Delta Lake on S3 as the system of record, and its upkeep.

* :mod:`.maintenance`: compaction, Z-order, checkpoints and vacuum of the Delta tables;
* :mod:`.archival`: hot-store days older than the retention dropped only once the lake
  verifiably holds their rows;
* :mod:`.backfill`: silver rebuilt from bronze for a date range, the hot store
  re-hydrated from bronze;
* :mod:`.checksums`: the row hashes both engines compute identically, and content
  checksums that prove a rebuild idempotent;
* :mod:`.delta_log`: which partitions received new data between two table versions;
* :mod:`.lake_assets`, :mod:`.jobs`: the Dagster side (group ``maintenance``, backfill jobs).

docs/cold-tier.md describes the rules and what was measured.
"""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    from plantstream.assets.cold.jobs import COLD_JOBS
    from plantstream.assets.cold.lake_assets import MAINTENANCE_ASSETS, hot_store_archive

    return dg.Definitions(assets=[*MAINTENANCE_ASSETS, hot_store_archive], jobs=COLD_JOBS)
