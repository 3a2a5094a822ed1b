"""The warm tier: the operational reporting store, one interface over two backends.

Gold tables (daily OEE, downtime, quality Pareto, energy per part) are copied here one
partition at a time so that reporting tools can query them with plain SQL.  Locally the
store is one DuckDB file under the state dir; in production it is a PostgreSQL database.
Callers only see :class:`WarmStore` and Arrow tables, built by :func:`warm_store` from the
settings, so an asset never knows which backend it writes to.

The guarantee both backends give (docs/warm-tier.md says how):

* ``replace_partition`` deletes a partition's rows and inserts the new ones in one
  transaction: a re-run leaves an identical table, a reader never sees half a partition,
  and a failed write leaves the old partition as it was;
* concurrent writers (separate Dagster runs, i.e. separate processes) all succeed, also
  when they replace the same partition: the table then holds exactly one of the writes
  (the last to commit), never a mix or a doubling.

Types are mapped in one place (:data:`SQL_TYPES`): what goes in is cast to the canonical
Arrow type of its column first, and what comes out of ``read`` has those types again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import random
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from pydantic import SecretStr

from plantstream.settings import Settings

if TYPE_CHECKING:
    import duckdb
    import psycopg

Backend = Literal["duckdb", "postgres"]


class WarmError(RuntimeError):
    """Something the warm tier refused or could not do; the message says what and where."""


class WarmSchemaError(WarmError):
    """The data does not fit: an unsupported type, a bad name, or a schema other than the table's."""


class WarmLockTimeoutError(WarmError, TimeoutError):
    """Another writer held the store longer than ``PLANTSTREAM_WARM__LOCK_TIMEOUT_S``."""


class WarmWriteError(WarmError):
    """The database refused a write (e.g. a duplicate primary key); it was rolled back."""


class WarmQueryError(WarmError):
    """A ``read`` failed, or was not a single read-only query."""


class WarmTableMissingError(WarmError, LookupError):
    """No such table in the warm tier (nothing was ever written to it)."""


# ---------------------------------------------------------------------------------------
# Types: the one mapping between Arrow and SQL


@dataclass(frozen=True)
class SqlType:
    """One column type: its canonical Arrow type and its name in each backend.

    The names are those the backends' catalogues report (DuckDB's
    ``information_schema.columns.data_type``, PostgreSQL's ``format_type``), which are
    valid DDL too, so an existing table's schema is compared with the same strings.
    """

    arrow: pa.DataType
    duckdb: str
    postgres: str
    postgres_oid: int

    def name(self, backend: Backend) -> str:
        return self.duckdb if backend == "duckdb" else self.postgres


#: Every type the warm tier stores.  Timestamps are instants: UTC, microseconds (both
#: backends' resolution); naive timestamps are refused rather than guessed at.
SQL_TYPES: tuple[SqlType, ...] = (
    SqlType(pa.bool_(), "BOOLEAN", "boolean", 16),
    SqlType(pa.int16(), "SMALLINT", "smallint", 21),
    SqlType(pa.int32(), "INTEGER", "integer", 23),
    SqlType(pa.int64(), "BIGINT", "bigint", 20),
    SqlType(pa.float32(), "FLOAT", "real", 700),
    SqlType(pa.float64(), "DOUBLE", "double precision", 701),
    SqlType(pa.string(), "VARCHAR", "text", 25),
    SqlType(pa.date32(), "DATE", "date", 1082),
    SqlType(pa.timestamp("us", tz="UTC"), "TIMESTAMP WITH TIME ZONE", "timestamp with time zone", 1184),
)
_BY_ARROW: dict[pa.DataType, SqlType] = {t.arrow: t for t in SQL_TYPES}
# What ``read`` builds from PostgreSQL result columns; other types are inferred from the values.
_ARROW_BY_OID: dict[int, pa.DataType] = {
    **{t.postgres_oid: t.arrow for t in SQL_TYPES},
    18: pa.string(),  # "char"
    19: pa.string(),  # name
    1043: pa.string(),  # varchar
    1114: pa.timestamp("us"),  # timestamp without time zone (only from expressions)
}


