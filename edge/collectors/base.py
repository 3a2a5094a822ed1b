"""What every collector shares: what it hands over, the sink it hands it to, and backoff.

Collectors know nothing about sequence numbers, buffers or Kafka: they turn protocol
data into observations and call the :class:`Sink`:

* :class:`Reading` - one value of one signal (becomes ``Telemetry``);
* :class:`StatusReading` - the machine controller's tags read together (PackML state and
  mode, stop reason, part counters, energy meter: ``contract.machine_tags``), from which
  the gateway derives machine events, parts and energy readings;
* :class:`PartReading` - one part's inspection result, where the device reports it
  (MQTT).

``on_durable`` lets a collector acknowledge upstream (MQTT PUBACK) only after the
gateway has the observations on disk.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from plantstream.contract import Quality


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one signal as the protocol gave it (before sequencing)."""

    machine_id: str
    signal: str
    value: float | None
    quality: Quality
    source_ts: int | None  # epoch ms from the device, None where the protocol has none
    read_ts: int  # epoch ms when the gateway received it


@dataclass(frozen=True, slots=True)
class StatusReading:
    """The controller tags of one machine as one read gave them (any subset of
    ``MachineTag``; numbers as read, the stop reason text as a string)."""

    machine_id: str
    tags: dict[str, float | str]
    source_ts: int | None
    read_ts: int


@dataclass(frozen=True, slots=True)
class PartReading:
    """One part's inspection result as the device published it."""

    machine_id: str
    part_id: str
    result: str  # good | scrap | rework
    defect_code: str | None
    product_variant: str
    measurements: dict[str, float]
    source_ts: int | None
    read_ts: int


Observation = Reading | StatusReading | PartReading


class Sink(Protocol):
    """The gateway side a collector talks to (all calls from the event loop thread)."""

    def submit(
        self, protocol: str, readings: Sequence[Observation], on_durable: Callable[[], None] | None = None
    ) -> None:
        """Queue observations for sequencing and the durable buffer; ``on_durable`` runs after the commit."""

    def alive(self, machine_id: str) -> None:
        """The machine answered (data, an error response, a successful probe): it is not stale."""

    def connection(self, machine_id: str, protocol: str, up: bool) -> None:
        """The connection to this machine's peer went up or down (health and metrics)."""

    def reconnect(self, protocol: str) -> None:
        """A peer connection was re-established after a loss (counted)."""

    def known_signals(self, machine_id: str, signals: list[str]) -> None:
        """The signals a machine currently has (what a stale marker covers)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Backoff:
    """Exponential backoff with full jitter: ``uniform(min, min(max, min * 2**n))``.

    Jitter spreads the reconnects of many machines whose peer (e.g. one Modbus
    gateway for a whole line) came back at the same instant.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        cap = min(self.max_s, self.min_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(self.min_s, cap)

    def reset(self) -> None:
        self.attempt = 0


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile (so loops exit at once)."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
    except TimeoutError:
        return False
    return True
