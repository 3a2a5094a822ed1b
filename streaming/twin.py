"""The digital twin: the latest known state of every machine of one Kafka partition.

Pure Python (no Bytewax, no Kafka; ``streaming/twin_branch.py`` is the glue).  Per machine
it folds in, from the decoded streams of the partition:

* **telemetry**: per signal the last value (and when it was measured), the quality and time
  of the latest reading - a stale marker (``quality="stale"``, no value) keeps the last value
  but marks the signal stale; "latest" is by ``(event time, seq)``, so an out-of-order
  reading never replaces a newer one;
* **machine events**: the state, its reason and since when (the latest state-entry event);
* **parts**: counters of the current shift instance (total, good, scrap; a duplicate
  ``(machine_id, seq)`` counts once) and the last part;
* **energy**: the latest meter reading;
* **live OEE**: the machine's latest shift row (``streaming/oee_live.py``) - so far this
  shift, or the final figures of the shift just closed;
* **alerts** (``factory.alerts``, any branch): open = raised and not cleared, by ``alert_id``
  (a replayed copy changes nothing: a raise of an id already cleared stays cleared).  Line
  alerts (``machine_id`` ``line:<site>/<line>``, ``domain.alerts.line_unit``) are not about a
  machine and are left out.  The seam for predictive maintenance: an alert carrying
  ``attributes["failure_probability"]`` (the inference branch's ``MaintenanceRequired``) sets
  the machine's failure probability.

Staleness, in event time: a signal is stale when its latest reading is a stale marker or is
older than ``stream.twin_stale_after_seconds`` behind the machine's newest event; the whole
machine is stale when its newest event is that far behind the partition's newest event (its
readings stopped while the others' go on) - it is published once more, marked stale.
Readers compare with their own clock as well (``streaming/twin_query.py``): a twin that
stopped being updated is never shown as fresh.

Publishing is by wall clock: changed machines are emitted at most every
``stream.twin_emit_interval_ms`` per partition (one :class:`TwinStates` item), so the twin
costs per machine and interval, not per event.  Telemetry, most of the events, is folded
in once per emission (the batches in between are held; ``twin_signals.SignalTable``
compares and stores them with numpy), so its cost does not grow with the number of Kafka
batches.  The version (the TwinState's ``seq``) is ``inputs << 16 | OEE rows``: the
machine's events and alerts folded in so far, and the live OEE rows folded in since the
last of them.  It grows with every update, and its high part
is the same at the same point of the input however batches were cut (how many provisional
OEE rows a stretch of input yields depends on the cut, so they only order updates between
two events): after a crash, the first event past the pre-crash point outranks every row
published before it.  Bounded: a machine without events
for ``stream.idle_key_expiry_seconds`` (partition event time) is forgotten (its last,
stale, state stays in the topic and the table); open alerts are capped per machine.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plantstream.contract.events import (
    AlertAction,
    AlertType,
    PartResult,
    Quality,
    Severity,
    TwinAlert,
    TwinOee,
    TwinSignal,
    TwinState,
)
from plantstream.domain.aggregates import epoch_ms
from plantstream.domain.machine_state import STATE_ENTRY_EVENTS
from plantstream.domain.shifts import ShiftCalendar
from plantstream.settings import Settings
from plantstream.streaming.oee_live import SHIFT, MachineOee
from plantstream.streaming.seen_seqs import add_seq, copy_ranges
from plantstream.streaming.twin_signals import SignalTable

log = logging.getLogger(__name__)

STATE_VERSION = 1
FAILURE_PROBABILITY = "failure_probability"
"""The alert attribute the predictive-maintenance branch puts its score in."""
_LINE_UNIT_PREFIX = "line:"  # domain.alerts.line_unit: a line-level alert, not a machine's
_STATE_ENTRIES = frozenset(STATE_ENTRY_EVENTS)
_NO_TIME = -1
_OEE_BITS = 16
PENDING_TELEMETRY_ROWS = 50_000
"""Telemetry rows held back for one fold at most (a drain reads far more than this per emission)."""


@dataclass(frozen=True)
class TwinConfig:
    calendar: ShiftCalendar
    emit_interval_s: float
    stale_after_ms: int
    idle_key_expiry_ms: int
    max_open_alerts: int = 32
    max_cleared_ids: int = 64

    @classmethod
    def from_settings(cls, settings: Settings, plant: Any) -> TwinConfig:
        s = settings.stream
        return cls(
            calendar=ShiftCalendar.of_plant(plant),
            emit_interval_s=s.twin_emit_interval_ms / 1000,
            stale_after_ms=round(s.twin_stale_after_seconds * 1000),
            idle_key_expiry_ms=s.idle_key_expiry_seconds * 1000,
        )


@dataclass(frozen=True, slots=True)
class TwinStates:
    """The machines of one partition whose twin changed since the last emission, with each
    state's JSON document (encoded once: the topic's record and the hot table's ``document``)."""

    partition: int
    states: tuple[TwinState, ...]
    documents: tuple[bytes, ...]


