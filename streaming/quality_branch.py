"""The quality-alert branch: scrap rate per machine and per line, runs of one defect code.

    quality metrics ──► quality_rules (per Kafka partition) ──► machine alerts ──┐
      (decoded)          DefectRuns, ScrapChart per machine                       ├─► factory.alerts, hot ``alerts``
                             └── LineCounts per closed bucket ──► line_quality ───┘
                                                      (one key: every partition's counts)

Per Kafka partition (:class:`PartitionQuality`, pure):

* every part of a machine, in arrival order, goes through the machine's :class:`DefectRuns`
  (a duplicate ``seq`` is skipped: the first copy wins);
* parts are counted per machine and per line in event-time buckets of
  ``alerts.scrap_bucket_minutes``; a bucket closes when the partition's watermark (its
  latest part time - ``stream.allowed_lateness_seconds``) passes its end, like the
  telemetry windows: lateness is judged against the watermark just before each part, so a
  replay closes the same buckets with the same counts.  A part later than that still
  counts for defect runs, not for the scrap rate.  At a close each machine's
  :class:`ScrapChart` judges its rolling window, and the partition emits its per-line counts
  of the bucket (:class:`LineCounts`, empty ones too: they mark progress).

A line's machines are spread over partitions, so lines are judged in one place
(:class:`LineScrap`, a single Bytewax key): a bucket of the lines is judged once every
partition of the topic has closed it.  Sums do not depend on arrival order, so the result
is the same on a replay.  A partition whose machines make no parts (stopped, or no
inspection on them) would hold the lines back for ever: once the lines have waited
``alerts.line_partition_wait_seconds`` of wall time for partitions while another is ahead,
the silent ones are left out until they report again (like a stream processor's idle
sources; the only case where a replay could judge a line differently is a partition that
is more than that late *and* then delivers parts for the buckets judged without it).
Counts of a bucket already judged are dropped.

Bounded: machines and lines without parts for ``stream.idle_key_expiry_seconds`` of
event time expire (their open alerts are cleared, reason ``expired``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import bytewax.operators as op
import msgspec
import numpy as np
import pyarrow as pa
from bytewax.operators import StatefulBatchLogic

from plantstream.contract.events import Alert, AlertAction, PartResult, Severity
from plantstream.domain.alerts import (
    QUALITY_LINE_BRANCH,
    QUALITY_MACHINE_BRANCH,
    Identity,
    alert_seq,
    line_unit,
)
from plantstream.domain.quality_rules import (
    DefectDecision,
    DefectRunConfig,
    DefectRuns,
    ScrapChart,
    ScrapChartConfig,
    ScrapDecision,
    defect_alert,
    scrap_alert,
)
from plantstream.settings import Settings
from plantstream.streaming.alert_branch import AlertBatch, add_alert_sinks
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.stream_decode import DecodedBatch
from plantstream.streaming.worker_routing import partition_key

_NO_TIME = np.iinfo(np.int64).min // 4
_DEFECTIVE = frozenset({PartResult.SCRAP.value, PartResult.REWORK.value})
LINES_KEY = "lines"


@dataclass(frozen=True, slots=True)
class QualityConfig:
    chart: ScrapChartConfig
    runs: DefectRunConfig
    lateness_ms: int
    expiry_ms: int
    line_wait_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityConfig:
        return cls(
            chart=ScrapChartConfig.from_settings(settings),
            runs=DefectRunConfig.from_settings(settings),
            lateness_ms=settings.stream.allowed_lateness_seconds * 1000,
            expiry_ms=settings.stream.idle_key_expiry_seconds * 1000,
            line_wait_s=settings.alerts.line_partition_wait_seconds,
        )


@dataclass(frozen=True, slots=True)
class LineCounts:
    """One partition's parts per line in one closed bucket: ``(site, line) -> (parts, scrap, area)``."""

    partition: int
    bucket_start: int
    lines: dict[tuple[str, str], tuple[int, int, str]]


