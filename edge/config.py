"""The gateway's YAML: which machines it collects, over which protocol, from where.

One entry per machine (its ISA-95 identity, protocol, endpoint and expected interval)
plus protocol details; Modbus register maps can be shared per machine type under
``register_maps``.  Loading validates everything up front and a bad file fails naming
the offending key (``machines[2].modbus.registers.torque.type: ...``), so a typo is
found at start-up, not at 3 a.m. when that machine's first poll runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from plantstream.contract.edge_wire import OPCUA_NAMESPACE, Register

Protocol = Literal["opcua", "mqtt", "modbus"]


class GatewayConfigError(ValueError):
    """The gateway YAML is invalid; the message names each offending key."""


class _Model(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


class OpcUaOptions(_Model):
    namespace_uri: str = OPCUA_NAMESPACE
    #: Browse path below Objects; default ``Plant/<site>/<area>/<line>/<machine_id>``.
    folder: list[str] | None = None
    publishing_interval_ms: int = Field(200, ge=10)
    #: How often the folder is re-browsed for added/removed signals (and the session probed).
    browse_interval_s: float = Field(5.0, gt=0)


class MqttOptions(_Model):
    #: Default ``plantstream/v1/<site>/<area>/<line>/<machine_id>/telemetry``; the machine's
    #: ``state`` and ``quality`` topics sit beside it (docs/edge-protocols.md).
    topic: str | None = None
    state_topic: str | None = None
    quality_topic: str | None = None
    #: Signals to mark stale when the machine goes silent (default: those seen so far).
    signals: list[str] = Field(default_factory=list)


class ModbusOptions(_Model):
    unit_id: int = Field(1, ge=0, le=255)
    #: Name of a map under ``register_maps`` (shared by machines of one type) ...
    register_map: str | None = None
    #: ... or the map inline (signal -> register).
    registers: dict[str, Register] = Field(default_factory=dict)
    timeout_s: float = Field(1.0, gt=0)


class MachineConfig(_Model):
    machine_id: Annotated[str, Field(min_length=1, max_length=128)]
    area: Annotated[str, Field(min_length=1, max_length=128)]
    line: Annotated[str, Field(min_length=1, max_length=128)]
    protocol: Protocol
    #: ``opc.tcp://host:port/path``, ``mqtt://host:port`` or ``modbus://host:port``.
    endpoint: str
    #: How often the machine is expected to report (the Modbus poll period); staleness
    #: is declared after ``settings.edge.stale_multiple`` of it without an answer.
    interval_s: float = Field(1.0, gt=0)
    opcua: OpcUaOptions = OpcUaOptions()
    mqtt: MqttOptions = MqttOptions()
    modbus: ModbusOptions = ModbusOptions()
    #: Where the machine's parts come from: its part counters, or one inspection result per
    #: part where the device publishes them (default: inspections for MQTT, counters otherwise).
    #: Never both, or every part would be counted twice.
    parts_from: Literal["counters", "inspections"] | None = None

    @property
    def parts_source(self) -> Literal["counters", "inspections"]:
        return self.parts_from or ("inspections" if self.protocol == "mqtt" else "counters")

    @model_validator(mode="after")
    def _endpoint_matches_protocol(self) -> MachineConfig:
        scheme = urlsplit(self.endpoint).scheme
        wanted = {"opcua": "opc.tcp", "mqtt": "mqtt", "modbus": "modbus"}[self.protocol]
        if scheme != wanted:
            raise ValueError(f"endpoint must start with {wanted}:// for protocol {self.protocol}")
        if urlsplit(self.endpoint).port is None:
            raise ValueError("endpoint needs an explicit port")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(urlsplit(self.endpoint).port or 0)


class GatewayConfig(_Model):
    #: Site of every machine (default: ``settings.site``).
    site: str | None = None
    #: Identifies this gateway to MQTT brokers (persistent sessions hang off it).
    gateway_id: Annotated[str, Field(min_length=1, max_length=64)] = "plantstream-gateway"
    register_maps: dict[str, dict[str, Register]] = Field(default_factory=dict)
    machines: list[MachineConfig]

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        ids = [m.machine_id for m in self.machines]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"machine_id must be unique, repeated: {dupes}")
        for machine in self.machines:
            if machine.protocol != "modbus":
                continue
            name = machine.modbus.register_map
            if name is not None and name not in self.register_maps:
                raise ValueError(f"machine {machine.machine_id}: register_map {name!r} is not in register_maps")
            if name is None and not machine.modbus.registers:
                raise ValueError(f"machine {machine.machine_id}: modbus needs register_map or registers")
        return self

    def registers(self, machine: MachineConfig) -> dict[str, Register]:
        """The register map of a Modbus machine (inline entries override the shared map)."""
        shared = self.register_maps.get(machine.modbus.register_map or "", {})
        return {**shared, **machine.modbus.registers}


def _key(loc: tuple[object, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(data: object) -> GatewayConfig:
    """Validate a parsed YAML document; raises :class:`GatewayConfigError` naming the keys."""
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_key(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise GatewayConfigError("invalid gateway config:\n  " + "\n  ".join(problems)) from None


def load_config(path: Path) -> GatewayConfig:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise GatewayConfigError(f"cannot read gateway config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise GatewayConfigError(f"gateway config {path} is not valid YAML: {exc}") from None
    return parse_config(data)