def canonical_type(arrow_type: pa.DataType, column: str = "?") -> pa.DataType:
    """The Arrow type a column is stored (and read back) as; raises for what cannot be stored.

    Narrow integers widen to the smallest SQL integer that holds every value (unsigned ones
    to the next signed size); dictionaries store their values; any time zone becomes UTC
    (the instant is unchanged).
    """
    t = arrow_type
    if pa.types.is_dictionary(t):
        return canonical_type(t.value_type, column)
    if pa.types.is_boolean(t):
        return pa.bool_()
    if t in (pa.int8(), pa.int16(), pa.uint8()):
        return pa.int16()
    if t in (pa.int32(), pa.uint16()):
        return pa.int32()
    if t in (pa.int64(), pa.uint32()):
        return pa.int64()
    if t in (pa.float32(), pa.float64()):
        return t
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_date(t):
        return pa.date32()
    if pa.types.is_timestamp(t):
        if t.tz is None:
            raise WarmSchemaError(
                f"column {column!r} is a timestamp without time zone; the warm tier stores instants:"
                " give it a time zone (e.g. pc.assume_timezone(col, 'UTC') if it is UTC)"
            )
        return pa.timestamp("us", tz="UTC")
    hint = {
        pa.uint64(): " (no signed SQL type holds it; cast to int64 if the values fit)",
        pa.null(): " (no values to infer a type from: build the column with an explicit type)",
    }.get(t, "")
    supported = ", ".join(str(s.arrow) for s in SQL_TYPES)
    raise WarmSchemaError(f"column {column!r} has type {t}{hint}; the warm tier stores {supported}")


def normalise(table: pa.Table) -> pa.Table:
    """``table`` with every column cast to its canonical type (what ``read`` gives back).

    Casts are safe: a timestamp with sub-microsecond digits fails instead of being truncated.
    """
    fields, columns = [], []
    for field, given in zip(table.schema, table.columns, strict=True):
        target = canonical_type(field.type, field.name)
        try:
            column = given if given.type == target else given.cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise WarmSchemaError(f"column {field.name!r} cannot be stored as {target}: {exc}") from None
        fields.append(pa.field(field.name, target))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _identifier(name: str, what: str) -> str:
    """``name`` double-quoted, after checking it is a plain lower-case SQL name.

    Lower case because PostgreSQL folds unquoted names: an analyst typing ``OEE_Daily``
    would not find a table created as ``"OEE_Daily"``.  At most 63 characters because
    PostgreSQL silently truncates longer names.
    """
    if not _IDENTIFIER.fullmatch(name):
        raise WarmSchemaError(
            f"{what} {name!r} must be lower case letters, digits and _ (at most 63, not a digit first)"
        )
    return f'"{name}"'


# ---------------------------------------------------------------------------------------
# The interface


@dataclass(frozen=True)
class PartitionWrite:
    """What one ``replace_partition`` did (for logs and Dagster metadata)."""

    backend: Backend
    table: str
    partition_column: str
    partition_value: Any
    rows_deleted: int
    rows_written: int
    created_table: bool
    lock_wait_s: float  # waiting for other writers (DuckDB's file lock, PostgreSQL's partition lock)
    seconds: float  # the whole call, lock wait included


