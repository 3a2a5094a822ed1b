"""What changed in a Delta table between two versions, read from its commit log.

Comparing the file lists of two snapshots (what the silver asset does to find new
bronze rows) also reports the files a compaction or Z-order *rewrote*: new names,
old rows.  The commits themselves say which is which: a writer's ``add`` action has
``dataChange = true``, an optimize's has ``false``.  Reading the commits
``since+1 .. until`` (small JSON files, one GET each) therefore gives exactly the files
with new data and the partitions they landed in: what the bronze sensor needs to know
which days of gold went stale, and what an incremental reader needs to skip
maintenance rewrites.

Commits older than the table's log retention (30 days by default) are removed at
checkpoints; asking for changes since such a version raises :class:`LogGoneError`
(:func:`partitions_changed` then reports every partition).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

#: Commits read in parallel (each is one small GET).
READ_THREADS = 8
#: Beyond this many commits, comparing two snapshots is cheaper than reading every commit.
MAX_COMMITS_READ = 500


class LogGoneError(LookupError):
    """A commit of the requested range is no longer in the log."""


@dataclass(frozen=True)
class DataFile:
    path: str
    partition_values: dict[str, str | None]
    rows: int | None


@dataclass(frozen=True)
class Changes:
    """New data between two versions.

    ``files``: data files added in the range that are still live at its end (reading
    exactly these gives the new rows, unless ``rewritten``).  ``partitions``: partition
    values of *every* data-changing add of the range.  ``rewritten``: some file added in
    the range was removed again in it (an optimize moved its rows into a file that also
    holds older rows), so ``files`` alone no longer holds all new rows.
    """

    files: list[DataFile]
    partitions: list[dict[str, str | None]]
    rewritten: bool
    rows_added: int = 0  # rows of every data-changing add of the range
    data_removed: bool = False  # a data-changing remove (a delete, an overwrite) is in the range


def commit_path(version: int) -> str:
    return f"_delta_log/{version:020d}.json"


def _read_commit(filesystem: Any, table: DeltaTable, version: int) -> list[dict]:
    try:
        with filesystem.open_input_stream(commit_path(version)) as stream:
            text = stream.read().decode()
    except FileNotFoundError as exc:
        raise LogGoneError(f"commit {version} of {table.table_uri} is no longer in the log") from exc
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def changes_between(table: DeltaTable, since_version: int, until_version: int | None = None) -> Changes:
    """What commits ``since_version+1 .. until_version`` (default: the loaded version) added."""
    until = table.version() if until_version is None else until_version
    versions = list(range(since_version + 1, until + 1))
    if not versions:
        return Changes([], [], rewritten=False)
    filesystem = table.to_pyarrow_dataset().filesystem  # the table's own object store (credentials, endpoint)
    with ThreadPoolExecutor(min(READ_THREADS, len(versions))) as pool:
        commits = list(pool.map(lambda v: _read_commit(filesystem, table, v), versions))
    live: dict[str, DataFile] = {}
    partitions: list[dict[str, str | None]] = []
    rewritten = removed = False
    rows = 0
    for actions in commits:
        for action in actions:
            if "add" in action and action["add"].get("dataChange", True):
                add = action["add"]
                stats = json.loads(add["stats"]) if add.get("stats") else {}
                values = dict(add.get("partitionValues") or {})
                live[add["path"]] = DataFile(add["path"], values, stats.get("numRecords"))
                partitions.append(values)
                rows += int(stats.get("numRecords") or 0)
            elif "remove" in action:
                remove = action["remove"]
                removed = removed or bool(remove.get("dataChange", True))
                if remove["path"] in live:
                    del live[remove["path"]]
                    rewritten = True
    return Changes(list(live.values()), partitions, rewritten, rows, removed)


def _partitions_now(table: DeltaTable, column: str) -> set[str]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return {str(v) for v in actions.column(f"partition.{column}").to_pylist() if v is not None}


def partitions_changed(
    table: DeltaTable,
    since_version: int,
    column: str,
    *,
    storage_options: dict[str, str] | None = None,
    max_commits: int = MAX_COMMITS_READ,
) -> set[str]:
    """Values of partition ``column`` that received new data after ``since_version`` (up to the loaded version).

    ``since_version < 0`` (nothing seen yet): every partition the table holds.  More than
    ``max_commits`` commits in between (a sensor that was off for a day): the partitions of
    the files the table has now and had not then, a superset (files an optimize rewrote
    count too) for the price of loading one old snapshot instead of thousands of commits.
    Commits or the old snapshot gone (the log expired): every partition, again a superset:
    safe for "what must be recomputed", where a guess would not be.
    """
    if since_version < 0:
        return _partitions_now(table, column)
    if table.version() - since_version > max_commits:
        try:
            old = DeltaTable(table.table_uri, version=since_version, storage_options=storage_options)
        except DeltaError:  # the old version's log is gone (OSError, an unreachable store, still raises)
            return _partitions_now(table, column)
        before = set(old.file_uris())
        return {
            part.split("=", 1)[1]
            for uri in table.file_uris()
            if uri not in before
            for part in uri.split("/")
            if part.startswith(f"{column}=")
        }
    try:
        changes = changes_between(table, since_version)
    except LogGoneError:
        return _partitions_now(table, column)
    return {str(p[column]) for p in changes.partitions if p.get(column) is not None}
