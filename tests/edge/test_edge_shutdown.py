"""Stopping a busy gateway: it returns promptly and keeps every reading it took.

Eight Modbus units polled every 10 ms keep the gateway's writer busy, so readings are
always pending when the stop comes.  (The writer used to commit that last batch and
then wait for a wake-up that never came, so ``run()`` never returned.)  After the stop,
every sequenced event is either in Kafka or still in the buffer - none is lost.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from edge_peers import GatewayThread, ModbusDevice, read_topic, wait_for, with_private_topics

from plantstream.contract.edge_wire import Register
from plantstream.edge.config import parse_config
from plantstream.settings import Settings

SPEED = Register(table="holding", address=0, type="uint16", scale=0.01)
UNITS = tuple(range(1, 9))


def test_a_busy_gateway_stops_promptly_and_keeps_every_reading(
    platform_settings: Settings, tmp_path: Path, free_port, unique_name
) -> None:
    device = ModbusDevice(free_port(), units=UNITS)
    for unit in UNITS:
        device.set(unit, SPEED, unit / 10)
    device.start()
    config = parse_config(
        {
            "machines": [
                {
                    "machine_id": f"belt-{unit:03d}",
                    "area": "a",
                    "line": "l",
                    "protocol": "modbus",
                    "endpoint": f"modbus://127.0.0.1:{device.port}",
                    "interval_s": 0.01,
                    "modbus": {"unit_id": unit, "registers": {"belt_speed": SPEED.model_dump()}},
                }
                for unit in UNITS
            ]
        }
    )
    settings, topic = with_private_topics(
        platform_settings.model_copy(update={"state_dir": tmp_path / "gw"}), unique_name("edge-shutdown")
    )
    try:
        gw = GatewayThread(settings, config)
        wait_for(lambda: gw.metric("plantstream_edge_events_out_total", protocol="modbus") >= 2_000, 60, "traffic")
        started = time.monotonic()
        gw.stop(timeout=30)
        stop_s = time.monotonic() - started
    finally:
        device.close()
    assert stop_s < 20, f"stopping took {stop_s:.1f} s"

    with sqlite3.connect(settings.state_dir / "edge" / "buffer.sqlite") as db:
        sequenced = {m: n for m, n in db.execute("SELECT machine_id, next_seq FROM sequences")}
        buffered = {(m, s) for m, s in db.execute("SELECT machine_id, seq FROM events")}
    in_kafka = {(e.machine_id, e.seq) for e in read_topic(settings, topic).events}
    assert len(sequenced) == len(UNITS)
    for machine, count in sequenced.items():
        have = {s for m, s in in_kafka | buffered if m == machine}
        assert have == set(range(count)), f"{machine}: {count - len(have)} sequenced readings lost at shutdown"
