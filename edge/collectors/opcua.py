"""OPC UA: a subscription (data-change notifications) per machine folder, re-browsed periodically.

Each machine is one task with its own client session.  Every ``browse_interval_s`` the
machine's folder is browsed in one request (``get_children_descriptions``); variables
that appeared are subscribed, those that vanished unsubscribed, so tags added or
removed on the server are picked up without a restart.  Every ``interval_s`` the
session is probed (a read of the server's clock): OPC UA only notifies on change, so a
successful probe is what tells a quiet-but-alive machine from a dead one.  Any failure
drops the session and reconnects with backoff and jitter.

Each notification carries the ``DataValue``'s SourceTimestamp and StatusCode; the
StatusCode's severity bits map to good / uncertain / bad.

The controller's tags (PackML state and mode, stop reason, part counters, energy meter:
``contract.machine_tags.OPCUA_TAGS``, in the machine's ``PackTags`` and ``EnergyMeter``
sub-folders) are *read*, all of them in one Read request, every ``interval_s``: one
request returns them from one moment of the server, so the counters and the state seen
together belong together (subscriptions notify each variable on its own).  That read is
also the session probe; a machine without those folders is probed by reading the
server's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, ua

from plantstream.contract import Quality
from plantstream.contract.machine_tags import OPCUA_TAGS, MachineTag
from plantstream.edge.collectors.base import Backoff, Reading, Sink, StatusReading, now_ms, sleep_or_stop
from plantstream.edge.config import MachineConfig

log = logging.getLogger(__name__)
PROTOCOL = "opcua"


class _PublishOnClosedConnection(logging.Filter):
    """Drops asyncua's traceback for a publish attempt on a connection that is gone.

    When a server goes away, asyncua logs "Publish iteration crashed" with a full
    traceback about once a second until the session is torn down; the collector already
    reports the loss (one line), marks the machine stale and reconnects.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, ConnectionError) and record.getMessage().startswith("Publish iteration crashed"))


logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_PublishOnClosedConnection())


def quality_of(status: ua.StatusCode | None) -> Quality:
    """StatusCode severity (top two bits): 00 good, 01 uncertain, 10/11 bad."""
    if status is None:
        return Quality.GOOD
    severity = (int(status.value) >> 30) & 0b11
    return Quality.GOOD if severity == 0 else Quality.UNCERTAIN if severity == 1 else Quality.BAD


def epoch_ms(when: datetime | None) -> int | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1000)


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


class _Handler:
    """asyncua calls this on the event loop for each data change."""

    def __init__(self, machine_id: str, sink: Sink) -> None:
        self.machine_id = machine_id
        self.sink = sink
        self.names: dict[ua.NodeId, str] = {}

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        signal = self.names.get(node.nodeid)
        if signal is None:
            return  # a notification racing an unsubscribe
        dv = data.monitored_item.Value
        # ``val`` is None for a Bad status; the DataValue still carries what the server sent.
        value = dv.Value.Value if dv.Value is not None else val
        reading = Reading(
            self.machine_id,
            signal,
            as_float(value),
            quality_of(dv.StatusCode),
            epoch_ms(dv.SourceTimestamp),
            now_ms(),
        )
        self.sink.alive(self.machine_id)
        self.sink.submit(PROTOCOL, [reading])

    def status_change_notification(self, status: Any) -> None:
        log.info("opcua %s: subscription status %s", self.machine_id, status)


async def run_machine(site: str, machine: MachineConfig, sink: Sink, stop: asyncio.Event, backoff: Backoff) -> None:
    connected_before = False
    while not stop.is_set():
        client = Client(machine.endpoint, timeout=max(1.0, min(4.0, machine.interval_s * 2)))
        connected = False
        try:
            await client.connect()
            connected = True
            sink.connection(machine.machine_id, PROTOCOL, True)
            if connected_before:
                sink.reconnect(PROTOCOL)
            connected_before = True
            backoff.reset()
            await _session(site, machine, client, sink, stop)
        except (OSError, TimeoutError, ConnectionError, ua.UaError, asyncio.IncompleteReadError) as exc:
            log.info("opcua %s (%s): %r", machine.machine_id, machine.endpoint, exc)
        finally:
            if connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), timeout=2.0)
            else:
                with contextlib.suppress(Exception):
                    await client.disconnect_socket()
            sink.connection(machine.machine_id, PROTOCOL, False)
        if stop.is_set():
            break
        await sleep_or_stop(stop, backoff.next_delay())


