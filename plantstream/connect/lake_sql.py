"""SQL over the lake by table name: DuckDB on Delta tables without the delta extension.

An analyst writes ``SELECT ... FROM gold.oee JOIN silver.events ...``; this module turns
each ``<tier>.<name>`` the query mentions into a DuckDB view over that Delta table's
*current version*, read through ``deltalake.DeltaTable(...).to_pyarrow_dataset()``
(DuckDB's own delta extension cannot be installed here, and the dataset is zero-copy:
DuckDB pushes column projection and filters into it, so ``WHERE event_date = ...`` reads
only that partition's files).  Tiers:

* ``bronze.<stream>``, ``silver.<stream>``: the four streams (``telemetry``, ``events``,
  ``quality``, ``energy``);
* ``gold.<table>``: the gold tables (``oee``, ``downtime``, ``mtbf_mttr``,
  ``quality_pareto``, ``energy_per_part``, ``telemetry_hourly``, ``telemetry_daily``);
  whatever Delta table exists under ``<lake root>/<tier>/`` is found, so a new table
  needs no entry anywhere;
* ``warm.<table>``: the warm tier's copy (DuckDB file or PostgreSQL), read through
  :class:`plantstream.connect.warm.WarmStore` into Arrow first, so it joins with the rest.

Only the tables a query names are opened (DuckDB's parser lists them), so a query costs
one Delta log read per table it uses, not one per table in the lake.

:func:`init_script` writes the same catalogue as a script for the plain ``duckdb`` shell
(``duckdb -init FILE``): views over the Parquet files of each table's current version,
either on S3 (needs DuckDB's ``httpfs``, which a machine with internet access installs on
first use) or copied to a local folder (``mirror``; needs nothing but DuckDB).  A view
over a file list is a snapshot: write the script again after new commits.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from plantstream.settings import Profile, Settings

if TYPE_CHECKING:
    import duckdb

LAKE_TIERS = ("bronze", "silver", "gold")
TIERS = (*LAKE_TIERS, "warm")
_NAME = re.compile(r"\b(bronze|silver|gold|warm)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


class LakeSqlError(RuntimeError):
    """The query names a table that does not exist, or DuckDB refused it; the message says which."""


@dataclass
class QueryResult:
    table: pa.Table
    seconds: float
    tables: list[str] = field(default_factory=list)  # the <tier>.<name> tables the query opened


def referenced_tables(sql: str) -> list[tuple[str, str]]:
    """``(tier, name)`` of every lake or warm table the query names, in order of appearance.

    DuckDB's parser says which tables a query reads (so ``'gold.x'`` in a string literal is
    no table); where it cannot parse the query, a pattern over the text stands in, and
    DuckDB then reports the query's real error.
    """
    import duckdb

    try:
        with duckdb.connect() as con:
            found = con.get_table_names(sql, qualified=True)
    except duckdb.Error:
        return list(dict.fromkeys((t.lower(), n) for t, n in _NAME.findall(sql)))
    names = []
    for entry in found:
        match = _NAME.match(entry.replace('"', "").strip())
        if match:
            names.append((match.group(1).lower(), match.group(2)))
    order = {pair: sql.find(pair[1]) for pair in names}
    return sorted(dict.fromkeys(names), key=lambda pair: order[pair])


class LakeSql:
    """A DuckDB session over the lake and the warm tier, by table name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _delta(self, tier: str, name: str):  # -> deltalake.DeltaTable
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        from plantstream.connect.s3 import delta_storage_options

        try:
            return DeltaTable(
                self.settings.lake.table_uri(tier, name), storage_options=delta_storage_options(self.settings)
            )
        except TableNotFoundError:
            raise LakeSqlError(
                f"{tier}.{name} does not exist yet in the lake ({self.settings.lake.table_uri(tier, name)})"
            ) from None

    def lake_tables(self, tier: str) -> list[str]:
        """Names of the Delta tables under ``<lake root>/<tier>/`` (folders with a ``_delta_log``)."""
        import pyarrow.fs as pafs

        fs = s3_filesystem(self.settings)
        root = f"{self.settings.lake.bucket}/{self.settings.lake.prefix}".rstrip("/") + f"/{tier}"
        try:
            folders = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        except OSError:
            return []
        names = []
        for info in folders:
            if info.type == pafs.FileType.Directory:
                log = fs.get_file_info(f"{info.path}/_delta_log")
                if log.type == pafs.FileType.Directory:
                    names.append(info.base_name)
        return sorted(names)

    def catalogue(self) -> list[str]:
        """The ``<tier>.<name>`` tables that exist now (lake tiers and the warm tier)."""
        out = [f"{tier}.{name}" for tier in LAKE_TIERS for name in self.lake_tables(tier)]
        return out + [f"warm.{name}" for name in self._warm_tables()]

    def _warm_tables(self) -> list[str]:
        """The warm tier's tables; none while the local DuckDB file was never written."""
        from plantstream.connect.warm import warm_duckdb_path, warm_store

        if self.settings.warm.backend == "duckdb" and not warm_duckdb_path(self.settings).exists():
            return []
        return warm_store(self.settings).tables()

    def _register(self, con: duckdb.DuckDBPyConnection, tier: str, name: str) -> None:
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{tier}"')
        relation = f"__{tier}__{name}"
        if tier == "warm":
            from plantstream.connect.warm import warm_store

            store = warm_store(self.settings)
            if name not in store.tables():
                raise LakeSqlError(f"warm.{name} does not exist in the warm tier ({store.describe()})")
            con.register(relation, store.read(f'SELECT * FROM "{name}"'))
        else:
            con.register(relation, self._delta(tier, name).to_pyarrow_dataset())
        con.execute(f'CREATE OR REPLACE VIEW "{tier}"."{name}" AS SELECT * FROM "{relation}"')

    def connect(self, tables: Iterable[tuple[str, str]]) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with views for ``tables``."""
        import duckdb

        con = duckdb.connect()
        for tier, name in tables:
            self._register(con, tier, name)
        return con

    def query(self, sql: str) -> QueryResult:
        """Run one query over the tables it names; the result as an Arrow table."""
        import duckdb

        started = time.perf_counter()
        tables = referenced_tables(sql)
        con = self.connect(tables)
        try:
            result = con.sql(sql)
            table = result.to_arrow_table() if result is not None else pa.table({})
        except duckdb.Error as exc:
            raise LakeSqlError(str(exc)) from None
        finally:
            con.close()
        return QueryResult(table, time.perf_counter() - started, [f"{t}.{n}" for t, n in tables])


def hot_query(settings: Settings, sql: str) -> QueryResult:
    """ClickHouse SQL on the hot store (clickhouse-connect), the result as Arrow."""
    from plantstream.connect.hotstore import hotstore_client

    started = time.perf_counter()
    client = hotstore_client(settings)
    try:
        table = client.query_arrow(sql)
    finally:
        client.close()
    return QueryResult(table, time.perf_counter() - started, ["hotstore"])


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def init_script(settings: Settings, path: Path, *, mirror: Path | None = None, tiers: Iterable[str] = TIERS) -> Path:
    """Write a DuckDB init script with a view per table of the current lake (and the warm tier).

    Without ``mirror`` the views read ``s3://`` Parquet files (DuckDB's ``httpfs``, with an
    S3 secret: the local profile's keys, or the credential chain in production).  With
    ``mirror`` the current version's files are copied there first and the views read the
    copies: nothing but DuckDB is needed, and the lake can change meanwhile.
    """
    sql = LakeSql(settings)
    lines = [
        "-- PlantStream lake catalogue for the duckdb shell: duckdb -init " + path.name,
        f"-- written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: views over each Delta table's current version;",
        "-- write it again (plantstream sql --init-script) to see newer commits.",
    ]
    if mirror is None:
        s3 = settings.s3
        endpoint = s3.endpoint_url.split("://", 1)[-1]
        lines += ["INSTALL httpfs;", "LOAD httpfs;"]
        if settings.profile is Profile.PRODUCTION:
            region = _quote(s3.region)
            lines.append(f"CREATE OR REPLACE SECRET plantstream (TYPE s3, PROVIDER credential_chain, REGION {region});")
        else:
            lines.append(
                "CREATE OR REPLACE SECRET plantstream (TYPE s3, "
                f"KEY_ID {_quote(s3.access_key_id)}, SECRET {_quote(s3.secret_access_key.get_secret_value())}, "
                f"REGION {_quote(s3.region)}, ENDPOINT {_quote(endpoint)}, URL_STYLE 'path', "
                f"USE_SSL {'false' if s3.endpoint_url.startswith('http://') else 'true'});"
            )
    for tier in tiers:
        if tier == "warm":
            continue
        lines.append(f"CREATE SCHEMA IF NOT EXISTS {tier};")
        for name in sql.lake_tables(tier):
            table = sql._delta(tier, name)
            files = table.file_uris()
            if mirror is not None:
                files = _mirror_files(settings, table, mirror / tier / name)
            if not files:
                continue
            listed = ", ".join(_quote(f) for f in files)
            view = f"CREATE OR REPLACE VIEW {tier}.{name} AS SELECT * FROM read_parquet"
            lines.append(f"{view}([{listed}], hive_partitioning = true);")
    if "warm" in tiers and settings.warm.backend == "duckdb":
        from plantstream.connect.warm import warm_duckdb_path

        warm = warm_duckdb_path(settings)
        if warm.exists():
            lines.append(f"ATTACH {_quote(str(warm))} AS warm (READ_ONLY);")
            lines.append(
                "-- the warm file stays locked while this shell is open: quit between queries while runs write"
            )
    elif "warm" in tiers:
        lines.append("-- warm tier on PostgreSQL: INSTALL postgres;")
        lines.append("-- ATTACH 'postgresql://analyst@host/db' AS warm (TYPE postgres, READ_ONLY);")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def s3_filesystem(settings: Settings):  # -> pyarrow.fs.S3FileSystem
    """Arrow's S3 file system for the lake's endpoint (listing folders, copying files)."""
    import pyarrow.fs as pafs

    s3 = settings.s3
    return pafs.S3FileSystem(
        access_key=s3.access_key_id,
        secret_key=s3.secret_access_key.get_secret_value(),
        region=s3.region,
        endpoint_override=s3.endpoint_url,
        scheme="http" if s3.endpoint_url.startswith("http://") else "https",
    )


def _mirror_files(settings: Settings, table, folder: Path) -> list[str]:  # table: deltalake.DeltaTable
    """Copy the table's current data files under ``folder`` (keeping partition folders); their paths."""
    import pyarrow.fs as pafs

    source = s3_filesystem(settings)
    root = table.table_uri.rstrip("/")
    out = []
    for uri in table.file_uris():
        relative = uri[len(root) :].lstrip("/")
        target = folder / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(
                uri.removeprefix("s3://"),
                str(target),
                source_filesystem=source,
                destination_filesystem=pafs.LocalFileSystem(),
            )
        out.append(str(target))
    return out
