"""Staleness: a machine that stops answering is declared stale, never repeated as fresh.

"Answering" is protocol-specific and reported by the collectors through
``Sink.alive``: an MQTT message for the machine, a Modbus response (an exception
response counts: the device is there, its reading is ``bad``), an OPC UA notification
or a successful probe of the session (OPC UA only notifies on change, so a constant
value from a live server is not staleness).  After ``stale_multiple`` times the machine's
expected interval without an answer, the tracker calls ``on_stale`` once (the gateway
then emits one ``quality="stale"``, ``value=None`` reading per known signal through
the normal sequenced path) and sets the metrics; the next answer clears it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from plantstream.edge.collectors.base import sleep_or_stop
from plantstream.edge.metrics import GatewayMetrics

log = logging.getLogger(__name__)


class StalenessTracker:
    def __init__(
        self,
        intervals: dict[str, float],
        multiple: float,
        on_stale: Callable[[str], None],
        metrics: GatewayMetrics,
    ) -> None:
        now = time.monotonic()
        self.limits = {m: multiple * i for m, i in intervals.items()}
        self.last_answer = dict.fromkeys(intervals, now)
        self.stale: set[str] = set()
        self.on_stale = on_stale
        self.metrics = metrics
        for machine in intervals:
            metrics.machine_stale.labels(machine).set(0)

    def alive(self, machine_id: str) -> None:
        self.last_answer[machine_id] = time.monotonic()
        if machine_id in self.stale:
            self.stale.discard(machine_id)
            self.metrics.machine_stale.labels(machine_id).set(0)
            self.metrics.stale_machines.set(len(self.stale))
            log.info("machine %s answers again", machine_id)

    def check(self) -> list[str]:
        """Declare stale every machine past its limit; returns the newly stale ones."""
        now = time.monotonic()
        newly = [m for m, last in self.last_answer.items() if m not in self.stale and now - last > self.limits[m]]
        for machine in newly:
            self.stale.add(machine)
            self.metrics.machine_stale.labels(machine).set(1)
            self.metrics.stale_events.inc()
            log.warning("machine %s is stale (no answer for %.1f s)", machine, now - self.last_answer[machine])
            self.on_stale(machine)
        self.metrics.stale_machines.set(len(self.stale))
        return newly

    async def run(self, stop: asyncio.Event) -> None:
        period = min([*self.limits.values(), 4.0]) / 4
        while not await sleep_or_stop(stop, max(period, 0.05)):
            self.check()
