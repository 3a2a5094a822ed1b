"""Overflow policy and gap accounting: a buffer smaller than the outage drops by its policy,
counts and logs it, never crashes, and every lost event (and one deleted by hand) is a gap.

The outage here is a Kafka that is not there at all (a closed port) for the first gateway
run; the second run, on the same state dir, reaches the session's real Kafka and forwards
what the buffer kept.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from edge_peers import GatewayThread, ModbusDevice, read_topic, wait_for, with_private_topics

from plantstream.contract import Quality
from plantstream.contract.edge_wire import Register
from plantstream.edge.config import parse_config
from plantstream.edge.gaps import gap_report
from plantstream.settings import Settings

SPEED = Register(table="holding", address=0, type="uint16", scale=0.01)


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_overflow_is_counted_logged_and_visible_as_gaps(
    platform_settings: Settings, tmp_path: Path, free_port, *, unique_name, policy: str, caplog
) -> None:
    device = ModbusDevice(free_port())
    device.set(1, SPEED, 2.5)
    device.start()
    config = parse_config(
        {
            "machines": [
                {
                    "machine_id": "belt-007",
                    "area": "a",
                    "line": "l",
                    "protocol": "modbus",
                    "endpoint": f"modbus://127.0.0.1:{device.port}",
                    "interval_s": 0.01,
                    "modbus": {"registers": {"belt_speed": SPEED.model_dump()}},
                }
            ]
        }
    )
    edge = platform_settings.edge.model_copy(update={"buffer_max_events": 100, "overflow_policy": policy})
    online, topic = with_private_topics(
        platform_settings.model_copy(update={"state_dir": tmp_path / "gw", "edge": edge}), unique_name("edge-overflow")
    )
    offline = online.model_copy(
        update={"kafka": online.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})}
    )
    try:
        gw = GatewayThread(offline, config)
        try:
            wait_for(lambda: gw.metric("plantstream_edge_buffer_dropped_total", policy=policy) >= 150, 30, "overflow")
            assert gw.gateway.store.events <= 100
            assert gw.metric("plantstream_edge_kafka_up") == 0
        finally:
            gw.stop()
    finally:
        device.close()
    assert any("buffer full" in r.getMessage() and policy in r.getMessage() for r in caplog.records)
    buffer = offline.state_dir / "edge" / "buffer.sqlite"
    with sqlite3.connect(buffer) as db:
        kept = [s for (s,) in db.execute("SELECT seq FROM events ORDER BY id")]
        produced = db.execute("SELECT next_seq FROM sequences").fetchone()[0]
        assert len(kept) <= 100 and produced > len(kept)
        if policy == "drop_oldest":
            assert kept == list(range(produced - len(kept), produced))  # the newest survive
        else:
            assert kept == list(range(len(kept)))  # the oldest survive
        # and one more, deliberately deleted by hand: it must show up as a gap too
        victim = kept[len(kept) // 2]
        db.execute("DELETE FROM events WHERE seq = ?", (victim,))
    gw = GatewayThread(online, parse_config({"machines": []}))  # forward what is left, collect nothing
    try:
        wait_for(lambda: gw.gateway.store.events == 0, 30, "buffer forwarded")
    finally:
        gw.stop()
    report = gap_report(online, buffer_path=buffer)
    machine = report.machines["belt-007"]
    assert machine.produced == produced
    assert machine.in_kafka == len(kept) - 1
    assert machine.missing == produced - len(kept) + 1 == report.missing
    assert [victim, victim] in machine.missing_ranges
    assert machine.dropped_by_overflow == produced - len(kept)
    assert {e.value for e in read_topic(online, topic).events if e.quality != Quality.STALE} == {2.5}
