"""The plant's shape: sites -> areas -> lines -> machines (ISA-95 style), and which
signals each machine type has.

:class:`Machine` is the one record every part of the simulator works on; the YAML
plant files (:mod:`.plant_config`) and the programmatic :func:`default_plant` of the
walking skeleton both produce it, so the physics and the Kafka path do not care where
a plant came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MachineType(StrEnum):
    CNC_MILL = "cnc_mill"
    PRESS = "press"
    ROBOT_CELL = "robot_cell"
    CONVEYOR = "conveyor"


SIGNALS_BY_TYPE: dict[MachineType, tuple[str, ...]] = {
    MachineType.CNC_MILL: (
        "air_temperature",
        "process_temperature",
        "rotational_speed",
        "torque",
        "tool_wear",
        "vibration",
        "power",
    ),
    MachineType.PRESS: ("air_temperature", "process_temperature", "pressure", "vibration", "power", "cycle_count"),
    MachineType.ROBOT_CELL: ("air_temperature", "torque", "current", "vibration", "power", "cycle_count"),
    MachineType.CONVEYOR: ("air_temperature", "belt_speed", "current", "vibration", "power"),
}

#: Electrical draw when not cutting (kW): idle = powered and waiting, standby = stopped
#: or in maintenance.  Energy per part only makes sense if waiting costs something.
IDLE_KW: dict[MachineType, float] = {
    MachineType.CNC_MILL: 1.2,
    MachineType.PRESS: 2.0,
    MachineType.ROBOT_CELL: 0.6,
    MachineType.CONVEYOR: 0.3,
}
STANDBY_KW = 0.15


@dataclass(frozen=True, slots=True)
class Machine:
    machine_id: str
    machine_type: MachineType
    site: str
    area: str
    line: str
    product_quality: str  # AI4I product variant L / M / H: sets the overstrain limit
    protocol: str = "kafka-direct"  # opcua / mqtt / modbus / kafka-direct
    endpoint: str | None = None  # name of an endpoint in the plant file (None for kafka-direct)
    unit_id: int | None = None  # Modbus unit (slave) id
    signal_names: tuple[str, ...] | None = None  # None: the type's default signals
    cycle_s: float = 30.0
    counter_start: int | None = None  # the part counters' value at start (None: drawn at random)

    @property
    def signals(self) -> tuple[str, ...]:
        return self.signal_names if self.signal_names is not None else SIGNALS_BY_TYPE[self.machine_type]


def default_plant(machines: int, site: str) -> list[Machine]:
    """The load generator's plant: ``machines`` machines in lines of four (mill, press, robot, conveyor).

    Ids start with ``load-`` so they never collide with the plant file's machines, which
    reach Kafka through the gateway with sequence numbers of the gateway's own: the
    sinks deduplicate on ``(machine_id, seq)``, so one machine must have one numbering.
    """
    order = (MachineType.CNC_MILL, MachineType.PRESS, MachineType.ROBOT_CELL, MachineType.CONVEYOR)
    variants = ("L", "L", "L", "M", "M", "H")  # AI4I: 50 % L, 30 % M, 20 % H (roughly)
    plant = []
    for index in range(machines):
        line_no, slot = divmod(index, len(order))
        kind = order[slot]
        plant.append(
            Machine(
                machine_id=f"load-{kind.value.replace('_', '-')}-{index + 1:03d}",
                machine_type=kind,
                site=site,
                area="machining" if line_no % 2 == 0 else "assembly",
                line=f"line-{line_no + 1}",
                product_quality=variants[index % len(variants)],
            )
        )
    return plant
