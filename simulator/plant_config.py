"""Plant files: the YAML that says what the simulated plant is and how it speaks.

One file describes the ISA-95 hierarchy (sites -> areas -> lines -> machines), each
machine's type, product quality variant (AI4I L/M/H) and protocol, the protocol
endpoints, the Modbus register map per machine type, shifts, planned downtime and the
faults to inject.  The simulator serves the plant from it and the edge gateway derives
its own configuration from the same file (:meth:`PlantConfig.gateway_config`), so the
two cannot disagree about a port, a topic or a register address.

Loading validates everything up front; a bad file fails naming the key
(``sites.plant-1.areas.machining.lines.line-1.machines[2].protocol: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from plantstream.contract.edge_wire import OPCUA_PATH, Register, mqtt_topic
from plantstream.contract.machine_tags import MachineTag
from plantstream.contract.signals import SIGNALS
from plantstream.simulator.plant import SIGNALS_BY_TYPE, Machine, MachineType

Protocol = Literal["opcua", "mqtt", "modbus", "kafka-direct"]
DEFAULT_PLANT_FILE = Path(__file__).parent / "plants" / "default.yaml"
FaultKind = Literal["stuck", "spike", "dropout", "clock_skew", "offline", "counter_reset"]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class PlantConfigError(ValueError):
    """The plant file is invalid; the message names each offending key."""


class _Model(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


class MachineTypeConfig(_Model):
    """Per machine type: its signals, cycle time and Modbus register map.

    Register map keys are signals (telemetry) or machine tags (``contract.machine_tags``:
    state, unit mode, stop reason, part counters, energy meter); a type without a tag's
    register cannot say that over Modbus, and its machines report what they can.
    """

    signals: list[str] | None = None  # default: plant.SIGNALS_BY_TYPE
    cycle_s: float = Field(30.0, gt=0, le=3600)
    registers: dict[str, Register] = Field(default_factory=dict)

    @field_validator("signals")
    @classmethod
    def _known_signals(cls, value: list[str] | None) -> list[str] | None:
        unknown = [s for s in value or [] if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown signals {unknown} (known: {sorted(SIGNALS)})")
        return value

    @field_validator("registers")
    @classmethod
    def _no_overlap(cls, value: dict[str, Register]) -> dict[str, Register]:
        tags = {t.value for t in MachineTag}
        unknown = [s for s in value if s not in SIGNALS and s not in tags]
        if unknown:
            raise ValueError(f"registers for unknown signals or tags {unknown} (tags: {sorted(tags)})")
        used: dict[tuple[str, int], str] = {}
        for signal, reg in value.items():
            for word in range(reg.address, reg.address + reg.words):
                other = used.setdefault((reg.table, word), signal)
                if other != signal:
                    raise ValueError(f"{signal} overlaps {other} at {reg.table} register {word}")
        return value


class Endpoint(_Model):
    """A protocol server (OPC UA, Modbus TCP) or broker (MQTT) the plant speaks through."""

    protocol: Literal["opcua", "mqtt", "modbus"]
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65_535)
    #: MQTT only: the simulator starts its own mosquitto on ``port`` (for laptops and tests).
    managed_broker: bool = False
    #: How often the gateway should poll (Modbus) / expect values (all); a gateway hint.
    interval_s: float = Field(1.0, gt=0)

    def url(self) -> str:
        scheme = {"opcua": "opc.tcp", "mqtt": "mqtt", "modbus": "modbus"}[self.protocol]
        return f"{scheme}://{self.host}:{self.port}" + (OPCUA_PATH if self.protocol == "opcua" else "")


class MachineConfig(_Model):
    id: Name
    type: MachineType
    quality: Literal["L", "M", "H"] = "L"
    protocol: Protocol = "kafka-direct"
    endpoint: str | None = None  # a key of ``endpoints``; required unless kafka-direct
    unit_id: int | None = Field(None, ge=1, le=247)  # Modbus only
    #: The controller's part counters at start (default: drawn at random); e.g. just below
    #: the PackML roll-over (2^31 - 1) to see the edge handle it.
    counter_start: int | None = Field(None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _protocol_needs(self) -> MachineConfig:
        if self.protocol == "kafka-direct":
            if self.endpoint is not None:
                raise ValueError("a kafka-direct machine has no endpoint")
        elif self.endpoint is None:
            raise ValueError(f"protocol {self.protocol} needs an endpoint")
        if (self.protocol == "modbus") != (self.unit_id is not None):
            raise ValueError("unit_id is required for modbus machines and only for them")
        return self


class LineConfig(_Model):
    machines: list[MachineConfig]


class AreaConfig(_Model):
    lines: dict[Name, LineConfig]


class SiteConfig(_Model):
    areas: dict[Name, AreaConfig]


def _hhmm(value: str) -> dtime:
    return dtime.fromisoformat(value)


class Shift(_Model):
    """A production shift, daily, in UTC; ``end`` before ``start`` crosses midnight."""

    name: Name
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _is_time(cls, value: str) -> str:
        _hhmm(value)
        return value


class PlannedDowntime(_Model):
    """A daily planned stop (cleaning, preventive maintenance): excluded from OEE's planned time."""

    name: Name
    start: str
    duration_min: float = Field(gt=0, le=24 * 60)
    lines: list[str] = Field(default_factory=list)  # empty: every line

    @field_validator("start")
    @classmethod
    def _is_time(cls, value: str) -> str:
        _hhmm(value)
        return value