class _Twin:
    """One machine's twin (plain values; ``to_state``/``from_state`` for recovery); its
    signals are in the partition's :class:`~plantstream.streaming.twin_signals.SignalTable`."""

    __slots__ = (
        "alerts",
        "area",
        "as_of",
        "cleared",
        "energy",
        "failure_probability",
        "last_part",
        "line",
        "oee",
        "oee_updates",
        "parts",
        "seen_parts",
        "shift",
        "site",
        "stale",
        "state",
        "version",
    )

    def __init__(self, site: str, area: str, line: str) -> None:
        self.site, self.area, self.line = site, area, line
        self.version = 0  # inputs of the streams folded in
        self.oee_updates = 0  # live OEE rows folded in since the last of them
        self.as_of = _NO_TIME
        self.stale = False
        self.state: tuple[int, int, str, str | None] | None = None  # (since ms, seq, state, reason)
        self.seen_parts: list[list[int]] = []
        self.shift: tuple[int, str] | None = None  # (instance start ms, name) the counters belong to
        self.parts = [0, 0, 0]  # total, good, scrap in that shift instance
        self.last_part: tuple[int, int, str, str] | None = None  # (ts, seq, part id, result)
        self.energy: tuple[int, float, float] | None = None  # (ts, power kW, energy kWh)
        self.oee: TwinOee | None = None
        self.alerts: dict[str, TwinAlert] = {}
        self.cleared: list[str] = []
        self.failure_probability: tuple[int, float] | None = None  # (ts, probability)

    def to_state(self) -> dict[str, Any]:
        return {
            "identity": (self.site, self.area, self.line),
            "version": self.version,
            "oee_updates": self.oee_updates,
            "as_of": self.as_of,
            "stale": self.stale,
            "state": self.state,
            "seen_parts": copy_ranges(self.seen_parts),
            "shift": self.shift,
            "parts": list(self.parts),
            "last_part": self.last_part,
            "energy": self.energy,
            "oee": self.oee,
            "alerts": dict(self.alerts),
            "cleared": list(self.cleared),
            "failure_probability": self.failure_probability,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> _Twin:
        twin = cls(*state["identity"])
        twin.version = state["version"]
        twin.oee_updates = state["oee_updates"]
        twin.as_of = state["as_of"]
        twin.stale = state["stale"]
        twin.state = state["state"]
        twin.seen_parts = copy_ranges(state["seen_parts"])
        twin.shift = state["shift"]
        twin.parts = list(state["parts"])
        twin.last_part = state["last_part"]
        twin.energy = state["energy"]
        twin.oee = state["oee"]
        twin.alerts = dict(state["alerts"])
        twin.cleared = list(state["cleared"])
        twin.failure_probability = state["failure_probability"]
        return twin


class PartitionTwin:
    """The twins of one Kafka partition's machines (see the module docstring).

    ``process(item)`` folds in a ``DecodedBatch`` (telemetry, events, quality, energy, alerts)
    or a :class:`MachineOee`; ``emit(force=False)`` returns a :class:`TwinStates` of the changed
    machines when the emit interval has passed (or ``force``), else ``None``;
    ``next_emit_at()`` is when to call it again (wall clock, ``None`` if nothing is pending).
    """

    def __init__(
        self,
        config: TwinConfig,
        state: Mapping[str, Any] | None = None,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._wall = wall
        self.partition = -1
        self.clock_ms = _NO_TIME  # newest event time seen on the partition (any stream)
        self.machines: dict[str, _Twin] = {}
        self.signals = SignalTable()
        self.dirty: set[str] = set()
        self._last_emit = 0.0
        self._scanned_at_ms = _NO_TIME
        # Telemetry batches not folded in yet: folded once per emission (and before anything
        # reads the signals), so the cost is per emission, not per Kafka batch.
        self._pending: list[tuple[pa.Table, np.ndarray]] = []
        self._pending_rows = 0
        if state is not None:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown twin state version {state.get('version')!r}")
            self.partition = state["partition"]
            self.clock_ms = state["clock_ms"]
            self.machines = {m: _Twin.from_state(t) for m, t in state["machines"].items()}
            for machine_id, twin_state in state["machines"].items():
                self.signals.load(machine_id, twin_state["signals"])
            self.dirty = set(state["dirty"])

    def snapshot(self) -> dict[str, Any]:
        self._fold_pending()
        return {
            "version": STATE_VERSION,
            "partition": self.partition,
            "clock_ms": self.clock_ms,
            "machines": {m: {**t.to_state(), "signals": self.signals.to_state(m)} for m, t in self.machines.items()},
            "dirty": sorted(self.dirty),
        }

    # -- input ---------------------------------------------------------------------------
    def process(self, item: Any) -> None:
        if isinstance(item, MachineOee):
            self._oee(item)
            return
        events: pa.Table = item.events
        if events.num_rows == 0:
            return
        self.partition = item.partition
        ts = epoch_ms(events.column("event_ts"))
        stream = item.stream.name
        if stream == "telemetry":
            self._pending.append((events, ts))
            self._pending_rows += events.num_rows
            if self._pending_rows >= PENDING_TELEMETRY_ROWS:
                self._fold_pending()
        elif stream == "events":
            self._rows(events, ts, ["event_type", "state", "reason"], self._state_event)
        elif stream == "quality":
            self._rows(events, ts, ["part_id", "result"], self._part)
        elif stream == "energy":
            self._rows(events, ts, ["power_kw", "energy_kwh"], self._energy)
        else:  # alerts are about the machine, not readings from it: they do not make it fresh
            self._rows(events, ts, _ALERT_COLUMNS, self._alert, reading=False)
            return
        self.clock_ms = max(self.clock_ms, int(ts.max()))
        self._scan_stale()

    def _twin(self, machine_id: str, site: str, area: str, line: str) -> _Twin:
        twin = self.machines.get(machine_id)
        if twin is None:
            twin = self.machines[machine_id] = _Twin(site, area, line)
        return twin

    def _touch(self, machine_id: str, twin: _Twin, ts: int, events: int, *, reading: bool = True) -> None:
        twin.version += events
        twin.oee_updates = 0
        if reading:
            twin.as_of = max(twin.as_of, ts)
            twin.stale = False
        self.dirty.add(machine_id)

    def _fold_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if len(pending) == 1:
            self._telemetry(*pending[0])
        else:
            self._telemetry(pa.concat_tables([t for t, _ in pending]), np.concatenate([ts for _, ts in pending]))

    def _telemetry(self, events: pa.Table, ts: np.ndarray) -> None:
        """Per machine of the batch: its counters; the readings go to the signal table (numpy)."""
        machine = events.column("machine_id").combine_chunks().dictionary_encode()
        m_codes = machine.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        per_machine = np.bincount(m_codes, minlength=len(machine.dictionary))
        newest = np.full(len(machine.dictionary), _NO_TIME, dtype=np.int64)
        np.maximum.at(newest, m_codes, ts)
        names = machine.dictionary.to_pylist()
        codes, first_rows = np.unique(m_codes, return_index=True)
        identity = events.select(["site", "area", "line"]).take(pa.array(first_rows)).to_pydict()
        table_rows = np.zeros(len(names), dtype=np.int64)
        for code, site, area, line in zip(
            codes.tolist(), identity["site"], identity["area"], identity["line"], strict=True
        ):
            name = names[code]
            self._touch(name, self._twin(name, site, area, line), int(newest[code]), int(per_machine[code]))
            table_rows[code] = self.signals.row(name)
        self.signals.fold(table_rows[m_codes], events, ts)

    def _rows(
        self, events: pa.Table, ts: np.ndarray, columns: list[str], fold: Callable[..., None], *, reading: bool = True
    ) -> None:
        cols = events.select(["machine_id", "seq", "site", "area", "line", *columns]).to_pydict()
        for i, t in enumerate(ts.tolist()):
            machine_id = cols["machine_id"][i]
            if machine_id.startswith(_LINE_UNIT_PREFIX):
                continue
            twin = self._twin(machine_id, cols["site"][i], cols["area"][i], cols["line"][i])
            self._touch(machine_id, twin, t, 1, reading=reading)
            fold(twin, t, cols["seq"][i], tuple(cols[c][i] for c in columns))

    def _state_event(self, twin: _Twin, t: int, seq: int, row: tuple[Any, ...]) -> None:
        kind, state, reason = row
        if kind in _STATE_ENTRIES and state is not None and (twin.state is None or (t, seq) > twin.state[:2]):
            twin.state = (t, seq, state, reason)

    def _part(self, twin: _Twin, t: int, seq: int, row: tuple[Any, ...]) -> None:
        part_id, result = row
        if not add_seq(twin.seen_parts, seq):
            return
        if twin.last_part is None or (t, seq) > twin.last_part[:2]:
            twin.last_part = (t, seq, part_id, result)
        instances = self.config.calendar.at(t)
        if not instances:
            return  # made off shift: no shift counts it
        inst = instances[-1]
        if twin.shift is None or inst.start_ms > twin.shift[0]:
            twin.shift, twin.parts = (inst.start_ms, inst.name), [0, 0, 0]
        elif inst.start_ms < twin.shift[0]:
            return  # a part of an earlier shift, arriving late
        twin.parts[0] += 1
        twin.parts[1 if result == PartResult.GOOD.value else 2] += 1

    def _energy(self, twin: _Twin, t: int, _seq: int, row: tuple[Any, ...]) -> None:
        power_kw, energy_kwh = row
        if twin.energy is None or t >= twin.energy[0]:
            twin.energy = (t, power_kw, energy_kwh)

    def _alert(self, twin: _Twin, t: int, _seq: int, row: tuple[Any, ...]) -> None:
        alert_id, action, alert_type, severity, kind, signal, message, raised_at, attributes = row
        probability = dict(attributes or ()).get(FAILURE_PROBABILITY)
        if probability is not None:
            try:
                p = float(probability)
            except ValueError:
                log.warning("alert %s: failure_probability %r is not a number", alert_id, probability)
            else:
                if 0.0 <= p <= 1.0 and (twin.failure_probability is None or t >= twin.failure_probability[0]):
                    twin.failure_probability = (t, p)
        if not alert_id:
            return
        if action == AlertAction.CLEAR.value:
            twin.alerts.pop(alert_id, None)
            if alert_id not in twin.cleared:
                twin.cleared.append(alert_id)
                del twin.cleared[: -self.config.max_cleared_ids]
        elif alert_id not in twin.cleared and alert_id not in twin.alerts:
            twin.alerts[alert_id] = TwinAlert(
                alert_id=alert_id,
                alert_type=AlertType(alert_type),
                severity=Severity(severity),
                kind=kind,
                signal=signal,
                message=message,
                raised_ts=raised_at if raised_at is not None else t,
            )
            if len(twin.alerts) > self.config.max_open_alerts:
                oldest = min(twin.alerts.values(), key=lambda a: (a.raised_ts, a.alert_id))
                del twin.alerts[oldest.alert_id]

    def _oee(self, row: MachineOee) -> None:
        if row.window.kind != SHIFT:
            return
        twin = self.machines.get(row.machine_id)
        if twin is None:
            return
        w, r = row.window, row.result
        current = twin.oee
        if current is not None and (current.shift_start_ts, current.as_of_ts) > (w.shift_start_ms, row.as_of_ms):
            return
        twin.oee = TwinOee(
            shift=w.shift,
            shift_start_ts=w.shift_start_ms,
            as_of_ts=row.as_of_ms,
            final=row.final,
            availability=r.availability,
            performance=r.performance,
            quality=r.quality,
            oee=r.oee,
            performance_above_one=r.performance_above_one,
        )
        twin.oee_updates += 1
        self.dirty.add(row.machine_id)

    def _scan_stale(self) -> None:
        """Mark machines whose readings stopped (once), forget those gone for good; at most
        once per second of partition event time."""
        if self.clock_ms - self._scanned_at_ms < 1_000:
            return
        self._scanned_at_ms = self.clock_ms
        self._fold_pending()
        stale_before = self.clock_ms - self.config.stale_after_ms
        gone_before = self.clock_ms - self.config.idle_key_expiry_ms
        gone = []
        for machine_id, twin in self.machines.items():
            if twin.as_of < gone_before:
                gone.append(machine_id)
            elif twin.as_of < stale_before and not twin.stale:
                twin.stale = True
                self.dirty.add(machine_id)
        for machine_id in gone:
            del self.machines[machine_id]
            self.signals.drop(machine_id)
            self.dirty.discard(machine_id)

    # -- output --------------------------------------------------------------------------
    def next_emit_at(self) -> float | None:
        return self._last_emit + self.config.emit_interval_s if self.dirty or self._pending else None

    def emit(self, *, force: bool = False) -> TwinStates | None:
        if not self.dirty and not self._pending:
            return None
        now = self._wall()
        if not force and now - self._last_emit < self.config.emit_interval_s:
            return None
        self._last_emit = now
        self._fold_pending()
        now_ms = int(now * 1000)
        changed = [m for m in sorted(self.dirty) if m in self.machines]
        states = tuple(map(self._state, changed, self.signals.series(changed), itertools.repeat(now_ms)))
        self.dirty.clear()
        if not states:
            return None
        return TwinStates(self.partition, states, tuple(map(_ENCODER.encode, states)))

    def state_of(self, machine_id: str, now_ms: int) -> TwinState:
        """The machine's :class:`TwinState` as published at ``now_ms`` (wall clock, ms)."""
        self._fold_pending()
        return self._state(machine_id, self.signals.series([machine_id])[0], now_ms)

    def _state(self, machine_id: str, series: list[tuple[Any, ...]], now_ms: int) -> TwinState:
        twin = self.machines[machine_id]
        as_of = max(twin.as_of, 0)
        stale_before = as_of - self.config.stale_after_ms
        signals = {
            name: TwinSignal(
                value=value,
                value_ts=value_ts,
                unit=unit,
                quality=quality,
                ts=ts,
                stale=twin.stale or quality is Quality.STALE or ts < stale_before,
            )
            for name, value, value_ts, unit, quality, ts in series
        }
        shift = twin.shift
        parts = twin.parts
        current = self.config.calendar.at(as_of)
        if current and (shift is None or current[-1].start_ms > shift[0]):
            shift, parts = (current[-1].start_ms, current[-1].name), [0, 0, 0]  # a new shift: nothing made yet
        state = twin.state
        last_part = twin.last_part
        # Stale as a whole: its readings stopped while the partition's go on, or every signal's
        # latest reading is a stale marker (the gateway lost the device).
        stale = twin.stale or bool(series and all(q is Quality.STALE for _, _, _, _, q, _ in series))
        return TwinState(
            site=twin.site,
            area=twin.area,
            line=twin.line,
            machine_id=machine_id,
            seq=twin.version << _OEE_BITS | min(twin.oee_updates, (1 << _OEE_BITS) - 1),
            source_ts=as_of,
            read_ts=now_ms,
            ingest_ts=now_ms,
            stale=stale,
            state=state[2] if state else None,
            reason=state[3] if state else None,
            state_since_ts=state[0] if state else None,
            signals=signals,
            shift=shift[1] if shift else None,
            shift_start_ts=shift[0] if shift else None,
            parts_total=parts[0],
            parts_good=parts[1],
            parts_scrap=parts[2],
            last_part_id=last_part[2] if last_part else None,
            last_part_result=PartResult(last_part[3]) if last_part else None,
            last_part_ts=last_part[0] if last_part else None,
            power_kw=twin.energy[1] if twin.energy else None,
            energy_kwh=twin.energy[2] if twin.energy else None,
            energy_ts=twin.energy[0] if twin.energy else None,
            oee=twin.oee,
            open_alerts=sorted(twin.alerts.values(), key=lambda a: (a.raised_ts, a.alert_id)),
            failure_probability=twin.failure_probability[1] if twin.failure_probability else None,
            failure_probability_ts=twin.failure_probability[0] if twin.failure_probability else None,
        )


_ENCODER = msgspec.json.Encoder()


_ALERT_COLUMNS = [
    "alert_id",
    "action",
    "alert_type",
    "severity",
    "kind",
    "signal",
    "message",
    "raised_at",
    "attributes",
]


# -- hot-table rows ---------------------------------------------------------------------
def twin_rows(states: list[TwinState], documents: list[bytes]) -> pa.Table:
    """``twin_state`` rows of twin states and their JSON documents: the key, the version and the
    document; the hot store computes every other column from the document (``hot_tables.twin_state_ddl``)."""
    return pa.table(
        {
            "machine_id": pc.dictionary_encode(pa.array([s.machine_id for s in states], pa.string())),
            "version": pa.array([s.seq for s in states], pa.uint64()),
            "document": pa.array(documents, pa.binary()).cast(pa.string()),
        }
    )


__all__ = ["FAILURE_PROBABILITY", "PartitionTwin", "TwinConfig", "TwinStates", "twin_rows"]
