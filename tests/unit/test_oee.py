"""OEE (plantstream.domain.oee): hand-worked examples, edge cases, interval clipping, properties.

Every expected number here is worked out by hand (or published by Vorne), never
produced by the code under test.
"""

from __future__ import annotations

import itertools
import json
import math
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plantstream.domain.oee import (
    MACHINE_STATES,
    OeeResult,
    StateInterval,
    classify_stop,
    combine,
    durations_in_window,
    oee,
)

H = 3_600_000  # one hour in ms
SHIFT_START = 1_767_333_600_000  # 2026-01-02 06:00:00 UTC
SHIFT_END = SHIFT_START + 8 * H

WORKED_DURATIONS = {
    ("running", ""): 24_300.0,
    ("maintenance", "planned:cleaning"): 1_800.0,
    ("stopped", "failure:TWF"): 2_400.0,
    ("idle", "starved"): 300.0,
}


def test_worked_example_eight_hour_shift() -> None:
    """One 8 h shift of a CNC mill, worked by hand.

    Period: 8 h = 28,800 s.  Stops:
      * cleaning, planned (``maintenance`` / ``planned:cleaning``): 30 min = 1,800 s
      * tool failure, unplanned (``stopped`` / ``failure:TWF``):     40 min = 2,400 s
      * starved, unplanned (``idle`` / ``starved``):                  5 min =   300 s
    Parts: ideal cycle 30 s, total 720, good 684 (scrap 36).

    planned production time = 28,800 - 1,800        = 27,000 s
    run time                = 27,000 - 2,400 - 300  = 24,300 s
    availability            = 24,300 / 27,000       = 0.9
    net run time            = 30 x 720              = 21,600 s
    performance             = 21,600 / 24,300       = 8/9 = 0.8889
    quality                 = 684 / 720             = 0.95
    OEE                     = 0.9 x 8/9 x 0.95      = 0.76
    fully productive time   = 30 x 684              = 20,520 s   (20,520 / 27,000 = 0.76 as well)
    losses: availability 2,400 s (failure:TWF) + 300 s (starved) = 2,700 s;
            performance 24,300 - 21,600 = 2,700 s; quality 30 x 36 = 1,080 s;
            check: 20,520 + 1,080 + 2,700 + 2,700 = 27,000 s.
    """
    r = oee(WORKED_DURATIONS, ideal_cycle_s=30, total_count=720, good_count=684)

    assert r.availability == pytest.approx(0.9)
    assert r.performance == pytest.approx(8 / 9)
    assert r.quality == pytest.approx(0.95)
    assert r.oee == pytest.approx(0.76)
    assert r.period_s == pytest.approx(28_800)
    assert r.planned_production_s == pytest.approx(27_000)
    assert r.run_s == pytest.approx(24_300)
    assert r.planned_stop_s == pytest.approx(1_800)
    assert r.unplanned_stop_s == pytest.approx(2_700)
    assert r.net_run_s == pytest.approx(21_600)
    assert r.fully_productive_s == pytest.approx(20_520)
    assert r.availability_loss_s == {"failure:TWF": pytest.approx(2_400), "starved": pytest.approx(300)}
    assert r.planned_stop_by_reason_s == {"planned:cleaning": pytest.approx(1_800)}
    assert r.performance_loss_s == pytest.approx(2_700)
    assert r.quality_loss_s == pytest.approx(1_080)
    assert (r.total_count, r.good_count, r.scrap_count) == (720, 684, 36)
    assert not r.nothing_planned
    assert not r.performance_above_one
    assert r.warnings == ()


def test_vorne_fast_guide_example() -> None:
    """The worked example of Vorne's "Fast Guide to OEE" / "Calculating OEE" worksheet.

    Shift 480 min; breaks 2 x 15 min + meal 30 min (planned, excluded) -> planned
    production 420 min; down time 47 min -> run 373 min; ideal rate 60 parts/min (ideal
    cycle 1 s); 19,271 parts, 423 rejects.  By hand (and as Vorne publishes it):
    availability 373/420 = 88.81 %, performance 19,271/(373 x 60) = 86.11 %,
    quality 18,848/19,271 = 97.80 %, OEE 18,848/(420 x 60) = 74.79 %.
    """
    durations = [
        ("stopped", "planned:break", 2 * 15 * 60.0),
        ("stopped", "planned:meal", 30 * 60.0),
        ("stopped", "failure:breakdown", 47 * 60.0),
        ("running", None, 373 * 60.0),
    ]
    r = oee(durations, ideal_cycle_s=1.0, total_count=19_271, good_count=19_271 - 423)

    assert r.availability == pytest.approx(0.8881, abs=5e-5)
    assert r.performance == pytest.approx(0.8611, abs=5e-5)
    assert r.quality == pytest.approx(0.9780, abs=5e-5)
    assert r.oee == pytest.approx(0.7479, abs=5e-5)
    assert r.planned_production_s == pytest.approx(420 * 60)


