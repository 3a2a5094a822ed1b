"""The anomaly-alert branch: one detector per (machine, signal) on the telemetry, alerts out.

    telemetry (decoded) ──┐
                          ├─► anomalies (state per Kafka partition) ──► factory.alerts + hot store ``alerts``
    machine events ───────┘    PartitionAnomalies: running state, derived signals, DetectorBank

Per Kafka partition (:class:`PartitionAnomalies`, pure; :class:`AnomalyAlertLogic` is the
Bytewax glue):

* **Running state from the machine events.**  A stopped drive legitimately reads 0, so
  the detector must know whether the machine ran at each reading.  A reading that names
  the state it was read under (``Telemetry.state_seq``: the machine's latest event at the
  edge) is judged as soon as the branch has seen that event of its machine, with the
  running state after it - typically in the same Kafka batch, so nothing waits.  Other
  readings are judged once the machine events of their partition have passed their event
  time (``event time < events watermark``), with the state at that time; for both, when the
  events fall silent, once the telemetry has moved ``alerts.machine_state_wait_seconds``
  past them; a machine that has not sent an event yet waits the same way (its state at
  the reading is then unknown).  Only a flow without the events stream judges at once.  A
  machine's readings are released in arrival order (a prefix), so each series reaches
  its detector in the order Kafka holds it: transitions, and therefore alert ids, do not
  depend on how Kafka cut batches or how the two topics interleaved (docs/alerts.md,
  "Replays"), which is what makes a replay after a crash exact.
* **Derived signals.** ``temperature_difference`` = process - air temperature of the
  same reading time (``paired_difference``), the HDF precursor; a half whose partner is in
  the next Kafka batch waits in the state.
* **Duplicates.** A reading whose ``seq`` is not above the machine's highest so far (a
  re-send, a replayed buffer) is not judged again: the first copy wins, as everywhere.
* **Alerts.** Every detector transition becomes an ``Alert`` (:mod:`plantstream.domain.alerts`),
  except the per-series ``stale`` transitions: a machine whose readings turn stale (the
  gateway's ``quality="stale"`` marker) gets ONE ``MachineStale`` alert, cleared when every
  stale signal reads again.
* **Bounded state.** A machine without readings or events for ``stream.idle_key_expiry_seconds``
  of the partition's event time expires: its open alerts are cleared (reason ``expired``)
  and its detectors are dropped.  The snapshot holds the detector bank, the machines and
  the readings still waiting for their machine events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.operators import StatefulBatchLogic

from plantstream.contract.events import Alert, AlertAction, Severity
from plantstream.contract.streams import EVENTS_STREAM, TELEMETRY_STREAM
from plantstream.contract.topics import ALERTS, topic_name
from plantstream.domain.alerts import (
    ANOMALY_BRANCH,
    Identity,
    alert_seq,
    expired_alert,
    limit_table,
    machine_stale_alert,
    transition_alert,
)
from plantstream.domain.anomaly import (
    KINDS,
    QUALITY_CODES,
    TEMPERATURE_DIFFERENCE,
    BaselineConfig,
    DetectorBank,
    DetectorConfig,
    Evidence,
    LimitTable,
    Transition,
    default_config,
    limits_only,
    paired_difference,
)
from plantstream.settings import Settings
from plantstream.streaming.derived_sinks import DerivedTableSink, KeyedRecordSink
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.hot_tables import ALERT_TIME_FIELDS, ALERTS_TABLE, COPY_RANK, COPY_RANK_BASE, alert_columns
from plantstream.streaming.stream_decode import DecodedBatch

log = logging.getLogger(__name__)

_NO_TIME = np.iinfo(np.int64).min // 4
_PROCESS, _AIR = "process_temperature", "air_temperature"
_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}
ALERT_CODEC = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class AlertBatch:
    """Alerts one step emitted for one Kafka partition (or the line aggregator), in emission order."""

    alerts: tuple[Alert, ...]

    def records(self) -> list[tuple[bytes, bytes]]:
        """``factory.alerts`` records: keyed by the alert's ``machine_id`` (a line alert's ``line:…``)."""
        return [(a.machine_id.encode(), ALERT_CODEC.encode(a)) for a in self.alerts]


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    """What the anomaly branch needs from the settings and the plant file."""

    state_wait_ms: int
    expiry_ms: int
    limits: LimitTable
    machine_types: Mapping[str, str] = field(default_factory=dict)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    #: The trivial baseline (``limits_only``: fixed high/low engineering limits, nothing else),
    #: run through the same branch by ``plantstream alerts score`` to show what the rules add.
    trivial_baseline: bool = False
    #: The flow feeds the machine events too.  Then a machine that has not sent an event yet
    #: waits like the others (whether its first event is before a reading must not depend
    #: on which topic's batch came first); without them every reading is judged at once.
    machine_events: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> AnomalyConfig:
        from plantstream.simulator.plant_config import load_plant

        plant = load_plant(settings.plant_file or None)
        expiry_ms = settings.stream.idle_key_expiry_seconds * 1000
        # Waiting must end well before a silent machine expires (its waiting readings are
        # judged before its state goes).
        wait_ms = min(round(settings.alerts.machine_state_wait_seconds * 1000), expiry_ms // 2)
        return cls(
            state_wait_ms=wait_ms,
            expiry_ms=expiry_ms,
            limits=limit_table(settings.alerts.limits),
            machine_types={m.machine_id: m.machine_type.value for m in plant.machines()},
        )

    def resolver(self) -> Callable[[str, str], DetectorConfig]:
        types, limits = self.machine_types, self.limits
        if self.trivial_baseline:
            return lambda machine_id, signal: limits_only(default_config(types.get(machine_id), signal, limits))
        return lambda machine_id, signal: default_config(types.get(machine_id), signal, limits)


@dataclass(slots=True)
class _Machine:
    """What the branch keeps per machine besides its hot per-machine arrays."""

    mid: int  # index into the per-machine arrays
    site: str
    area: str
    line: str
    since_ms: int | None = None  # event time of its first alert since tracked: the seq base
    ordinal: int = 0  # alert events so far in this tracking period
    changes_ts: list[int] = field(default_factory=list)  # running-state changes from the machine events
    changes_run: list[int] = field(default_factory=list)
    # The same changes by event seq (for readings that name their state_seq): seq, running, event time.
    seq_changes: list[int] = field(default_factory=list)
    seq_runs: list[int] = field(default_factory=list)
    seq_ts: list[int] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)  # series with an open stale alert
    stale_raised: int | None = None
    stale_signals: int = 0  # most series stale at once in the episode
    last_answer: int | None = None  # event time of its latest valid reading

    @property
    def identity(self) -> Identity:
        return Identity(self.site, self.area, self.line)

    def next_seq(self, ts_ms: int) -> int:
        """``seq`` of the machine's next alert event (at event time ``ts_ms``).

        The base is the first alert's time, not when the machine was first seen: which of
        its readings or events came first depends on how the topics interleaved."""
        if self.since_ms is None:
            self.since_ms = ts_ms
        seq = alert_seq(ANOMALY_BRANCH, self.since_ms, self.ordinal)
        self.ordinal += 1
        return seq

    def dump(self) -> tuple:
        return (
            self.mid, self.site, self.area, self.line, self.since_ms, self.ordinal, list(self.changes_ts),
            list(self.changes_run), sorted(self.stale), self.stale_raised, self.stale_signals, self.last_answer,
        )  # fmt: skip

    def dump_seq_changes(self) -> tuple:
        return list(self.seq_changes), list(self.seq_runs), list(self.seq_ts)

    @classmethod
    def load(cls, row: tuple) -> _Machine:
        return cls(
            *row[:6], changes_ts=list(row[6]), changes_run=list(row[7]), stale=set(row[8]),
            stale_raised=row[9], stale_signals=row[10], last_answer=row[11],
        )  # fmt: skip


#: Columns of the readings waiting for their machine's state (numpy arrays, arrival order).
_PENDING = {
    "mid": np.int32, "sid": np.int32, "value": np.float64, "quality": np.int8, "ts": np.int64, "pos": np.int64,
    "sseq": np.int64,  # Telemetry.state_seq, -1: not given
}  # fmt: skip
_QUALITY_LOOKUP = dict(QUALITY_CODES)
_KEY_SHIFT = 45  # machine index << 45 | event ms: one sortable key per (machine, time); ms < 2^45 (year 3084)
_SEQ_KEY_MAX = (1 << _KEY_SHIFT) - 1  # positions above are clipped (an event seq that large: never seen)


def _keyed(changes: Iterable[tuple[int, list[int], list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Every machine's ``(mid, positions, running codes)`` as one sorted key array (machine
    index << 45 | position: an event time or an event seq) and the codes in that order."""
    keys, runs = [], []
    for mid, positions, codes in changes:
        if positions:
            keys.append((mid << _KEY_SHIFT) + np.minimum(np.asarray(positions, dtype=np.int64), _SEQ_KEY_MAX))
            runs.append(np.asarray(codes, dtype=np.int8))
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8)
    k = np.concatenate(keys)
    order = np.argsort(k, kind="stable")
    return k[order], np.concatenate(runs)[order]


