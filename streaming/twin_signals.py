"""The digital twin's latest reading of every (machine, signal) of a partition, in numpy arrays.

Telemetry is most of the plant's events, and at a live plant's small Kafka batches nearly
every reading is the latest of its series in its batch: folding readings one by one in
Python was the twin's main cost.  Here a batch costs Python work per *distinct machine and
signal name* in it (a dictionary lookup each); the readings themselves are compared and
stored with numpy (one row per machine, one column per signal name).

Per series it keeps the latest reading's time, seq, quality and unit, and the newest value
measured with its time (a stale marker, ``quality="stale"`` without a value, keeps the
value; a late reading with a value newer than the one kept replaces it).  "Latest" is by
``(event time, seq)``: an out-of-order reading never replaces a newer one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from plantstream.contract.events import Quality

_NO_TIME = -1
QUALITIES: tuple[Quality, ...] = tuple(Quality)
_QUALITY_CODE = {q.value: i for i, q in enumerate(QUALITIES)}

#: A series as plain values (the twin's snapshot format): [value, value_ts, unit, quality, ts, seq].
SeriesValues = list[Any]


def last_per_series(series: np.ndarray, ts: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Row of the latest (event time, seq) of each series, ordered by series."""
    order = np.lexsort((seq, ts, series))
    ordered = series[order]
    return order[np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))]