def test_worked_example_from_state_intervals_crossing_the_shift_edges() -> None:
    """The same shift rebuilt from state-change intervals, as the stream and silver have them.

    05:00-05:50 off shift (outside the shift: ignored); 05:50-09:00 running (crosses the
    start: only 06:00-09:00 = 3 h counts); 09:00-09:40 failure:TWF; 09:40-10:00 running;
    10:00-10:30 cleaning; 10:30-10:35 starved; 10:35-15:00 running (crosses the end: only
    until 14:00 = 3 h 25 min); 14:00-16:00 off shift (outside: ignored).
    Running: 3 h + 20 min + 3 h 25 min = 6 h 45 min = 24,300 s: the worked example.
    """
    m = 60_000
    intervals = [
        StateInterval("stopped", "off_shift", SHIFT_START - 60 * m, SHIFT_START - 10 * m),
        StateInterval("running", None, SHIFT_START - 10 * m, SHIFT_START + 180 * m),
        StateInterval("stopped", "failure:TWF", SHIFT_START + 180 * m, SHIFT_START + 220 * m),
        ("running", None, SHIFT_START + 220 * m, SHIFT_START + 240 * m),
        ("maintenance", "planned:cleaning", SHIFT_START + 240 * m, SHIFT_START + 270 * m),
        ("idle", "starved", SHIFT_START + 270 * m, SHIFT_START + 275 * m),
        ("running", "", SHIFT_START + 275 * m, SHIFT_END + 60 * m),
        ("stopped", "off_shift", SHIFT_END + 60 * m, SHIFT_END + 120 * m),
    ]
    durations = durations_in_window(intervals, SHIFT_START, SHIFT_END)

    assert durations == {
        ("running", ""): pytest.approx(24_300),
        ("stopped", "failure:TWF"): pytest.approx(2_400),
        ("maintenance", "planned:cleaning"): pytest.approx(1_800),
        ("idle", "starved"): pytest.approx(300),
    }
    r = oee(durations, ideal_cycle_s=30, total_count=720, good_count=684)
    assert r.oee == pytest.approx(0.76)


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("running", None, "run"),
        ("running", "", "run"),
        ("running", "planned:cleaning", "run"),  # a running machine is producing, whatever the label
        ("stopped", "off_shift", "planned_stop"),
        ("maintenance", "planned:cleaning", "planned_stop"),
        ("stopped", "planned:holiday", "planned_stop"),
        ("idle", "starved", "unplanned_stop"),
        ("stopped", "failure:TWF", "unplanned_stop"),
        ("stopped", "failure:HDF+PWF", "unplanned_stop"),
        ("maintenance", "tool_change", "unplanned_stop"),
        ("stopped", None, "unplanned_stop"),
        ("idle", "", "unplanned_stop"),
        ("stopped", "off_shift_extra", "unplanned_stop"),  # only the exact reason off_shift is planned
        ("stopped", "planned", "unplanned_stop"),  # the prefix is "planned:"
    ],
)
def test_classify_stop(state: str, reason: str | None, expected: str) -> None:
    assert classify_stop(state, reason) == expected


def test_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown machine state 'Execute'"):
        classify_stop("Execute", None)
    with pytest.raises(ValueError, match="unknown machine state"):
        oee({("offline", ""): 60.0}, ideal_cycle_s=30, total_count=0, good_count=0)


def test_no_run_time() -> None:
    """Planned time but no run time: availability 0, performance undefined, OEE 0."""
    r = oee({("stopped", "failure:TWF"): 28_800.0}, ideal_cycle_s=30, total_count=0, good_count=0)

    assert r.availability == 0.0
    assert r.performance is None
    assert r.quality is None
    assert r.oee == 0.0
    assert not r.nothing_planned
    assert r.availability_loss_s == {"failure:TWF": 28_800.0}
    assert r.warnings == ()


