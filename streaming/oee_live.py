"""Live OEE per machine and line, per shift instance and rolling hour: the state machines.

Pure Python (no Bytewax, no Kafka): :class:`PartitionOee` holds one Kafka partition's
machines, :class:`LineOee` one production line; ``streaming/oee_branch.py`` is the thin
Bytewax glue.  The figures are :func:`plantstream.domain.oee.oee` and
:func:`~plantstream.domain.oee.combine`, fed exactly as docs/oee.md says ("How to call it"):
nothing of the definition is repeated here.

Per machine, from the decoded streams of its partition:

* **state intervals** from the state-entry events (``domain.machine_state.STATE_ENTRY_EVENTS``),
  kept in event-time order (a late event is inserted where it belongs); the last interval
  lasts until the machine's latest event of any stream (its *horizon*), never to the end
  of a window in the future: time after the horizon is unknown (``unknown_s``);
* **parts** (``factory.quality.metrics``; good = ``result == "good"``) counted in buckets
  of ``gcd(step, 60 s)`` of event time, so every window below is an exact sum of buckets;
* a duplicate ``(machine_id, seq)`` (a replay, a re-sent event) counts once
  (``streaming/seen_seqs.py``).

The partition's **clock** is ``min(latest event time of each input stream) - allowed
lateness``, over the streams the flow feeds it (events, quality, energy, telemetry): the
streams are separate Kafka topics read independently, so one of them running ahead (a
replay reads 10,000 machine events, hours of event time, in one batch) must not close a
shift before the parts of that shift have been read.  A stream that has delivered nothing
for ``stream.oee_idle_stream_seconds`` of wall time (or never, that long after start) stops
holding the clock back (a partition whose machines make no parts, a shift's end after
which no part is made); at the end of a drain every stream has delivered what it holds and
the clock is the *latest* stream's time minus the lateness.  The clock never moves backwards.

What the clock emits:

* a shift instance whose end the clock has passed is **final**: one row per machine with data
  in it (final = 1), computed once; anything arriving later for it is late (counted, left out:
  the lakehouse's gold OEE, recomputed from silver, is the authority for history);
* each time the clock passes a multiple of ``stream.oee_step_seconds``, boundary *b*:
  provisional rows per machine for every open shift instance, ``[shift start, b)``, and for
  the rolling hour ``[b - 1 h, b)``;
* per line, the inputs :class:`LineOee` needs (the machines' results of that window); lines
  span partitions (machines are keyed by ``machine_id``), so the line state is keyed by line.

A line's shift row is final once every partition of the flow has closed that shift, or every
machine the plant file puts on the line has delivered its final row (whichever comes first);
before that it is provisional.  Machines the plant file does not know have no ideal cycle
time and no OEE (as in gold); they are logged once.

Bounded state: buckets and state changes older than the earliest open window are dropped
(the state at that moment is kept); a machine whose horizon is older than both
``stream.idle_key_expiry_seconds`` and the earliest open shift is forgotten.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from plantstream.contract.machine_tags import MACHINE_STATES
from plantstream.domain.aggregates import epoch_ms
from plantstream.domain.machine_state import STATE_ENTRY_EVENTS
from plantstream.domain.oee import OeeResult, StateInterval, combine, durations_in_window, oee
from plantstream.domain.shifts import MS_PER_DAY, ShiftCalendar
from plantstream.settings import Settings
from plantstream.streaming.seen_seqs import add_seq, copy_ranges

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
SHIFT = "shift"
HOUR = "hour"
CLOCK_STREAMS: tuple[str, ...] = ("events", "quality", "energy", "telemetry")
"""The streams that feed the OEE state (and its clock), by stream name."""
STATE_VERSION = 1
_FINAL_BIT = 1 << 62
_STATE_ENTRIES = frozenset(STATE_ENTRY_EVENTS)
_KNOWN_STATES = frozenset(MACHINE_STATES)
_MAX_WARNED = 1_000


def line_key(site: str, area: str, line: str) -> str:
    """The key of a production line (lines are named within their site and area)."""
    return f"{site}/{area}/{line}"


def row_version(as_of_ms: int, final: bool) -> int:
    """Hot-table version: a final row beats every provisional one; later figures beat earlier ones."""
    return (_FINAL_BIT if final else 0) | as_of_ms


@dataclass(frozen=True, slots=True)
class MachineInfo:
    """What the plant file says about a machine: where it is and its ideal cycle time."""

    site: str
    area: str
    line: str
    ideal_cycle_s: float

    @property
    def line_key(self) -> str:
        return line_key(self.site, self.area, self.line)


@dataclass(frozen=True)
class OeeConfig:
    machines: Mapping[str, MachineInfo]
    calendar: ShiftCalendar
    step_ms: int
    allowed_lateness_ms: int
    idle_stream_s: float
    idle_key_expiry_ms: int
    partitions: tuple[int, ...]

    @property
    def bucket_ms(self) -> int:
        return math.gcd(self.step_ms, 60_000)

    @property
    def lines(self) -> dict[str, frozenset[str]]:
        """Line key -> the machines the plant file puts on it."""
        out: dict[str, set[str]] = {}
        for machine_id, info in self.machines.items():
            out.setdefault(info.line_key, set()).add(machine_id)
        return {key: frozenset(ids) for key, ids in sorted(out.items())}

    @classmethod
    def from_plant(cls, plant: Any, settings: Settings, partitions: Iterable[int]) -> OeeConfig:
        """From a ``PlantConfig`` (machines, cycle times, shifts) and the stream settings."""
        s = settings.stream
        machines = {m.machine_id: MachineInfo(m.site, m.area, m.line, float(m.cycle_s)) for m in plant.machines()}
        return cls(
            machines=machines,
            calendar=ShiftCalendar.of_plant(plant),
            step_ms=s.oee_step_seconds * 1000,
            allowed_lateness_ms=s.allowed_lateness_seconds * 1000,
            idle_stream_s=s.oee_idle_stream_seconds,
            idle_key_expiry_ms=s.idle_key_expiry_seconds * 1000,
            partitions=tuple(sorted(partitions)),
        )


@dataclass(frozen=True, slots=True)
class WindowId:
    """Which figures a row holds: a shift instance (so far, or final) or the rolling hour."""

    kind: str  # SHIFT | HOUR
    shift: str  # the shift's name; "" for the rolling hour
    shift_start_ms: int  # the instance's start; 0 for the rolling hour
    start_ms: int
    end_ms: int  # shift: the instance's end; hour: the boundary the hour ends at


@dataclass(frozen=True, slots=True)
class MachineOee:
    """One machine's OEE of one window, as of ``as_of_ms`` (the figures cover ``[start, as_of)``)."""

    machine_id: str
    info: MachineInfo
    window: WindowId
    as_of_ms: int
    final: bool
    result: OeeResult
    unknown_s: float
    partition: int


