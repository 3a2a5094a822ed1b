"""Per-machine sequence numbers that survive restarts, and source-time watermarks.

Both are kept in memory and written by :class:`~plantstream.edge.buffer.EdgeStore` in
the same SQLite transaction as the events that used them: after a crash the next
number is exactly one past the last buffered event, never reused and never skipped.
The watermarks (latest source timestamp per machine and signal) make a re-delivered
reading (an MQTT QoS 1 duplicate, the initial value an OPC UA subscription sends after
a reconnect) recognisable, so an old measurement is never re-emitted as a new event.
"""

from __future__ import annotations

import sqlite3


class Sequencer:
    def __init__(self) -> None:
        self.next_seq: dict[str, int] = {}
        self.watermarks: dict[tuple[str, str], int] = {}
        self._dirty_seq: set[str] = set()
        self._dirty_wm: set[tuple[str, str]] = set()

    @staticmethod
    def create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS sequences (machine_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS watermarks (machine_id TEXT NOT NULL, signal TEXT NOT NULL,"
            " source_ts INTEGER NOT NULL, PRIMARY KEY (machine_id, signal))"
        )

    def load(self, conn: sqlite3.Connection) -> None:
        self.next_seq = dict(conn.execute("SELECT machine_id, next_seq FROM sequences").fetchall())
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
        seq = self.next_seq.get(machine_id, 0)
        self.next_seq[machine_id] = seq + 1
        self._dirty_seq.add(machine_id)
        if source_ts is not None:
            self.watermarks[(machine_id, signal)] = source_ts
            self._dirty_wm.add((machine_id, signal))
        return seq

    def persist(self, conn: sqlite3.Connection) -> None:
        """Write what changed; call inside the transaction that stores the events."""
        if self._dirty_seq:
            conn.executemany(
                "INSERT INTO sequences VALUES (?, ?) ON CONFLICT (machine_id)"
                " DO UPDATE SET next_seq = excluded.next_seq",
                [(m, self.next_seq[m]) for m in self._dirty_seq],
            )
        if self._dirty_wm:
            conn.executemany(
                "INSERT INTO watermarks VALUES (?, ?, ?) ON CONFLICT (machine_id, signal)"
                " DO UPDATE SET source_ts = excluded.source_ts",
                [(m, s, self.watermarks[(m, s)]) for m, s in self._dirty_wm],
            )
        self._dirty_seq.clear()
        self._dirty_wm.clear()
