"""State stays bounded: a long simulated run with machines joining and leaving.

48 hours of event time on one partition; every hour a different fifth of a pool of 100
machines is active (machines join, leave, and some come back).  After a warm-up of
three hours, the number of tracked machines, the open windows and the size of the
recovery snapshot (what Bytewax pickles each epoch) must stay flat: closed windows are
dropped and idle machines expire after ``idle_key_expiry``.
"""

from __future__ import annotations

import pickle

from telemetry_samples import BASE_MS, reading
from test_windowing import batches_of

from plantstream.streaming.windowing import PartitionWindows, WindowConfig

CONFIG = WindowConfig(window_seconds=(60, 300), allowed_lateness_ms=30_000, idle_key_expiry_ms=1_800_000)
POOL, ACTIVE, HOURS, PERIOD_S = 100, 20, 48, 30


def test_state_and_snapshot_size_stay_flat_as_machines_come_and_go() -> None:
    windows = PartitionWindows(CONFIG)
    seqs = [0] * POOL
    samples = []  # (tracked machines, open windows, snapshot bytes) at the end of each hour
    for hour in range(HOURS):
        active = [(hour * 7 + i * 5) % POOL for i in range(ACTIVE)]  # a shifting, overlapping set
        events = []
        for step in range(3_600 // PERIOD_S):
            ts = BASE_MS + hour * 3_600_000 + step * PERIOD_S * 1000
            for m in active:
                events.append(reading(m, seqs[m], ts, "torque", 40.0))
                seqs[m] += 1
        for batch in batches_of(events, [600]):
            windows.process(batch)
        samples.append((len(windows.machines), windows.open_window_count, len(pickle.dumps(windows.snapshot()))))

    steady = samples[3:]
    machines = [s[0] for s in steady]
    open_windows = [s[1] for s in steady]
    sizes = [s[2] for s in steady]
    assert max(machines) <= 2 * ACTIVE, f"idle machines must expire: {machines}"
    assert len({m for m in range(POOL) if seqs[m]}) == POOL  # every machine took part at some point
    assert max(open_windows) <= 2 * 2, f"closed windows must be dropped: {open_windows}"
    first, last = sizes[: len(sizes) // 2], sizes[len(sizes) // 2 :]
    assert max(last) <= 1.25 * max(first), f"snapshot size grows: {sizes}"
    assert max(sizes) < 200_000