class ScheduledFault(_Model):
    """One injected fault at a fixed simulated offset from the start (for tests and demos)."""

    at_s: float = Field(ge=0)
    machine: str
    kind: FaultKind
    duration_s: float = Field(60.0, gt=0)
    signal: str | None = None  # sensor faults: which signal (default: the machine's first)
    skew_s: float = 30.0  # clock_skew only
    magnitude: float = 5.0  # spike only: multiple of the value


class RandomFaults(_Model):
    """Faults per machine per simulated hour (Poisson), with their typical durations."""

    stuck_per_h: float = Field(0.0, ge=0)
    spike_per_h: float = Field(0.0, ge=0)
    dropout_per_h: float = Field(0.0, ge=0)
    clock_skew_per_h: float = Field(0.0, ge=0)
    offline_per_h: float = Field(0.0, ge=0)
    stuck_s: float = Field(300.0, gt=0)
    dropout_s: float = Field(60.0, gt=0)
    clock_skew_s: float = Field(600.0, gt=0)
    skew_s: float = 30.0
    offline_s: float = Field(60.0, gt=0)


class FaultConfig(_Model):
    random: RandomFaults = RandomFaults()
    scheduled: list[ScheduledFault] = Field(default_factory=list)


class PlantConfig(_Model):
    name: Name = "plant"
    seed: int = 42
    sample_period_s: float = Field(1.0, gt=0, le=60)
    machine_types: dict[MachineType, MachineTypeConfig] = Field(default_factory=dict)
    endpoints: dict[Name, Endpoint] = Field(default_factory=dict)
    sites: dict[Name, SiteConfig]
    shifts: list[Shift] = Field(default_factory=list)  # empty: production around the clock
    planned_downtime: list[PlannedDowntime] = Field(default_factory=list)
    faults: FaultConfig = FaultConfig()

    @model_validator(mode="after")
    def _consistent(self) -> PlantConfig:
        seen: set[str] = set()
        units: dict[tuple[str, int], str] = {}
        for site, area, line, m in self._walk():
            where = f"machine {m.id} (sites.{site}.areas.{area}.lines.{line})"
            if m.id in seen:
                raise ValueError(f"{where}: machine id repeated")
            seen.add(m.id)
            if m.endpoint is not None:
                endpoint = self.endpoints.get(m.endpoint)
                if endpoint is None:
                    raise ValueError(f"{where}: endpoint {m.endpoint!r} is not in endpoints")
                if endpoint.protocol != m.protocol:
                    raise ValueError(f"{where}: endpoint {m.endpoint!r} speaks {endpoint.protocol}, not {m.protocol}")
            if m.protocol == "modbus":
                assert m.endpoint is not None and m.unit_id is not None
                other = units.setdefault((m.endpoint, m.unit_id), m.id)
                if other != m.id:
                    raise ValueError(f"{where}: unit_id {m.unit_id} already used by {other} on {m.endpoint}")
                regs = self.type_config(m.type).registers
                missing = [s for s in self.signals_of(m.type) if s not in regs]
                if missing:
                    raise ValueError(f"{where}: machine_types.{m.type.value}.registers lacks {missing}")
        for fault in self.faults.scheduled:
            if fault.machine not in seen:
                raise ValueError(f"faults.scheduled: unknown machine {fault.machine!r}")
        return self

    def _walk(self) -> list[tuple[str, str, str, MachineConfig]]:
        return [
            (site, area, line, m)
            for site, s in self.sites.items()
            for area, a in s.areas.items()
            for line, ln in a.lines.items()
            for m in ln.machines
        ]

    def type_config(self, kind: MachineType) -> MachineTypeConfig:
        return self.machine_types.get(kind, MachineTypeConfig())

    def signals_of(self, kind: MachineType) -> tuple[str, ...]:
        configured = self.type_config(kind).signals
        return tuple(configured) if configured is not None else SIGNALS_BY_TYPE[kind]

    def machines(self) -> list[Machine]:
        """Every machine in file order: the index used by the physics arrays."""
        return [
            Machine(
                machine_id=m.id,
                machine_type=m.type,
                site=site,
                area=area,
                line=line,
                product_quality=m.quality,
                protocol=m.protocol,
                endpoint=m.endpoint,
                unit_id=m.unit_id,
                signal_names=self.signals_of(m.type),
                cycle_s=self.type_config(m.type).cycle_s,
                counter_start=m.counter_start,
            )
            for site, area, line, m in self._walk()
        ]

    def machine_endpoints(self) -> list[MachineEndpoint]:
        """How to reach each machine that speaks a protocol (kafka-direct machines are left out)."""
        out = []
        for machine in self.machines():
            if machine.endpoint is None:
                continue
            endpoint = self.endpoints[machine.endpoint]
            out.append(
                MachineEndpoint(
                    machine=machine,
                    endpoint_name=machine.endpoint,
                    url=endpoint.url(),
                    interval_s=max(endpoint.interval_s, self.sample_period_s),
                    opcua_path=("Plant", machine.site, machine.area, machine.line, machine.machine_id),
                    mqtt_topic=mqtt_topic(machine.site, machine.area, machine.line, machine.machine_id),
                    registers=dict(self.type_config(machine.machine_type).registers)
                    if machine.protocol == "modbus"
                    else {},
                )
            )
        return out

    def gateway_config(self, gateway_id: str = "plantstream-gateway") -> dict[str, Any]:
        """The edge gateway's YAML document for this plant (``edge.config.parse_config`` input).

        One site per gateway: a plant file with several sites needs one gateway each
        (pass the site's machines through :meth:`only_site` first).
        """
        sites = sorted({m.site for m in self.machines()})
        if len(sites) > 1:
            raise PlantConfigError(f"gateway_config covers one site; this plant has {sites}: use only_site()")
        register_maps = {
            kind.value: {s: r.model_dump() for s, r in cfg.registers.items()}
            for kind, cfg in self.machine_types.items()
            if cfg.registers
        }
        machines = []
        for ep in self.machine_endpoints():
            entry: dict[str, Any] = {
                "machine_id": ep.machine.machine_id,
                "area": ep.machine.area,
                "line": ep.machine.line,
                "protocol": ep.machine.protocol,
                "endpoint": ep.url,
                "interval_s": ep.interval_s,
            }
            if ep.machine.protocol == "modbus":
                entry["modbus"] = {"unit_id": ep.machine.unit_id, "register_map": ep.machine.machine_type.value}
            if ep.machine.protocol == "mqtt":
                entry["mqtt"] = {"topic": ep.mqtt_topic, "signals": list(ep.machine.signals)}
            machines.append(entry)
        return {
            "site": sites[0] if sites else None,
            "gateway_id": gateway_id,
            "register_maps": register_maps,
            "machines": machines,
        }

    def only_site(self, site: str) -> PlantConfig:
        return self.model_copy(update={"sites": {site: self.sites[site]}})

    def with_endpoint_ports(self, ports: dict[str, int]) -> PlantConfig:
        """The same plant on other ports (tests and side-by-side runs pick free ports)."""
        endpoints = {
            name: ep.model_copy(update={"port": ports.get(name, ep.port)}) for name, ep in self.endpoints.items()
        }
        return self.model_copy(update={"endpoints": endpoints})

    def with_faults(self, faults: FaultConfig) -> PlantConfig:
        return self.model_copy(update={"faults": faults})


