"""Per-machine, per-stream sequence numbers that survive restarts, and source-time watermarks.

Both are kept in memory and written by :class:`~plantstream.edge.buffer.EdgeStore` in
the same SQLite transaction as the events that used them: after a crash the next
number is exactly one past the last buffered event of that machine and stream, never
reused and never skipped (the contract numbers every stream of a machine on its own).
The watermarks (latest source timestamp per machine and signal) make a re-delivered
reading (an MQTT QoS 1 duplicate, the initial value an OPC UA subscription sends after
a reconnect) recognisable, so an old measurement is never re-emitted as a new event.
"""

from __future__ import annotations

import sqlite3


class Sequencer:
    def __init__(self) -> None:
        self.next_seq: dict[tuple[str, str], int] = {}  # (machine_id, stream) -> next number
        self.watermarks: dict[tuple[str, str], int] = {}
        self._dirty_seq: set[tuple[str, str]] = set()
        self._dirty_wm: set[tuple[str, str]] = set()

    @staticmethod
    def create_schema(conn: sqlite3.Connection) -> None:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sequences)")]
        if columns and "stream" not in columns:  # a buffer of a telemetry-only gateway: keep its numbering
            conn.execute("ALTER TABLE sequences RENAME TO sequences_v1")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sequences (machine_id TEXT NOT NULL, stream TEXT NOT NULL,"
            " next_seq INTEGER NOT NULL, PRIMARY KEY (machine_id, stream))"
        )
        if columns and "stream" not in columns:
            conn.execute("INSERT INTO sequences SELECT machine_id, 'telemetry', next_seq FROM sequences_v1")
            conn.execute("DROP TABLE sequences_v1")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS watermarks (machine_id TEXT NOT NULL, signal TEXT NOT NULL,"
            " source_ts INTEGER NOT NULL, PRIMARY KEY (machine_id, signal))"
        )

    def load(self, conn: sqlite3.Connection) -> None:
        self.next_seq = {(m, s): n for m, s, n in conn.execute("SELECT machine_id, stream, next_seq FROM sequences")}
        self.watermarks = {(m, s): ts for m, s, ts in conn.execute("SELECT * FROM watermarks")}
        self._dirty_seq.clear()
        self._dirty_wm.clear()

    def is_repeat(self, machine_id: str, signal: str, source_ts: int | None) -> bool:
        """True if a reading with this source time (or a later one) was already taken."""
        if source_ts is None:
            return False
        last = self.watermarks.get((machine_id, signal))
        return last is not None and source_ts <= last

    def take(self, machine_id: str, signal: str, source_ts: int | None) -> int:
        """The next telemetry number of the machine, moving the signal's watermark."""
        if source_ts is not None:
            self.watermarks[(machine_id, signal)] = source_ts
            self._dirty_wm.add((machine_id, signal))
        return self.take_stream(machine_id, "telemetry")

    def latest(self, machine_id: str, stream: str) -> int | None:
        """The last number taken in ``stream`` for the machine (None: none yet)."""
        following = self.next_seq.get((machine_id, stream))
        return None if not following else following - 1

    def take_stream(self, machine_id: str, stream: str) -> int:
        key = (machine_id, stream)
        seq = self.next_seq.get(key, 0)
        self.next_seq[key] = seq + 1
        self._dirty_seq.add(key)
        return seq

    def persist(self, conn: sqlite3.Connection) -> None:
        """Write what changed; call inside the transaction that stores the events."""
        if self._dirty_seq:
            conn.executemany(
                "INSERT INTO sequences VALUES (?, ?, ?) ON CONFLICT (machine_id, stream)"
                " DO UPDATE SET next_seq = excluded.next_seq",
                [(m, s, self.next_seq[(m, s)]) for m, s in self._dirty_seq],
            )
        if self._dirty_wm:
            conn.executemany(
                "INSERT INTO watermarks VALUES (?, ?, ?) ON CONFLICT (machine_id, signal)"
                " DO UPDATE SET source_ts = excluded.source_ts",
                [(m, s, self.watermarks[(m, s)]) for m, s in self._dirty_wm],
            )
        self._dirty_seq.clear()
        self._dirty_wm.clear()