async def _session(site: str, machine: MachineConfig, client: Client, sink: Sink, stop: asyncio.Event) -> None:
    opts = machine.opcua
    ns = await client.get_namespace_index(opts.namespace_uri)
    path = opts.folder or ["Plant", site, machine.area, machine.line, machine.machine_id]
    folder = await client.nodes.objects.get_child([f"{ns}:{p}" for p in path])
    clock = client.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime)
    tags = await _tag_nodes(folder, ns)
    handler = _Handler(machine.machine_id, sink)
    sub = await client.create_subscription(opts.publishing_interval_ms, handler)
    handles: dict[ua.NodeId, int] = {}
    loop = asyncio.get_running_loop()
    next_browse = 0.0
    while not stop.is_set():
        if loop.time() >= next_browse:
            await _sync_subscriptions(
                client=client,
                folder=folder,
                sub=sub,
                handler=handler,
                handles=handles,
                sink=sink,
                machine_id=machine.machine_id,
            )
            next_browse = loop.time() + opts.browse_interval_s
        if tags:
            status = await _read_status(client, machine.machine_id, tags)
            if status is not None:
                sink.submit(PROTOCOL, [status])
        else:
            await clock.read_value()
        sink.alive(machine.machine_id)
        if await sleep_or_stop(stop, min(machine.interval_s, opts.browse_interval_s)):
            return


async def _tag_nodes(folder: Any, ns: int) -> dict[MachineTag, Any]:
    """The machine's controller tag nodes that exist on this server (tag -> node)."""
    found: dict[MachineTag, Any] = {}
    for tag, (sub_folder, name, _variant) in OPCUA_TAGS.items():
        try:
            found[tag] = await folder.get_child([f"{ns}:{sub_folder}", f"{ns}:{name}"])
        except ua.UaError:
            continue  # a device without that tag says what it can
    return found


async def _read_status(client: Client, machine_id: str, tags: dict[MachineTag, Any]) -> StatusReading | None:
    """All tags in ONE Read request (values from one moment of the server)."""
    values = await client.read_attributes(list(tags.values()))
    read_ts = now_ms()
    taken: dict[str, float | str] = {}
    source: list[int] = []
    for tag, dv in zip(tags, values, strict=True):
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            continue
        value = dv.Value.Value if dv.Value is not None else None
        if value is None:
            continue
        taken[tag.value] = str(value) if tag is MachineTag.STOP_REASON_TEXT else float(value)
        ts = epoch_ms(dv.SourceTimestamp)
        if ts is not None:
            source.append(ts)
    if not taken:
        return None
    return StatusReading(machine_id, taken, max(source) if source else None, read_ts)


async def _sync_subscriptions(
    *,
    client: Client,
    folder: Any,
    sub: Any,
    handler: _Handler,
    handles: dict[ua.NodeId, int],
    sink: Sink,
    machine_id: str,
) -> None:
    refs = await folder.get_children_descriptions(refs=ua.ObjectIds.HierarchicalReferences)
    now = {r.NodeId: r.BrowseName.Name for r in refs if r.NodeClass == ua.NodeClass.Variable}
    gone = [n for n in handles if n not in now]
    if gone:
        await sub.unsubscribe([handles.pop(n) for n in gone])
        for n in gone:
            handler.names.pop(n, None)
        log.info("opcua %s: %d signals removed", machine_id, len(gone))
    new = [n for n in now if n not in handles]
    if new:
        for n in new:
            handler.names[n] = now[n]
        results = await sub.subscribe_data_change([client.get_node(n) for n in new])
        for n, handle in zip(new, results, strict=True):
            if isinstance(handle, int):
                handles[n] = handle
            else:
                handler.names.pop(n, None)
                log.warning("opcua %s: cannot subscribe %s: %s", machine_id, now[n], handle)
        log.info("opcua %s: subscribed %d signals", machine_id, len(new))
    if gone or new:
        sink.known_signals(machine_id, sorted(now[n] for n in handles))
