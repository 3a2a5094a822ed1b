"""The live OEE branch of the plant flow: Bytewax glue around ``streaming/oee_live.py``.

::

    events ─┐
    quality ┼─► OEE state per Kafka partition ──► machine rows ──┬──────────────► hot store oee_live
    energy  ┤   (PartitionOee: intervals, parts,  └─► twin branch │
    telemetry┘   the partition's clock)                            │
                      └─► line inputs ─► key by line ─► LineOee ──┘ (line rows)

The OEE state is keyed by the Kafka partition key like every other stateful step, and all
four topics have the same partition count and key (``machine_id``): a machine's events,
parts, meter readings and telemetry all reach the same state, on the worker that reads the
partition - no batch crosses processes.  Only the small line inputs are re-keyed by line.
Both states are Bytewax recovery state (snapshotted with the source offsets).
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Mapping
from typing import Any

import bytewax.operators as op
import pyarrow as pa
from bytewax.operators import StatefulBatchLogic

from plantstream.settings import Settings
from plantstream.simulator.plant_config import load_plant
from plantstream.streaming.derived_sinks import DerivedTableSink
from plantstream.streaming.hot_tables import OEE_LIVE_TABLE
from plantstream.streaming.oee_live import (
    CLOCK_STREAMS,
    OEE_LIVE_SCHEMA,
    ROW_KEY,
    LineInput,
    LineOee,
    LineOeeRow,
    MachineOee,
    OeeConfig,
    OeeOutput,
    PartitionOee,
    oee_row,
)
from plantstream.streaming.plant_gauges import PLANT_GAUGES
from plantstream.streaming.worker_routing import partition_key

log = logging.getLogger(__name__)

# Rows wait at most this long for more before they are inserted (a minute's step of a few
# hundred machines and lines fits in one insert).
OEE_INSERT_ROWS = 20_000
OEE_INSERT_MAX_DELAY_S = 1.0


class PartitionOeeLogic(StatefulBatchLogic[Any, OeeOutput, dict]):
    """One :class:`PartitionOee` per Kafka partition."""

    def __init__(self, config: OeeConfig, resume_state: dict | None, *, streams: tuple[str, ...]) -> None:
        self.oee = PartitionOee(config, resume_state, streams=streams)

    def on_batch(self, values: list[Any]) -> tuple[list[OeeOutput], bool]:
        out: list[OeeOutput] = []
        for batch in values:
            out.extend(self.oee.process(batch))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[OeeOutput], bool]:
        return self.oee.finish(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict:
        return self.oee.snapshot()


class LineOeeLogic(StatefulBatchLogic[LineInput, LineOeeRow, dict]):
    """One :class:`LineOee` per production line."""

    def __init__(self, config: OeeConfig, resume_state: dict | None) -> None:
        self.line = LineOee(config, resume_state)

    def on_batch(self, values: list[LineInput]) -> tuple[list[LineOeeRow], bool]:
        out: list[LineOeeRow] = []
        for item in values:
            out.extend(self.line.process(item))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict:
        return self.line.snapshot()


def oee_inserts(items: list[MachineOee | LineOeeRow]) -> list[tuple[pa.Table, str]]:
    """One insert of the rows of one call: the last row per key (the newest figures), tokened
    by the rows' keys and versions."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in items:
        row = oee_row(item)
        key = tuple(row[c] for c in ROW_KEY)
        known = rows.get(key)
        if known is None or known["version"] <= row["version"]:
            rows[key] = row
    if not rows:
        return []
    ordered = [rows[k] for k in sorted(rows, key=repr)]
    digest = hashlib.sha256("\n".join(f"{k!r}:{rows[k]['version']}" for k in sorted(rows, key=repr)).encode())
    return [(pa.Table.from_pylist(ordered, schema=OEE_LIVE_SCHEMA), f"oee:{len(ordered)}:{digest.hexdigest()}")]


def _one_row(_item: object) -> int:
    return 1


def add_live_oee(inputs: Mapping[str, Any], settings: Settings, *, flow: str = "plant") -> Any | None:
    """Attach live OEE to the flow's decoded streams (``inputs``: stream name -> ``StreamInput``).

    Returns the machine rows (keyed by partition key) for the twin branch, or ``None`` when
    the flow has no machine events or no quality stream (nothing to compute OEE from).
    """
    if "events" not in inputs or "quality" not in inputs:
        return None
    feeding = [inputs[name] for name in CLOCK_STREAMS if name in inputs]
    partitions = sorted(inputs["events"].partitions)
    for inp in feeding:
        if sorted(inp.partitions) != partitions:
            raise ValueError(
                f"live OEE needs every stream on the same partitions (key machine_id): {inp.topic} has "
                f"{sorted(inp.partitions)}, {inputs['events'].topic} {partitions}"
            )
    config = OeeConfig.from_plant(load_plant(settings.plant_file or None), settings, partitions)
    streams = tuple(inp.spec.name for inp in feeding)
    merged = op.merge("oee_in", *(inp.decoded for inp in feeding))
    outputs = op.stateful_batch("oee", merged, lambda resume: PartitionOeeLogic(config, resume, streams=streams))
    split = op.branch("oee_machine_or_line", outputs, lambda kv: isinstance(kv[1], MachineOee))
    machine_rows = split.trues
    by_line = op.map("oee_by_line", split.falses, lambda kv: (kv[1].line_key, kv[1]))
    line_rows = op.stateful_batch("oee_lines", by_line, lambda resume: LineOeeLogic(config, resume))
    line_rows = op.inspect("oee_gauges", line_rows, lambda _step, kv: PLANT_GAUGES.add_line_row(kv[1]))
    sink_keys = [partition_key(p) for p in partitions]

    def to_sink_key(kv: tuple[str, LineOeeRow]) -> tuple[str, LineOeeRow]:
        return sink_keys[zlib.crc32(kv[0].encode()) % len(sink_keys)], kv[1]

    rows = op.merge("oee_rows", machine_rows, op.map("oee_line_rows", line_rows, to_sink_key))
    op.output(
        "oee_hot_out",
        rows,
        DerivedTableSink(
            settings,
            partitions,
            table=OEE_LIVE_TABLE,
            sink="hot_oee",
            prepare=oee_inserts,
            rows_of=_one_row,
            coalesce_rows=OEE_INSERT_ROWS,
            max_delay_s=OEE_INSERT_MAX_DELAY_S,
            flow=flow,
        ),
    )
    return machine_rows


__all__ = ["add_live_oee", "oee_inserts"]
