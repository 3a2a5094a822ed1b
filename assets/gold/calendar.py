"""The plant calendar gold is computed against: days, shift windows, machines, ideal cycle times.

Gold is partitioned by UTC day.  Within a day, rows are also kept per *shift segment*: a
shift instance clipped to the day (the night shift 22:00-06:00 that started yesterday has
its 00:00-06:00 segment in today's partition, the one starting today its 22:00-24:00
segment), plus one ``day`` window for the whole day.  Segments carry the shift instance's
start (``shift_start``), so a whole night shift is the sum of its two segments; every gold
table keeps the additive parts (seconds, counts, kWh) next to its ratios for exactly that.

The plant comes from the plant file the settings name (``PLANTSTREAM_PLANT_FILE``, empty =
the shipped plant): lines, shifts and each machine type's ``cycle_s``, which is the ideal
cycle time of OEE.  Planned downtime needs no calendar here: the machines report it as
states with reason ``planned:<name>`` (docs/oee.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg

from plantstream.domain.shifts import ShiftCalendar
from plantstream.settings import Settings
from plantstream.simulator.plant_config import PlantConfig, Shift, load_plant

MS_PER_DAY = 86_400_000
DAY_WINDOW = "day"
"""The ``shift`` value of rows covering the whole UTC day."""

GOLD_START_DATE = "2025-01-01"
#: Daily partitions in UTC.  ``end_offset=1`` makes today a partition too (an open day: its
#: gold is provisional until the day is over and is made stale by every new reading).
GOLD_PARTITIONS = dg.DailyPartitionsDefinition(start_date=GOLD_START_DATE, timezone="UTC", end_offset=1)


@dataclass(frozen=True, slots=True)
class Window:
    """A part of one UTC day: a shift segment or the whole day, ``[start_ms, end_ms)``."""

    shift: str
    shift_start_ms: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class MachineInfo:
    machine_id: str
    site: str
    area: str
    line: str
    machine_type: str
    ideal_cycle_s: float


def plant_of(settings: Settings) -> PlantConfig:
    """The plant file of the settings (``PLANTSTREAM_PLANT_FILE``; empty = the shipped plant)."""
    return load_plant(settings.plant_file or None)


def machines_of(plant: PlantConfig) -> dict[str, MachineInfo]:
    return {
        m.machine_id: MachineInfo(m.machine_id, m.site, m.area, m.line, m.machine_type.value, m.cycle_s)
        for m in plant.machines()
    }


def day_start_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def parse_day(key: str) -> dt.date:
    """A daily partition key (``2026-01-05``) as a date."""
    return dt.date.fromisoformat(key)


def day_windows(day: dt.date, shifts: list[Shift]) -> list[Window]:
    """The whole day, then every shift segment inside it, in time order.

    The shift instances are the live stream's (:class:`plantstream.domain.shifts.ShiftCalendar`:
    daily, UTC, ``end`` before ``start`` crosses midnight, ``end == start`` is 24 hours),
    clipped to the day: one instance that started yesterday, one that starts today.  Without
    shifts there is only the day window.
    """
    start = day_start_ms(day)
    end = start + MS_PER_DAY
    windows = [Window(DAY_WINDOW, start, start, end)]
    calendar = ShiftCalendar(shifts)
    if calendar.around_the_clock:
        return windows
    segments = [
        Window(instance.name, instance.start_ms, max(instance.start_ms, start), min(instance.end_ms, end))
        for instance in calendar.instances(start, end)
    ]
    return windows + sorted(segments, key=lambda w: (w.start_ms, w.shift))


def shift_at(windows: list[Window], ts_ms: int) -> str:
    """The shift whose segment holds ``ts_ms`` ("" when no shift does)."""
    for window in windows:
        if window.shift != DAY_WINDOW and window.start_ms <= ts_ms < window.end_ms:
            return window.shift
    return ""
