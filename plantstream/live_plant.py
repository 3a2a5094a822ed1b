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
from dataclasses import dataclass
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
class LivePlantRun:
    events: int  # delivered to Kafka by the gateway in this run
    by_protocol: dict[str, int]
    machines: int
    plant_steps: int
    gaps_missing: int  # sequence numbers the gateway produced that are neither in Kafka nor buffered
    seconds: float


def run_live_plant(
    settings: Settings,
    *,
    seconds: float,
    on_progress: Callable[[int, int], None] = lambda _d, _t: None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
) -> LivePlantRun:
    """Serve the plant for ``seconds`` of wall time through a gateway into the telemetry topic.

    ``on_progress(elapsed_s, seconds)`` is called about every 0.2 s while the plant runs;
    ``on_snapshot`` receives every step of the plant (what it served: tests compare it with
    what reached Kafka).
    """
    from plantstream.contract.topics import ensure_topics
    from plantstream.edge.config import parse_config
    from plantstream.edge.gaps import gap_report
    from plantstream.edge.gateway import BUFFER_FILE, GatewayInThread, edge_dir
    from plantstream.services.isolated import pick_free_port
    from plantstream.simulator.plant_config import load_plant
    from plantstream.simulator.run import simulator_dir
    from plantstream.simulator.serve import serve_in_thread

    started = time.perf_counter()
    ensure_topics(settings)
    plant = load_plant()
    plant = plant.with_endpoint_ports({name: pick_free_port() for name in plant.endpoints})
    config = parse_config(plant.gateway_config())
    topic = settings.stream.telemetry_topic
    with (
        serve_in_thread(
            plant, simulator_dir(settings) / "live", speed=1.0, faults=False, on_snapshot=on_snapshot
        ) as running,
        GatewayInThread(settings, config, topic=topic) as gw,
    ):
        connected = gw.gateway.connected
        wait_until(lambda: all(connected.values()), CONNECT_TIMEOUT_S, lambda: _not_connected(connected))
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            on_progress(int(elapsed), int(seconds))
            time.sleep(min(0.2, seconds - elapsed))
        on_progress(int(seconds), int(seconds))
        running.stop()
        wait_until(gw.drained, DRAIN_TIMEOUT_S, lambda: f"the gateway to drain ({gw.gateway.store.events} events left)")
    # Stopped: what it delivered while shutting down is counted too; anything it could not
    # deliver stays buffered for its next run (and is not counted here).
    forwarder = gw.gateway.forwarder
    by_protocol = {p: int(gw.metric("plantstream_edge_events_out_total", protocol=p)) for p in PROTOCOLS}
    gaps = gap_report(settings, buffer_path=edge_dir(settings) / BUFFER_FILE, topic=topic)
    return LivePlantRun(
        events=forwarder.delivered_total,
        by_protocol=by_protocol,
        machines=len(config.machines),
        plant_steps=running.server.report.steps,
        gaps_missing=gaps.missing,
        seconds=time.perf_counter() - started,
    )


def _not_connected(connected: dict[str, bool]) -> str:
    return "connections to " + ", ".join(sorted(m for m, up in connected.items() if not up))
