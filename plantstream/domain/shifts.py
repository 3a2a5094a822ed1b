"""Shift instances of the plant calendar: which shift a moment belongs to, and when it ends.

A plant file's shifts (``simulator/plant_config.py``: ``name``, ``start``, ``end``, daily, in
UTC) repeat every day; ``end`` before ``start`` crosses midnight and ``end == start`` is a
24-hour shift.  The gold calendar (``assets/gold/calendar.py``) clips these same instances
to each UTC day, so the stream and the lakehouse cannot disagree on when a shift runs.  A
plant without shifts produces around the clock: its shift is the UTC day, named ``day``
(the name gold gives its whole-day window).

Live OEE (``streaming/oee_live.py``) keeps one window per shift *instance* (one night shift
from 22:00 to 06:00, not two day segments): a shift's figures are final once the stream's
clock has passed the instance's end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000
_AT_CACHE_MINUTES = 4_096
DAY_SHIFT = "day"
"""The shift of a plant without shifts: the whole UTC day."""


@dataclass(frozen=True, slots=True, order=True)
class ShiftInstance:
    """One occurrence of a shift, ``[start_ms, end_ms)`` in epoch milliseconds UTC."""

    start_ms: int
    end_ms: int
    name: str

    def contains(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.end_ms


def _minutes(hhmm: str) -> int:
    parsed = dt.time.fromisoformat(hhmm)
    return parsed.hour * 60 + parsed.minute


class ShiftCalendar:
    """The daily shifts of a plant.  ``shifts`` are ``(name, "HH:MM", "HH:MM")`` triples
    or objects with ``name``, ``start`` and ``end`` (the plant file's ``Shift``)."""

    def __init__(self, shifts: Iterable[object] = ()) -> None:
        parsed: list[tuple[str, int, int]] = []
        for shift in shifts:
            if isinstance(shift, tuple):
                name, start, end = shift
            else:
                name, start, end = shift.name, shift.start, shift.end  # type: ignore[attr-defined]
            begin, finish = _minutes(start), _minutes(end)
            length = ((finish - begin) % (24 * 60)) or 24 * 60
            parsed.append((name, begin * MS_PER_MINUTE, length * MS_PER_MINUTE))
        self._shifts = tuple(parsed) if parsed else ((DAY_SHIFT, 0, MS_PER_DAY),)
        self.around_the_clock = not parsed
        self._at_minute: dict[int, tuple[ShiftInstance, ...]] = {}

    @classmethod
    def of_plant(cls, plant: object) -> ShiftCalendar:
        """The calendar of a ``PlantConfig`` (its ``shifts``)."""
        return cls(plant.shifts)  # type: ignore[attr-defined]

    def instances(self, from_ms: int, to_ms: int) -> list[ShiftInstance]:
        """Every shift instance overlapping ``[from_ms, to_ms)``, by start (then end, name)."""
        if to_ms <= from_ms:
            return []
        first_day = from_ms // MS_PER_DAY - 1  # an instance may start the day before and cross midnight
        last_day = (to_ms - 1) // MS_PER_DAY
        out = []
        for day in range(first_day, last_day + 1):
            base = day * MS_PER_DAY
            for name, offset, length in self._shifts:
                start = base + offset
                if start < to_ms and start + length > from_ms:
                    out.append(ShiftInstance(start, start + length, name))
        return sorted(out)

    def at(self, ts_ms: int) -> tuple[ShiftInstance, ...]:
        """The shift instances that contain ``ts_ms`` (none off shift; several if shifts overlap).

        Shifts start and end on whole minutes, so the answer is the same for a whole minute:
        it is remembered per minute (the stream asks for every part and every twin state)."""
        minute = ts_ms // MS_PER_MINUTE
        known = self._at_minute.get(minute)
        if known is None:
            if len(self._at_minute) >= _AT_CACHE_MINUTES:
                self._at_minute.clear()
            known = self._at_minute[minute] = tuple(self.instances(ts_ms, ts_ms + 1))
        return known


__all__ = ["DAY_SHIFT", "ShiftCalendar", "ShiftInstance"]
