"""The cold tier's assets in the Dagster graph (group ``maintenance``).

* ``maintenance/bronze``, ``maintenance/silver``, ``maintenance/gold``: one maintenance
  pass (:func:`plantstream.assets.cold.maintenance.maintain_table`) over every Delta
  table of the tier; files and bytes before and after, per table, as metadata.  An
  asset per tier rather than per table: the UI shows three rows with a history each,
  and gold tables are found in the lake at run time (``gold/<name>/_delta_log``), so a
  gold table added later is maintained without touching this module.
* ``maintenance/hot_store_archive``: verified hot -> cold archival
  (:mod:`plantstream.assets.cold.archival`), with an asset check that fails (severity
  WARN) while any old partition could not be verified and was kept.

They materialise nothing new: their "data" is the physical state of the tables (files,
layout, what the hot store still holds), and recording a materialisation per pass gives
that state a history in the UI.
"""

# No `from __future__ import annotations`: Dagster inspects the annotations at runtime.
import dagster as dg
from pydantic import Field

from plantstream.assets.cold.archival import archive_hot_partitions, ttl_warnings
from plantstream.assets.cold.maintenance import (
    MIB,
    TARGET_FILE_BYTES,
    VACUUM_RETENTION_HOURS,
    MaintenanceReport,
    maintain_table,
    totals,
)
from plantstream.assets.gold.assets import GOLD_ASSETS
from plantstream.connect.s3 import s3_client
from plantstream.contract.streams import STREAMS
from plantstream.orchestration.resources import HotStore, Lake
from plantstream.orchestration.retries import TRANSIENT_RETRY, retry_if_transient

OWNERS = ["team:data-platform"]
GROUP = "maintenance"
ARCHIVE_KEY = dg.AssetKey(["maintenance", "hot_store_archive"])
ARCHIVE_CHECK = "every_old_partition_archived"
#: Archival runs alone: two runs staging the same partition would race.
ARCHIVAL_POOL = "hot_store_archival"


def tier_tables(lake: Lake, tier: str) -> list[str]:
    """Names of the Delta tables under ``<lake root>/<tier>/`` (a folder with a ``_delta_log``)."""
    settings = lake.settings.lake
    base = f"{settings.prefix.strip('/')}/{tier}/".lstrip("/")
    client = s3_client(lake.settings)
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=base, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            folder = common["Prefix"]
            log = client.list_objects_v2(Bucket=settings.bucket, Prefix=f"{folder}_delta_log/", MaxKeys=1)
            if log.get("KeyCount", 0):
                names.append(folder[len(base) :].rstrip("/"))
    return sorted(names)


class MaintenanceConfig(dg.Config):
    """Settings of one maintenance pass (the defaults are the documented ones, docs/cold-tier.md)."""

    target_file_mb: int = Field(TARGET_FILE_BYTES // MIB, ge=1, description="target size of rewritten files, MiB")
    z_order: bool = Field(True, description="Z-order closed day partitions on machine and time")
    vacuum_retention_hours: int = Field(
        VACUUM_RETENTION_HOURS,
        ge=1,
        description="keep removed files this long; delta-rs refuses less than the table's "
        "delta.deletedFileRetentionDuration (7 days by default)",
    )


def _report_table(reports: list[MaintenanceReport]) -> dg.MetadataValue:
    columns = [
        "table",
        "files_before",
        "files_after",
        "bytes_before",
        "bytes_after",
        "z_ordered",
        "vacuumed",
        "seconds",
    ]
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "table": r.table,
                    "files_before": r.files_before,
                    "files_after": r.files_after,
                    "bytes_before": r.bytes_before,
                    "bytes_after": r.bytes_after,
                    "z_ordered": len(r.z_ordered_partitions),
                    "vacuumed": r.files_vacuumed,
                    "seconds": r.seconds,
                }
            )
            for r in reports
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn(c, "string" if c == "table" else "float" if c == "seconds" else "int") for c in columns
            ]
        ),
    )


def maintain_tier(lake: Lake, tier: str, config: MaintenanceConfig) -> list[MaintenanceReport]:
    names = [spec.name for spec in STREAMS] if tier in ("bronze", "silver") else tier_tables(lake, tier)
    reports = []
    for name in names:
        if lake.table(tier, name) is None:
            continue  # nothing written yet (a stream without events)
        reports.append(
            maintain_table(
                lake.table_uri(tier, name),
                lake.storage_options,
                name=f"{tier}/{name}",
                target_bytes=config.target_file_mb * MIB,
                z_order=config.z_order,
                vacuum_retention_hours=config.vacuum_retention_hours,
            )
        )
    return reports


