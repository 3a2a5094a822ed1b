"""How a machine exposes its state, part counters and energy meter on the wire.

Real PLCs do not send "MachineStarted" events: they expose a state tag and counters,
and the edge turns changes into events.  This module is the one definition of those
tags, shared by the simulator's protocol servers (which serve them) and the edge
gateway (which reads them), so the two cannot disagree about a number:

* **state**: PackML ``StateCurrent`` as PLCs number it (PackTags v3, ISA-TR88.00.02)
  plus ``UnitModeCurrent`` (1 Produce, 2 Maintenance, 3 Manual);
* **stop reason**: PackML's first-out ``StopReason`` - an id (:data:`STOP_REASONS`) and,
  where the protocol can carry text, the reason itself (``failure:TWF+OSF``,
  ``planned:cleaning-l1``);
* **part counters**: ``ProdProcessedCount`` and ``ProdDefectiveCount`` as PackML's
  ``AccCount``: never reset by the job, Int32, rolling over from 2,147,483,647 to 0
  (:data:`COUNTER_MODULUS`);
* **energy meter**: a cumulative kWh reading and the instantaneous kW.

The machine states of the contract (``running``, ``idle``, ``stopped``, ``maintenance``;
``MachineEvent.state``) map onto PackML as documented in docs/edge-protocols.md
("Machine state, counters and energy") by :func:`packml_of` and back by
:func:`machine_state_of`.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

#: The machine states of the contract (MachineEvent.state): the vocabulary OEE classifies
#: time by, the gateway maps PackML to and the simulator steps through.  In this order the
#: simulator's physics encodes them as 0..3.
MACHINE_STATES: tuple[str, ...] = ("running", "idle", "stopped", "maintenance")

#: PackML counters roll over after this many values (Int32 AccCount: 0 .. 2^31 - 1).
COUNTER_MODULUS = 2**31


class PackMLState(IntEnum):
    """PackML ``StateCurrent`` (PackTags v3 numbering)."""

    UNDEFINED = 0
    CLEARING = 1
    STOPPED = 2
    STARTING = 3
    IDLE = 4
    SUSPENDED = 5
    EXECUTE = 6
    STOPPING = 7
    ABORTING = 8
    ABORTED = 9
    HOLDING = 10
    HELD = 11
    UNHOLDING = 12
    SUSPENDING = 13
    UNSUSPENDING = 14
    RESETTING = 15
    COMPLETING = 16
    COMPLETE = 17


class UnitMode(IntEnum):
    """PackML ``UnitModeCurrent``."""

    PRODUCE = 1
    MAINTENANCE = 2
    MANUAL = 3


class MachineTag(StrEnum):
    """Names of the state, counter and meter tags (Modbus register map keys, MQTT fields)."""

    STATE = "state"
    UNIT_MODE = "unit_mode"
    STOP_REASON = "stop_reason"  # the id; the text travels where the protocol has strings
    PARTS_PROCESSED = "parts_processed"
    PARTS_DEFECTIVE = "parts_defective"
    ENERGY_KWH = "energy_kwh"
    POWER_KW = "power_kw"
    STOP_REASON_TEXT = "stop_reason_text"  # OPC UA and MQTT only: Modbus registers hold numbers


#: Where each tag lives on an OPC UA server: (sub-folder of the machine's folder, browse
#: name, variant type).  PackML's PackTags names; the meter in a folder of its own.
OPCUA_TAGS: dict[MachineTag, tuple[str, str, str]] = {
    MachineTag.STATE: ("PackTags", "StateCurrent", "Int32"),
    MachineTag.UNIT_MODE: ("PackTags", "UnitModeCurrent", "Int32"),
    MachineTag.STOP_REASON: ("PackTags", "StopReasonID", "Int32"),
    MachineTag.STOP_REASON_TEXT: ("PackTags", "StopReasonMessage", "String"),
    MachineTag.PARTS_PROCESSED: ("PackTags", "ProdProcessedCount", "Int32"),
    MachineTag.PARTS_DEFECTIVE: ("PackTags", "ProdDefectiveCount", "Int32"),
    MachineTag.ENERGY_KWH: ("EnergyMeter", "EnergyKWh", "Double"),
    MachineTag.POWER_KW: ("EnergyMeter", "PowerKW", "Double"),
}


#: Stop reason ids (PackML ``StopReason.ID``) and the reason text each stands for.
#: A reason with a detail (``failure:HDF+PWF``, ``planned:cleaning-l1``) is sent as the id of
#: its kind (the first failure mode: first-out) plus the full text where the protocol can.
STOP_REASONS: dict[int, str] = {
    0: "",
    1: "off_shift",
    2: "starved",
    3: "tool_change",
    4: "planned:unnamed",
    11: "failure:TWF",
    12: "failure:HDF",
    13: "failure:PWF",
    14: "failure:OSF",
    15: "failure:RNF",
}
_REASON_IDS = {text: code for code, text in STOP_REASONS.items()}


def stop_reason_id(reason: str) -> int:
    """The id of a reason text (``failure:HDF+PWF`` -> the first mode's id; unknown -> 99)."""
    if not reason:
        return 0
    if reason.startswith("planned:"):
        return 4
    if reason.startswith("failure:"):
        return _REASON_IDS.get("failure:" + reason.removeprefix("failure:").split("+")[0], 99)
    return _REASON_IDS.get(reason, 99)


def stop_reason_text(code: int, text: str | None = None) -> str:
    """The reason a machine reports: its own text if it sent one, else the id's meaning."""
    if text:
        return text
    return STOP_REASONS.get(code, f"reason:{code}")


def packml_of(state: str, reason: str) -> tuple[PackMLState, UnitMode]:
    """The PackML state and mode a machine in contract ``state`` (for ``reason``) shows.

    running -> Execute; idle (a micro-stop: starved/blocked) -> Suspended; stopped off
    shift -> Stopped, stopped by a failure -> Aborted; maintenance (tool change, planned
    downtime) -> Stopped in Maintenance mode.
    """
    if state == "running":
        return PackMLState.EXECUTE, UnitMode.PRODUCE
    if state == "idle":
        return PackMLState.SUSPENDED, UnitMode.PRODUCE
    if state == "maintenance":
        return PackMLState.STOPPED, UnitMode.MAINTENANCE
    if reason.startswith("failure:"):
        return PackMLState.ABORTED, UnitMode.PRODUCE
    return PackMLState.STOPPED, UnitMode.PRODUCE


_IDLE_LIKE = {PackMLState.IDLE, PackMLState.SUSPENDED, PackMLState.SUSPENDING, PackMLState.UNSUSPENDING}
_HELD_LIKE = {PackMLState.HOLDING, PackMLState.HELD, PackMLState.UNHOLDING}


def machine_state_of(code: int, mode: int | None = None) -> str:
    """The contract state of a PackML state number (and mode, where the device gives one).

    Maintenance mode is ``maintenance`` whatever the state; Execute is ``running``;
    Idle/Suspended (waiting for material) and Held (stopped by an internal condition,
    waiting for an operator) are ``idle``; everything else (Stopped, Aborted, the
    transitional states, unknown numbers) is ``stopped``.
    """
    if mode == UnitMode.MAINTENANCE:
        return "maintenance"
    if code == PackMLState.EXECUTE:
        return "running"
    if code in _IDLE_LIKE or code in _HELD_LIKE:
        return "idle"
    return "stopped"