def test_parts_without_run_time_warn() -> None:
    r = oee({("stopped", "failure:TWF"): 600.0}, ideal_cycle_s=30, total_count=1, good_count=0)

    assert (r.availability, r.performance, r.quality, r.oee) == (0.0, None, 0.0, 0.0)
    assert any("without run time" in w for w in r.warnings)


def test_no_parts_quality_undefined() -> None:
    """Run time but no parts: quality undefined, performance 0, OEE 0."""
    r = oee({("running", ""): 3_000.0, ("idle", "starved"): 600.0}, ideal_cycle_s=30, total_count=0, good_count=0)

    assert r.availability == pytest.approx(3_000 / 3_600)
    assert r.performance == 0.0
    assert r.quality is None
    assert r.oee == 0.0


def test_performance_above_one_is_not_capped() -> None:
    """1 h running, ideal 30 s, 150 parts: 4,500 s of ideal time in 3,600 s -> 1.25, flagged."""
    r = oee({("running", ""): 3_600.0}, ideal_cycle_s=30, total_count=150, good_count=150)

    assert r.performance == pytest.approx(1.25)
    assert r.oee == pytest.approx(1.25)
    assert r.performance_above_one
    assert r.performance_loss_s == pytest.approx(-900)
    assert any("ideal cycle time is probably" in w for w in r.warnings)


def test_performance_exactly_one_is_not_flagged() -> None:
    r = oee({("running", ""): 3_600.0}, ideal_cycle_s=30, total_count=120, good_count=120)

    assert r.performance == pytest.approx(1.0)
    assert not r.performance_above_one