@dataclass(frozen=True, slots=True)
class LineInput:
    """What one partition contributes to one line's window: its machines' results.

    A final input also tells the line that this partition has closed the shift (it may
    carry no machines at all)."""

    line_key: str
    site: str
    area: str
    line: str
    window: WindowId
    as_of_ms: int
    final: bool
    partition: int
    results: dict[str, tuple[OeeResult, float]]  # machine -> (result, unknown_s)


@dataclass(frozen=True, slots=True)
class LineOeeRow:
    """A line's OEE of one window: :func:`combine` of its machines' results."""

    line_key: str
    site: str
    area: str
    line: str
    window: WindowId
    as_of_ms: int
    final: bool
    result: OeeResult
    machines: int
    unknown_s: float


OeeOutput = MachineOee | LineInput


class _Machine:
    """One machine's OEE inputs on its partition."""

    __slots__ = ("buckets", "changes", "horizon_ms", "seen_events", "seen_parts")

    def __init__(self) -> None:
        self.changes: list[tuple[int, int, str, str]] = []  # (event ms, seq, state, reason), sorted
        self.seen_events: list[list[int]] = []
        self.seen_parts: list[list[int]] = []
        self.horizon_ms = -1
        self.buckets: dict[int, list[int]] = {}  # bucket index -> [parts, good parts]

    def intervals(self) -> list[StateInterval]:
        changes = self.changes
        out = []
        for i, (start, _seq, state, reason) in enumerate(changes):
            end = changes[i + 1][0] if i + 1 < len(changes) else max(self.horizon_ms, start)
            out.append(StateInterval(state, reason, start, end))
        return out

    def counts(self, start_ms: int, end_ms: int, bucket_ms: int) -> tuple[int, int]:
        lo, hi = start_ms // bucket_ms, end_ms // bucket_ms
        total = good = 0
        for index, (parts, good_parts) in self.buckets.items():
            if lo <= index < hi:
                total += parts
                good += good_parts
        return total, good

    def to_state(self) -> dict[str, Any]:
        return {
            "changes": list(self.changes),
            "seen_events": copy_ranges(self.seen_events),
            "seen_parts": copy_ranges(self.seen_parts),
            "horizon_ms": self.horizon_ms,
            "buckets": {k: list(v) for k, v in self.buckets.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> _Machine:
        m = cls()
        m.changes = [tuple(c) for c in state["changes"]]  # type: ignore[misc]
        m.seen_events = copy_ranges(state["seen_events"])
        m.seen_parts = copy_ranges(state["seen_parts"])
        m.horizon_ms = state["horizon_ms"]
        m.buckets = {k: list(v) for k, v in state["buckets"].items()}
        return m


class PartitionOee:
    """The OEE state of one Kafka partition (see the module docstring).

    ``process(batch)`` takes a ``DecodedBatch`` of one of ``streams`` and returns what to
    emit (:class:`MachineOee` rows and :class:`LineInput` items); ``finish()`` is the end of
    a drain; ``snapshot()`` / ``PartitionOee(config, state)`` round-trip the state.
    ``wall`` is the wall clock the idle-stream rule reads (a parameter for tests).
    """

    def __init__(
        self,
        config: OeeConfig,
        state: Mapping[str, Any] | None = None,
        *,
        streams: tuple[str, ...] = CLOCK_STREAMS,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.streams = streams
        self._wall = wall
        self._started = wall()
        self._last_batch_wall: dict[str, float] = {}
        self.partition = -1
        self.stream_max: dict[str, int] = {}
        self.first_event_ms: int | None = None
        self.clock_ms: int | None = None
        self.final_through_ms: int | None = None
        self.emitted_ms: int | None = None
        self.machines: dict[str, _Machine] = {}
        self.late_events = 0
        self._warned: set[str] = set()
        if state is not None:
            self._restore(state)

    # -- state -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "partition": self.partition,
            "stream_max": dict(self.stream_max),
            "first_event_ms": self.first_event_ms,
            "clock_ms": self.clock_ms,
            "final_through_ms": self.final_through_ms,
            "emitted_ms": self.emitted_ms,
            "late_events": self.late_events,
            "machines": {mid: m.to_state() for mid, m in self.machines.items()},
        }

    def _restore(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown OEE state version {state.get('version')!r}")
        self.partition = state["partition"]
        self.stream_max = dict(state["stream_max"])
        self.first_event_ms = state["first_event_ms"]
        self.clock_ms = state["clock_ms"]
        self.final_through_ms = state["final_through_ms"]
        self.emitted_ms = state["emitted_ms"]
        self.late_events = state["late_events"]
        self.machines = {mid: _Machine.from_state(m) for mid, m in state["machines"].items()}
        # After a restart every stream gets the full idle grace again (counted from now).

    # -- input -------------------------------------------------------------------------
    def process(self, batch: Any) -> list[OeeOutput]:
        """Fold one decoded batch (events, quality, energy or telemetry) in; emit what the clock allows."""
        events: pa.Table = batch.events
        if events.num_rows == 0:
            return []
        self.partition = batch.partition
        stream = batch.stream.name
        ts = epoch_ms(events.column("event_ts"))
        self._last_batch_wall[stream] = self._wall()
        self.stream_max[stream] = max(self.stream_max.get(stream, -1), int(ts.max()))
        low = int(ts.min())
        self.first_event_ms = low if self.first_event_ms is None else min(self.first_event_ms, low)
        if stream == "events":
            self._state_events(events, ts)
        elif stream == "quality":
            self._parts(events, ts)
        else:
            self._horizons(events, ts)
        return self.advance()

    def _machine(self, machine_id: str) -> _Machine | None:
        m = self.machines.get(machine_id)
        if m is None:
            if machine_id not in self.config.machines:
                if machine_id not in self._warned and len(self._warned) < _MAX_WARNED:
                    self._warned.add(machine_id)
                    log.warning("machine %s is not in the plant file: no ideal cycle time, no live OEE", machine_id)
                return None
            m = self.machines[machine_id] = _Machine()
        return m

    def _state_events(self, events: pa.Table, ts: np.ndarray) -> None:
        cols = events.select(["machine_id", "seq", "event_type", "state", "reason"]).to_pydict()
        for machine_id, seq, kind, state, reason, t in zip(
            cols["machine_id"], cols["seq"], cols["event_type"], cols["state"], cols["reason"], ts.tolist(), strict=True
        ):
            m = self._machine(machine_id)
            if m is None or not add_seq(m.seen_events, seq):
                continue
            m.horizon_ms = max(m.horizon_ms, t)
            if kind not in _STATE_ENTRIES or state is None:
                continue
            if state not in _KNOWN_STATES:
                log.warning("%s: state %r is not a machine state (%s); event ignored", machine_id, state, kind)
                continue
            bisect.insort(m.changes, (t, seq, state, reason or ""))
            if self.final_through_ms is not None and t < self.final_through_ms and self._in_a_closed_shift(t):
                self.late_events += 1  # later shifts see it; the closed one keeps its final figures

    def _parts(self, events: pa.Table, ts: np.ndarray) -> None:
        cols = events.select(["machine_id", "seq", "result"]).to_pydict()
        bucket_ms = self.config.bucket_ms
        for machine_id, seq, result, t in zip(
            cols["machine_id"], cols["seq"], cols["result"], ts.tolist(), strict=True
        ):
            m = self._machine(machine_id)
            if m is None or not add_seq(m.seen_parts, seq):
                continue
            m.horizon_ms = max(m.horizon_ms, t)
            if self.final_through_ms is not None and t < self.final_through_ms and self._in_a_closed_shift(t):
                self.late_events += 1
            bucket = m.buckets.get(t // bucket_ms)
            if bucket is None:
                bucket = m.buckets[t // bucket_ms] = [0, 0]
            bucket[0] += 1
            bucket[1] += result == "good"

    def _in_a_closed_shift(self, t: int) -> bool:
        assert self.final_through_ms is not None
        return any(i.end_ms <= self.final_through_ms for i in self.config.calendar.at(t))

    def _horizons(self, events: pa.Table, ts: np.ndarray) -> None:
        """Energy readings and telemetry only say the machine was there: per machine, the latest time."""
        encoded = events.column("machine_id").combine_chunks().dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        latest = np.full(len(encoded.dictionary), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(latest, codes, ts)
        for machine_id, t in zip(encoded.dictionary.to_pylist(), latest.tolist(), strict=True):
            m = self.machines.get(machine_id)
            if m is not None and t > m.horizon_ms:
                m.horizon_ms = t

    # -- the clock -----------------------------------------------------------------------
    def _clock(self, at_end: bool) -> int | None:
        now = self._wall()
        idle_s = self.config.idle_stream_s
        latest = []
        for stream in self.streams:
            seen = self.stream_max.get(stream)
            last = self._last_batch_wall.get(stream, self._started)
            if seen is None:
                if at_end or now - self._started >= idle_s:
                    continue  # nothing from this stream on this partition: it holds nothing back
                return None  # it may simply not have been read yet
            if not at_end and now - last >= idle_s:
                continue  # idle: a partition whose machines make no parts (or send no energy)
            latest.append(seen)
        if not latest:
            return None
        # At the end of a drain every stream has delivered all it holds: one that stopped
        # earlier (no parts after the shift's last one) is idle, as the live rule would find.
        return (max(latest) if at_end else min(latest)) - self.config.allowed_lateness_ms

    def finish(self) -> list[OeeOutput]:
        """End of a drain: streams that delivered nothing hold nothing back.

        Then provisional figures as of the newest event read (nothing is held back for
        lateness: nothing more comes in this drain), so a stream that stops shows everything
        it read; a later step's rows, as of a later time, replace them.
        """
        out = self.advance(at_end=True)
        newest = max(self.stream_max.values(), default=None)
        if newest is None or self.first_event_ms is None or newest <= (self.emitted_ms or 0):
            return out
        if self.final_through_ms is None:
            self.final_through_ms = self.first_event_ms
        out.extend(self._provisional(newest))
        return out

    def advance(self, *, at_end: bool = False) -> list[OeeOutput]:
        clock = self._clock(at_end)
        if clock is None or (self.clock_ms is not None and clock <= self.clock_ms):
            return []
        self.clock_ms = clock
        out: list[OeeOutput] = []
        if self.final_through_ms is None:
            assert self.first_event_ms is not None
            self.final_through_ms = self.first_event_ms  # no shift ends before the first event seen
        out.extend(self._finalise(clock))
        boundary = clock // self.config.step_ms * self.config.step_ms
        if self.emitted_ms is None or boundary > self.emitted_ms:
            out.extend(self._provisional(boundary))
            self.emitted_ms = boundary
            self._prune(clock, boundary)
        return out

    # -- figures -------------------------------------------------------------------------
    def _result(self, machine_id: str, m: _Machine, start: int, end: int) -> tuple[OeeResult, float] | None:
        durations = durations_in_window(m.intervals(), start, end)
        total, good = m.counts(start, end, self.config.bucket_ms)
        if not durations and not total:
            return None
        info = self.config.machines[machine_id]
        result = oee(durations, ideal_cycle_s=info.ideal_cycle_s, total_count=total, good_count=good)
        return result, max((end - start) / 1000 - result.period_s, 0.0)

    def _emit(self, window: WindowId, as_of: int, final: bool, end: int) -> list[OeeOutput]:
        out: list[OeeOutput] = []
        by_line: dict[str, dict[str, tuple[OeeResult, float]]] = {}
        for machine_id in sorted(self.machines):
            figures = self._result(machine_id, self.machines[machine_id], window.start_ms, end)
            if figures is None:
                continue
            info = self.config.machines[machine_id]
            out.append(MachineOee(machine_id, info, window, as_of, final, figures[0], figures[1], self.partition))
            by_line.setdefault(info.line_key, {})[machine_id] = figures
        lines = self.config.lines if final else by_line  # a final input also says "this partition has closed it"
        for key in lines:
            info = self.config.machines[next(iter(self.config.lines[key]))]
            out.append(
                LineInput(
                    key, info.site, info.area, info.line, window, as_of, final, self.partition, by_line.get(key, {})
                )
            )
        return out

    def _finalise(self, clock: int) -> list[OeeOutput]:
        assert self.final_through_ms is not None
        done = self.final_through_ms
        ending = [i for i in self.config.calendar.instances(done - MS_PER_DAY, clock + 1) if done < i.end_ms <= clock]
        out: list[OeeOutput] = []
        for inst in sorted(ending, key=lambda i: (i.end_ms, i.start_ms, i.name)):
            window = WindowId(SHIFT, inst.name, inst.start_ms, inst.start_ms, inst.end_ms)
            out.extend(self._emit(window, inst.end_ms, True, inst.end_ms))
        self.final_through_ms = clock
        return out

    def _provisional(self, boundary: int) -> list[OeeOutput]:
        out: list[OeeOutput] = []
        assert self.final_through_ms is not None
        for inst in self.config.calendar.at(boundary - 1):
            if inst.end_ms > self.final_through_ms:
                window = WindowId(SHIFT, inst.name, inst.start_ms, inst.start_ms, inst.end_ms)
                out.extend(self._emit(window, boundary, False, boundary))
        hour = WindowId(HOUR, "", 0, boundary - HOUR_MS, boundary)
        out.extend(self._emit(hour, boundary, False, boundary))
        return out

    def _prune(self, clock: int, boundary: int) -> None:
        """Drop what no open window can need; forget machines that went away."""
        open_starts = [i.start_ms for i in self.config.calendar.at(clock)]
        keep_from = min([boundary - HOUR_MS, *open_starts])
        first_bucket = keep_from // self.config.bucket_ms
        gone = []
        for machine_id, m in self.machines.items():
            if m.horizon_ms < keep_from and m.horizon_ms < clock - self.config.idle_key_expiry_ms:
                gone.append(machine_id)
                continue
            if m.buckets and min(m.buckets) < first_bucket:
                m.buckets = {k: v for k, v in m.buckets.items() if k >= first_bucket}
            changes = m.changes
            if len(changes) > 1 and changes[1][0] <= keep_from:
                last_before = bisect.bisect_right(changes, (keep_from, math.inf)) - 1
                del changes[:last_before]  # keep the state the machine was in at keep_from
        for machine_id in gone:
            del self.machines[machine_id]


class LineOee:
    """One production line's OEE, from the :class:`LineInput` items of every partition.

    Shift rows: the machines' latest results of the shift instance, :func:`combine`-d;
    final once every partition has closed the instance or every machine of the line (plant
    file) has delivered its final result.  Rolling hour: the combine of each machine's
    latest hour (machines whose hour is more than an hour older than the newest drop out).
    """

    MAX_OPEN_SHIFTS = 8
    MAX_FINALISED = 16

    def __init__(self, config: OeeConfig, state: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.lines = config.lines
        self.shifts: dict[int, dict[str, Any]] = {}
        self.hour: dict[str, tuple[OeeResult, float, int]] = {}  # machine -> (result, unknown_s, hour end)
        self.finalised: list[int] = []
        if state is not None:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown line OEE state version {state.get('version')!r}")
            self.shifts = {
                start: {
                    "members": dict(entry["members"]),
                    "closed": set(entry["closed"]),
                    "window": entry["window"],
                }
                for start, entry in state["shifts"].items()
            }
            self.hour = dict(state["hour"])
            self.finalised = list(state["finalised"])

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "shifts": {
                start: {"members": dict(e["members"]), "closed": sorted(e["closed"]), "window": e["window"]}
                for start, e in self.shifts.items()
            },
            "hour": dict(self.hour),
            "finalised": list(self.finalised),
        }

    def process(self, item: LineInput) -> list[LineOeeRow]:
        if item.window.kind == HOUR:
            return self._hour(item)
        start = item.window.shift_start_ms
        if start in self.finalised:
            return []
        entry = self.shifts.get(start)
        if entry is None:
            entry = self.shifts[start] = {"members": {}, "closed": set(), "window": item.window}
            if len(self.shifts) > self.MAX_OPEN_SHIFTS:
                oldest = min(self.shifts)
                log.warning(
                    "line %s: shift starting %d never closed on every partition; dropped", item.line_key, oldest
                )
                del self.shifts[oldest]
        members: dict[str, tuple[OeeResult, float, bool, int]] = entry["members"]
        for machine_id, (result, unknown) in item.results.items():
            members[machine_id] = (result, unknown, item.final, item.as_of_ms)
        if item.final:
            entry["closed"].add(item.partition)
        finals = {m for m, (_, _, final, _) in members.items() if final}
        configured = self.lines.get(item.line_key, frozenset())
        final = set(self.config.partitions) <= entry["closed"] or bool(configured and configured <= finals)
        out = []
        if members:
            window: WindowId = entry["window"]
            as_of = window.end_ms if final else max(a for _, _, _, a in members.values())
            result = combine(r for r, _, _, _ in members.values())
            unknown = math.fsum(u for _, u, _, _ in members.values())
            out.append(
                LineOeeRow(
                    item.line_key, item.site, item.area, item.line, window, as_of, final, result, len(members), unknown
                )
            )
        if final:
            del self.shifts[start]
            self.finalised.append(start)
            del self.finalised[: -self.MAX_FINALISED]
        return out

    def _hour(self, item: LineInput) -> list[LineOeeRow]:
        end = item.window.end_ms
        for machine_id, (result, unknown) in item.results.items():
            self.hour[machine_id] = (result, unknown, end)
        newest = max(e for _, _, e in self.hour.values()) if self.hour else end
        self.hour = {m: v for m, v in self.hour.items() if v[2] > newest - HOUR_MS}
        if not self.hour or not item.results:
            return []
        window = WindowId(HOUR, "", 0, newest - HOUR_MS, newest)
        result = combine(r for r, _, _ in self.hour.values())
        unknown = math.fsum(u for _, u, _ in self.hour.values())
        return [
            LineOeeRow(
                item.line_key, item.site, item.area, item.line, window, newest, False, result, len(self.hour), unknown
            )
        ]


# -- hot-table rows ---------------------------------------------------------------------
_TS = pa.timestamp("ms", tz="UTC")
_LOSSES = pa.map_(pa.string(), pa.float64())
OEE_LIVE_SCHEMA = pa.schema(
    [
        ("scope", pa.string()),
        ("site", pa.string()),
        ("area", pa.string()),
        ("line", pa.string()),
        ("machine_id", pa.string()),
        ("window_kind", pa.string()),
        ("shift", pa.string()),
        ("shift_start", _TS),
        ("window_start", _TS),
        ("window_end", _TS),
        ("as_of", _TS),
        ("final", pa.uint8()),
        ("machines", pa.uint32()),
        ("availability", pa.float64()),
        ("performance", pa.float64()),
        ("quality", pa.float64()),
        ("oee", pa.float64()),
        *(
            (name, pa.float64())
            for name in (
                "period_s",
                "planned_production_s",
                "run_s",
                "planned_stop_s",
                "unplanned_stop_s",
                "net_run_s",
                "fully_productive_s",
                "performance_loss_s",
                "quality_loss_s",
                "unknown_s",
            )
        ),
        ("total_count", pa.uint64()),
        ("good_count", pa.uint64()),
        ("scrap_count", pa.uint64()),
        ("ideal_cycle_s", pa.float64()),
        ("nothing_planned", pa.uint8()),
        ("performance_above_one", pa.uint8()),
        ("availability_loss_s", _LOSSES),
        ("planned_stop_by_reason_s", _LOSSES),
        ("warnings", pa.string()),
        ("version", pa.uint64()),
    ]
)
"""The Arrow shape of ``oee_live`` rows (``hot_tables.oee_live_ddl``)."""
ROW_KEY = ("scope", "site", "area", "line", "machine_id", "window_kind", "shift_start")
"""The table's ORDER BY: what identifies a row."""


def oee_row(item: MachineOee | LineOeeRow) -> dict[str, Any]:
    """The ``oee_live`` row of a machine or line figure (see ``hot_tables.oee_live_ddl``)."""
    result = item.result
    values = result.as_dict()
    if isinstance(item, MachineOee):
        scope, machine_id, machines = "machine", item.machine_id, 1
        site, area, line = item.info.site, item.info.area, item.info.line
    else:
        scope, machine_id, machines = "line", "", item.machines
        site, area, line = item.site, item.area, item.line
    w = item.window
    return {
        "scope": scope,
        "site": site,
        "area": area,
        "line": line,
        "machine_id": machine_id,
        "window_kind": w.kind,
        "shift": w.shift,
        "shift_start": w.shift_start_ms,
        "window_start": w.start_ms,
        "window_end": w.end_ms,
        "as_of": item.as_of_ms,
        "final": int(item.final),
        "machines": machines,
        **{name: values[name] for name in _RESULT_COLUMNS},
        "unknown_s": item.unknown_s,
        "nothing_planned": int(result.nothing_planned),
        "performance_above_one": int(result.performance_above_one),
        "availability_loss_s": sorted(result.availability_loss_s.items()),
        "planned_stop_by_reason_s": sorted(result.planned_stop_by_reason_s.items()),
        "warnings": "; ".join(result.warnings),
        "version": row_version(item.as_of_ms, item.final),
    }


_RESULT_COLUMNS = (
    "availability",
    "performance",
    "quality",
    "oee",
    "period_s",
    "planned_production_s",
    "run_s",
    "planned_stop_s",
    "unplanned_stop_s",
    "net_run_s",
    "fully_productive_s",
    "performance_loss_s",
    "quality_loss_s",
    "total_count",
    "good_count",
    "scrap_count",
    "ideal_cycle_s",
)

__all__ = [
    "CLOCK_STREAMS",
    "HOUR",
    "OEE_LIVE_SCHEMA",
    "ROW_KEY",
    "SHIFT",
    "LineInput",
    "LineOee",
    "LineOeeRow",
    "MachineInfo",
    "MachineOee",
    "OeeConfig",
    "PartitionOee",
    "WindowId",
    "line_key",
    "oee_row",
    "row_version",
]
