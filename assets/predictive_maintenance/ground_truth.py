"""The plant's ground truth in the lake: ``bronze/ground_truth``, imported from the simulator's logs.

The simulator writes what really happened (``simulator/ground_truth.py``) as JSON lines,
append-only, under its state directory: ``<state_dir>/simulator/**/ground_truth.jsonl``
(``plantstream simulate serve``, the live plant, ``plantstream simulate history``), or
wherever ``PLANTSTREAM_MODELS__GROUND_TRUTH_DIR`` points.  A real plant's equivalent is
its maintenance management system's work orders.  Labels are computed from this table,
never from a local file, so a model can be retrained from the lake alone.

The import is incremental and exactly-once per file: each commit appends the new complete
lines of every log and records, as a Delta application transaction per file
(``plantstream.ground_truth:<path relative to the directory>``), the byte offset it read
up to, in the same atomic commit.  Running it again imports nothing new; a log that
shrank (replaced rather than appended to) is an error, not a silent re-import.

Only the answer-key kinds are kept (:data:`GROUND_TRUTH_KINDS`: failures, maintenance,
planned downtime, injected faults, and state changes, which also tell up to when the
log is known); parts and the per-minute energy readings are in silver already (the
quality and energy streams) and would be ~90 % of the rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from plantstream.contract.columns import TIMESTAMP_MS_UTC
from plantstream.orchestration.resources import Lake
from plantstream.settings import Settings
from plantstream.simulator.ground_truth import GroundTruthEntry

TIER, NAME = "bronze", "ground_truth"
LOG_NAME = "ground_truth.jsonl"
GROUND_TRUTH_KINDS: tuple[str, ...] = (
    "failure",
    "maintenance",
    "planned_downtime",
    "sensor_fault",
    "device_fault",
    "state",
)
_SKIPPED = tuple(f'"kind":"{kind}"'.encode() for kind in ("part", "energy"))
#: Bytes of a log read per batch (a few hundred thousand lines).
READ_BYTES = 64 << 20

GROUND_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("ts", TIMESTAMP_MS_UTC, nullable=False),
        pa.field("machine_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("signal", pa.string(), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),  # JSON object ("{}" for none)
        pa.field("source", pa.string(), nullable=False),  # the log, relative to the ground-truth directory
        pa.field("offset", pa.int64(), nullable=False),  # byte offset of the line in it
        pa.field("event_date", pa.date32(), nullable=False),
    ]
)


def ground_truth_dir(settings: Settings) -> Path:
    """Where the ground-truth logs are: ``PLANTSTREAM_MODELS__GROUND_TRUTH_DIR``, else ``<state_dir>/simulator``."""
    configured = settings.models.ground_truth_dir
    return Path(configured).expanduser().resolve() if configured else settings.state_dir / "simulator"


def app_id(source: str) -> str:
    return f"plantstream.ground_truth:{source}"


@dataclass(frozen=True)
class ImportReport:
    files: int
    rows_added: int
    bytes_read: int
    per_file: dict[str, int]  # source -> rows added
    version: int | None  # the table's version after the import (None: still no table)


def _decode(chunk: bytes, base_offset: int, decoder: msgspec.json.Decoder) -> list[tuple[int, GroundTruthEntry]]:
    out = []
    position = 0
    for line in chunk.split(b"\n"):
        offset = base_offset + position
        position += len(line) + 1
        if not line or any(marker in line for marker in _SKIPPED):
            continue
        entry = decoder.decode(line)
        if entry.kind in GROUND_TRUTH_KINDS:
            out.append((offset, entry))
    return out


def _rows(source: str, decoded: list[tuple[int, GroundTruthEntry]]) -> pa.Table:
    ts = np.array([e.ts for _, e in decoded], dtype=np.int64)
    columns = {
        "ts": pa.array(ts).cast(TIMESTAMP_MS_UTC),
        "machine_id": pa.array([e.machine_id for _, e in decoded], pa.string()),
        "kind": pa.array([e.kind for _, e in decoded], pa.string()),
        "mode": pa.array([e.mode for _, e in decoded], pa.string()),
        "duration_s": pa.array([float(e.duration_s) for _, e in decoded], pa.float64()),
        "reason": pa.array([e.reason for _, e in decoded], pa.string()),
        "signal": pa.array([e.signal for _, e in decoded], pa.string()),
        "endpoint": pa.array([e.endpoint for _, e in decoded], pa.string()),
        "detail": pa.array([json.dumps(e.detail, sort_keys=True) for _, e in decoded], pa.string()),
        "source": pa.array([source] * len(decoded), pa.string()),
        "offset": pa.array([o for o, _ in decoded], pa.int64()),
        "event_date": pa.array(ts // 86_400_000, pa.int32()).cast(pa.date32()),
    }
    return pa.Table.from_pydict(columns, schema=GROUND_TRUTH_SCHEMA)


def import_ground_truth(lake: Lake, directory: Path | None = None) -> ImportReport:
    """Append the new complete lines of every ``ground_truth.jsonl`` under ``directory`` (one commit)."""
    directory = directory or ground_truth_dir(lake.settings)
    table = lake.table(TIER, NAME)
    decoder = msgspec.json.Decoder(GroundTruthEntry)
    parts: list[pa.Table] = []
    transactions: list[Transaction] = []
    per_file: dict[str, int] = {}
    read = 0
    logs = sorted(directory.rglob(LOG_NAME)) if directory.exists() else []
    for path in logs:
        source = path.relative_to(directory).as_posix()
        done = table.transaction_version(app_id(source)) if table is not None else None
        start = 0 if done is None else done
        size = path.stat().st_size
        if size < start:
            raise ValueError(
                f"{path} has {size} bytes but {start} were imported from it: the log was replaced, not appended to "
                f"(ground-truth logs are append-only); move it away or import it under another name"
            )
        with path.open("rb") as handle:
            handle.seek(start)
            offset = start
            added = 0
            while True:
                chunk = handle.read(READ_BYTES)
                if not chunk:
                    break
                complete = chunk.rfind(b"\n") + 1  # a line still being written waits for the next import
                if complete == 0:
                    break
                decoded = _decode(chunk[: complete - 1], offset, decoder)
                if decoded:
                    parts.append(_rows(source, decoded))
                    added += len(decoded)
                offset += complete
                read += complete
                if complete < len(chunk):
                    handle.seek(offset)
        if offset > start:
            transactions.append(Transaction(app_id(source), offset))
            per_file[source] = added
    rows = sum(p.num_rows for p in parts)
    if transactions:
        write_deltalake(
            lake.table_uri(TIER, NAME),
            pa.concat_tables(parts) if parts else GROUND_TRUTH_SCHEMA.empty_table(),
            mode="append",
            partition_by=["event_date"],
            storage_options=lake.storage_options,
            commit_properties=CommitProperties(app_transactions=transactions),
        )
        table = lake.table(TIER, NAME)
    return ImportReport(len(logs), rows, read, per_file, None if table is None else table.version())


def read_ground_truth(lake: Lake, first_day, last_day, *, version: int | None = None) -> pa.Table:
    """Rows with ``first_day <= event_date <= last_day`` (``ts`` as a timestamp), at ``version`` if given."""
    from plantstream.assets.gold.inputs import day_filter

    table = lake.table(TIER, NAME, version)
    if table is None:
        raise LookupError(f"{TIER}/{NAME} does not exist yet: materialise bronze/ground_truth (the simulator's logs)")
    columns = ["ts", "machine_id", "kind", "mode", "duration_s", "reason"]
    return table.to_pyarrow_dataset().to_table(columns=columns, filter=day_filter(first_day, last_day))
