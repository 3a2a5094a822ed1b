"""The plant live on the wire, collected by an edge gateway into Kafka (the demo's source).

The shipped plant file (:mod:`plantstream.simulator.plants`) is served in real time over
its protocols - OPC UA, MQTT through a mosquitto it starts, Modbus TCP - on free loopback
ports; a gateway configured from the same plant file collects, sequences, buffers on
disk and forwards to the telemetry topic.  After ``seconds`` the plant stops, the
gateway is given time to forward everything it collected, and the gap report compares
what the gateway produced with what Kafka holds.

Why real time (``speed=1``): Modbus has no timestamps, so a Modbus reading's event time
is the gateway's clock; a plant running faster than real time would stamp its OPC UA
and MQTT readings ahead of that clock and the stream would call the Modbus ones late.

Random faults are off: the demo's counts must be checkable (spikes would be dead
letters by design).  The edge tests exercise faults, outages and staleness.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from plantstream.settings import Settings
from plantstream.waiting import wait_until

if TYPE_CHECKING:
    from plantstream.simulator.engine import Snapshot

#: How long the gateway may take to forward what it collected once the plant stopped.
DRAIN_TIMEOUT_S = 120.0
#: How long every machine's peer may take to be connected after the plant started.
CONNECT_TIMEOUT_S = 60.0
PROTOCOLS = ("opcua", "mqtt", "modbus")


@dataclass(frozen=True)
class Produced:
    """What a source handed to Kafka in this run, per stream."""

    events: dict[str, int]
    machines: int
    by_protocol: dict[str, int] = field(default_factory=dict)
    gaps_missing: dict[str, int] = field(default_factory=dict)
    ground_truth_parts: int | None = None
    #: Events the broker acknowledged but did not hold when read back (resent; docs/platform.md).
    acked_then_lost: int = 0


@dataclass(frozen=True)
class LivePlantRun:
    produced: Produced  # per stream, delivered to Kafka by the gateway in this run
    plant_steps: int
    seconds: float

    @property
    def events(self) -> int:
        return sum(self.produced.events.values())


def run_live_plant(
    settings: Settings,
    *,
    seconds: float,
    on_progress: Callable[[int, int], None] = lambda _d, _t: None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
) -> LivePlantRun:
    """Serve the plant for ``seconds`` of wall time through a gateway into Kafka, every stream.

    ``on_progress(elapsed_s, seconds)`` is called about every 0.2 s while the plant runs;
    ``on_snapshot`` receives every step of the plant (what it served: tests compare it with
    what reached Kafka).

    The plant is held still until the gateway is connected to every machine and has read
    each one's state once, and again at the end until the gateway has read each machine's
    final state: so the parts the plant made in the run are exactly the parts the gateway
    could see, and the run's ground truth can be compared with the lake part for part.
    """
    from plantstream.connect.topics import ensure_topics
    from plantstream.edge.config import parse_config
    from plantstream.edge.gaps import gap_report
    from plantstream.edge.gateway import BUFFER_FILE, GatewayInThread, edge_dir
    from plantstream.services.isolated import pick_free_port
    from plantstream.simulator.ground_truth import read_ground_truth
    from plantstream.simulator.plant_config import load_plant
    from plantstream.simulator.run import simulator_dir
    from plantstream.simulator.serve import serve_in_thread

    started = time.perf_counter()
    ensure_topics(settings)
    plant = load_plant()
    plant = plant.with_endpoint_ports({name: pick_free_port() for name in plant.endpoints})
    config = parse_config(plant.gateway_config())
    out_dir = simulator_dir(settings) / "live"
    truth_path = out_dir / "ground_truth.jsonl"
    truth_before = len(read_ground_truth(truth_path))
    with (
        serve_in_thread(plant, out_dir, speed=1.0, faults=False, on_snapshot=on_snapshot, held=True) as running,
        GatewayInThread(settings, config) as gw,
    ):
        connected = gw.gateway.connected
        wait_until(lambda: all(connected.values()), CONNECT_TIMEOUT_S, lambda: _not_connected(connected))
        memory = gw.gateway.store.tracker.memory
        seen_after(memory, config.machines, 0, "the gateway to read every machine's state once")
        assert running.server.last is not None
        baseline_ts = running.server.last.ts  # parts up to here are the gateway's baseline
        running.resume()
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            on_progress(int(elapsed), int(seconds))
            time.sleep(min(0.2, seconds - elapsed))
        on_progress(int(seconds), int(seconds))
        # The gateway reads back what it sent right after connecting (edge/forwarder.py):
        # let it finish while the plant still runs, so stopping the plant marks nothing stale.
        forwarder = gw.gateway.forwarder
        wait_until(lambda: not forwarder.verifying, DRAIN_TIMEOUT_S, "the gateway's read-back after connecting")
        running.hold()
        held_at = int(time.time() * 1000) + 50  # after the last step was served
        seen_after(memory, config.machines, held_at, "the gateway to read every machine's final state")
        running.stop()
        wait_until(gw.drained, DRAIN_TIMEOUT_S, lambda: f"the gateway to drain ({gw.gateway.store.events} events left)")
    # Stopped: what it delivered while shutting down is counted too; anything it could not
    # deliver stays buffered for its next run (and is not counted here).
    forwarder = gw.gateway.forwarder
    by_protocol = {p: int(gw.metric("plantstream_edge_events_out_total", protocol=p)) for p in PROTOCOLS}
    gaps = gap_report(settings, buffer_path=edge_dir(settings) / BUFFER_FILE)
    truth = read_ground_truth(truth_path)[truth_before:]
    parts = sum(1 for e in truth if e.kind == "part" and e.ts > baseline_ts)
    produced = Produced(
        events=dict(forwarder.delivered),
        machines=len(config.machines),
        by_protocol=by_protocol,
        gaps_missing={stream: gaps.missing_in(stream) for stream in gaps.topics},
        ground_truth_parts=parts,
        acked_then_lost=int(gw.metric("plantstream_edge_lost_after_ack_total")),
    )
    steps = running.server.report.steps
    return LivePlantRun(produced=produced, plant_steps=steps, seconds=time.perf_counter() - started)


def seen_after(memory: dict, machines: list, read_ts: int, what: str) -> None:
    """Wait until the gateway has read every machine's status at or after ``read_ts`` (epoch ms)."""

    def seen() -> bool:
        return all(
            (mem := memory.get(m.machine_id)) is not None and (mem.status_read_ts or -1) >= read_ts for m in machines
        )

    wait_until(seen, CONNECT_TIMEOUT_S, what)


def _not_connected(connected: dict[str, bool]) -> str:
    return "connections to " + ", ".join(sorted(m for m, up in connected.items() if not up))