@dataclass(slots=True)
class _Unit:
    """A machine or line the branch tracks: identity, alert numbering, its rules' state."""

    identity: Identity
    last_ts: int
    since_ms: int
    ordinal: int = 0
    max_seq: int = -1
    chart: ScrapChart | None = None
    runs: DefectRuns | None = None

    def next_seq(self, branch: int) -> int:
        seq = alert_seq(branch, self.since_ms, self.ordinal)
        self.ordinal += 1
        return seq

    def dump(self) -> dict[str, Any]:
        return {
            "identity": (self.identity.site, self.identity.area, self.identity.line),
            "last_ts": self.last_ts,
            "since_ms": self.since_ms,
            "ordinal": self.ordinal,
            "max_seq": self.max_seq,
            "chart": None if self.chart is None else self.chart.snapshot(),
            "runs": None if self.runs is None else self.runs.snapshot(),
        }

    @classmethod
    def load(cls, d: dict[str, Any], config: QualityConfig) -> _Unit:
        return cls(
            Identity(*d["identity"]),
            d["last_ts"],
            d["since_ms"],
            d["ordinal"],
            d["max_seq"],
            None if d["chart"] is None else ScrapChart(config.chart, d["chart"]),
            None if d["runs"] is None else DefectRuns(config.runs, d["runs"]),
        )


def _expiry_alerts(
    unit_id: str, unit: _Unit, *, branch: int, at_ms: int, scope: Literal["machine", "line"], concluded: int
) -> list[Alert]:
    """Clears of a unit's open quality alerts when it expires (no parts for the expiry time)."""
    out = []
    if unit.chart is not None and unit.chart.is_open:
        chart = unit.chart
        assert chart.open_since is not None
        d = ScrapDecision(
            "clear", at_ms, chart.open_since, 0.0, 0.0, 0.0, 0.0, 0, 0, chart.open_since, at_ms, "history",
            chart.peak, chart.episode_buckets,
        )  # fmt: skip
        a = scrap_alert(unit_id, unit.identity, d, scope=scope, seq=unit.next_seq(branch), concluded_ms=concluded)
        out.append(_expired(a, f"{unit_id}: scrap-rate alert cleared: no parts for long, its state expired"))
    if unit.runs is not None:
        for code in sorted(unit.runs.open):
            raised_at, defects, _ = unit.runs.open[code]
            d2 = DefectDecision("clear", code, at_ms, raised_at, raised_at, "", defects)
            a = defect_alert(unit_id, unit.identity, d2, run_parts=0, seq=unit.next_seq(branch), concluded_ms=concluded)
            out.append(_expired(a, f"{unit_id}: defect {code!r} alert cleared: no parts for long, its state expired"))
    return out


def _expired(alert: Alert, message: str) -> Alert:
    return msgspec.structs.replace(
        alert,
        message=message,
        severity=Severity.INFO,
        action=AlertAction.CLEAR,
        attributes={**alert.attributes, "reason": "expired"},
    )


