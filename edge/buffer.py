"""The durable store-and-forward buffer: SQLite in WAL mode with ``synchronous=FULL``.

One database file holds the buffered events of every stream (telemetry, machine
events, parts, energy: each row names its stream), the per-machine, per-stream sequence
numbers, the source-time watermarks, what the machine tracker remembers (last state and
counter values: :mod:`plantstream.edge.machine_tracker`), the overflow record and the
last Kafka offsets the gateway saw delivered.  Events, sequence numbers, watermarks and
tracker memory are written in one transaction, and that transaction is fsynced before
the observations count as collected (and before MQTT messages are acknowledged): after
``kill -9`` or a power cut the buffer, the numbering, the counters and the dedup state
agree.

Rows are deleted only after Kafka's delivery report; they are replayed in ``id`` order,
which is sequence order per machine and stream because numbers are taken in the same
order rows are inserted.

Overflow (``buffer_max_events`` / ``buffer_max_mb``):

* ``drop_oldest`` (default): the oldest buffered events are deleted to make room, so
  the newest plant state keeps flowing after a long outage;
* ``drop_newest``: new events are refused while the buffer is full, so the history
  from the start of the outage is kept.

Either way the dropped events already had their sequence numbers, so each loss shows
up in ``plantstream gaps`` as a missing range; it is also counted per machine here, in
the ``plantstream_edge_buffer_dropped_total`` metric and in the log.  Collection never
stops and the gateway never crashes because the buffer is full.

All methods are synchronous and must be called from one thread (the gateway runs them
on a single-thread executor); ``EdgeStore.open_readonly`` is for other processes
(``plantstream gaps``), which WAL lets read while the gateway writes.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from plantstream.contract import Codec
from plantstream.contract.streams import EVENTS_STREAM, STREAMS
from plantstream.edge.collectors.base import Observation, Reading
from plantstream.edge.machine_tracker import MachineTracker, PartsFrom
from plantstream.edge.normalize import Identity, derived_event, to_telemetry
from plantstream.edge.sequencer import Sequencer

OverflowPolicy = Literal["drop_oldest", "drop_newest"]
#: Bytes a row costs besides its payload (SQLite record and index overhead, roughly).
ROW_OVERHEAD = 48

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, machine_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL, protocol TEXT NOT NULL, read_ts INTEGER NOT NULL, payload BLOB NOT NULL,"
    " stream TEXT NOT NULL DEFAULT 'telemetry')",
    "CREATE TABLE IF NOT EXISTS dropped (machine_id TEXT PRIMARY KEY, count INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kafka_offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL,"
    " last_offset INTEGER NOT NULL, PRIMARY KEY (topic, partition))",
)


@dataclass(frozen=True, slots=True)
class Pending:
    identity: Identity
    protocol: str
    reading: Observation


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    machine_id: str
    seq: int
    protocol: str
    payload: bytes
    stream: str = "telemetry"


@dataclass
class AppendResult:
    stored: Counter[str] = field(default_factory=Counter)  # per protocol
    repeats: Counter[str] = field(default_factory=Counter)  # per protocol: already-seen source times
    dropped: Counter[str] = field(default_factory=Counter)  # per machine: lost to the overflow policy


@dataclass(frozen=True, slots=True)
class BufferStats:
    events: int
    bytes: int
    oldest_read_ts: int | None


class EdgeStore:
    def __init__(
        self,
        path: Path,
        *,
        max_events: int = 2_000_000,
        max_bytes: int = 1 << 30,
        policy: OverflowPolicy = "drop_oldest",
        readonly: bool = False,
        energy_interval_ms: int = 60_000,
        parts_from: dict[str, PartsFrom] | None = None,
    ) -> None:
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.policy: OverflowPolicy = policy
        self.codecs = {spec.name: Codec(spec.payload) for spec in STREAMS}
        self.sequencer = Sequencer()
        self.tracker = MachineTracker(energy_interval_ms, dict(parts_from or {}))
        if readonly:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            for ddl in _SCHEMA:
                self.conn.execute(ddl)
            if "stream" not in [row[1] for row in self.conn.execute("PRAGMA table_info(events)")]:
                # A buffer of a telemetry-only gateway: everything in it is telemetry.
                self.conn.execute("ALTER TABLE events ADD COLUMN stream TEXT NOT NULL DEFAULT 'telemetry'")
            Sequencer.create_schema(self.conn)
            MachineTracker.create_schema(self.conn)
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.sequencer.load(self.conn)
        if not readonly:
            self.tracker.load(self.conn)
        count, size = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events").fetchone()
        self.events = int(count)
        self.bytes = int(size) + ROW_OVERHEAD * self.events

    @classmethod
    def open_readonly(cls, path: Path) -> EdgeStore:
        return cls(path, readonly=True)

    def close(self) -> None:
        self.conn.close()

    # -- writing -------------------------------------------------------------------------

    def append(self, pending: list[Pending]) -> AppendResult:
        """Sequence, encode and durably store observations (one fsynced transaction).

        Readings become telemetry; controller status and inspection results go through
        the machine tracker, which turns them into machine events, parts and energy
        readings, each numbered in its own stream.
        """
        result = AppendResult()
        rows: list[tuple[str, int, str, int, bytes, str]] = []
        seq = self.sequencer
        encode_telemetry = self.codecs["telemetry"].encode
        for item in pending:
            r = item.reading
            if isinstance(r, Reading):
                if seq.is_repeat(r.machine_id, r.signal, r.source_ts):
                    result.repeats[item.protocol] += 1
                    continue
                number = seq.take(r.machine_id, r.signal, r.source_ts)
                state_seq = seq.latest(r.machine_id, EVENTS_STREAM.name)
                payload = encode_telemetry(to_telemetry(item.identity, r, number, state_seq))
                rows.append((r.machine_id, number, item.protocol, r.read_ts, payload, "telemetry"))
                continue
            for derived in self.tracker.observe(r):
                number = seq.take_stream(r.machine_id, derived.stream)
                event = derived_event(item.identity, derived, number)
                rows.append(
                    (
                        r.machine_id,
                        number,
                        item.protocol,
                        derived.read_ts,
                        self.codecs[derived.stream].encode(event),
                        derived.stream,
                    )
                )
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            rows = self._make_room(rows, result)
            self.conn.executemany(
                "INSERT INTO events (machine_id, seq, protocol, read_ts, payload, stream) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            seq.persist(self.conn)
            self.tracker.persist(self.conn)
            if result.dropped:
                self.conn.executemany(
                    "INSERT INTO dropped VALUES (?, ?) ON CONFLICT (machine_id)"
                    " DO UPDATE SET count = count + excluded.count",
                    list(result.dropped.items()),
                )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            # The numbers and counter steps taken above were not stored: take them again.
            self.sequencer.load(self.conn)
            self.tracker.load(self.conn)
            self._recount()
            raise
        for row in rows:
            result.stored[row[2]] += 1
            self.events += 1
            self.bytes += len(row[4]) + ROW_OVERHEAD
        return result

    def _make_room(
        self, rows: list[tuple[str, int, str, int, bytes, str]], result: AppendResult
    ) -> list[tuple[str, int, str, int, bytes, str]]:
        incoming = sum(len(r[4]) + ROW_OVERHEAD for r in rows)
        over_events = self.events + len(rows) - self.max_events
        over_bytes = self.bytes + incoming - self.max_bytes
        if over_events <= 0 and over_bytes <= 0:
            return rows
        if self.policy == "drop_newest":
            keep: list[tuple[str, int, str, int, bytes, str]] = []
            events, size = self.events, self.bytes
            for row in rows:
                cost = len(row[4]) + ROW_OVERHEAD
                if events + 1 <= self.max_events and size + cost <= self.max_bytes:
                    keep.append(row)
                    events, size = events + 1, size + cost
                else:
                    result.dropped[row[0]] += 1
            return keep
        # drop_oldest: free enough of the oldest rows (estimated by the average row size).
        avg = max(self.bytes // max(self.events, 1), ROW_OVERHEAD + 1)
        need = max(over_events, -(-over_bytes // avg) if over_bytes > 0 else 0)
        freed = self.conn.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)"
            " RETURNING machine_id, LENGTH(payload)",
            (need,),
        ).fetchall()
        for machine_id, length in freed:
            result.dropped[machine_id] += 1
            self.events -= 1
            self.bytes -= length + ROW_OVERHEAD
        if len(rows) > self.max_events:  # a single batch larger than the whole buffer
            for row in rows[: len(rows) - self.max_events]:
                result.dropped[row[0]] += 1
            rows = rows[len(rows) - self.max_events :]
        return rows

    def _recount(self) -> None:
        count, size = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events").fetchone()
        self.events = int(count)
        self.bytes = int(size) + ROW_OVERHEAD * self.events

    # -- forwarding ----------------------------------------------------------------------

    def read_after(self, after_id: int, limit: int) -> list[Row]:
        return [
            Row(*r)
            for r in self.conn.execute(
                "SELECT id, machine_id, seq, protocol, payload, stream FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        ]

    def delete(self, ids: list[int], offsets: dict[tuple[str, int], int] | None = None) -> int:
        """Delete delivered (or reconciled) rows; record the highest delivered offset per partition."""
        if not ids and not offsets:
            return 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            gone = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for (length,) in self.conn.execute(
                    f"DELETE FROM events WHERE id IN ({marks}) RETURNING LENGTH(payload)", chunk
                ):
                    gone += 1
                    self.bytes -= length + ROW_OVERHEAD
            if offsets:
                self.conn.executemany(
                    "INSERT INTO kafka_offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition)"
                    " DO UPDATE SET last_offset = MAX(last_offset, excluded.last_offset)",
                    [(t, p, o) for (t, p), o in offsets.items()],
                )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._recount()
            raise
        self.events -= gone
        return gone

    def kafka_offsets(self, topic: str) -> dict[int, int]:
        return dict(self.conn.execute("SELECT partition, last_offset FROM kafka_offsets WHERE topic = ?", (topic,)))

    def buffered_keys(self) -> dict[str, dict[tuple[str, int], int]]:
        """Per stream, ``(machine_id, seq) -> row id`` of every buffered event (for reconciliation)."""
        out: dict[str, dict[tuple[str, int], int]] = {}
        for i, m, s, stream in self.conn.execute("SELECT id, machine_id, seq, stream FROM events"):
            out.setdefault(stream, {})[(m, s)] = i
        return out

    def min_read_ts(self, stream: str | None = None) -> int | None:
        sql, args = "SELECT MIN(read_ts) FROM events", ()
        if stream is not None:
            sql, args = sql + " WHERE stream = ?", (stream,)
        row = self.conn.execute(sql, args).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- reporting -----------------------------------------------------------------------

    def stats(self) -> BufferStats:
        row = self.conn.execute("SELECT read_ts FROM events ORDER BY id LIMIT 1").fetchone()
        return BufferStats(self.events, self.bytes, None if row is None else int(row[0]))

    def produced(self) -> dict[tuple[str, str], int]:
        """``(machine_id, stream) -> next sequence number``: the gateway produced ``0 .. next-1``."""
        return {(m, s): n for m, s, n in self.conn.execute("SELECT machine_id, stream, next_seq FROM sequences")}

    def pending_seqs(self) -> dict[tuple[str, str], list[int]]:
        out: dict[tuple[str, str], list[int]] = {}
        for machine_id, stream, number in self.conn.execute("SELECT machine_id, stream, seq FROM events ORDER BY id"):
            out.setdefault((machine_id, stream), []).append(number)
        return out

    def dropped_counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT machine_id, count FROM dropped"))