def _lookup(keys: np.ndarray, runs: np.ndarray, mid: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Running code of the latest change of each row's machine at or before ``at`` (-1: none)."""
    if len(keys) == 0:
        return np.full(len(at), -1, dtype=np.int8)
    want = (mid.astype(np.int64) << _KEY_SHIFT) + at
    i = np.searchsorted(keys, want, side="right") - 1
    hit = (i >= 0) & ((keys[np.maximum(i, 0)] >> _KEY_SHIFT) == mid)
    return np.where(hit, runs[np.maximum(i, 0)], np.int8(-1)).astype(np.int8)


def _empty_rows() -> dict[str, np.ndarray]:
    return {k: np.zeros(0, dtype=t) for k, t in _PENDING.items()}


def _take(rows: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in rows.items()}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["ts"])]
    if not parts:
        return _empty_rows()
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in _PENDING}


class PartitionAnomalies:
    """The anomaly branch's state of one Kafka partition; no Bytewax, no Kafka.

    :meth:`process` takes decoded batches of the telemetry and machine-events streams (in
    arrival order) and returns the alerts to publish; :meth:`flush` judges every waiting
    reading (end of input); :meth:`snapshot` / ``PartitionAnomalies(config, state)`` round-trip.
    Machines and signals get small integer indices, so the per-reading work is numpy.
    """

    def __init__(self, config: AnomalyConfig, state: dict[str, Any] | None = None, *, clock=time.time) -> None:
        self.config = config
        self._clock = clock
        self.bank = DetectorBank(config.baseline, config.resolver())
        self.machines: dict[str, _Machine] = {}
        self.names: list[str | None] = []  # machine index -> name (None: free)
        self.signals: list[str] = []
        self.sid_of: dict[str, int] = {}
        self.last_ts = np.zeros(0, dtype=np.int64)  # per machine index: latest event time seen
        self.max_seq = np.zeros(0, dtype=np.int64)  # highest telemetry seq judged (copies are dropped)
        self.known = np.zeros(0, dtype=bool)  # its state is known from machine events
        self.events_seq = np.zeros(0, dtype=np.int64)  # highest machine-event seq seen (-1: none)
        self.series_of = np.full((0, 0), -1, dtype=np.int64)  # (machine, signal) -> detector series code
        self.events_wm: int = _NO_TIME  # max event time of the partition's machine events
        self.tel_max: int = _NO_TIME  # max event time of its telemetry
        self.next_pos = 0
        self.pending = _empty_rows()
        self.halves: dict[
            int, tuple[int, int, float, int, int, int]
        ] = {}  # machine -> (sid, ts, value, q, order, sseq)
        self.next_expiry_scan: int = _NO_TIME
        self._changes: tuple[np.ndarray, np.ndarray] | None = None  # all machines' state changes, keyed
        self._seq_changes: tuple[np.ndarray, np.ndarray] | None = None  # the same, keyed by event seq
        for name in (_PROCESS, _AIR, TEMPERATURE_DIFFERENCE):
            self._sid(name)
        if state is not None:
            self._restore(state)

    # -- registries ----------------------------------------------------------------

    def _sid(self, signal: str) -> int:
        sid = self.sid_of.get(signal)
        if sid is None:
            sid = self.sid_of[signal] = len(self.signals)
            self.signals.append(signal)
            if sid >= self.series_of.shape[1]:
                self._grow(self.series_of.shape[0], max(16, 2 * sid))
        return sid

    def _grow(self, machines: int, signals: int) -> None:
        old_m, old_s = self.series_of.shape
        if machines > old_m:
            self.last_ts = np.concatenate([self.last_ts, np.full(machines - old_m, _NO_TIME, dtype=np.int64)])
            self.max_seq = np.concatenate([self.max_seq, np.full(machines - old_m, -1, dtype=np.int64)])
            self.known = np.concatenate([self.known, np.zeros(machines - old_m, dtype=bool)])
            self.events_seq = np.concatenate([self.events_seq, np.full(machines - old_m, -1, dtype=np.int64)])
        table = np.full((max(machines, old_m), max(signals, old_s)), -1, dtype=np.int64)
        table[:old_m, :old_s] = self.series_of
        self.series_of = table

    def _register(self, name: str, site: str, area: str, line: str) -> _Machine:
        try:
            mid = self.names.index(None)
            self.names[mid] = name
        except ValueError:
            mid = len(self.names)
            self.names.append(name)
            if mid >= len(self.last_ts):
                self._grow(max(16, 2 * mid), self.series_of.shape[1])
        rec = self.machines[name] = _Machine(mid, site, area, line)
        self.last_ts[mid], self.max_seq[mid], self.known[mid], self.events_seq[mid] = _NO_TIME, -1, False, -1
        self.series_of[mid] = -1
        return rec

    def _reindex_series(self) -> None:
        self.series_of[:] = -1
        for code, (machine, signal) in enumerate(self.bank.keys):
            self.series_of[self.machines[machine].mid, self._sid(signal)] = code

    # -- state ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "bank": self.bank.snapshot(),
            "machines": {m: self._dump_machine(rec) for m, rec in self.machines.items()},
            "names": list(self.names),
            "signals": list(self.signals),
            "events_wm": self.events_wm,
            "tel_max": self.tel_max,
            "next_pos": self.next_pos,
            "pending": {k: v.copy() for k, v in self.pending.items()},
            "halves": dict(self.halves),
            "next_expiry_scan": self.next_expiry_scan,
        }

    def _dump_machine(self, rec: _Machine) -> tuple:
        m = rec.mid
        return (
            *rec.dump(), int(self.last_ts[m]), int(self.max_seq[m]), bool(self.known[m]), int(self.events_seq[m]),
            *rec.dump_seq_changes(),
        )  # fmt: skip

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown anomaly-branch state version {state.get('version')!r}")
        self.names = list(state["names"])
        self.signals, self.sid_of = [], {}
        for signal in state["signals"]:
            self._sid(signal)
        self._grow(max(16, len(self.names)), self.series_of.shape[1])
        for name, row in state["machines"].items():
            rec = self.machines[name] = _Machine.load(row[:12])
            self.last_ts[rec.mid], self.max_seq[rec.mid], self.known[rec.mid] = row[12], row[13], row[14]
            if len(row) > 15:  # snapshots before Telemetry.state_seq end here
                self.events_seq[rec.mid] = row[15]
                rec.seq_changes, rec.seq_runs, rec.seq_ts = list(row[16]), list(row[17]), list(row[18])
        self.bank = DetectorBank.from_snapshot(state["bank"], self.config.resolver())
        self._reindex_series()
        self.events_wm, self.tel_max = state["events_wm"], state["tel_max"]
        self.next_pos = state["next_pos"]
        pending = state["pending"]
        n = len(pending["ts"])
        self.pending = {k: np.asarray(pending.get(k, np.full(n, -1)), dtype=t) for k, t in _PENDING.items()}
        self.halves = {m: (*h, -1)[:6] for m, h in state["halves"].items()}
        self.next_expiry_scan = state["next_expiry_scan"]

    @property
    def partition_now(self) -> int:
        return max(self.events_wm, self.tel_max)

    @property
    def waiting(self) -> int:
        return len(self.pending["ts"])

    # -- processing ----------------------------------------------------------------

    def process(self, batches: list[DecodedBatch]) -> list[Alert]:
        """Alerts caused by these batches (the machine events of the call are applied first)."""
        out: list[Alert] = []
        for batch in batches:
            if batch.stream.name == EVENTS_STREAM.name and batch.events.num_rows:
                self._ingest_events(batch.events)
        for batch in batches:
            if batch.stream.name == TELEMETRY_STREAM.name and batch.events.num_rows:
                self._ingest_telemetry(batch.events, out)
        ready, self.pending = self._split(self.pending)
        out.extend(self._judge(ready))
        self._expire(out)
        return out

    def flush(self) -> list[Alert]:
        """Judge every waiting reading with the state known now (end of input)."""
        ready, self.pending = self.pending, _empty_rows()
        return self._judge(ready)

    # -- machine events --------------------------------------------------------------

    def _ingest_events(self, events: pa.Table) -> None:
        machines = events.column("machine_id").to_pylist()
        states = events.column("state").to_pylist()
        seqs = events.column("seq").to_pylist()
        ts = events.column("event_ts").combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
        sites, areas, lines = (events.column(c).to_pylist() for c in ("site", "area", "line"))
        for i, (machine, state, t, seq) in enumerate(zip(machines, states, ts.tolist(), seqs, strict=True)):
            rec = self.machines.get(machine) or self._register(machine, sites[i], areas[i], lines[i])
            self.last_ts[rec.mid] = max(self.last_ts[rec.mid], t)
            self.events_seq[rec.mid] = max(self.events_seq[rec.mid], seq)
            if state is None:
                continue
            run = 1 if state == "running" else 0
            self.known[rec.mid] = True
            self._note_seq_change(rec, seq, run, t)
            if rec.changes_run and rec.changes_run[-1] == run and t >= rec.changes_ts[-1]:
                continue
            self._changes = None
            at = int(np.searchsorted(rec.changes_ts, t, side="right"))  # out of order: where it belongs
            rec.changes_ts.insert(at, t)
            rec.changes_run.insert(at, run)
        self.events_wm = max(self.events_wm, int(ts.max()))

    def _note_seq_change(self, rec: _Machine, seq: int, run: int, t: int) -> None:
        """Record the running state after event ``seq`` (only where it changes; a copy adds nothing)."""
        at = int(np.searchsorted(rec.seq_changes, seq, side="right"))
        if at and rec.seq_changes[at - 1] == seq:
            return  # a copy of an event already applied: the first copy wins
        if at == len(rec.seq_changes) and rec.seq_runs and rec.seq_runs[-1] == run:
            return
        rec.seq_changes.insert(at, seq)
        rec.seq_runs.insert(at, run)
        rec.seq_ts.insert(at, t)
        self._seq_changes = None

    def _running(self, mid: np.ndarray, ts: np.ndarray, sseq: np.ndarray | None = None) -> np.ndarray:
        """Running code (1 running, 0 not, -1 unknown) of each reading's machine: after the
        event it names (``sseq`` >= 0), else at its event time."""
        by_time = self._running_at_time(mid, ts)
        if sseq is None or not (named := sseq >= 0).any():
            return by_time
        if self._seq_changes is None:
            self._seq_changes = _keyed((r.mid, r.seq_changes, r.seq_runs) for r in self.machines.values())
        return np.where(named, _lookup(*self._seq_changes, mid, np.minimum(sseq, _SEQ_KEY_MAX)), by_time)

    def _running_at_time(self, mid: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Running code (1 running, 0 not, -1 unknown) of each reading's machine at its event time."""
        if self._changes is None:
            self._changes = _keyed((r.mid, r.changes_ts, r.changes_run) for r in self.machines.values())
        return _lookup(*self._changes, mid, ts)

    # -- telemetry -------------------------------------------------------------------

    def _ingest_telemetry(self, events: pa.Table, out: list[Alert]) -> None:
        """Machine and signal indices, duplicates, expiry on return; the rows join the waiting ones."""
        n = events.num_rows
        encoded = events.column("machine_id").combine_chunks().dictionary_encode()
        local = encoded.indices.to_numpy(zero_copy_only=False)
        dnames = encoded.dictionary.to_pylist()
        ts = events.column("event_ts").combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
        lut = np.empty(len(dnames), dtype=np.int32)
        new = [i for i, name in enumerate(dnames) if name not in self.machines]
        if new:
            self._register_from(events, local, dnames, new)
        for i, name in enumerate(dnames):
            lut[i] = self.machines[name].mid
        # Back after its state should have expired: judge what waits, expire, start afresh.
        first_ts = np.full(len(self.last_ts), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first_ts, lut[local], ts)
        seen = self.last_ts[lut] != _NO_TIME
        back = lut[seen & (first_ts[lut] - self.last_ts[lut] > self.config.expiry_ms)]
        if len(back):
            names = sorted(self.names[m] for m in back.tolist())
            self._judge_machines_now(names, out)
            self._expire_machines(names, out)
            self._register_from(events, local, dnames, [dnames.index(name) for name in names])
            for i, name in enumerate(dnames):
                lut[i] = self.machines[name].mid
        mid = lut[local]
        seq = events.column("seq").combine_chunks().to_numpy(zero_copy_only=False).astype(np.int64)
        keep = self._fresh(mid, seq)
        np.maximum.at(self.max_seq, mid, seq)
        np.maximum.at(self.last_ts, mid, ts)
        self.tel_max = max(self.tel_max, int(ts.max()))
        signals = events.column("signal").combine_chunks().dictionary_encode()
        s_lut = np.array([self._sid(x) for x in signals.dictionary.to_pylist()], dtype=np.int32)
        sid = s_lut[signals.indices.to_numpy(zero_copy_only=False)]
        quality = events.column("quality").combine_chunks().dictionary_encode()
        q_lut = np.array([_QUALITY_LOOKUP[x] for x in quality.dictionary.to_pylist()], dtype=np.int8)
        q = q_lut[quality.indices.to_numpy(zero_copy_only=False)]
        value = pc.fill_null(events.column("value"), math.nan).combine_chunks().to_numpy(zero_copy_only=False)
        pos = self.next_pos + np.arange(n, dtype=np.int64)
        self.next_pos += n
        if "state_seq" in events.column_names:
            sseq = pc.fill_null(events.column("state_seq"), -1).combine_chunks().to_numpy(zero_copy_only=False)
        else:
            sseq = np.full(n, -1, dtype=np.int64)
        rows = {"mid": mid, "sid": sid, "value": value, "quality": q, "ts": ts, "pos": pos, "sseq": sseq}
        if not keep.all():
            rows = _take(rows, keep)
        self.pending = _concat([self.pending, rows])

    def _register_from(self, events: pa.Table, local: np.ndarray, dnames: list[str], which: list[int]) -> None:
        """Register machines ``dnames[which]`` with the identity of their first row in ``events``."""
        firsts = np.full(len(dnames), events.num_rows, dtype=np.int64)
        np.minimum.at(firsts, local, np.arange(events.num_rows))
        cols = {c: events.column(c) for c in ("site", "area", "line")}
        for i in which:
            row = int(firsts[i])
            self._register(dnames[i], *(cols[c][row].as_py() for c in ("site", "area", "line")))

    def _fresh(self, mid: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """Rows whose seq is above every earlier seq of their machine (first copy wins)."""
        order = np.argsort(mid.astype(np.uint16) if len(self.names) < 65_536 else mid, kind="stable")
        m, s = mid[order], seq[order]
        first = np.ones(len(m), dtype=bool)
        first[1:] = m[1:] != m[:-1]
        prev = np.empty_like(s)
        prev[1:] = s[:-1]
        prev[first] = self.max_seq[m[first]]
        if np.all(s > prev):  # increasing within each machine, above what was judged: the normal case
            return np.ones(len(mid), dtype=bool)
        # Rare: a copy or a replay inside the batch - a running maximum per machine.
        keep_sorted = np.zeros(len(m), dtype=bool)
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], len(m))
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            running = np.maximum.accumulate(np.concatenate(([self.max_seq[m[a]]], s[a:b])))
            keep_sorted[a:b] = s[a:b] > running[:-1]
        keep = np.empty(len(mid), dtype=bool)
        keep[order] = keep_sorted
        return keep

    def _split(self, pending: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(readings to judge now, readings still waiting for their machine events)."""
        n = len(pending["ts"])
        if n == 0:
            return pending, pending
        ts, mid, sseq = pending["ts"], pending["mid"], pending["sseq"]
        waited = self.tel_max - ts >= self.config.state_wait_ms
        # A reading naming its state event: once that event is here (not by time: an event of
        # its machine still on the way could be the one it names).  Others: by time.
        ok = np.where(sseq >= 0, sseq <= self.events_seq[mid], ts < self.events_wm) | waited
        if not self.config.machine_events:
            ok |= ~self.known[mid]
        if ok.all():
            return pending, _empty_rows()
        # Each machine's readings go in arrival order: only the prefix before its first waiting one.
        first_wait = np.full(len(self.names), n, dtype=np.int64)
        waiting = np.flatnonzero(~ok)
        np.minimum.at(first_wait, mid[waiting], waiting)
        ready = np.arange(n) < first_wait[mid]
        return _take(pending, ready), _take(pending, ~ready)

    def _judge_machines_now(self, names: list[str], out: list[Alert]) -> None:
        """Judge every waiting reading of these machines now (they are about to expire)."""
        if not self.waiting or not names:
            return
        mine = np.isin(self.pending["mid"], [self.machines[m].mid for m in names])
        ready = _take(self.pending, mine)
        self.pending = _take(self.pending, ~mine)
        out.extend(self._judge(ready))

    # -- judging ---------------------------------------------------------------------

    def _judge(self, rows: dict[str, np.ndarray]) -> list[Alert]:
        """Feed released readings (arrival order) and their derived signals to the detectors."""
        if len(rows["ts"]) == 0:
            return []
        mid, sid, ts, value, quality = rows["mid"], rows["sid"], rows["ts"], rows["value"], rows["quality"]
        sseq = rows["sseq"]
        order = rows["pos"] * 2  # real readings even, derived ones odd
        derived = self._pair_temperatures(mid, sid, ts, value, quality, order, sseq)
        if derived is not None:
            d_mid, d_ts, d_value, d_quality, d_order, d_sseq = derived
            sseq = np.concatenate([sseq, d_sseq])
            mid = np.concatenate([mid, d_mid])
            sid = np.concatenate([sid, np.full(len(d_ts), self.sid_of[TEMPERATURE_DIFFERENCE], dtype=np.int32)])
            ts = np.concatenate([ts, d_ts])
            value = np.concatenate([value, d_value])
            quality = np.concatenate([quality, d_quality])
            order = np.concatenate([order, d_order])
        series = self.series_of[mid, sid]
        if (series < 0).any():
            for m, s in set(zip(mid[series < 0].tolist(), sid[series < 0].tolist(), strict=True)):
                self.series_of[m, s] = self.bank.add(self.names[m], self.signals[s])
            series = self.series_of[mid, sid]
        result = self.bank.update_batch(series, ts, value, quality, self._running(mid, ts, sseq))
        valid = (quality <= QUALITY_CODES["uncertain"]) & np.isfinite(value)
        alerts: list[Alert] = []
        if result.transitions:
            concluded = int(self._clock() * 1000)
            keyed = []
            for t in result.transitions:
                code = self.bank.code(t.machine_id, t.signal)
                row = int(np.flatnonzero((series == code) & (ts == t.ts_ms))[0])
                keyed.append((int(order[row]), _KIND_ORDER[t.kind], t.action == "raise", t))
            keyed.sort(key=lambda k: k[:3])
            for o, _, _, t in keyed:
                alert = self._alert(t, o, mid, order, ts, valid, concluded)
                if alert is not None:
                    alerts.append(alert)
        if valid.any():
            latest = np.full(len(self.names), _NO_TIME, dtype=np.int64)
            np.maximum.at(latest, mid[valid], ts[valid])
            for m in np.flatnonzero(latest != _NO_TIME).tolist():
                rec = self.machines[self.names[m]]
                rec.last_answer = max(rec.last_answer or _NO_TIME, int(latest[m]))
        return alerts

    def _alert(  # noqa: PLR0917 - internal, one call site
        self,
        t: Transition,
        o: int,
        mid: np.ndarray,
        order: np.ndarray,
        ts: np.ndarray,
        valid: np.ndarray,
        concluded: int,
    ) -> Alert | None:
        rec = self.machines[t.machine_id]
        if t.kind != "stale":
            return transition_alert(t, rec.identity, seq=rec.next_seq(t.ts_ms), concluded_ms=concluded)
        # Per-series stale transitions make ONE MachineStale per machine.
        if t.action == "raise":
            first = not rec.stale
            rec.stale.add(t.signal)
            rec.stale_signals = max(rec.stale_signals, len(rec.stale))
            if not first:
                return None
            rec.stale_raised = t.ts_ms
            before = np.flatnonzero((mid == rec.mid) & valid & (order < o))
            last = max(rec.last_answer or _NO_TIME, int(ts[before].max()) if len(before) else _NO_TIME)
            return machine_stale_alert(
                t.machine_id,
                rec.identity,
                action=AlertAction.RAISE,
                ts_ms=t.ts_ms,
                raised_at_ms=t.ts_ms,
                last_answer_ms=None if last == _NO_TIME else last,
                signals=len(rec.stale),
                seq=rec.next_seq(t.ts_ms),
                concluded_ms=concluded,
            )
        rec.stale.discard(t.signal)
        if rec.stale or rec.stale_raised is None:
            return None
        alert = machine_stale_alert(
            t.machine_id,
            rec.identity,
            action=AlertAction.CLEAR,
            ts_ms=t.ts_ms,
            raised_at_ms=rec.stale_raised,
            last_answer_ms=None,
            signals=rec.stale_signals,
            seq=rec.next_seq(t.ts_ms),
            concluded_ms=concluded,
        )
        rec.stale_raised, rec.stale_signals = None, 0
        return alert

    def _pair_temperatures(  # noqa: PLR0917 - internal, one call site
        self,
        mid: np.ndarray,
        sid: np.ndarray,
        ts: np.ndarray,
        value: np.ndarray,
        quality: np.ndarray,
        order: np.ndarray,
        sseq: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Derived process - air temperature rows (same machine and event time), in arrival order.

        A half without its partner yet is carried to the next call (its partner is in the
        next Kafka batch); it is dropped once a later temperature of its machine arrives.
        """
        proc_sid, air_sid = self.sid_of[_PROCESS], self.sid_of[_AIR]
        is_proc = sid == proc_sid
        idx = np.flatnonzero(is_proc | (sid == air_sid))
        if len(idx) == 0 and not self.halves:
            return None
        carried = sorted(self.halves.items())
        m = np.concatenate([mid[idx], np.array([h for h, _ in carried], dtype=np.int32)])
        t = np.concatenate([ts[idx], np.array([c[1] for _, c in carried], dtype=np.int64)])
        v = np.concatenate([value[idx], np.array([c[2] for _, c in carried], dtype=np.float64)])
        q = np.concatenate([quality[idx], np.array([c[3] for _, c in carried], dtype=np.int8)])
        o = np.concatenate([order[idx], np.array([c[4] for _, c in carried], dtype=np.int64)])
        ss = np.concatenate([sseq[idx], np.array([c[5] for _, c in carried], dtype=np.int64)])
        proc = np.concatenate([is_proc[idx], np.array([c[0] == proc_sid for _, c in carried], dtype=bool)])
        srt = np.lexsort((o, t, m))
        m, t, v, q, o, ss, proc = m[srt], t[srt], v[srt], q[srt], o[srt], ss[srt], proc[srt]
        # Partners are neighbours after sorting; a rare third reading at the same time
        # (a duplicate) pairs with nobody rather than with whichever came first.
        cand = (m[1:] == m[:-1]) & (t[1:] == t[:-1]) & (proc[1:] != proc[:-1])
        first = np.flatnonzero(cand & ~np.concatenate(([False], cand[:-1])) & ~np.concatenate((cand[1:], [False])))
        paired = np.zeros(len(m), dtype=bool)
        paired[first] = True
        paired[first + 1] = True
        last_of_machine = np.append(m[1:] != m[:-1], True)  # the latest temperature of each machine
        self.halves = {
            int(m[i]): (proc_sid if proc[i] else air_sid, int(t[i]), float(v[i]), int(q[i]), int(o[i]), int(ss[i]))
            for i in np.flatnonzero(last_of_machine & ~paired).tolist()
        }
        if len(first) == 0:
            return None
        p_i = np.where(proc[first], first, first + 1)
        a_i = np.where(proc[first], first + 1, first)
        d_value, d_quality = paired_difference(v[p_i], q[p_i], v[a_i], q[a_i])
        d_order = np.maximum(o[p_i], o[a_i]) | 1
        d_sseq = np.maximum(ss[p_i], ss[a_i])  # the later state the two halves were read under
        back = np.argsort(d_order, kind="stable")
        return (
            m[p_i][back], t[p_i][back], d_value[back], d_quality[back].astype(np.int8), d_order[back], d_sseq[back],
        )  # fmt: skip

    # -- expiry ------------------------------------------------------------------------

    def _expire(self, out: list[Alert]) -> None:
        now = self.partition_now
        if now < self.next_expiry_scan:
            return
        self.next_expiry_scan = now + max(1, self.config.expiry_ms // 4)
        horizon = now - self.config.expiry_ms
        gone = sorted(m for m, rec in self.machines.items() if self.last_ts[rec.mid] < horizon)
        self._judge_machines_now(gone, out)
        self._expire_machines(gone, out)
        keep_from = self.events_wm - self.config.expiry_ms
        for rec in self.machines.values():  # state changes nobody can ask about any more
            cut = int(np.searchsorted(rec.changes_ts, keep_from, side="right")) - 1
            if cut > 0:
                del rec.changes_ts[:cut], rec.changes_run[:cut]
                self._changes = None
            old = 0
            while old < len(rec.seq_ts) and rec.seq_ts[old] <= keep_from:
                old += 1
            if old > 1:  # keep the last change before the horizon: the state after it still holds
                del rec.seq_changes[: old - 1], rec.seq_runs[: old - 1], rec.seq_ts[: old - 1]
                self._seq_changes = None

    def _expire_machines(self, machines: list[str], out: list[Alert]) -> None:
        """Clear the machines' open alerts (reason expired), drop their detectors and records."""
        if not machines:
            return
        gone = set(machines)
        snap = self.bank.snapshot()
        by_machine: dict[str, list[dict[str, Any]]] = {}
        for entry in snap["series"]:
            if entry["machine_id"] in gone:
                by_machine.setdefault(entry["machine_id"], []).append(entry)
        concluded = int(self._clock() * 1000)
        idle_s = self.config.expiry_ms / 1000
        for machine in machines:
            rec = self.machines.pop(machine)
            at = int(self.last_ts[rec.mid]) + self.config.expiry_ms
            self.halves.pop(rec.mid, None)
            self.names[rec.mid] = None
            self.last_ts[rec.mid], self.max_seq[rec.mid], self.known[rec.mid] = _NO_TIME, -1, False
            self.events_seq[rec.mid] = -1
            for entry in sorted(by_machine.get(machine, ()), key=lambda e: e["signal"]):
                for t in _open_transitions(machine, entry, at):
                    out.append(
                        expired_alert(t, rec.identity, seq=rec.next_seq(at), concluded_ms=concluded, idle_s=idle_s)
                    )
            if rec.stale_raised is not None:
                out.append(
                    machine_stale_alert(
                        machine,
                        rec.identity,
                        action=AlertAction.CLEAR,
                        ts_ms=at,
                        raised_at_ms=rec.stale_raised,
                        last_answer_ms=None,
                        signals=rec.stale_signals,
                        seq=rec.next_seq(at),
                        concluded_ms=concluded,
                        expired=True,
                    )
                )
        self._changes = self._seq_changes = None
        if by_machine:
            snap["series"] = [entry for entry in snap["series"] if entry["machine_id"] not in gone]
            self.bank = DetectorBank.from_snapshot(snap, self.config.resolver())
        self._reindex_series()


def _open_transitions(machine: str, entry: dict[str, Any], at_ms: int) -> list[Transition]:
    """Clears of a series' open alerts (but stale: MachineStale is per machine), from its snapshot."""
    st = entry["state"]
    out = []
    for r, kind in enumerate(KINDS):
        if not st["active"][r] or kind == "stale":
            continue
        run_length = kind in ("dropout", "stuck")
        evidence = Evidence(
            first_ts_ms=int(st["raised_at"][r]),
            last_ts_ms=int(st["last_anom"][r]),
            value=st["peak_value"][r],
            statistic=float(st["n_anom"][r]) if run_length else float(st["peak_stat"][r] or 0.0),
            threshold=float(st["peak_thr"][r] or 0.0),
            reference=None,
            samples=int(st["n_anom"][r]),
        )
        raised = int(st["raised_at"][r])
        out.append(Transition(machine, entry["signal"], kind, "clear", at_ms, raised, Severity.INFO, evidence))
    return out


class AnomalyAlertLogic(StatefulBatchLogic[DecodedBatch, AlertBatch, dict]):
    """Bytewax glue around :class:`PartitionAnomalies` (one instance per Kafka partition)."""

    def __init__(self, config: AnomalyConfig, resume_state: dict[str, Any] | None) -> None:
        self.core = PartitionAnomalies(config, resume_state)

    def on_batch(self, values: list[DecodedBatch]) -> tuple[list[AlertBatch], bool]:
        alerts = self.core.process(values)
        return ([AlertBatch(tuple(alerts))] if alerts else []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[AlertBatch], bool]:
        alerts = self.core.flush()
        return ([AlertBatch(tuple(alerts))] if alerts else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        return self.core.snapshot()


# -- wiring --------------------------------------------------------------------------------


def add_alert_sinks(
    step: str,
    alerts: op.KeyedStream[AlertBatch],
    settings: Settings,
    partitions: list[int],
    *,
    stats: FlowStats | None,
    flow: str,
) -> None:
    """Alerts to ``factory.alerts`` (at-least-once: consumers drop copies by ``(alert_id,
    action)``) and to the hot table ``alerts`` (exactly once per ``(alert_id, action)`` in
    ``FINAL``).  ``alerts`` must be keyed by a partition key of ``partitions``."""
    if stats is not None:

        def count(_step: str, kv: tuple[str, AlertBatch]) -> None:
            stats.add(alerts_emitted=len(kv[1].alerts))

        alerts = op.inspect(f"{step}_count", alerts, count)
    op.output(
        f"{step}_hot_out",
        alerts,
        DerivedTableSink(
            settings,
            partitions,
            table=ALERTS_TABLE,
            sink="hot_alerts",
            prepare=alert_inserts,
            rows_of=lambda batch: len(batch.alerts),
            coalesce_rows=ALERT_INSERT_ROWS,
            max_delay_s=ALERT_INSERT_MAX_DELAY_S,
            flow=flow,
        ),
    )
    op.output(
        f"{step}_kafka_out",
        alerts,
        KeyedRecordSink(
            settings, topic_name(settings, ALERTS), partitions, sink="alerts", records=AlertBatch.records, flow=flow
        ),
    )


#: Alerts are few: an insert goes in after at most this long (or this many rows).
ALERT_INSERT_ROWS = 10_000
ALERT_INSERT_MAX_DELAY_S = 0.5


def alert_rows(alerts: list[Alert]) -> pa.Table:
    """Alerts as rows of the hot table ``alerts`` (columns from the contract; see ``hot_tables.alerts_ddl``)."""
    names = alert_columns()
    fields = [n for n in names if n != "event_ts"]
    columns: dict[str, list[Any]] = {n: [] for n in fields}
    for alert in alerts:
        for n in fields:
            columns[n].append(getattr(alert, n))
    arrays: dict[str, pa.Array] = {}
    for n in fields:
        values = columns[n]
        if n in ALERT_TIME_FIELDS:
            arrays[n] = pa.array(values, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
        elif n == "attributes":
            arrays[n] = pa.array([list(v.items()) for v in values], pa.map_(pa.string(), pa.string()))
        elif n in ("seq", "v", "samples"):
            arrays[n] = pa.array(values, pa.uint64() if n == "seq" else pa.int64())
        elif n in ("value", "threshold", "statistic", "reference"):
            arrays[n] = pa.array(values, pa.float64())
        else:
            arrays[n] = pa.array([None if v is None else str(v) for v in values], pa.string())
    arrays["event_ts"] = arrays["source_ts"]
    read_ms = np.array([a.read_ts for a in alerts], dtype=np.uint64)
    arrays[COPY_RANK] = pa.array(np.uint64(COPY_RANK_BASE) - read_ms)
    return pa.table(arrays)


def alert_inserts(batches: list[AlertBatch]) -> list[tuple[pa.Table, str]]:
    """One insert per call, tokened by the ``(alert_id, action)`` pairs it holds."""
    alerts = [a for b in batches for a in b.alerts]
    if not alerts:
        return []
    digest = hashlib.sha256("\n".join(f"{a.alert_id}:{a.action}" for a in alerts).encode()).hexdigest()
    return [(alert_rows(alerts), f"alerts:{len(alerts)}:{digest}")]


def add_anomaly_alerts(
    inp: Any,
    settings: Settings,
    *,
    events: Any | None = None,
    stats: FlowStats | None = None,
    flow: str = "plant",
) -> op.KeyedStream[AlertBatch]:
    """Attach the anomaly branch to the telemetry ``StreamInput`` (and the machine events').

    ``events``: the machine-events ``StreamInput`` of the same flow (the running state);
    without it every machine's state is unknown.  Returns the alert stream (keyed by
    partition) for branches that want the alerts inside the flow (the digital twin).
    """
    config = dataclasses.replace(AnomalyConfig.from_settings(settings), machine_events=events is not None)
    source = inp.decoded if events is None else op.merge("anomaly_in", inp.decoded, events.decoded)
    alerts = op.stateful_batch("anomalies", source, lambda resume: AnomalyAlertLogic(config, resume))
    add_alert_sinks("anomaly_alerts", alerts, settings, inp.partitions, stats=stats, flow=flow)
    return alerts


__all__ = [
    "AlertBatch",
    "AnomalyAlertLogic",
    "AnomalyConfig",
    "PartitionAnomalies",
    "add_alert_sinks",
    "add_anomaly_alerts",
    "alert_inserts",
    "alert_rows",
]
