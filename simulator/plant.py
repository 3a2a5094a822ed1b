"""The plant's shape: sites -> areas -> lines -> machines (ISA-95 style), and which
signals each machine type has.

The walking skeleton builds a plant programmatically; the edge issue adds YAML plant
files and protocol assignments on top of the same :class:`Machine` records.
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


@dataclass(frozen=True, slots=True)
class Machine:
    machine_id: str
    machine_type: MachineType
    site: str
    area: str
    line: str
    product_quality: str  # AI4I product variant L / M / H: sets the overstrain limit

    @property
    def signals(self) -> tuple[str, ...]:
        return SIGNALS_BY_TYPE[self.machine_type]


def default_plant(machines: int, site: str) -> list[Machine]:
    """A deterministic plant of ``machines`` machines: lines of four (mill, press, robot, conveyor)."""
    order = (MachineType.CNC_MILL, MachineType.PRESS, MachineType.ROBOT_CELL, MachineType.CONVEYOR)
    variants = ("L", "L", "L", "M", "M", "H")  # AI4I: 50 % L, 30 % M, 20 % H (roughly)
    plant = []
    for index in range(machines):
        line_no, slot = divmod(index, len(order))
        kind = order[slot]
        plant.append(
            Machine(
                machine_id=f"{kind.value.replace('_', '-')}-{index + 1:03d}",
                machine_type=kind,
                site=site,
                area="machining" if line_no % 2 == 0 else "assembly",
                line=f"line-{line_no + 1}",
                product_quality=variants[index % len(variants)],
            )
        )
    return plant