@dataclass(frozen=True)
class _WritePlan:
    """A validated ``replace_partition`` request; shared by both backends."""

    table: str
    partition_column: str
    partition_value: Any  # a Python value of the partition column's canonical type
    data: pa.Table  # normalised
    columns: tuple[tuple[str, SqlType], ...]
    primary_key: tuple[str, ...]  # partition column first (it serves the DELETE as well)

    @classmethod
    def build(
        cls,
        table: str,
        partition_column: str,
        partition_value: object,
        data: pa.Table,
        primary_key: Sequence[str] | None,
    ) -> _WritePlan:
        _identifier(table, "table name")
        if len(set(data.column_names)) != len(data.column_names):
            raise WarmSchemaError(f"table {table!r}: duplicate column names in {data.column_names}")
        for name in data.column_names:
            _identifier(name, f"table {table!r}: column")
        if partition_column not in data.column_names:
            raise WarmSchemaError(f"table {table!r}: the partition column {partition_column!r} is not in the data")
        normalised = normalise(data)
        part_type = normalised.schema.field(partition_column).type
        value = _partition_scalar(partition_value, part_type, partition_column)
        _check_rows_belong(normalised[partition_column], value, table, partition_column)
        key: tuple[str, ...] = ()
        if primary_key:
            missing = [c for c in primary_key if c not in data.column_names]
            if missing:
                raise WarmSchemaError(f"table {table!r}: primary key columns {missing} are not in the data")
            if partition_column not in primary_key:
                # Keys that span partitions would let two writers of *different* partitions
                # compete for the same key (in PostgreSQL: wait on each other, deadlock).
                raise WarmSchemaError(
                    f"table {table!r}: the primary key {list(primary_key)} must include the partition column"
                    f" {partition_column!r}"
                )
            key = (partition_column, *(c for c in primary_key if c != partition_column))
        columns = tuple((f.name, _BY_ARROW[f.type]) for f in normalised.schema)
        return cls(table, partition_column, value.as_py(), normalised, columns, key)

    @property
    def partition_text(self) -> str:
        return str(self.partition_value)

    def column_list(self) -> str:
        return ", ".join(f'"{name}"' for name, _ in self.columns)

    def create_sql(self, backend: Backend) -> str:
        parts = [f'"{name}" {sql_type.name(backend)}' for name, sql_type in self.columns]
        if self.primary_key:
            parts.append("PRIMARY KEY (" + ", ".join(f'"{c}"' for c in self.primary_key) + ")")
        return f'CREATE TABLE "{self.table}" (' + ", ".join(parts) + ")"

    def check_schema(self, existing: dict[str, str], backend: Backend, where: str) -> None:
        """Refuse data whose columns or types differ from the existing table's."""
        wanted = {name: sql_type.name(backend) for name, sql_type in self.columns}
        if wanted == existing:
            return
        problems = [f"missing {sorted(set(existing) - set(wanted))}"] if set(existing) - set(wanted) else []
        if set(wanted) - set(existing):
            problems.append(f"not in the table {sorted(set(wanted) - set(existing))}")
        problems += [
            f"{name}: table has {existing[name]}, data has {wanted[name]}"
            for name in wanted
            if name in existing and existing[name] != wanted[name]
        ]
        raise WarmSchemaError(
            f"{where}: data for table {self.table!r} does not match its schema ({'; '.join(problems)});"
            " nothing was written (changing a table's schema is a migration: drop or alter it first)"
        )


