"""Machine state changes as contract events: the one rule the simulator and the edge share.

The simulator knows every transition of its machines; the edge gateway only sees a
state tag change on the wire.  Both turn "from (state, reason) to (state, reason)"
into the same ``MachineEvent`` types through :func:`transition_events`, so the events a
simulated plant reports about itself (its ground truth) and the events the gateway
derives from the wire are built alike:

* leaving maintenance (or a change of its reason) -> ``MaintenanceEnded`` (reason: the
  old one);
* entering ``running`` -> ``MachineStarted`` (attribute ``previous``);
* entering ``maintenance`` -> ``MaintenanceStarted`` (reason: tool change, planned downtime);
* entering ``stopped`` or ``idle`` -> ``FaultRaised`` first if the reason is a failure,
  then ``MachineStopped`` (state and reason);
* the first state seen of a machine (``old_state`` None) is reported like an entry,
  with attribute ``initial="true"``: the event history of a machine always starts
  with a state, so durations can be computed from it.

A machine's state is then the state of its latest event; an interval of a state runs
from its event to the next (``docs/oee.md`` computes OEE from them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plantstream.contract import MachineEventType
from plantstream.contract.machine_tags import MACHINE_STATES

STATES = MACHINE_STATES


@dataclass(frozen=True, slots=True)
class StateEvent:
    """What :func:`transition_events` emits: a ``MachineEvent`` without its envelope."""

    event_type: MachineEventType
    state: str
    reason: str | None
    attributes: dict[str, str] = field(default_factory=dict)


def transition_events(old_state: str | None, old_reason: str, new_state: str, new_reason: str) -> list[StateEvent]:
    """The events for a machine moving from ``(old_state, old_reason)`` to ``(new_state, new_reason)``.

    No change, no events.  ``old_state=None``: the first observation of the machine.
    """
    if new_state not in STATES:
        raise ValueError(f"unknown machine state {new_state!r}; states: {STATES}")
    if old_state == new_state and old_reason == new_reason:
        return []
    events: list[StateEvent] = []
    initial = {"initial": "true"} if old_state is None else {}
    if old_state == "maintenance" and (new_state != "maintenance" or new_reason != old_reason):
        events.append(StateEvent(MachineEventType.MAINTENANCE_ENDED, new_state, old_reason or None))
    if new_state == "running":
        previous = {"previous": old_state} if old_state is not None else {}
        events.append(StateEvent(MachineEventType.MACHINE_STARTED, "running", None, {**previous, **initial}))
    elif new_state == "maintenance":
        events.append(StateEvent(MachineEventType.MAINTENANCE_STARTED, "maintenance", new_reason or None, initial))
    else:
        if new_reason.startswith("failure:"):
            events.append(StateEvent(MachineEventType.FAULT_RAISED, "stopped", new_reason.removeprefix("failure:")))
        events.append(StateEvent(MachineEventType.MACHINE_STOPPED, new_state, new_reason or None, initial))
    return events


#: The events that put a machine into a state (an interval starts at each).  The others follow
#: one of these at the same time (``MaintenanceEnded``, ``FaultRaised``) or are no state change
#: (``CycleCompleted`` carries the state the machine was left in, without its reason).
STATE_ENTRY_EVENTS: tuple[str, ...] = (
    MachineEventType.MACHINE_STARTED.value,
    MachineEventType.MACHINE_STOPPED.value,
    MachineEventType.MAINTENANCE_STARTED.value,
)