class PartitionQuality:
    """The quality branch's state of one Kafka partition; no Bytewax, no Kafka.

    :meth:`process` takes decoded quality batches and returns the machines' alerts and the
    per-line counts of the buckets that closed; :meth:`snapshot` round-trips.
    """

    def __init__(
        self, config: QualityConfig, state: dict[str, Any] | None = None, *, partition: int = -1, clock=time.time
    ) -> None:
        self.config = config
        self.partition = partition
        self._clock = clock
        self.machines: dict[str, _Unit] = {}
        self.max_ts: int = _NO_TIME
        self.next_bucket: int | None = None
        self.buckets: dict[int, dict[str, list[int]]] = {}  # bucket start -> machine -> [parts, scrap]
        if state is not None:
            self.machines = {m: _Unit.load(d, config) for m, d in state["machines"].items()}
            self.max_ts, self.next_bucket = state["max_ts"], state["next_bucket"]
            self.buckets = {b: {m: list(c) for m, c in by.items()} for b, by in state["buckets"].items()}
            self.partition = state["partition"]

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "machines": {m: u.dump() for m, u in self.machines.items()},
            "max_ts": self.max_ts,
            "next_bucket": self.next_bucket,
            "buckets": {b: {m: list(c) for m, c in by.items()} for b, by in self.buckets.items()},
            "partition": self.partition,
        }

    @property
    def watermark(self) -> int:
        return self.max_ts - self.config.lateness_ms

    def process(self, batches: list[DecodedBatch]) -> tuple[list[Alert], list[LineCounts]]:
        alerts: list[Alert] = []
        counts: list[LineCounts] = []
        concluded = int(self._clock() * 1000)
        for batch in batches:
            self.partition = batch.partition
            if batch.events.num_rows:
                self._parts(batch.events, alerts, concluded)
            self._close(alerts, counts, concluded)
        return alerts, counts

    def _parts(self, events: pa.Table, out: list[Alert], concluded: int) -> None:
        bucket_ms = self.config.chart.bucket_ms
        ts = events.column("event_ts").combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
        before = np.empty_like(ts)
        before[0] = self.max_ts
        if len(ts) > 1:
            np.maximum(np.maximum.accumulate(ts)[:-1], self.max_ts, out=before[1:])
        late = (ts // bucket_ms) * bucket_ms + bucket_ms <= before - self.config.lateness_ms
        cols = {c: events.column(c).to_pylist() for c in ("machine_id", "site", "area", "line", "seq", "part_id")}
        results = events.column("result").to_pylist()
        defects = events.column("defect_code").to_pylist()
        for i, t in enumerate(ts.tolist()):
            machine = cols["machine_id"][i]
            unit = self.machines.get(machine)
            if unit is None:
                identity = Identity(cols["site"][i], cols["area"][i], cols["line"][i])
                unit = self.machines[machine] = _Unit(
                    identity, t, t, chart=ScrapChart(self.config.chart), runs=DefectRuns(self.config.runs)
                )
            seq = cols["seq"][i]
            if seq <= unit.max_seq:
                continue  # a copy of a part already judged: the first copy wins
            unit.max_seq = seq
            unit.last_ts = max(unit.last_ts, t)
            defective = results[i] in _DEFECTIVE
            code = (defects[i] or "unspecified") if defective else None
            assert unit.runs is not None
            for d in unit.runs.part(t, cols["part_id"][i], code):
                out.append(
                    defect_alert(
                        machine,
                        unit.identity,
                        d,
                        run_parts=self.config.runs.run_parts,
                        seq=unit.next_seq(QUALITY_MACHINE_BRANCH),
                        concluded_ms=concluded,
                    )
                )
            if late[i]:
                continue
            start = t // bucket_ms * bucket_ms
            if self.next_bucket is None:
                self.next_bucket = start
            c = self.buckets.setdefault(start, {}).setdefault(machine, [0, 0])
            c[0] += 1
            c[1] += int(defective and results[i] == PartResult.SCRAP.value)
        self.max_ts = max(self.max_ts, int(ts.max()))

    def _close(self, out: list[Alert], counts: list[LineCounts], concluded: int) -> None:
        bucket_ms = self.config.chart.bucket_ms
        if self.next_bucket is None:
            return
        while self.next_bucket + bucket_ms <= self.watermark:
            start = self.next_bucket
            self.next_bucket = start + bucket_ms
            self._expire(start, out, concluded)
            by_machine = self.buckets.pop(start, {})
            lines: dict[tuple[str, str], list[Any]] = {}
            for machine in sorted(self.machines):
                unit = self.machines[machine]
                parts, scrap = by_machine.get(machine, (0, 0))
                assert unit.chart is not None
                decision = unit.chart.close_bucket(start, parts, scrap)
                if decision is not None:
                    out.append(
                        scrap_alert(
                            machine,
                            unit.identity,
                            decision,
                            scope="machine",
                            seq=unit.next_seq(QUALITY_MACHINE_BRANCH),
                            concluded_ms=concluded,
                        )
                    )
                if parts:
                    key = (unit.identity.site, unit.identity.line)
                    line = lines.setdefault(key, [0, 0, unit.identity.area])
                    line[0] += parts
                    line[1] += scrap
            counts.append(LineCounts(self.partition, start, {k: (v[0], v[1], v[2]) for k, v in lines.items()}))

    def _expire(self, bucket_start: int, out: list[Alert], concluded: int) -> None:
        horizon = bucket_start - self.config.expiry_ms
        for machine in sorted(m for m, u in self.machines.items() if u.last_ts < horizon):
            unit = self.machines.pop(machine)
            at = unit.last_ts + self.config.expiry_ms
            out.extend(
                _expiry_alerts(
                    machine, unit, branch=QUALITY_MACHINE_BRANCH, at_ms=at, scope="machine", concluded=concluded
                )
            )


class LineScrap:
    """The scrap-rate p-chart of every line, fed every partition's :class:`LineCounts`."""

    def __init__(
        self, config: QualityConfig, partitions: list[int], state: dict[str, Any] | None = None, *, clock=time.time
    ):
        self.config = config
        self.partitions = sorted(partitions)
        self._clock = clock
        self.reported: dict[int, int] = {}  # partition -> latest bucket it closed
        self.pending: dict[int, dict[tuple[str, str], list[Any]]] = {}
        self.next_bucket: int | None = None  # the next bucket to judge (None: none judged yet)
        self.waiting_since: float | None = None  # wall time the lines began to wait for a silent partition
        self.lines: dict[tuple[str, str], _Unit] = {}
        if state is not None:
            self.reported = dict(state["reported"])
            self.pending = {b: {tuple(k): list(v) for k, v in by} for b, by in state["pending"].items()}
            self.next_bucket, self.waiting_since = state["next_bucket"], state["waiting_since"]
            self.lines = {tuple(k): _Unit.load(d, config) for k, d in state["lines"]}

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "reported": dict(self.reported),
            "pending": {b: [(list(k), list(v)) for k, v in by.items()] for b, by in self.pending.items()},
            "next_bucket": self.next_bucket,
            "waiting_since": self.waiting_since,
            "lines": [(list(k), u.dump()) for k, u in self.lines.items()],
        }

    def process(self, items: list[LineCounts]) -> list[Alert]:
        for item in items:
            if self.next_bucket is not None and item.bucket_start < self.next_bucket:
                continue  # this bucket of the lines was judged without it
            self.reported[item.partition] = max(self.reported.get(item.partition, _NO_TIME), item.bucket_start)
            by_line = self.pending.setdefault(item.bucket_start, {})
            for key, (parts, scrap, area) in item.lines.items():
                c = by_line.setdefault(key, [0, 0, area])
                c[0] += parts
                c[1] += scrap
        return self._judge()

    def wake_at(self) -> float | None:
        """Wall time at which waiting for silent partitions ends (None: not waiting)."""
        return None if self.waiting_since is None else self.waiting_since + self.config.line_wait_s

    def _ready(self, bucket: int) -> bool:
        if all(self.reported.get(p, _NO_TIME) >= bucket for p in self.partitions):
            self.waiting_since = None
            return True
        if not any(b >= bucket for b in self.reported.values()):
            return False  # nobody is there yet: nothing to wait for
        now = self._clock()
        if self.waiting_since is None:
            self.waiting_since = now
        return now - self.waiting_since >= self.config.line_wait_s

    def _judge(self) -> list[Alert]:
        if not self.pending:
            return []
        bucket_ms = self.config.chart.bucket_ms
        out: list[Alert] = []
        concluded = int(self._clock() * 1000)
        bucket = min(self.pending) if self.next_bucket is None else self.next_bucket
        while self.pending and bucket <= max(self.pending) and self._ready(bucket):
            counts = self.pending.pop(bucket, {})
            self._expire(bucket, out, concluded)
            for key in sorted(counts.keys() - self.lines.keys()):
                site, line = key
                identity = Identity(site, counts[key][2], line)
                self.lines[key] = _Unit(identity, bucket, bucket, chart=ScrapChart(self.config.chart))
            for key in sorted(self.lines):
                unit = self.lines[key]
                parts, scrap, _ = counts.get(key, (0, 0, ""))
                if parts:
                    unit.last_ts = bucket
                assert unit.chart is not None
                decision = unit.chart.close_bucket(bucket, parts, scrap)
                if decision is not None:
                    out.append(
                        scrap_alert(
                            line_unit(*key),
                            unit.identity,
                            decision,
                            scope="line",
                            seq=unit.next_seq(QUALITY_LINE_BRANCH),
                            concluded_ms=concluded,
                        )
                    )
            bucket += bucket_ms
            self.next_bucket = bucket
        return out

    def _expire(self, bucket: int, out: list[Alert], concluded: int) -> None:
        horizon = bucket - self.config.expiry_ms
        for key in sorted(k for k, u in self.lines.items() if u.last_ts < horizon):
            unit = self.lines.pop(key)
            out.extend(
                _expiry_alerts(
                    line_unit(*key),
                    unit,
                    branch=QUALITY_LINE_BRANCH,
                    at_ms=unit.last_ts + self.config.expiry_ms,
                    scope="line",
                    concluded=concluded,
                )
            )


