"""The stream's inference branch: the champion failure model scores every running machine online.

::

    telemetry ─► windows (closed 60 s aggregates) ─┐
    machine events (decoded) ──────────────────────┼─► failure scoring (per Kafka partition)
    champion (ChampionWatcher: registry + factory.models.promotions) ─┘      │
                          ┌──────────────────────────────────────────────────┘
                          ├─► factory.models.scores   one FailureScore per machine and sample time
                          └─► factory.alerts          MaintenanceRequired raise / clear (+ failure_probability,
                                                       which the digital twin shows)

**Features.** One :class:`plantstream.models.features.OnlineFeatures` per machine, fed the
closed 60 s windows of the telemetry branch and the machine's history events
(:func:`~plantstream.models.features.history_kinds`): the one feature definition that
``gold/failure_features`` computes offline (tests compare the two).

**When a machine is scored.** At the sample grid of the lake (every
``PLANTSTREAM_MODELS__SAMPLE_EVERY_MIN`` minutes, epoch-aligned, while the machine's last
state event at or before the sample time says ``running``; before any state event it
counts as running) and only while it reports (it has a closed window ending at or after
the sample time).  Sample time ``T`` is decided once every 60 s window ending at or before
``T`` has closed in the partition and its machine events have passed ``T`` (or, when the
events fall silent, the windows have moved ``alerts.machine_state_wait_seconds`` past it):
then the state, the history and the minutes before ``T`` are known, and a replay decides
the same.  Each decided sample advances the machine's next sample time in the state, so
no sample is scored twice or skipped, whatever the model does in between.

**Model swaps.** The model is :meth:`ChampionWatcher.current`, read once per batch: a
promotion or rollback (announced on ``factory.models.promotions``, or seen by the poll of
the alias) takes effect between two batches, and every score says which version made it.
Without a champion, decided samples are counted (``unscored``) and not published.

**Alerts.** ``MaintenanceRequired`` is raised when a machine's probability reaches the
model's threshold and cleared at its first sample below it; the ``alert_id`` hashes
(machine, ``failure_risk``, raise time) like every branch's (``plantstream.domain.anomaly.alert_id``),
``seq`` is :func:`plantstream.domain.alerts.alert_seq` with this branch's number.  Both carry
``attributes["failure_probability"]`` and the model version.

**Delivery.** The scores and alerts topics are at-least-once (``KeyedRecordSink``); the
state (features, next sample, open alerts) is in the Bytewax snapshots, so a resumed flow
continues with the next undecided sample.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
import numpy as np
import pyarrow as pa
from bytewax.operators import StatefulBatchLogic

from plantstream.contract.events import Alert, AlertAction, AlertType, Severity
from plantstream.contract.promotions import FailureScore, encode_score
from plantstream.contract.topics import FAILURE_SCORES, topic_name
from plantstream.domain.alerts import alert_seq
from plantstream.domain.anomaly import alert_id
from plantstream.models.features import MINUTE_MS, OnlineFeatures, history_kinds
from plantstream.models.labels import PRODUCING
from plantstream.models.serving import ServingModel
from plantstream.settings import Settings
from plantstream.streaming import metrics
from plantstream.streaming.alert_branch import AlertBatch, add_alert_sinks
from plantstream.streaming.derived_sinks import KeyedRecordSink
from plantstream.streaming.stream_decode import DecodedBatch
from plantstream.streaming.windowing import ClosedWindows

log = logging.getLogger(__name__)

#: The top bits of this branch's alert ``seq`` (0-2 are the anomaly and quality branches).
FAILURE_BRANCH = 3
FAILURE_RISK = "failure_risk"
FAILURE_PROBABILITY = "failure_probability"  # the attribute the twin reads (streaming/twin.py)
_NO_TIME = np.iinfo(np.int64).min // 4


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    every_min: int
    state_wait_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ScoringConfig:
        return cls(
            every_min=settings.models.sample_every_min,
            state_wait_ms=round(settings.alerts.machine_state_wait_seconds * 1000),
        )


@dataclass(slots=True)
class _Machine:
    features: OnlineFeatures
    site: str = ""
    area: str = ""
    line: str = ""
    state: str | None = None
    next_sample: int | None = None
    newest_window_end: int = _NO_TIME
    last_history_ts: int = _NO_TIME
    max_event_seq: int = -1
    pending: list[tuple[int, int, str, str | None, str | None]] = field(default_factory=list)
    open_alert: tuple[str, int, float] | None = None  # alert_id, raised at, peak probability
    since_ms: int | None = None
    ordinal: int = 0

    def next_seq(self, ts_ms: int) -> int:
        if self.since_ms is None:
            self.since_ms = ts_ms
        seq = alert_seq(FAILURE_BRANCH, self.since_ms, self.ordinal)
        self.ordinal += 1
        return seq


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """What one step emitted for one partition."""

    scores: tuple[FailureScore, ...] = ()
    alerts: tuple[Alert, ...] = ()

    def score_records(self) -> list[tuple[bytes, bytes]]:
        return [(s.machine_id.encode(), encode_score(s)) for s in self.scores]


class PartitionScoring:
    """The branch's state of one Kafka partition; no Bytewax, no Kafka, no registry (see the module docstring)."""

    def __init__(self, config: ScoringConfig) -> None:
        self.config = config
        self.machines: dict[str, _Machine] = {}
        self.windows_until = _NO_TIME  # every 60 s window of the partition ending at or before this has closed
        self.events_wm = _NO_TIME
        self.decided = 0
        self.unscored = 0  # decided while there was no model
        self.unanswerable = 0  # the features needed evicted data (a machine back after a long gap)
        self.history_out_of_order = 0

    def _machine(self, machine_id: str) -> _Machine:
        m = self.machines.get(machine_id)
        if m is None:
            m = self.machines[machine_id] = _Machine(OnlineFeatures(machine_id))
        return m

    def add_windows(self, closed: ClosedWindows) -> None:
        """Closed 60 s windows (other widths and provisional end-of-input windows are ignored)."""
        if closed.window_seconds != 60 or not closed.final:
            return
        rows = closed.aggregates.to_pylist()
        by_machine: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_machine.setdefault(row["machine_id"], []).append(row)
        end = closed.window_start_ms + 60_000
        for machine_id, mine in by_machine.items():
            m = self._machine(machine_id)
            m.features.add(mine)
            m.newest_window_end = max(m.newest_window_end, end)
            if m.next_sample is None:
                m.next_sample = self._first_sample(closed.window_start_ms)
        self.windows_until = max(self.windows_until, end)

    def add_events(self, events: pa.Table) -> None:
        """Machine events (the events stream's columns: ``machine_id``, ``seq``, ``event_ts``, ``event_type``,
        ``state``, ``reason``, ``site``, ``area``, ``line``); a machine's copies of a ``seq`` count once."""
        if not events.num_rows:
            return
        columns = events.select(["machine_id", "seq", "event_ts", "event_type", "state", "reason", "site", "area",
                                 "line"]).to_pydict()  # fmt: skip
        ts = events["event_ts"].cast(pa.int64()).to_numpy(zero_copy_only=False)
        for i, machine_id in enumerate(columns["machine_id"]):
            m = self._machine(machine_id)
            seq = columns["seq"][i]
            if seq <= m.max_event_seq:
                continue  # a copy: the first one counts
            m.max_event_seq = seq
            m.site, m.area, m.line = columns["site"][i], columns["area"][i], columns["line"][i]
            t = int(ts[i])
            m.pending.append((t, seq, columns["event_type"][i], columns["state"][i], columns["reason"][i]))
            if m.next_sample is None:
                m.next_sample = self._first_sample(t)
            self.events_wm = max(self.events_wm, t)

    def _first_sample(self, from_ms: int) -> int:
        step = self.config.every_min * MINUTE_MS
        return -(-from_ms // step) * step

    def _apply_events_until(self, m: _Machine, t: int) -> None:
        if not m.pending:
            return
        m.pending.sort(key=lambda e: (e[0], e[1]))
        cut = 0
        for ts, _seq, event_type, state, reason in m.pending:
            if ts > t:
                break
            cut += 1
            if state:
                m.state = state
            for kind in history_kinds(event_type, reason):
                if ts < m.last_history_ts:
                    self.history_out_of_order += 1
                    continue
                m.features.add_history(kind, ts)
                m.last_history_ts = ts
        del m.pending[:cut]

    def process(self, values: list[Any]) -> list[tuple[str, int, dict[str, float]]]:
        """Closed windows and machine-event tables in arrival order; the samples they let be decided.

        Samples are decided after *each* window, not after the whole list: a backlog brings
        hours of windows in one batch, and a machine's ring of minutes must not move on past
        a sample before it is decided (its features would then be unanswerable)."""
        out: list[tuple[str, int, dict[str, float]]] = []
        for value in values:
            if isinstance(value, ClosedWindows):
                self.add_windows(value)
                out.extend(self.due())
            else:
                self.add_events(value)
        out.extend(self.due())
        return out

    def due(self) -> list[tuple[str, int, dict[str, float]]]:
        """The samples that can be decided now, with their feature vectors, in (machine, time) order."""
        step = self.config.every_min * MINUTE_MS
        out = []
        for machine_id in sorted(self.machines):
            m = self.machines[machine_id]
            while m.next_sample is not None and m.next_sample <= self.windows_until:
                t = m.next_sample
                if t > self.events_wm and self.windows_until < t + self.config.state_wait_ms:
                    break  # the machine's state at t may still change
                self._apply_events_until(m, t)
                m.next_sample = t + step
                self.decided += 1
                if (m.state is not None and m.state != PRODUCING) or m.newest_window_end < t:
                    continue
                try:
                    out.append((machine_id, t, m.features.features(t)))
                except ValueError:
                    self.unanswerable += 1
        return out

    def score(
        self, model: ServingModel | None, due: list[tuple[str, int, dict[str, float]]], now_ms: int
    ) -> ScoredBatch:
        """Score the decided samples with ``model`` and turn threshold crossings into alerts."""
        if not due:
            return ScoredBatch()
        if model is None:
            self.unscored += len(due)
            return ScoredBatch()
        matrix = np.array([[vector[name] for name in model.feature_names] for _, _, vector in due], dtype=np.float64)
        probabilities = model.predict_matrix(matrix)
        scores, alerts = [], []
        for (machine_id, t, _), probability in zip(due, probabilities, strict=True):
            m = self.machines[machine_id]
            p = float(probability)
            above = p >= model.threshold
            scores.append(
                FailureScore(
                    site=m.site or "unknown", area=m.area or "unknown", line=m.line or "unknown",
                    machine_id=machine_id, ts=t, probability=min(max(p, 0.0), 1.0), threshold=model.threshold,
                    alert=above, horizon_min=model.horizon_min, model=model.name, model_version=model.version,
                    read_ts=now_ms,
                )
            )  # fmt: skip
            alert = self._transition(m, machine_id, t, p, model=model, now_ms=now_ms)
            if alert is not None:
                alerts.append(alert)
        return ScoredBatch(tuple(scores), tuple(alerts))

    def _transition(
        self, m: _Machine, machine_id: str, t: int, p: float, *, model: ServingModel, now_ms: int
    ) -> Alert | None:
        above = p >= model.threshold
        common = {"model": model, "now_ms": now_ms}
        if m.open_alert is not None:
            aid, raised_at, peak = m.open_alert
            if above:
                m.open_alert = (aid, raised_at, max(peak, p))
                return None
            m.open_alert = None
            return self._alert(
                m, machine_id, t, p, aid=aid, raised_at=raised_at, action=AlertAction.CLEAR, value=peak, **common
            )
        if not above:
            return None
        aid = alert_id(machine_id, "", FAILURE_RISK, t)
        m.open_alert = (aid, t, p)
        return self._alert(m, machine_id, t, p, aid=aid, raised_at=t, action=AlertAction.RAISE, value=p, **common)

    def _alert(
        self, m: _Machine, machine_id: str, t: int, p: float, *, model: ServingModel, now_ms: int, aid: str,
        raised_at: int, action: AlertAction, value: float,
    ) -> Alert:  # fmt: skip
        verb = "may fail" if action is AlertAction.RAISE else "no longer likely to fail"
        return Alert(
            site=m.site or "unknown", area=m.area or "unknown", line=m.line or "unknown", machine_id=machine_id,
            seq=m.next_seq(t), source_ts=t, read_ts=now_ms, ingest_ts=now_ms,
            alert_type=AlertType.MAINTENANCE_REQUIRED,
            severity=Severity.WARNING if action is AlertAction.RAISE else Severity.INFO,
            message=f"{machine_id} {verb} within {model.horizon_min} min: failure probability {p:.2f} "
            f"(threshold {model.threshold:.2f}, {model.name} v{model.version})",
            attributes={FAILURE_PROBABILITY: repr(p), "model": model.name, "model_version": model.version,
                        "horizon_min": str(model.horizon_min)},
            alert_id=aid, action=action, kind=FAILURE_RISK, raised_at=raised_at, value=value,
            threshold=model.threshold, statistic=p, window_end=t, samples=1,
        )  # fmt: skip


class FailureScoringLogic(StatefulBatchLogic[Any, ScoredBatch, PartitionScoring]):
    """Bytewax glue: one :class:`PartitionScoring` per Kafka partition; the model from the watcher."""

    def __init__(
        self, settings: Settings, config: ScoringConfig, resume: PartitionScoring | None, *, flow: str = "plant"
    ) -> None:
        from plantstream.streaming.champion_watcher import champion_watcher

        self.state = resume if resume is not None else PartitionScoring(config)
        self.watcher = champion_watcher(settings)
        model = settings.models.registered_model
        self._scores = metrics.SCORES.labels(flow, model)
        self._unscored = metrics.UNSCORED.labels(flow, model)

    def on_batch(self, values: list[Any]) -> tuple[list[ScoredBatch], bool]:
        due = self.state.process([v.events if isinstance(v, DecodedBatch) else v for v in values])
        if not due:
            return [], False
        # The model is read once per batch: a swap falls between two batches.
        model = self.watcher.current(wait_s=60.0)
        scored = self.state.score(model, due, int(time.time() * 1000))
        if model is None:
            self._unscored.inc(len(due))
        else:
            self._scores.inc(len(scored.scores))
        return ([scored] if scored.scores or scored.alerts else []), False

    def snapshot(self) -> PartitionScoring:
        return self.state


def _registry_listening(uri: str, timeout_s: float = 2.0) -> bool:
    """Whether an http(s) tracking server accepts connections (MLflow's client would retry for minutes)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return True  # a file or database store: the call itself is quick
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def scoring_enabled(settings: Settings) -> bool:
    """``stream_scoring``: on, off, or (auto) on when the registry has a champion now."""
    mode = settings.models.stream_scoring
    if mode != "auto":
        return mode == "on"
    from plantstream.models.serving import champion_version

    if not _registry_listening(settings.mlflow.tracking_uri):
        log.info("failure scoring off: no model registry at %s", settings.mlflow.tracking_uri)
        return False
    try:
        return champion_version(settings) is not None
    except Exception as exc:  # no registry reachable: the stream runs without a model, and says so
        log.warning("failure scoring off: the model registry is unreachable (%s)", exc)
        return False


def add_failure_scoring(
    inputs: Mapping[str, Any], windows: op.KeyedStream[ClosedWindows] | None, settings: Settings, *, flow: str
) -> bool:
    """Attach the branch to the closed telemetry windows and the machine events, if enabled; True if attached."""
    events = inputs.get("events")
    telemetry = inputs.get("telemetry")
    if windows is None or telemetry is None or not scoring_enabled(settings):
        return False
    from plantstream.connect.topics import ensure_topics

    ensure_topics(settings, (FAILURE_SCORES,))
    config = ScoringConfig.from_settings(settings)
    source = windows if events is None else op.merge("failure_scoring_in", windows, events.decoded)
    scored = op.stateful_batch(
        "failure_scoring", source, lambda resume: FailureScoringLogic(settings, config, resume, flow=flow)
    )
    partitions = telemetry.partitions
    op.output(
        "failure_scores_out",
        scored,
        KeyedRecordSink(
            settings, topic_name(settings, FAILURE_SCORES), partitions, sink="failure_scores",
            records=ScoredBatch.score_records, flow=flow,
        ),
    )  # fmt: skip
    # MaintenanceRequired goes where every branch's alerts go: factory.alerts and the hot table
    # ``alerts`` (exactly once per (alert_id, action)), through the one pair of alert sinks.
    alerts = op.filter_map_value("failure_alerts", scored, lambda b: AlertBatch(b.alerts) if b.alerts else None)
    add_alert_sinks("failure_alerts", alerts, settings, partitions, stats=None, flow=flow)
    return True


__all__ = [
    "FAILURE_BRANCH",
    "FailureScoringLogic",
    "PartitionScoring",
    "ScoredBatch",
    "ScoringConfig",
    "add_failure_scoring",
    "scoring_enabled",
]
