"""The wire contract between the plant (or the simulator) and the edge gateway.

docs/edge-protocols.md describes it; this module is its one definition in code, imported
by the simulator's protocol servers and by the gateway's collectors, so the two can
never drift apart: the OPC UA namespace, the MQTT topic layout and the Modbus register
map shape.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

OPCUA_NAMESPACE = "urn:plantstream:plant"
OPCUA_PATH = "/plantstream/"
MQTT_TOPIC = "plantstream/v1/{site}/{area}/{line}/{machine_id}/{channel}"
#: What a machine publishes on each of its MQTT topics: sampled signals, its state tags
#: (contract.machine_tags) and one inspection result per part.
MQTT_CHANNELS = ("telemetry", "state", "quality")

RegisterType = Literal["float32", "int16", "uint16", "int32", "uint32"]
#: Registers (16-bit words) per Modbus type.
REGISTER_WORDS: dict[str, int] = {"float32": 2, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2}
#: The largest block one Modbus read may ask for (the protocol's limit for registers).
MAX_READ_REGISTERS = 125


def mqtt_topic(site: str, area: str, line: str, machine_id: str, channel: str = "telemetry") -> str:
    if channel not in MQTT_CHANNELS:
        raise ValueError(f"unknown MQTT channel {channel!r}; channels: {MQTT_CHANNELS}")
    return MQTT_TOPIC.format(site=site, area=area, line=line, machine_id=machine_id, channel=channel)


class Register(BaseModel):
    """Where one signal lives on a Modbus device and how to turn words into a value.

    Integer types carry ``round(value / scale)``; float32 is IEEE-754 (NaN = dropped out).
    """

    model_config = {"extra": "forbid", "frozen": True}

    table: Literal["holding", "input"] = "holding"
    address: int = Field(ge=0, le=65_534)
    type: RegisterType = "float32"
    word_order: Literal["big", "little"] = "big"
    scale: float = Field(1.0, gt=0)

    @property
    def words(self) -> int:
        return REGISTER_WORDS[self.type]
