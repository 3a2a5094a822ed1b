"""The plant calendar's shift instances (``plantstream.domain.shifts``), pure."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from plantstream.domain.shifts import MS_PER_DAY, MS_PER_MINUTE, ShiftCalendar, ShiftInstance

DAY = 20_000 * MS_PER_DAY  # a UTC midnight
THREE = ShiftCalendar([("early", "06:00", "14:00"), ("late", "14:00", "22:00"), ("night", "22:00", "06:00")])


def test_a_night_shift_is_one_instance_across_midnight() -> None:
    night = ShiftInstance(DAY + 22 * 3_600_000, DAY + MS_PER_DAY + 6 * 3_600_000, "night")
    assert THREE.at(DAY + 23 * 3_600_000) == (night,)
    assert THREE.at(DAY + MS_PER_DAY + 5 * 3_600_000) == (night,), (
        "after midnight: the instance that began the day before"
    )
    assert THREE.at(DAY + MS_PER_DAY + 6 * 3_600_000)[0].name == "early", "an end is exclusive"


def test_no_shifts_is_the_utc_day_and_off_shift_is_none() -> None:
    around = ShiftCalendar()
    assert around.around_the_clock and around.at(DAY + 1) == (ShiftInstance(DAY, DAY + MS_PER_DAY, "day"),)
    assert ShiftCalendar([("day", "06:00", "14:00")]).at(DAY + 15 * 3_600_000) == ()
    (whole,) = ShiftCalendar([("all", "06:00", "06:00")]).at(DAY)
    assert whole.end_ms - whole.start_ms == MS_PER_DAY, "end == start: a 24-hour shift"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 24 * 60 - 1), min_size=2, max_size=6),
    st.lists(st.integers(-3 * MS_PER_DAY, 3 * MS_PER_DAY), min_size=1, max_size=40),
)
def test_at_is_every_instance_containing_the_moment_whatever_was_asked_before(
    minutes: list[int], moments: list[int]
) -> None:
    """The per-minute memo never answers for another minute: compared with the definition."""
    hhmm = [f"{m // 60:02d}:{m % 60:02d}" for m in minutes]
    calendar = ShiftCalendar([(f"s{i}", a, b) for i, (a, b) in enumerate(itertools.pairwise(hhmm))])
    for offset in moments:
        ts = DAY + offset
        expected = tuple(i for i in calendar.instances(ts - 2 * MS_PER_DAY, ts + 2 * MS_PER_DAY) if i.contains(ts))
        assert calendar.at(ts) == expected
        assert calendar.at(ts - ts % MS_PER_MINUTE) == expected, "the same minute, the same shifts"