class SignalTable:
    """Latest readings per (machine, signal); machines are added by :meth:`row` and removed by :meth:`drop`."""

    def __init__(self) -> None:
        self._row_of: dict[str, int] = {}
        self._free: list[int] = []
        self._col_of: dict[str, int] = {}
        self.names: list[str] = []  # column -> signal name
        self._alloc(8, 8)

    def _alloc(self, rows: int, cols: int) -> None:
        def grow(old: np.ndarray | None, fill: Any, dtype: Any) -> np.ndarray:
            new = np.full((rows, cols), fill, dtype=dtype)
            if old is not None:
                new[: old.shape[0], : old.shape[1]] = old
            return new

        had = getattr(self, "ts", None) is not None
        self.ts = grow(self.ts if had else None, _NO_TIME, np.int64)
        self.seq = grow(self.seq if had else None, -1, np.int64)
        self.value = grow(self.value if had else None, np.nan, np.float64)
        self.value_ts = grow(self.value_ts if had else None, _NO_TIME, np.int64)
        self.quality = grow(self.quality if had else None, 0, np.int8)
        self.unit = grow(self.unit if had else None, "", object)

    # -- rows and columns ------------------------------------------------------------------
    def row(self, machine_id: str) -> int:
        row = self._row_of.get(machine_id)
        if row is None:
            if self._free:
                row = self._free.pop()
            else:
                row = len(self._row_of)
                if row >= self.ts.shape[0]:
                    self._alloc(self.ts.shape[0] * 2, self.ts.shape[1])
            self._row_of[machine_id] = row
        return row

    def _col(self, signal: str) -> int:
        col = self._col_of.get(signal)
        if col is None:
            col = self._col_of[signal] = len(self.names)
            self.names.append(signal)
            if col >= self.ts.shape[1]:
                self._alloc(self.ts.shape[0], self.ts.shape[1] * 2)
        return col

    def drop(self, machine_id: str) -> None:
        row = self._row_of.pop(machine_id, None)
        if row is None:
            return
        self.ts[row] = _NO_TIME
        self.seq[row] = -1
        self.value[row] = np.nan
        self.value_ts[row] = _NO_TIME
        self.quality[row] = 0
        self.unit[row] = ""
        self._free.append(row)

    # -- folding a batch ----------------------------------------------------------------------
    def fold(self, rows: np.ndarray, events: pa.Table, ts: np.ndarray) -> None:
        """Fold a telemetry batch in; ``rows[i]`` is the table row of event ``i``'s machine."""
        signal = events.column("signal").combine_chunks().dictionary_encode()
        cols = np.fromiter((self._col(s) for s in signal.dictionary.to_pylist()), np.int64, len(signal.dictionary))
        c = cols[signal.indices.to_numpy(zero_copy_only=False)]
        seq = events.column("seq").combine_chunks().to_numpy(zero_copy_only=False)
        series = rows * self.ts.shape[1] + c
        latest = last_per_series(series, ts, seq)
        r, k, t, s = rows[latest], c[latest], ts[latest], seq[latest]
        newer = (t > self.ts[r, k]) | ((t == self.ts[r, k]) & (s > self.seq[r, k]))
        value_col = events.column("value").combine_chunks()
        values = value_col.to_numpy(zero_copy_only=False)  # nulls are nan
        valid = value_col.is_valid().to_numpy(zero_copy_only=False)
        if valid.all():
            new_value, new_value_ts = values[latest], t
        else:
            valued = np.flatnonzero(valid)
            last_valued = valued[last_per_series(series[valued], ts[valued], seq[valued])]
            at = np.searchsorted(series[latest], series[last_valued])
            new_value = np.full(len(latest), np.nan)
            new_value_ts = np.full(len(latest), _NO_TIME, dtype=np.int64)
            new_value[at], new_value_ts[at] = values[last_valued], ts[last_valued]
        # The value is the newest one measured, whatever came after it (a stale marker, or a
        # later reading of an earlier batch): independent of how the readings were cut.
        take_value = (new_value_ts != _NO_TIME) & (new_value_ts >= self.value_ts[r, k])
        rv, kv = r[take_value], k[take_value]
        self.value[rv, kv] = new_value[take_value]
        self.value_ts[rv, kv] = new_value_ts[take_value]
        rn, kn = r[newer], k[newer]
        self.ts[rn, kn], self.seq[rn, kn] = t[newer], s[newer]
        quality = events.column("quality").combine_chunks().dictionary_encode()
        known = quality.dictionary.to_pylist()
        codes = np.fromiter((_QUALITY_CODE[q] for q in known), np.int8, len(known))
        self.quality[rn, kn] = codes[quality.indices.to_numpy(zero_copy_only=False)[latest][newer]]
        unit = events.column("unit").combine_chunks().dictionary_encode()
        unit_names = np.asarray([*unit.dictionary.to_pylist(), ""], dtype=object)
        unit_codes = unit.indices.fill_null(len(unit.dictionary)).to_numpy(zero_copy_only=False)
        picked = unit_names[unit_codes[latest][newer]]
        named = picked != ""  # a reading without a unit keeps the one known
        self.unit[rn[named], kn[named]] = picked[named]

    # -- reading ------------------------------------------------------------------------------
    def series(self, machine_ids: list[str]) -> list[list[tuple[str, float | None, int | None, str, Quality, int]]]:
        """Per machine, ``(signal, value, value_ts, unit, quality, ts)`` of its signals by name;
        the machines' rows are read in one go (one emission asks for hundreds)."""
        rows = [self._row_of.get(m, -1) for m in machine_ids]
        known = [r for r in rows if r >= 0]
        if not known:
            return [[] for _ in machine_ids]
        ts, value, value_ts = self.ts[known].tolist(), self.value[known].tolist(), self.value_ts[known].tolist()
        quality, units = self.quality[known].tolist(), self.unit[known].tolist()
        by_name = sorted(range(len(self.names)), key=self.names.__getitem__)
        names, qualities = self.names, QUALITIES
        out: list[list[tuple[str, float | None, int | None, str, Quality, int]]] = []
        i = 0
        for row in rows:
            if row < 0:
                out.append([])
                continue
            t, v, vt, q, u = ts[i], value[i], value_ts[i], quality[i], units[i]
            i += 1
            signals = []
            for c in by_name:
                if t[c] != _NO_TIME:
                    measured = vt[c] != _NO_TIME
                    signals.append(
                        (names[c], v[c] if measured else None, vt[c] if measured else None, u[c], qualities[q[c]], t[c])
                    )
            out.append(signals)
        return out

    def to_state(self, machine_id: str) -> dict[str, SeriesValues]:
        """The machine's series in the twin's snapshot format."""
        row = self._row_of.get(machine_id)
        if row is None:
            return {}
        out = {}
        for c in np.flatnonzero(self.ts[row] != _NO_TIME).tolist():
            vt = int(self.value_ts[row, c])
            value = None if vt == _NO_TIME else float(self.value[row, c])
            out[self.names[c]] = [
                value,
                None if vt == _NO_TIME else vt,
                self.unit[row, c],
                QUALITIES[int(self.quality[row, c])].value,
                int(self.ts[row, c]),
                int(self.seq[row, c]),
            ]
        return out

    def load(self, machine_id: str, signals: Mapping[str, Iterable[Any]]) -> None:
        """Restore a machine's series from :meth:`to_state`'s format."""
        row = self.row(machine_id)
        for name, (value, value_ts, unit, quality, ts, seq) in signals.items():
            c = self._col(name)
            self.value[row, c] = np.nan if value is None else value
            self.value_ts[row, c] = _NO_TIME if value_ts is None else value_ts
            self.unit[row, c] = unit or ""
            self.quality[row, c] = _QUALITY_CODE[quality]
            self.ts[row, c] = ts
            self.seq[row, c] = seq


__all__ = ["QUALITIES", "SignalTable", "last_per_series"]