@pytest.mark.parametrize(
    "durations",
    [
        {("maintenance", "planned:cleaning"): 28_800.0},
        {("stopped", "off_shift"): 20_000.0, ("maintenance", "planned:inventory"): 8_800.0},
        {},
    ],
    ids=["planned-downtime-whole-shift", "off-shift-and-planned", "no-time-at-all"],
)
def test_nothing_planned(durations: dict[tuple[str, str], float]) -> None:
    r = oee(durations, ideal_cycle_s=30, total_count=0, good_count=0)

    assert (r.availability, r.performance, r.quality, r.oee) == (None, None, None, None)
    assert r.nothing_planned
    assert r.planned_production_s == 0.0
    assert r.planned_stop_s == pytest.approx(sum(durations.values()))
    assert any("nothing was planned" in w for w in r.warnings)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(ideal_cycle_s=30, total_count=10, good_count=11),
            r"good_count \(11\) is greater than total_count \(10\)",
        ),
        (dict(ideal_cycle_s=30, total_count=-1, good_count=0), "total_count must be >= 0"),
        (dict(ideal_cycle_s=30, total_count=5, good_count=-1), "good_count must be >= 0"),
        (dict(ideal_cycle_s=30, total_count=2.5, good_count=0), "total_count must be a whole number"),
        (dict(ideal_cycle_s=0, total_count=1, good_count=1), "ideal_cycle_s must be a finite number of seconds > 0"),
        (dict(ideal_cycle_s=-30, total_count=1, good_count=1), "ideal_cycle_s must be"),
        (dict(ideal_cycle_s=math.nan, total_count=1, good_count=1), "ideal_cycle_s must be"),
        (dict(ideal_cycle_s=math.inf, total_count=1, good_count=1), "ideal_cycle_s must be"),
    ],
)
def test_invalid_counts_and_ideal_cycle_raise(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        oee({("running", ""): 60.0}, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_invalid_durations_raise(seconds: float) -> None:
    with pytest.raises(ValueError, match=r"duration of \('stopped', 'failure:TWF'\) must be a finite number"):
        oee({("running", ""): 60.0, ("stopped", "failure:TWF"): seconds}, ideal_cycle_s=30, total_count=0, good_count=0)


def test_triples_and_mapping_agree_and_repeats_add_up() -> None:
    triples = [
        ("running", "", 20_000.0),
        ("maintenance", "planned:cleaning", 1_800.0),
        ("stopped", "failure:TWF", 2_400.0),
        ("running", "", 4_300.0),
        ("idle", "starved", 100.0),
        ("idle", "starved", 200.0),
    ]
    from_triples = oee(triples, ideal_cycle_s=30, total_count=720, good_count=684)
    from_mapping = oee(WORKED_DURATIONS, ideal_cycle_s=30, total_count=720, good_count=684)

    assert from_triples.as_dict() == from_mapping.as_dict()  # these sums are exact in binary floating point
    assert from_triples.availability_loss_s == {"failure:TWF": 2_400.0, "starved": 300.0}


def test_stops_without_reason_are_labelled_by_state() -> None:
    r = oee(
        {("running", ""): 100.0, ("stopped", ""): 20.0, ("idle", None): 5.0},
        ideal_cycle_s=1,
        total_count=0,
        good_count=0,
    )

    assert r.availability_loss_s == {"stopped": 20.0, "idle": 5.0}


def test_as_dict_is_plain_json_and_the_result_pickles() -> None:
    r = oee(WORKED_DURATIONS, ideal_cycle_s=30, total_count=720, good_count=684)
    row = r.as_dict()

    assert json.loads(json.dumps(row)) == row
    assert {
        "availability",
        "performance",
        "quality",
        "oee",
        "run_s",
        "planned_production_s",
        "planned_stop_s",
        "unplanned_stop_s",
        "availability_loss_s",
        "performance_loss_s",
        "quality_loss_s",
        "performance_above_one",
        "nothing_planned",
        "warnings",
    } <= row.keys()
    assert row["availability_loss_s"] == {"failure:TWF": 2_400.0, "starved": 300.0}
    assert pickle.loads(pickle.dumps(r)) == r  # results cross Bytewax workers


def test_result_is_frozen() -> None:
    r = oee(WORKED_DURATIONS, ideal_cycle_s=30, total_count=720, good_count=684)
    with pytest.raises(AttributeError):
        r.oee = 1.0  # type: ignore[misc]


# -- interval clipping -------------------------------------------------------------------


def test_clipping_at_both_window_edges() -> None:
    """One interval crossing the start, one inside, one crossing the end, two outside."""
    intervals = [
        ("stopped", "off_shift", SHIFT_START - 2 * H, SHIFT_START - H),  # before: ignored
        ("stopped", "off_shift", SHIFT_START - H, SHIFT_START + 1_000),  # 1 s inside
        ("running", None, SHIFT_START + 1_000, SHIFT_END - 500),
        ("idle", "starved", SHIFT_END - 500, SHIFT_END + 10_000),  # 0.5 s inside
        ("running", None, SHIFT_END + 10_000, SHIFT_END + H),  # after: ignored
    ]
    durations = durations_in_window(intervals, SHIFT_START, SHIFT_END)

    assert durations == {
        ("stopped", "off_shift"): pytest.approx(1.0),
        ("running", ""): pytest.approx(8 * 3_600 - 1.5),
        ("idle", "starved"): pytest.approx(0.5),
    }


def test_an_interval_spanning_the_whole_window() -> None:
    durations = durations_in_window([("running", "", SHIFT_START - H, SHIFT_END + H)], SHIFT_START, SHIFT_END)

    assert durations == {("running", ""): pytest.approx(8 * 3_600)}


def test_interval_touching_the_window_edge_counts_nothing() -> None:
    intervals = [("running", "", SHIFT_START - H, SHIFT_START), ("stopped", "off_shift", SHIFT_END, SHIFT_END + H)]

    assert durations_in_window(intervals, SHIFT_START, SHIFT_END) == {}


def test_uncovered_time_is_in_no_bucket() -> None:
    durations = durations_in_window([("running", "", SHIFT_START + H, SHIFT_START + 2 * H)], SHIFT_START, SHIFT_END)

    assert durations == {("running", ""): pytest.approx(3_600)}


def test_overlapping_intervals_raise() -> None:
    intervals = [("running", "", SHIFT_START, SHIFT_START + H), ("idle", "starved", SHIFT_START + H - 1, SHIFT_END)]
    with pytest.raises(ValueError, match="overlap"):
        durations_in_window(intervals, SHIFT_START, SHIFT_END)


def test_overlap_outside_the_window_is_irrelevant() -> None:
    intervals = [
        ("running", "", SHIFT_START - 2 * H, SHIFT_START - H),
        ("running", "", SHIFT_START - 2 * H, SHIFT_START),
        ("running", "", SHIFT_START, SHIFT_END),
    ]
    assert durations_in_window(intervals, SHIFT_START, SHIFT_END) == {("running", ""): pytest.approx(8 * 3_600)}


def test_backwards_interval_or_window_raise() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        durations_in_window([("running", "", SHIFT_START + 10, SHIFT_START)], SHIFT_START, SHIFT_END)
    with pytest.raises(ValueError, match="window ends before it starts"):
        durations_in_window([], SHIFT_END, SHIFT_START)


@given(
    cuts=st.lists(st.integers(min_value=0, max_value=400), min_size=2, max_size=12, unique=True),
    states=st.lists(st.sampled_from(MACHINE_STATES), min_size=11, max_size=11),
    window=st.tuples(st.integers(min_value=-50, max_value=450), st.integers(min_value=0, max_value=200)),
)
def test_clipping_matches_a_millisecond_count(cuts: list[int], states: list[str], window: tuple[int, int]) -> None:
    """Contiguous intervals from sorted cut points; compare with counting every millisecond."""
    cuts.sort()
    intervals = [(states[i], f"r{i % 3}", start, end) for i, (start, end) in enumerate(itertools.pairwise(cuts))]
    window_start, length = window
    window_end = window_start + length

    expected: dict[tuple[str, str], float] = {}
    for t in range(window_start, window_end):
        for state, reason, start, end in intervals:
            if start <= t < end:
                expected[state, reason] = expected.get((state, reason), 0.0) + 0.001

    got = durations_in_window(intervals, window_start, window_end)
    assert got.keys() == expected.keys()
    for key, seconds in expected.items():
        assert got[key] == pytest.approx(seconds)


# -- combining ---------------------------------------------------------------------------


def test_combine_two_machines_with_different_ideal_cycles() -> None:
    """A line of two machines over one hour, worked by hand.

    Machine A: ideal 30 s, run 3,000 s, failure 600 s, 90 parts all good:
      net run 2,700 s, fully productive 2,700 s.
    Machine B: ideal 60 s, run 3,600 s, 50 parts, 40 good:
      net run 3,000 s, fully productive 2,400 s.
    Line: planned 7,200 s, run 6,600 s  -> availability 6,600 / 7,200 = 0.91667
          net run 5,700 s               -> performance  5,700 / 6,600 = 0.86364
          fully productive 5,100 s      -> quality      5,100 / 5,700 = 0.89474
          OEE = 5,100 / 7,200 = 0.70833   (a count-based quality, 130/140 = 0.9286, would break A x P x Q)
    """
    a = oee(
        {("running", ""): 3_000.0, ("stopped", "failure:TWF"): 600.0}, ideal_cycle_s=30, total_count=90, good_count=90
    )
    b = oee({("running", ""): 3_600.0}, ideal_cycle_s=60, total_count=50, good_count=40)
    line = combine([a, b])

    assert line.availability == pytest.approx(6_600 / 7_200)
    assert line.performance == pytest.approx(5_700 / 6_600)
    assert line.quality == pytest.approx(5_100 / 5_700)
    assert line.oee == pytest.approx(5_100 / 7_200)
    assert (line.total_count, line.good_count, line.scrap_count) == (140, 130, 10)
    assert line.ideal_cycle_s is None
    assert line.availability_loss_s == {"failure:TWF": 600.0}
    assert line.quality_loss_s == pytest.approx(600)  # 60 s x 10 scrap on B


def test_combine_shifts_of_one_machine() -> None:
    """Two shifts of the worked example = a day with every time and count doubled."""
    shift = oee(WORKED_DURATIONS, ideal_cycle_s=30, total_count=720, good_count=684)
    day = combine([shift, shift])

    assert day.oee == pytest.approx(0.76)
    assert day.quality == pytest.approx(0.95)
    assert day.ideal_cycle_s == 30
    assert day.run_s == pytest.approx(48_600)
    assert day.availability_loss_s == {"failure:TWF": pytest.approx(4_800), "starved": pytest.approx(600)}
    assert day.planned_stop_by_reason_s == {"planned:cleaning": pytest.approx(3_600)}


def test_combine_keeps_a_hidden_performance_flag() -> None:
    fast = oee({("running", ""): 3_600.0}, ideal_cycle_s=30, total_count=130, good_count=130)  # 1.083
    slow = oee({("running", ""): 3_600.0}, ideal_cycle_s=30, total_count=60, good_count=60)  # 0.5
    line = combine([fast, slow])

    assert line.performance == pytest.approx(190 * 30 / 7_200)  # 0.79: below 1
    assert line.performance_above_one
    assert any("1 of 2 combined results" in w for w in line.warnings)


def test_combine_needs_results() -> None:
    with pytest.raises(ValueError, match="at least one"):
        combine([])


# -- properties --------------------------------------------------------------------------

REASONS = {
    "running": ["", None],
    "idle": ["starved", ""],
    "stopped": ["off_shift", "failure:TWF", "failure:HDF+PWF", None],
    "maintenance": ["tool_change", "planned:cleaning", "planned:inventory"],
}
state_reason = st.sampled_from(MACHINE_STATES).flatmap(lambda s: st.tuples(st.just(s), st.sampled_from(REASONS[s])))
seconds = st.integers(min_value=0, max_value=86_400_000).map(lambda ms: ms / 1000)  # what callers have: milliseconds
durations_strategy = st.lists(st.tuples(state_reason, seconds).map(lambda t: (*t[0], t[1])), max_size=12)


@st.composite
def counts(draw: st.DrawFn) -> tuple[int, int]:
    total = draw(st.integers(min_value=0, max_value=5_000))
    return total, draw(st.integers(min_value=0, max_value=total))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@given(
    durations=durations_strategy,
    ideal=st.floats(min_value=0.01, max_value=600, allow_nan=False),
    parts=counts(),
)
def test_oee_properties(durations: list[tuple[str, str | None, float]], ideal: float, parts: tuple[int, int]) -> None:
    total, good = parts
    r = oee(durations, ideal_cycle_s=ideal, total_count=total, good_count=good)

    # The waterfall, from the inputs (classified by name, independently of classify_stop).
    run = sum(s for state, _, s in durations if state == "running")
    planned_stop = sum(
        s
        for state, reason, s in durations
        if state != "running" and reason in ("off_shift", "planned:cleaning", "planned:inventory")
    )
    unplanned = sum(s for state, _, s in durations if state != "running") - planned_stop
    assert _close(r.run_s, run)
    assert _close(r.planned_stop_s, planned_stop)
    assert _close(r.unplanned_stop_s, unplanned)
    assert _close(r.planned_production_s, r.run_s + r.unplanned_stop_s)
    assert _close(r.period_s, sum(s for *_, s in durations))
    assert _close(math.fsum(r.availability_loss_s.values()), r.unplanned_stop_s)
    assert _close(math.fsum(r.planned_stop_by_reason_s.values()), r.planned_stop_s)
    assert _close(r.run_s - r.performance_loss_s, ideal * total)
    assert _close(r.net_run_s - r.quality_loss_s, ideal * good)

    if r.planned_production_s == 0:
        assert r.nothing_planned
        assert (r.availability, r.performance, r.quality, r.oee) == (None, None, None, None)
        return
    assert not r.nothing_planned
    assert r.availability is not None
    assert 0.0 <= r.availability <= 1.0
    assert r.oee is not None
    if r.quality is not None:
        assert 0.0 <= r.quality <= 1.0
        assert r.quality == pytest.approx(good / total)
    else:
        assert total == 0
    if r.performance is None:
        assert r.run_s == 0
        assert r.availability == 0.0
        assert r.oee == 0.0
    else:
        assert r.performance == pytest.approx(ideal * total / run)
        if ideal * total > run * (1 + 1e-6):
            assert r.performance_above_one
        elif ideal * total <= run:
            assert not r.performance_above_one
        if r.quality is not None:
            assert r.oee == pytest.approx(r.availability * r.performance * r.quality)
            assert r.oee == pytest.approx(ideal * good / r.planned_production_s)
        else:
            assert r.oee == 0.0


@given(
    machines=st.lists(st.tuples(durations_strategy, counts()), min_size=1, max_size=4),
    ideal=st.floats(min_value=0.5, max_value=120, allow_nan=False),
)
def test_combine_equals_pooling_when_the_ideal_cycle_is_shared(
    machines: list[tuple[list[tuple[str, str | None, float]], tuple[int, int]]], ideal: float
) -> None:
    results: list[OeeResult] = [oee(d, ideal_cycle_s=ideal, total_count=t, good_count=g) for d, (t, g) in machines]
    pooled = oee(
        [triple for d, _ in machines for triple in d],
        ideal_cycle_s=ideal,
        total_count=sum(t for _, (t, _) in machines),
        good_count=sum(g for _, (_, g) in machines),
    )
    line = combine(results)

    for name in ("availability", "performance", "quality", "oee"):
        got, want = getattr(line, name), getattr(pooled, name)
        assert (got is None) == (want is None), name
        if want is not None:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), name
    assert line.nothing_planned == pooled.nothing_planned
    assert _close(line.run_s, pooled.run_s)
    assert _close(line.planned_production_s, pooled.planned_production_s)
