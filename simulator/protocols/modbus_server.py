"""The plant's Modbus TCP face: one pymodbus server per ``modbus`` endpoint, a unit id per machine.

Each machine type has a register map in the plant file (signal -> table, address,
type, word order, scale; docs/edge-protocols.md).  Integer types serve
``round(value / scale)`` clipped to the type's range; ``float32`` serves the IEEE-754
value, and a dropped-out sensor serves NaN (integer registers keep their last value:
legacy devices have no way to say "missing").  Modbus has no timestamps, so clock
skew does not show here.

The register image is ours; pymodbus asks for it through the device ``action`` hook
on every read, so a read always sees the values of one simulation step.  "Offline"
shuts the server down (connections are refused) and a new server on the same port
brings the device back.
"""

from __future__ import annotations

import math
from functools import partial

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from plantstream.contract.edge_wire import Register
from plantstream.simulator.engine import Reading
from plantstream.simulator.plant import Machine
from plantstream.simulator.plant_config import Endpoint

_DT = ModbusClientMixin.DATATYPE
_TYPES = {"float32": _DT.FLOAT32, "int16": _DT.INT16, "uint16": _DT.UINT16, "int32": _DT.INT32, "uint32": _DT.UINT32}
_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
_TABLE_FC = {"holding": 3, "input": 4}


def encode_register(value: float, reg: Register) -> list[int]:
    """The 16-bit words a device serves for ``value`` under ``reg`` (the gateway decodes the inverse)."""
    if reg.type == "float32":
        return ModbusClientMixin.convert_to_registers(float(value), _DT.FLOAT32, word_order=reg.word_order)
    low, high = _RANGE[reg.type]
    raw = min(max(round(value / reg.scale), low), high)
    return ModbusClientMixin.convert_to_registers(int(raw), _TYPES[reg.type], word_order=reg.word_order)


class _Unit:
    """Register image of one machine: ``holding`` and ``input`` word lists from address 0."""

    def __init__(self, registers: dict[str, Register]) -> None:
        self.registers = registers
        size = {
            table: max((r.address + r.words for r in registers.values() if r.table == table), default=1)
            for table in ("holding", "input")
        }
        self.image = {table: [0] * size[table] for table in size}

    def set(self, values: dict[str, float | int | str | None]) -> None:
        for signal, reg in self.registers.items():
            value = values.get(signal)
            if value is None:
                if reg.type != "float32":
                    continue  # an integer register cannot say "missing": it keeps its last value
                value = math.nan
            words = encode_register(value, reg)
            self.image[reg.table][reg.address : reg.address + len(words)] = words

    def device(self, unit_id: int) -> SimDevice:
        def block(table: str) -> list[SimData]:
            return [SimData(0, count=len(self.image[table]), values=0, datatype=DataType.REGISTERS, readonly=True)]

        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=unit_id,
            simdata=(bits, list(bits), block("holding"), block("input")),
            action=partial(_serve_image, self),
        )


async def _serve_image(  # noqa: PLR0917 - pymodbus calls the action hook positionally
    unit: _Unit,
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    current_registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """pymodbus action hook: copy our image into the block pymodbus is about to answer from."""
    if set_values is not None:
        return ExcCodes.ILLEGAL_FUNCTION  # the simulated devices are read-only
    table = {3: "holding", 4: "input"}.get(function_code)
    if table is not None:
        image = unit.image[table]
        current_registers[start_address : start_address + len(image)] = image
    return None


class ModbusEndpoint:
    """One Modbus TCP server; each machine of the endpoint is a unit id with its type's map."""

    def __init__(
        self, name: str, endpoint: Endpoint, machines: list[Machine], registers: dict[str, dict[str, Register]]
    ):
        self.name, self.endpoint, self.machines = name, endpoint, machines
        self.units = {m.unit_id: _Unit(registers[m.machine_type.value]) for m in machines if m.unit_id is not None}
        self._by_machine = {m.machine_id: m.unit_id for m in machines}
        self._server: ModbusTcpServer | None = None

    @property
    def online(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        devices = [unit.device(unit_id) for unit_id, unit in self.units.items()]
        server = ModbusTcpServer(devices, address=(self.endpoint.host, self.endpoint.port))
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def update(self, readings: list[Reading]) -> None:
        for reading in readings:
            unit_id = self._by_machine.get(reading.machine.machine_id)
            if unit_id is not None:  # sensors and the controller's status block
                self.units[unit_id].set({**reading.values, **reading.status.tag_values()})