@dataclass(frozen=True)
class MachineEndpoint:
    """Everything a client needs to read one machine (what the gateway derives per machine)."""

    machine: Machine
    endpoint_name: str
    url: str  # opc.tcp://host:port/plantstream/ | mqtt://host:port | modbus://host:port
    interval_s: float
    opcua_path: tuple[str, ...]  # browse names below Objects (namespace OPCUA_NAMESPACE)
    mqtt_topic: str
    registers: dict[str, Register]


def _key(loc: tuple[object, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_plant(data: object, source: str = "plant file") -> PlantConfig:
    """Validate a parsed YAML document; raises :class:`PlantConfigError` naming the keys."""
    try:
        return PlantConfig.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_key(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise PlantConfigError(f"invalid {source}:\n  " + "\n  ".join(problems)) from None


def load_plant(path: Path | str | None = None) -> PlantConfig:
    """Load and validate a plant file (default: the one shipped in the package)."""
    path = DEFAULT_PLANT_FILE if path is None else Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PlantConfigError(f"cannot read plant file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise PlantConfigError(f"plant file {path} is not valid YAML: {exc}") from None
    return parse_plant(data, source=f"plant file {path}")


def plant_from_machines(machines: list[Machine], *, seed: int = 42, sample_period_s: float = 1.0) -> PlantConfig:
    """A kafka-direct plant file for a programmatic plant (e.g. :func:`.plant.default_plant`)."""
    sites: dict[str, Any] = {}
    for m in machines:
        line = sites.setdefault(m.site, {"areas": {}})["areas"].setdefault(m.area, {"lines": {}})["lines"]
        line.setdefault(m.line, {"machines": []})["machines"].append(
            {"id": m.machine_id, "type": m.machine_type.value, "quality": m.product_quality}
        )
    return parse_plant({"seed": seed, "sample_period_s": sample_period_s, "sites": sites})
