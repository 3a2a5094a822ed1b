"""Synthetic telemetry the stream benchmarks produce: one definition of its signals,
readings and backpressured producing, shared by ``bench stream`` and ``bench state``."""

from __future__ import annotations

from typing import Any

from plantstream.contract import Telemetry

SIGNALS = ("torque", "vibration", "air_temperature")
BASELINE = (40.0, 3.0, 295.0)  # inside each signal's valid range (contract.signals)


def reading(machine: int, seq: int, ts_ms: int, signal_index: int, offset: float) -> Telemetry:
    """Machine ``m-NNN`` on line ``line-(NNN mod 4)``: signal ``SIGNALS[signal_index]`` at
    its baseline + ``offset``, read 2 ms and ingested 5 ms after ``ts_ms``."""
    return Telemetry(
        site="plant-1",
        area="machining",
        line=f"line-{machine % 4}",
        machine_id=f"m-{machine:03d}",
        seq=seq,
        source_ts=ts_ms,
        read_ts=ts_ms + 2,
        ingest_ts=ts_ms + 5,
        signal=SIGNALS[signal_index],
        value=BASELINE[signal_index] + offset,
        unit="",
    )


def produce(producer: Any, topic: str, key: bytes, value: bytes) -> None:
    """Produce one message, waiting for deliveries while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:
            producer.poll(0.05)
