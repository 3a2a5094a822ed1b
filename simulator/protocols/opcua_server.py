"""The plant's OPC UA face: one asyncua server per ``opcua`` endpoint of the plant file.

Address space as in docs/edge-protocols.md: ``Objects/Plant/<site>/<area>/<line>/<machine_id>/``
is a folder per machine, each signal a ``Double`` variable under it (browse name = the
signal, node id ``ns=<urn:plantstream:plant>;s=<site>/<area>/<line>/<machine_id>/<signal>``);
the controller's state, part counters and energy meter live in the sub-folders
``PackTags`` and ``EnergyMeter`` (``contract.machine_tags.OPCUA_TAGS``: PackML's names and
Int32 counters).
Every update writes a full ``DataValue``: the simulated source timestamp (shifted
under a clock-skew fault) and a status code (``Good``; ``Bad`` with a null value
when the sensor dropped out), so the gateway sees what a real server would send.

"Offline" (a device fault) stops the server: clients lose the session and get
connection refused until it is started again with the address space rebuilt.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from asyncua import Server, ua

from plantstream.contract import Quality
from plantstream.contract.edge_wire import OPCUA_NAMESPACE
from plantstream.contract.machine_tags import OPCUA_TAGS
from plantstream.simulator.engine import Reading
from plantstream.simulator.plant import Machine
from plantstream.simulator.plant_config import Endpoint

STATUS = {
    Quality.GOOD: ua.StatusCodes.Good,
    Quality.UNCERTAIN: ua.StatusCodes.Uncertain,
    Quality.BAD: ua.StatusCodes.Bad,
    Quality.STALE: ua.StatusCodes.Bad,
}

for _name in ("asyncua", "asyncua.server", "asyncua.server.address_space"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def node_id_string(machine: Machine, signal: str) -> str:
    """The string part of a signal's node id (stable, so clients may also address nodes directly)."""
    return f"{machine.site}/{machine.area}/{machine.line}/{machine.machine_id}/{signal}"


class OpcUaEndpoint:
    """One OPC UA server serving the machines assigned to one endpoint."""

    def __init__(self, name: str, endpoint: Endpoint, machines: list[Machine]) -> None:
        self.name, self.endpoint, self.machines = name, endpoint, machines
        self.url = endpoint.url()
        self._server: Server | None = None
        self._nodes: dict[tuple[str, str], ua.NodeId] = {}
        self._tag_types: dict[tuple[str, str], ua.VariantType] = {}
        self._last: dict[str, Reading] = {}

    @property
    def online(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name(f"PlantStream simulator ({self.name})")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(OPCUA_NAMESPACE)
        plant = await server.nodes.objects.add_folder(ua.NodeId("Plant", idx), ua.QualifiedName("Plant", idx))
        folders: dict[tuple[str, ...], object] = {}
        self._nodes = {}
        for m in self.machines:
            parent = plant
            path: tuple[str, ...] = ()
            for part in (m.site, m.area, m.line, m.machine_id):
                path = (*path, part)
                if path not in folders:
                    folders[path] = await parent.add_folder(ua.NodeId("/".join(path), idx), ua.QualifiedName(part, idx))
                parent = folders[path]
            for signal in m.signals:
                node = await parent.add_variable(
                    ua.NodeId(node_id_string(m, signal), idx),
                    ua.QualifiedName(signal, idx),
                    ua.Variant(0.0, ua.VariantType.Double),
                )
                self._nodes[(m.machine_id, signal)] = node.nodeid
            sub_folders: dict[str, object] = {}
            for tag, (folder, name, variant) in OPCUA_TAGS.items():
                if folder not in sub_folders:
                    sub_folders[folder] = await parent.add_folder(
                        ua.NodeId(node_id_string(m, folder), idx), ua.QualifiedName(folder, idx)
                    )
                kind = getattr(ua.VariantType, variant)
                node = await sub_folders[folder].add_variable(
                    ua.NodeId(node_id_string(m, f"{folder}/{name}"), idx),
                    ua.QualifiedName(name, idx),
                    ua.Variant("" if variant == "String" else 0, kind),
                )
                self._nodes[(m.machine_id, tag.value)] = node.nodeid
                self._tag_types[(m.machine_id, tag.value)] = kind
        await server.start()
        self._server = server
        for reading in self._last.values():  # a restarted device serves its current values at once
            await self._write(reading)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def update(self, readings: list[Reading]) -> None:
        for reading in readings:
            self._last[reading.machine.machine_id] = reading
            if self._server is not None:
                await self._write(reading)

    async def _write(self, reading: Reading) -> None:
        assert self._server is not None
        source = datetime.fromtimestamp(reading.source_ts / 1000, tz=UTC)
        now = datetime.now(UTC)
        mid = reading.machine.machine_id
        for signal, value in reading.values.items():
            node = self._nodes.get((mid, signal))
            if node is None:
                continue
            status = ua.StatusCode(STATUS[reading.quality[signal]])
            variant = ua.Variant() if value is None else ua.Variant(float(value), ua.VariantType.Double)
            await self._server.write_attribute_value(
                node, ua.DataValue(variant, StatusCode=status, SourceTimestamp=source, ServerTimestamp=now)
            )
        good = ua.StatusCode(ua.StatusCodes.Good)
        for tag, value in reading.status.tag_values().items():
            key = (mid, str(tag))
            kind = self._tag_types[key]
            typed = (
                int(value)
                if kind == ua.VariantType.Int32
                else (float(value) if kind == ua.VariantType.Double else value)
            )
            await self._server.write_attribute_value(
                self._nodes[key],
                ua.DataValue(ua.Variant(typed, kind), StatusCode=good, SourceTimestamp=source, ServerTimestamp=now),
            )
