"""Synthetic telemetry for the dataflow tests."""

from __future__ import annotations

import json
import time

import msgspec

from plantstream.contract import Codec, Telemetry

CODEC = Codec(Telemetry)
SIGNALS = ("torque", "vibration", "air_temperature")
# Recent event times: the hot tables' TTL drops rows older than hot_retention_days.
# Aligned to 5 minutes so windows of 60 s and 300 s start with the data.
BASE_MS = (int(time.time() * 1000) - 6 * 3_600_000) // 300_000 * 300_000


def reading(machine: int, seq: int, ts_ms: int, signal: str, value: float | None) -> Telemetry:
    return Telemetry(
        site="plant-1",
        area="machining",
        line="line-1",
        machine_id=f"cnc-{machine:02d}",
        seq=seq,
        source_ts=ts_ms,
        read_ts=ts_ms + 3,
        ingest_ts=ts_ms + 7,
        signal=signal,
        value=value,
        unit="",
    )


BASELINE = {"torque": 40.0, "vibration": 3.0, "air_temperature": 295.0}


def telemetry_series(machines: int, seconds: int, *, start_ms: int = BASE_MS, period_ms: int = 1000) -> list[Telemetry]:
    """Every machine sends every signal every ``period_ms``, in time order (machines
    interleaved, as a plant produces them); per-machine seq +1 per event; values in range."""
    events = []
    seqs = [0] * machines
    for step in range(seconds * 1000 // period_ms):
        ts = start_ms + step * period_ms
        for machine in range(machines):
            for s_index, signal in enumerate(SIGNALS):
                value = BASELINE[signal] + (machine * 7 + step * 13 + s_index * 3) % 50 / 10.0
                events.append(reading(machine, seqs[machine], ts, signal, value))
                seqs[machine] += 1
    return events


def malformed_payloads() -> list[tuple[bytes, str]]:
    """(payload, expected ErrorKind) for each way a message can be bad."""
    good = msgspec.to_builtins(reading(99, 1, BASE_MS, "torque", 1.0))
    return [
        (b"", "empty"),
        (b"{not json", "malformed"),
        (json.dumps({**good, "seq": -5}).encode(), "schema"),
        (json.dumps({**good, "seq": 2**64}).encode(), "schema"),  # beyond int64: would fail the batch's columns
        (json.dumps({k: v for k, v in good.items() if k != "machine_id"}).encode(), "schema"),
        (json.dumps({**good, "v": 99}).encode(), "future_version"),
        (json.dumps({**good, "v": True}).encode(), "schema"),
        (json.dumps({**good, "value": 1.0}).encode().replace(b'"value": 1.0', b'"value": 1e400'), "impossible_value"),
        (json.dumps({**good, "signal": "flux_capacitance"}).encode(), "schema"),
        (json.dumps({**good, "value": 1e9}).encode(), "impossible_value"),
        (json.dumps({**good, "signal": "vibration", "value": -3.0}).encode(), "impossible_value"),
    ]