def _partition_scalar(value: object, arrow_type: pa.DataType, column: str) -> pa.Scalar:
    scalar = value if isinstance(value, pa.Scalar) else pa.scalar(value)
    if scalar.type != arrow_type:
        try:
            scalar = scalar.cast(arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise WarmSchemaError(
                f"partition value {value!r} is not a {arrow_type} for column {column!r}: {exc}"
            ) from None
    if not scalar.is_valid:
        raise WarmSchemaError(f"partition value for column {column!r} must not be null")
    return scalar


def _check_rows_belong(column: pa.ChunkedArray, value: pa.Scalar, table: str, partition_column: str) -> None:
    """Every row must be in the partition being replaced (a stray row would survive the next
    replace of the partition it really belongs to, or be deleted by it)."""
    if len(column) == 0:
        return
    same = pc.fill_null(pc.equal(column, value), False)
    stray = len(column) - pc.sum(same.cast(pa.int64())).as_py()
    if stray:
        raise WarmSchemaError(
            f"table {table!r}: {stray} of {len(column)} rows have {partition_column} other than {value.as_py()!r}"
            " (or null); a partition write holds that partition's rows only"
        )


class WarmStore(ABC):
    """The warm tier: partitions in, SQL and Arrow out.  Build with :func:`warm_store`.

    Each call opens its own short-lived connection (a held DuckDB connection would lock
    every other process out of the file), so a store object is cheap, picklable and safe to
    share between threads.
    """

    backend: ClassVar[Backend]

    def replace_partition(
        self,
        table: str,
        partition_column: str,
        partition_value: object,
        data: pa.Table,
        *,
        primary_key: Sequence[str] | None = None,
    ) -> PartitionWrite:
        """Make ``data`` the whole content of one partition, atomically.

        Deletes the rows whose ``partition_column`` equals ``partition_value`` and inserts
        ``data`` in one transaction (an empty ``data`` empties the partition).  Creates the
        table from the data's schema if it does not exist, with ``primary_key`` (which must
        include the partition column) if given.  ``partition_value`` may be given as the
        column's Python value or as text (``"2026-01-02"`` for a date column: a Dagster
        daily partition key).  Raises :class:`WarmSchemaError` before touching anything
        when the data does not fit, :class:`WarmWriteError` when the database refuses it
        (rolled back), :class:`WarmLockTimeoutError` when other writers hold it too long.
        """
        plan = _WritePlan.build(table, partition_column, partition_value, data, primary_key)
        return self._replace(plan)

    @abstractmethod
    def _replace(self, plan: _WritePlan) -> PartitionWrite: ...

    @abstractmethod
    def read(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """Run one read-only query; placeholders are ``$1``, ``$2``, ... in both backends."""

    @abstractmethod
    def tables(self) -> list[str]:
        """Names of the warm tier's tables, sorted."""

    def row_count(self, table: str) -> int:
        """Rows in ``table``; :class:`WarmTableMissingError` if it does not exist."""
        quoted = _identifier(table, "table name")
        if table not in self.tables():
            raise WarmTableMissingError(f"{self.describe()}: no table {table!r} (tables: {self.tables()})")
        return int(self.read(f"SELECT count(*) AS n FROM {quoted}")["n"][0].as_py())

    @abstractmethod
    def describe(self) -> str:
        """Where the store lives, without secrets (for logs, errors and metadata)."""


# ---------------------------------------------------------------------------------------
# DuckDB: one file, one writing process at a time

_DUCKDB_LOCK_MESSAGE = "Could not set lock on file"
_BACKOFF_FIRST_S = 0.002
# A try of the lock file is one system call, so it is retried often (the turn passes to
# whoever tries first after a release); a DuckDB open reads the file, so less often.
_TURN_BACKOFF_MAX_S, _OPEN_BACKOFF_MAX_S = 0.02, 0.25


def _sleep_backoff(delay: float, cap: float, deadline: float) -> float:
    """Sleep a jittered ``delay`` (never past ``deadline``); return the next, doubled, delay."""
    time.sleep(min(random.uniform(delay / 2, delay), max(deadline - time.monotonic(), 0.0)))
    return min(delay * 2, cap)


class DuckDBWarmStore(WarmStore):
    """The warm tier in one DuckDB file (local profile).

    DuckDB lets one process at a time open a file read-write (or several read-only).
    Every operation therefore opens the file, does its work and closes it again, so no
    process keeps it.  PlantStream's processes (and threads) take turns through a lock
    file beside it (``<file>.lock``, ``flock``: exclusive to write, shared to read), waiting
    with jittered exponential backoff up to ``lock_timeout_s``.  The lock file matters:
    DuckDB reads the database header *before* it takes its own file lock, so an open racing
    another process's checkpoint can start from a stale header ("Could not read enough
    bytes", seen with four writer processes).  Holders outside PlantStream (an analyst's
    ``duckdb`` shell) only hold DuckDB's own lock: opens that find it taken are retried
    within the same budget, then fail naming the file and the holder.
    """

    backend: ClassVar[Backend] = "duckdb"

    def __init__(self, path: Path, *, lock_timeout_s: float) -> None:
        self.path = path.expanduser().resolve()
        self.lock_timeout_s = lock_timeout_s

    def describe(self) -> str:
        return f"duckdb:{self.path}"

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[tuple[duckdb.DuckDBPyConnection, float]]:
        """A connection (read-only unless ``write``) and the seconds spent waiting for others."""
        if not self.path.exists():
            self._create_file()
        start = time.monotonic()
        deadline = start + self.lock_timeout_s
        with self._turn(exclusive=write, deadline=deadline):
            con = self._open(write=write, deadline=deadline)
            waited = time.monotonic() - start
            try:
                con.execute("SET TimeZone = 'UTC'")
                yield con, waited
            finally:
                con.close()

    @contextlib.contextmanager
    def _turn(self, *, exclusive: bool, deadline: float) -> Iterator[None]:
        """Hold the lock file: exclusively to write, shared to read."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
            delay = _BACKOFF_FIRST_S
            while True:
                try:
                    fcntl.flock(fd, mode)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise WarmLockTimeoutError(
                            f"the warm-tier DuckDB file {self.path} stayed in use by other PlantStream processes for"
                            f" {self.lock_timeout_s:g} s (PLANTSTREAM_WARM__LOCK_TIMEOUT_S; they take turns through"
                            f" {self.lock_path})"
                        ) from None
                    delay = _sleep_backoff(delay, _TURN_BACKOFF_MAX_S, deadline)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _open(self, *, write: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        import duckdb

        delay = _BACKOFF_FIRST_S
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=not write)
            except duckdb.IOException as exc:
                if _DUCKDB_LOCK_MESSAGE not in str(exc):
                    raise WarmError(f"{self.describe()}: cannot open: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise WarmLockTimeoutError(
                        f"the warm-tier DuckDB file {self.path} stayed locked by another process for"
                        f" {self.lock_timeout_s:g} s (PLANTSTREAM_WARM__LOCK_TIMEOUT_S). DuckDB lets one process open"
                        f" a file to write at a time: close other sessions on it (e.g. an analyst's duckdb shell)."
                        f" {exc}"
                    ) from None
                delay = _sleep_backoff(delay, _OPEN_BACKOFF_MAX_S, deadline)

    def _create_file(self) -> None:
        """Create the (empty) database file atomically: built under a private name, then linked.

        Two processes opening a missing file at once race inside DuckDB: the second can find
        the file the first just created but has not initialised yet, and fails with "not a
        valid DuckDB database file".  ``link`` publishes a complete file or fails because
        another process published one first; either way a valid file is there.
        """
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        private = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.new")
        try:
            duckdb.connect(str(private)).close()
            with contextlib.suppress(FileExistsError):
                os.link(private, self.path)
        finally:
            for leftover in (private, private.with_name(private.name + ".wal")):
                leftover.unlink(missing_ok=True)

    @staticmethod
    def _columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str] | None:
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return {name: data_type for name, data_type in rows} if rows else None

    def _replace(self, plan: _WritePlan) -> PartitionWrite:
        import duckdb

        start = time.monotonic()
        with self._connect(write=True) as (con, waited):
            view = f"warm_incoming_{uuid.uuid4().hex}"
            con.execute("BEGIN TRANSACTION")
            try:
                existing = self._columns(con, plan.table)
                if existing is None:
                    con.execute(plan.create_sql("duckdb"))
                else:
                    plan.check_schema(existing, "duckdb", self.describe())
                deleted = con.execute(
                    f'DELETE FROM "{plan.table}" WHERE "{plan.partition_column}" = $1', [plan.partition_value]
                ).fetchone()
                con.register(view, plan.data)
                columns = plan.column_list()
                con.execute(f'INSERT INTO "{plan.table}" ({columns}) SELECT {columns} FROM "{view}"')
                con.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                if isinstance(exc, duckdb.Error):
                    raise WarmWriteError(
                        f"{self.describe()}: writing {plan.table} {plan.partition_column}={plan.partition_text}"
                        f" failed and was rolled back (the partition is as it was): {exc}"
                    ) from exc
                raise
            finally:
                with contextlib.suppress(duckdb.Error):
                    con.unregister(view)
        return PartitionWrite(
            backend=self.backend,
            table=plan.table,
            partition_column=plan.partition_column,
            partition_value=plan.partition_value,
            rows_deleted=int(deleted[0]) if deleted else 0,
            rows_written=plan.data.num_rows,
            created_table=existing is None,
            lock_wait_s=waited,
            seconds=time.monotonic() - start,
        )

    def read(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        import duckdb

        with self._connect(write=False) as (con, _):
            try:
                statements = con.extract_statements(sql)
            except duckdb.Error as exc:
                raise WarmQueryError(f"{self.describe()}: {exc}") from exc
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise WarmQueryError(f"{self.describe()}: read() runs exactly one query (SELECT ...), got: {sql[:200]}")
            try:
                return con.sql(sql, params=list(params) or None).to_arrow_table()
            except duckdb.Error as exc:
                raise WarmQueryError(f"{self.describe()}: {exc}") from exc

    def tables(self) -> list[str]:
        with self._connect(write=False) as (con, _):
            rows = con.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
            ).fetchall()
        return [name for (name,) in rows]


# ---------------------------------------------------------------------------------------
# PostgreSQL: transactions, one advisory lock per partition

_CSV_ROWS_PER_CHUNK = 65_536


def _advisory_key(*parts: str) -> int:
    """A 64-bit advisory-lock key for a name (namespaced, so other applications' keys differ).

    A collision only makes two unrelated writes wait for each other, never wrong.
    """
    digest = hashlib.blake2b("\x00".join(("plantstream.warm", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _csv_chunks(table: pa.Table) -> Iterator[bytes]:
    """``table`` as CSV for ``COPY ... (FORMAT csv)``, written by Arrow's C++ writer.

    Arrow quotes every string and leaves nulls as empty unquoted fields, which is exactly
    how PostgreSQL's CSV format tells an empty string from NULL; floats are written in
    their shortest exact form, timestamps as ISO 8601 with ``Z``.
    """
    options = pa_csv.WriteOptions(include_header=False, batch_size=_CSV_ROWS_PER_CHUNK)
    for batch in table.to_batches(max_chunksize=_CSV_ROWS_PER_CHUNK):
        sink = io.BytesIO()
        pa_csv.write_csv(batch, sink, options)
        yield sink.getvalue()


class PostgresWarmStore(WarmStore):
    """The warm tier in a PostgreSQL database (production profile), via psycopg 3.

    Concurrency comes from transactions: each partition write is one transaction that
    first takes a transaction-scoped advisory lock on (table, partition).  Without it two
    writers of the same partition would both delete the old rows and both insert (READ
    COMMITTED: the second DELETE cannot see the first writer's new rows), doubling the
    partition.  Writers of different partitions take different locks and touch disjoint
    rows (the primary key includes the partition column), so they never wait for each
    other and cannot deadlock.  Tables are created in a transaction of their own under a
    per-table advisory lock, because two concurrent ``CREATE TABLE IF NOT EXISTS`` can
    still fail on PostgreSQL's catalogue unique index.
    """

    backend: ClassVar[Backend] = "postgres"

    def __init__(self, dsn: SecretStr, *, lock_timeout_s: float) -> None:
        self._dsn = dsn
        self.lock_timeout_s = lock_timeout_s

    def __repr__(self) -> str:  # never the DSN: it holds the password
        return f"PostgresWarmStore({self.describe()})"

    def describe(self) -> str:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(self._dsn.get_secret_value())
        user = f"{params['user']}@" if params.get("user") else ""
        port = f":{params['port']}" if params.get("port") else ""
        return f"postgresql://{user}{params.get('host', '')}{port}/{params.get('dbname', '')}"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        import psycopg

        try:
            conn = psycopg.connect(self._dsn.get_secret_value(), autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:  # libpq's message names host and user, not the password
            raise WarmError(f"cannot connect to the warm tier {self.describe()}: {exc}") from None
        try:
            # UTC like DuckDB (date_trunc and ::date of timestamps agree across backends);
            # lock_timeout bounds every lock wait, the partition's advisory lock included.
            conn.execute(
                "SELECT set_config('TimeZone', 'UTC', false), set_config('lock_timeout', %s, false)",
                [f"{int(self.lock_timeout_s * 1000)}ms"],
            )
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _columns(conn: psycopg.Connection[Any], table: str) -> dict[str, str] | None:
        rows = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [f'"{table}"'],
        ).fetchall()
        return {name: data_type for name, data_type in rows} if rows else None

    def _ensure_table(self, conn: psycopg.Connection[Any], plan: _WritePlan) -> bool:
        """Create the table if missing (True if this call did); check its schema otherwise."""
        existing = self._columns(conn, plan.table)
        if existing is None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_advisory_key("table", plan.table)])
                existing = self._columns(conn, plan.table)  # a concurrent writer may have just created it
                if existing is None:
                    conn.execute(plan.create_sql("postgres"))
                    if not plan.primary_key:  # with one, its index (partition column first) serves the DELETE
                        conn.execute(f'CREATE INDEX ON "{plan.table}" ("{plan.partition_column}")')
                    return True
        plan.check_schema(existing, "postgres", self.describe())
        return False

    def _replace(self, plan: _WritePlan) -> PartitionWrite:
        import psycopg

        start = time.monotonic()
        where = f"{self.describe()}: writing {plan.table} {plan.partition_column}={plan.partition_text}"
        with self._connect() as conn:
            try:
                created = self._ensure_table(conn, plan)
                with conn.transaction():
                    lock_start = time.monotonic()
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(%s)",
                        [_advisory_key("partition", plan.table, plan.partition_text)],
                    )
                    lock_wait = time.monotonic() - lock_start
                    deleted = conn.execute(
                        f'DELETE FROM "{plan.table}" WHERE "{plan.partition_column}" = %s', [plan.partition_value]
                    ).rowcount
                    with conn.cursor().copy(
                        f'COPY "{plan.table}" ({plan.column_list()}) FROM STDIN (FORMAT csv)'
                    ) as copy:
                        for chunk in _csv_chunks(plan.data):
                            copy.write(chunk)
            except psycopg.errors.LockNotAvailable as exc:
                raise WarmLockTimeoutError(
                    f"{where}: waited longer than {self.lock_timeout_s:g} s for another writer"
                    f" (PLANTSTREAM_WARM__LOCK_TIMEOUT_S); nothing was written: {exc}"
                ) from exc
            except psycopg.Error as exc:
                raise WarmWriteError(f"{where} failed and was rolled back (the partition is as it was): {exc}") from exc
        return PartitionWrite(
            backend=self.backend,
            table=plan.table,
            partition_column=plan.partition_column,
            partition_value=plan.partition_value,
            rows_deleted=deleted,
            rows_written=plan.data.num_rows,
            created_table=created,
            lock_wait_s=lock_wait,
            seconds=time.monotonic() - start,
        )

    def read(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        import psycopg

        with self._connect() as conn:
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION READ ONLY")
                    # RawCursor: server-side $1 placeholders, the same as DuckDB's (and a
                    # literal % in LIKE patterns needs no escaping).
                    cursor = psycopg.RawCursor(conn)
                    cursor.execute(sql, list(params))
                    if cursor.description is None:
                        raise WarmQueryError(
                            f"{self.describe()}: read() runs a query; this returned no rows: {sql[:200]}"
                        )
                    description = cursor.description
                    rows = cursor.fetchall()
            except psycopg.Error as exc:
                raise WarmQueryError(f"{self.describe()}: {exc}") from exc
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in description]
        arrays = [
            pa.array(values, type=_ARROW_BY_OID.get(col.type_code))
            for col, values in zip(description, columns, strict=True)
        ]
        return pa.Table.from_arrays(arrays, names=[col.name for col in description])

    def tables(self) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
            ).fetchall()
        return [name for (name,) in rows]


# ---------------------------------------------------------------------------------------
# Built from the settings


def warm_duckdb_path(settings: Settings) -> Path:
    """``PLANTSTREAM_WARM__DUCKDB_PATH``, or ``<state_dir>/warm/warm.duckdb`` when empty."""
    configured = settings.warm.duckdb_path.strip()
    return Path(configured).expanduser().resolve() if configured else settings.state_dir / "warm" / "warm.duckdb"


def warm_store(settings: Settings) -> WarmStore:
    """The warm tier the settings name: DuckDB (local default) or PostgreSQL (production)."""
    warm = settings.warm
    if warm.backend == "postgres":
        return PostgresWarmStore(warm.postgres_dsn, lock_timeout_s=warm.lock_timeout_s)
    return DuckDBWarmStore(warm_duckdb_path(settings), lock_timeout_s=warm.lock_timeout_s)
