"""The suites' building blocks on small in-memory tables: the derived frames, and real Great Expectations.

No services: these run in the default tier and say *which* part is wrong when the
end-to-end tests (a corrupted week on the real pipeline) fail.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from plantstream.assets.gold.calendar import Window, day_start_ms
from plantstream.contract.signals import SIGNALS
from plantstream.quality_checks import frames, gx_runtime
from plantstream.quality_checks.expectations import Batch
from plantstream.quality_checks.suites import DRIFT_FEATURES, NOISY_SIGNALS, STUCK_AFTER_S, _value_rules

DAY = dt.date(2026, 1, 5)
START = day_start_ms(DAY)


def readings(machine: str, signal: str, values: list[float], *, step_s: float = 60.0, first_seq: int = 0) -> pa.Table:
    n = len(values)
    times = [START + int(i * step_s * 1000) for i in range(n)]
    return pa.table(
        {
            "site": ["plant-1"] * n,
            "area": ["a"] * n,
            "line": ["line-1"] * n,
            "machine_id": [machine] * n,
            "seq": list(range(first_seq, first_seq + n)),
            "event_time": pa.array(times, pa.int64()).cast(pa.timestamp("ms", "UTC")),
            "signal": [signal] * n,
            "value": values,
            "unit": [SIGNALS[signal].unit] * n,
            "quality": ["good"] * n,
        }
    )


def test_signal_ranges_fail_on_a_unit_change_and_show_the_rows(tmp_path) -> None:
    rng = np.random.default_rng(1)
    clean = readings("m-1", "torque", list(40 + rng.normal(0, 2, 120)))
    scaled = readings("m-2", "torque", [v * 1000 for v in 40 + rng.normal(0, 2, 30)], first_seq=0)
    rules = [r for r in _value_rules("telemetry") if r.check == "signal_ranges"]
    passed = gx_runtime.validate(tmp_path, "unit.telemetry", "clean", Batch("rows", clean.to_pandas(), rules))
    assert all(o.success for o in passed.outcomes), [o.summary() for o in passed.outcomes if not o.success]
    failed = gx_runtime.validate(
        tmp_path, "unit.telemetry", "scaled", Batch("rows", pa.concat_tables([clean, scaled]).to_pandas(), rules)
    )
    (bad,) = [o for o in failed.outcomes if not o.success]
    assert bad.rule.kwargs["row_condition"] == 'signal=="torque"'
    assert bad.unexpected_count == 30
    assert {row["machine_id"] for row in bad.sample} == {"m-2"}
    links = gx_runtime.publish(tmp_path, [failed.identifier])
    assert links[failed.identifier].startswith("file://")
    assert Path(links[failed.identifier].removeprefix("file://")).is_file()


def test_stuck_frame_finds_a_frozen_noisy_signal_only() -> None:
    assert "vibration" in NOISY_SIGNALS and "tool_wear" not in NOISY_SIGNALS
    rng = np.random.default_rng(2)
    frozen_minutes = int(STUCK_AFTER_S / 60) + 10
    noisy = list(3 + rng.normal(0, 0.1, 60))
    rows = pa.concat_tables(
        [
            readings("m-1", "vibration", noisy + [2.5] * frozen_minutes + noisy),
            readings("m-2", "vibration", list(3 + rng.normal(0, 0.1, 200))),
            readings("m-3", "vibration", [0.0] * 200),  # a stopped machine: zero is no fault
        ]
    )
    stuck = frames.stuck_frame(rows, NOISY_SIGNALS)
    runs = dict(zip(stuck["machine_id"], stuck["run_s"], strict=True))
    assert runs["m-1"] == (frozen_minutes - 1) * 60 > STUCK_AFTER_S
    assert runs["m-2"] < STUCK_AFTER_S
    assert "m-3" not in runs


def test_time_order_frame_measures_a_step_back() -> None:
    forward = readings("m-1", "torque", [40.0] * 10)
    replayed = readings("m-2", "torque", [40.0] * 10)
    times = replayed["event_time"].to_pylist()
    times[6:] = [t - dt.timedelta(minutes=30) for t in times[6:]]  # a burst sent again under new seqs
    replayed = replayed.set_column(5, "event_time", pa.array(times, pa.timestamp("ms", "UTC")))
    order = frames.time_order_frame(pa.concat_tables([forward, replayed])).set_index("machine_id")
    assert order.loc["m-1", "max_step_back_s"] == 0
    assert order.loc["m-2", "max_step_back_s"] == 30 * 60 - 60
    assert order.loc["m-2", "worst_seq"] == 6


def test_coverage_frame_counts_zero_for_a_silent_shift() -> None:
    hour = 3_600_000
    windows = [
        Window("early", START, START + 6 * hour, START + 14 * hour),
        Window("late", START, START + 14 * hour, START + 22 * hour),
    ]
    rows = pa.concat_tables(
        [readings("m-1", "torque", [40.0] * 60, step_s=22 * 60), readings("m-2", "torque", [40.0] * 30, step_s=22 * 60)]
    )  # m-1 every 22 min all day; m-2 stops after 11 h
    coverage = frames.coverage_frame(rows, ["m-1", "m-2", "m-3"], windows, START + 23 * hour)
    counts = {(r.machine_id, r.shift): r.rows for r in coverage.itertuples()}
    assert counts[("m-1", "early")] > 0 and counts[("m-1", "late")] > 0
    assert counts[("m-2", "early")] > 0 and counts[("m-2", "late")] == 0
    assert counts[("m-3", "early")] == counts[("m-3", "late")] == 0  # scheduled, sent nothing
    assert not len(frames.coverage_frame(rows, ["m-1"], windows, START + 20 * hour).query("shift == 'late'"))


@pytest.mark.parametrize("shift, drifts", [(0.0, False), (3.0, True)])
def test_drift_frame_flags_a_shifted_feature(shift: float, drifts: bool) -> None:
    rng = np.random.default_rng(3)
    names = list(DRIFT_FEATURES[:3])
    reference = pd.DataFrame({n: rng.normal(0, 1, 3000) for n in names})
    current = pd.DataFrame({n: rng.normal(0, 1, 1000) for n in names})
    current[names[0]] += shift
    psi = frames.drift_frame(reference, current, names).set_index("feature")["psi"]
    assert bool(psi[names[0]] > 0.25) == drifts
    assert psi[names[1:]].max() < 0.1
    assert frames.drift_frame(reference.iloc[:0], current, names).empty  # no reference yet: nothing judged


def test_two_state_dirs_keep_their_own_data_docs(tmp_path) -> None:
    # One process may validate for two lakes (tests do): each validation lands in its own site.
    rows = readings("m-1", "torque", [40.0] * 10).to_pandas()
    rules = [r for r in _value_rules("telemetry") if r.check == "signal_ranges"]
    for name in ("a", "b"):
        outcome = gx_runtime.validate(tmp_path / name, "unit.two_dirs", "run", Batch("rows", rows, rules))
        link = gx_runtime.publish(tmp_path / name, [outcome.identifier])[outcome.identifier]
        assert link.startswith(f"file://{tmp_path / name}/")
