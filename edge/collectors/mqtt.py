"""MQTT subscriptions: one client per broker, QoS 1, persistent session, manual acks.

Per machine three topics (docs/edge-protocols.md): ``…/telemetry`` (sampled signals ->
readings), ``…/state`` (the controller's tags -> one status reading per message) and
``…/quality`` (one inspection result per part -> a part reading).

The client id is fixed (the gateway id) and the session is not cleaned, so messages
published while the gateway is away wait in the broker.  Acknowledgements are manual:
a message is PUBACKed only after its readings are committed to the local buffer, so
a ``kill -9`` between receipt and commit makes the broker redeliver it (the
source-time watermark then drops what was already taken).  paho runs its network loop
in its own thread; its automatic reconnect is off so that this task's backoff with
jitter is the one reconnect policy for every protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from plantstream.contract import Quality
from plantstream.contract.edge_wire import mqtt_topic
from plantstream.edge.collectors.base import (
    Backoff,
    Observation,
    PartReading,
    Reading,
    Sink,
    StatusReading,
    now_ms,
    sleep_or_stop,
)
from plantstream.edge.config import MachineConfig

log = logging.getLogger(__name__)
PROTOCOL = "mqtt"
_QUALITY = {"good": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.BAD}


class Payload(msgspec.Struct):
    ts: int
    values: dict[str, float | None]
    quality: str = "good"


class StatePayload(msgspec.Struct):
    """The controller's tags (``contract.machine_tags.MachineTag`` names); any may be missing."""

    ts: int
    state: int | None = None
    unit_mode: int | None = None
    stop_reason: int | None = None
    stop_reason_text: str | None = None
    parts_processed: int | None = None
    parts_defective: int | None = None
    energy_kwh: float | None = None
    power_kw: float | None = None


class PartPayload(msgspec.Struct):
    ts: int
    part_id: str
    result: str
    defect_code: str | None = None
    product_variant: str = ""
    measurements: dict[str, float] = {}


def default_topic(site: str, machine: MachineConfig, channel: str = "telemetry") -> str:
    return mqtt_topic(site, machine.area, machine.line, machine.machine_id, channel)


def machine_topics(site: str, machine: MachineConfig) -> dict[str, str]:
    """Channel -> topic of one machine: configured, else beside its telemetry topic."""
    telemetry = machine.mqtt.topic or default_topic(site, machine)
    root = telemetry.removesuffix("/telemetry") if telemetry.endswith("/telemetry") else None

    def beside(channel: str, configured: str | None) -> str:
        if configured:
            return configured
        return f"{root}/{channel}" if root is not None else default_topic(site, machine, channel)

    return {
        "telemetry": telemetry,
        "state": beside("state", machine.mqtt.state_topic),
        "quality": beside("quality", machine.mqtt.quality_topic),
    }


def parse(machine_id: str, payload: bytes, read_ts: int) -> list[Reading]:
    """One telemetry message -> readings; ``null`` values are "not measured" and produce no reading."""
    msg = msgspec.json.decode(payload, type=Payload)
    quality = _QUALITY.get(msg.quality, Quality.BAD)
    return [
        Reading(machine_id, signal, float(value), quality, msg.ts, read_ts)
        for signal, value in msg.values.items()
        if value is not None
    ]


def parse_channel(machine_id: str, channel: str, payload: bytes, read_ts: int) -> list[Observation]:
    """One message of any of a machine's channels -> its observations."""
    if channel == "telemetry":
        return list(parse(machine_id, payload, read_ts))
    if channel == "state":
        msg = msgspec.json.decode(payload, type=StatePayload)
        tags = {k: v for k, v in msgspec.structs.asdict(msg).items() if k != "ts" and v is not None}
        return [StatusReading(machine_id, tags, msg.ts, read_ts)]
    part = msgspec.json.decode(payload, type=PartPayload)
    return [
        PartReading(
            machine_id,
            part.part_id,
            part.result,
            part.defect_code,
            part.product_variant,
            dict(part.measurements),
            part.ts,
            read_ts,
        )
    ]


async def run_broker(
    *,
    host: str,
    port: int,
    machines: list[MachineConfig],
    site: str,
    client_id: str,
    sink: Sink,
    stop: asyncio.Event,
    backoff: Backoff,
) -> None:
    loop = asyncio.get_running_loop()
    topics = {topic: (m.machine_id, channel) for m in machines for channel, topic in machine_topics(site, m).items()}
    for m in machines:
        if m.mqtt.signals:
            sink.known_signals(m.machine_id, list(m.mqtt.signals))
    seen: dict[str, set[str]] = {m.machine_id: set(m.mqtt.signals) for m in machines}
    connected_before = False
    invalid = 0

    def deliver(machine_id: str, readings: list[Observation], client: mqtt.Client, mid: int) -> None:
        sink.alive(machine_id)
        names = {r.signal for r in readings if isinstance(r, Reading)}
        if not names <= seen[machine_id]:
            seen[machine_id] |= names
            sink.known_signals(machine_id, sorted(seen[machine_id]))
        sink.submit(PROTOCOL, readings, on_durable=lambda: client.ack(mid, 1))

    while not stop.is_set():
        lost = asyncio.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.max_inflight_messages_set(1000)

        subscribed = asyncio.Event()

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                c.subscribe([(t, 1) for t in topics])

        def on_subscribe(
            _c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any, done: asyncio.Event = subscribed
        ) -> None:
            loop.call_soon_threadsafe(done.set)

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, _reason: Any, _p: Any, lost: asyncio.Event = lost) -> None:
            loop.call_soon_threadsafe(lost.set)

        def on_message(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            nonlocal invalid
            target = topics.get(msg.topic)
            try:
                if target is None:
                    raise ValueError(f"unexpected topic {msg.topic}")
                machine_id, channel = target
                readings = parse_channel(machine_id, channel, msg.payload, now_ms())
            except (msgspec.MsgspecError, ValueError) as exc:
                invalid += 1
                if invalid <= 10 or invalid % 1000 == 0:
                    log.warning("mqtt: dropping invalid message on %s (%d so far): %s", msg.topic, invalid, exc)
                c.ack(msg.mid, msg.qos)  # a poison message must not block the session
                return
            loop.call_soon_threadsafe(deliver, machine_id, readings, c, msg.mid)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        started = False
        try:
            await asyncio.to_thread(client.connect, host, port, 30)
            client.loop_start()
            started = True
            # Up means subscribed (SUBACK): before that, a publish would not reach this session.
            await asyncio.wait_for(subscribed.wait(), timeout=30)
            for machine_id in {m for m, _ in topics.values()}:
                sink.connection(machine_id, PROTOCOL, True)
            if connected_before:
                sink.reconnect(PROTOCOL)
            connected_before = True
            backoff.reset()
            stop_wait = asyncio.ensure_future(stop.wait())
            lost_wait = asyncio.ensure_future(lost.wait())
            await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            for fut in (stop_wait, lost_wait):
                fut.cancel()
            if not stop.is_set():
                log.info("mqtt %s:%d: connection lost", host, port)
        except (OSError, TimeoutError, mqtt.WebsocketConnectionError) as exc:
            log.info("mqtt %s:%d: %s", host, port, exc)
        finally:
            with contextlib.suppress(Exception):
                client.disconnect()
            if started:
                await asyncio.to_thread(client.loop_stop)
            for machine_id in {m for m, _ in topics.values()}:
                sink.connection(machine_id, PROTOCOL, False)
        if stop.is_set():
            break
        await sleep_or_stop(stop, backoff.next_delay())