# -- Bytewax glue ----------------------------------------------------------------------------


QualityOutput = AlertBatch | LineCounts


class QualityAlertLogic(StatefulBatchLogic[DecodedBatch, QualityOutput, dict]):
    """:class:`PartitionQuality` of one Kafka partition."""

    def __init__(self, config: QualityConfig, resume_state: dict[str, Any] | None) -> None:
        self.core = PartitionQuality(config, resume_state)

    def on_batch(self, values: list[DecodedBatch]) -> tuple[list[QualityOutput], bool]:
        alerts, counts = self.core.process(values)
        out: list[QualityOutput] = [AlertBatch(tuple(alerts))] if alerts else []
        return [*out, *counts], StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        return self.core.snapshot()


class LineQualityLogic(StatefulBatchLogic[LineCounts, AlertBatch, dict]):
    """:class:`LineScrap` of the whole plant (one key); woken when waiting for silent partitions ends."""

    def __init__(self, config: QualityConfig, partitions: list[int], resume_state: dict[str, Any] | None) -> None:
        self.core = LineScrap(config, partitions, resume_state)

    def on_batch(self, values: list[LineCounts]) -> tuple[list[AlertBatch], bool]:
        alerts = self.core.process(values)
        return ([AlertBatch(tuple(alerts))] if alerts else []), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[AlertBatch], bool]:
        alerts = self.core.process([])
        return ([AlertBatch(tuple(alerts))] if alerts else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        at = self.core.wake_at()
        return None if at is None else datetime.fromtimestamp(at, tz=UTC)

    def snapshot(self) -> dict[str, Any]:
        return self.core.snapshot()


def add_quality_alerts(
    inp: Any, settings: Settings, *, stats: FlowStats | None = None, flow: str = "plant"
) -> op.KeyedStream[AlertBatch]:
    """Attach the quality branch to the quality-metrics ``StreamInput``; returns its alert
    stream (machine and line alerts, keyed by partition key)."""
    config = QualityConfig.from_settings(settings)
    partitions = list(inp.partitions)
    outputs = op.stateful_batch("quality_rules", inp.decoded, lambda resume: QualityAlertLogic(config, resume))
    split = op.branch("quality_alerts_or_counts", outputs, lambda kv: isinstance(kv[1], AlertBatch))
    counts = op.key_on(
        "line_counts_to_one_key", op.map("line_counts", split.falses, lambda kv: kv[1]), lambda _: LINES_KEY
    )
    lines = op.stateful_batch("line_quality", counts, lambda resume: LineQualityLogic(config, partitions, resume))
    home = partition_key(partitions[0])  # line alerts are few: one sink partition writes them
    line_alerts = op.map("line_alerts_to_a_partition", lines, lambda kv: (home, kv[1]))
    alerts = op.merge("quality_alerts_all", split.trues, line_alerts)
    add_alert_sinks("quality_alerts", alerts, settings, partitions, stats=stats, flow=flow)
    return alerts


__all__ = [
    "LineCounts",
    "LineQualityLogic",
    "LineScrap",
    "PartitionQuality",
    "QualityAlertLogic",
    "QualityConfig",
    "add_quality_alerts",
]