def maintenance_asset(tier: str, deps: list[dg.AssetKey], what: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["maintenance", tier],
        deps=deps,
        group_name=GROUP,
        owners=OWNERS,
        kinds={"delta", "s3"},
        description=f"Table maintenance of {what}: Z-order of closed day partitions on (machine_id, time), "
        "compaction of the rest to the target file size, a checkpoint, vacuum after the retention. "
        "Rows never change; files and bytes before and after are in the metadata.",
        retry_policy=TRANSIENT_RETRY,
    )
    def _maintenance(
        context: dg.AssetExecutionContext, config: MaintenanceConfig, lake: dg.ResourceParam[Lake]
    ) -> dg.MaterializeResult:
        with retry_if_transient(f"maintenance of the {tier} tables"):
            reports = maintain_tier(lake, tier, config)
        for report in reports:
            context.log.info(f"{report.table}: {report.as_dict()}")
        figures = totals(reports)
        return dg.MaterializeResult(
            metadata={
                **figures,
                "tables_maintained": _report_table(reports),
                "details": dg.MetadataValue.json([r.as_dict() for r in reports]),
            }
        )

    return _maintenance


class ArchivalConfig(dg.Config):
    dry_run: bool = Field(False, description="verify and report only; drop nothing")


@dg.asset(
    key=ARCHIVE_KEY,
    deps=[
        *(dg.AssetKey(["silver", spec.name]) for spec in STREAMS),
        *(dg.AssetKey(["hotstore", spec.hot_table]) for spec in STREAMS),
    ],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"clickhouse", "delta"},
    description="Verified hot -> cold archival: every hot-store day older than hotstore.hot_retention_days is "
    "moved aside, compared with silver (row count and key checksum per day and stream) and dropped only if equal; "
    "a day the lake does not verifiably hold is moved back, kept and reported.",
    check_specs=[
        dg.AssetCheckSpec(
            ARCHIVE_CHECK,
            asset=ARCHIVE_KEY,
            description="Every hot-store day older than the retention was verified in the lake and dropped.",
        )
    ],
    retry_policy=TRANSIENT_RETRY,
    pool=ARCHIVAL_POOL,
)
def hot_store_archive(
    context: dg.AssetExecutionContext,
    config: ArchivalConfig,
    lake: dg.ResourceParam[Lake],
    hotstore: dg.ResourceParam[HotStore],
) -> dg.MaterializeResult:
    with retry_if_transient("hot-store archival"):
        report = archive_hot_partitions(hotstore, lake, dry_run=config.dry_run)
    retention = hotstore.settings.hotstore.hot_retention_days
    for warning in ttl_warnings(report, retention):
        context.log.warning(warning)
    for verdict in report.kept:
        context.log.warning(f"kept hot partition {verdict.stream} {verdict.day}: {verdict.reason}")
    figures = report.figures()
    kept = [v.as_dict() for v in report.kept]
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in figures.items() if k not in ("ttl_days", "recovered_staging_tables")},
            "ttl_days": dg.MetadataValue.json(figures["ttl_days"]),
            "recovered_staging_tables": dg.MetadataValue.json(figures["recovered_staging_tables"]),
            "hot_retention_days": retention,
            "dry_run": config.dry_run,
            "partitions": dg.MetadataValue.json([v.as_dict() for v in report.verdicts]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=ARCHIVE_CHECK,
                passed=not kept,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"partitions_kept": len(kept), "kept": dg.MetadataValue.json(kept)},
                description=None if not kept else f"{len(kept)} old hot partition(s) kept: not verifiable in the lake",
            )
        ],
    )


MAINTENANCE_ASSETS = [
    maintenance_asset("bronze", [dg.AssetKey(["bronze", s.name]) for s in STREAMS], "every bronze table"),
    maintenance_asset("silver", [dg.AssetKey(["silver", s.name]) for s in STREAMS], "every silver table"),
    maintenance_asset("gold", [key for asset in GOLD_ASSETS for key in asset.keys], "every gold table in the lake"),
]
