"""The demo's predictive-maintenance step: a trained and promoted model, and the stream scoring with it.

Before the live plant (:func:`prepare_model`):

* **History, once per lake.**  If bronze holds no historian import yet (the Delta
  application transaction :func:`plantstream.simulator.history.history_app_id` of
  ``bronze/telemetry``), :data:`HISTORY_DAYS` past days of the shipped-plant-shaped
  :func:`~plantstream.simulator.history.history_plant` (12 machines, the live plant's
  machine ids) are written straight into bronze, with their ground-truth log under
  :func:`~plantstream.assets.predictive_maintenance.ground_truth.ground_truth_dir`
  (``history-<first day>-12m/``, as ``plantstream simulate history`` names it).  The days
  end before today (UTC) and before the first day bronze already holds, so neither the
  live plant's data of today nor an earlier run's ever overlaps them.  Later runs find the
  import and simulate nothing.
* **Training only when there is no champion.**  :func:`train_on_lake` (silver, ground
  truth, features and labels, the model, MLflow, the gate, the ``champion`` alias and its
  announcement) runs when the registry has no champion: on the first run (promoted as the
  first champion), or when the registry was reset.  With a champion in place the demo
  trains nothing: retraining is the weekly schedule's, the drift sensor's or
  ``plantstream train``'s job, and retraining on the same lake every run would cost a
  minute and mostly end in a gate refusal.  The champion's figures then come from its
  MLflow run.

During and after the stream:

* The plant dataflow attaches its failure-scoring branch by itself (``stream_scoring =
  auto`` and a champion in the registry).  The branch decides a sample of the grid
  (every ``models.sample_every_min`` minutes) once the 60 s windows up to it have closed
  (``stream.allowed_lateness_seconds`` later) and the machine's state at it is known: when
  its machine events pass it or, as with the live plant's machines (which change state
  rarely), ``alerts.machine_state_wait_seconds`` of telemetry later.  A 30 s live run decides
  no sample, so while the stream scores, the live plant runs at least
  :func:`seconds_to_first_sample` (and the demo waits :data:`DEMO_STATE_WAIT_S` for the
  state, not the default 120 s; :func:`demo_settings`).
* :func:`read_stream_scores` reads ``factory.models.scores`` back after the drain: the
  scores emitted in this run (``read_ts`` from the run's start) and the versions that made
  them, and the ``MaintenanceRequired`` raises the branch published on ``factory.alerts``.
  The hot store's count of them (:func:`plantstream.cli.demo_insights.stream_insights`,
  ``failure_alerts``; the branch writes its alerts through the same sinks as the anomaly
  branch: the topic and the hot table ``alerts``) is shown beside it.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from plantstream.settings import Settings

Progress = Callable[[str, int | None, int | None], None]  # (step, done, total), as demo_job's

#: Past days the first run simulates: 2 x 24 h of 12 machines fail ~1,600 times (AI4I's rates,
#: ~2.9 failures an hour a machine), and the second day has warm samples (8 h of history) for the
#: model's test part.  Measured on 2 cores (2026-12-02): simulation and bronze 8-11 s, training
#: (silver, ground truth, features and labels, model, MLflow, gate) 30-37 s; test PR-AUC 0.706,
#: F1 0.660 against the rule's 0.297, median lead 8.5 min.
HISTORY_DAYS = 2
#: Simulation step and reading interval of the history: one production cycle (30 s) per step,
#: as the lifecycle tests' lake (tests/models/conftest.py).
HISTORY_PERIOD_S = 30.0
HISTORY_SEED = 2020
HISTORY_MACHINES = 12  # the shipped plant's machines: the live plant's ids
#: Small and quick, as the default-tier lifecycle tests train (``plantstream train`` defaults: 300 / 3).
DEMO_MODEL_CONFIG: dict[str, Any] = {"max_iter": 100, "importance_repeats": 1}
#: How much telemetry event time the demo's stream waits for a machine's state before deciding
#: a sample when the machine reports no state change (``alerts.machine_state_wait_seconds``, default 120).
DEMO_STATE_WAIT_S = 30.0
#: Time the gateway may take to connect and read every machine once before the plant starts.
CONNECT_ALLOWANCE_S = 20.0
#: After the window that decides the first sample closed: time for every partition to get there.
SCORING_MARGIN_S = 5.0
WINDOW_S = 60  # the branch scores on the closed 60 s windows


@dataclass(frozen=True)
class ModelStep:
    """What the demo's model step did before the live plant, and the model the stream will use."""

    champion_version: str | None  # the champion the stream scores with (None: it runs without a model)
    trained: bool  # this run trained a candidate
    promoted: bool  # ... and the gate promoted it
    history_days: list[str] = field(default_factory=list)  # past days simulated in this run
    history_rows: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)  # pr_auc, f1, baseline_f1, median_lead_time_min
    gate_reason: str = ""
    training_window: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # history, train


@dataclass(frozen=True)
class StreamScores:
    """The stream's failure scores of this run, read back from ``factory.models.scores``."""

    scores: int  # distinct (machine, sample time) scored in this run
    versions: list[str]
    machines: int
    alerts: int  # scores at or above the model's threshold
    maintenance_raised: int = 0  # MaintenanceRequired raised on factory.alerts in this run


@dataclass(frozen=True)
class ModelResult:
    step: ModelStep
    scores: StreamScores
    hot_store_alerts: int  # MaintenanceRequired (failure_risk) raises of this run in the hot store's ``alerts``
    live_seconds: float | None  # how long the live plant ran (extended so that the stream decides a sample)

    def summary(self) -> dict[str, Any]:
        """The ``model`` object of ``plantstream demo --json``."""
        s = self.step
        return {
            "model_version": s.champion_version,
            "promoted": s.promoted,
            **{k: _finite(s.metrics.get(k)) for k in ("pr_auc", "f1", "baseline_f1", "median_lead_time_min")},
            "trained": s.trained,
            "history_simulated_days": s.history_days,
            "training_window": s.training_window,
            "gate_reason": s.gate_reason,
            "scores_emitted": self.scores.scores,
            "scored_by_versions": self.scores.versions,
            "machines_scored": self.scores.machines,
            "scores_alerting": self.scores.alerts,
            "maintenance_alerts": self.scores.maintenance_raised,
            "maintenance_alerts_in_hot_store": self.hot_store_alerts,
            "live_seconds": None if self.live_seconds is None else round(self.live_seconds, 1),
            "seconds": s.seconds,
        }


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return round(number, 4) if math.isfinite(number) else None


def settings_for_run(settings: Settings, step: ModelStep | None, *, live: bool) -> Settings:
    """The settings the demo's plant and stream run with once the model step is done.

    With a model, the stream waits :data:`DEMO_STATE_WAIT_S` for a silent machine's state
    (if configured longer: its first sample is then decided ~1.5 min after it instead of
    ~2.5), and, when the stream will score, the live plant (``live``) runs at least
    :func:`seconds_to_first_sample`, so that the run shows scores.
    """
    if step is None:
        return settings
    if settings.alerts.machine_state_wait_seconds > DEMO_STATE_WAIT_S:
        alerts = settings.alerts.model_copy(update={"machine_state_wait_seconds": DEMO_STATE_WAIT_S})
        settings = settings.model_copy(update={"alerts": alerts})
    if live and scoring_on(settings):
        seconds = max(settings.simulator.live_seconds, round(seconds_to_first_sample(settings), 1))
        settings = settings.model_copy(
            update={"simulator": settings.simulator.model_copy(update={"live_seconds": seconds})}
        )
    return settings


def seconds_to_first_sample(settings: Settings, now: float | None = None) -> float:
    """Wall seconds a live plant started now must run for the stream to decide one sample of the grid.

    The first sample ``T`` of a machine is the first grid point at or after its first event
    (at most :data:`CONNECT_ALLOWANCE_S` from now).  It is decided once the windows have
    closed up to ``T`` plus the state wait (rounded up to whole windows: silent machines),
    i.e. when the plant's event time has passed that by the allowed lateness.
    """
    now = time.time() if now is None else now
    step = settings.models.sample_every_min * 60
    first_sample = math.ceil((now + CONNECT_ALLOWANCE_S) / step) * step
    state_wait = math.ceil(settings.alerts.machine_state_wait_seconds / WINDOW_S) * WINDOW_S
    decided_at = first_sample + state_wait + settings.stream.allowed_lateness_seconds + SCORING_MARGIN_S
    return decided_at - now


def prepare_model(settings: Settings, progress: Progress = lambda _s, _d, _t: None) -> ModelStep:
    """History if the lake has none, training if the registry has no champion (see the module docstring)."""
    from plantstream.models.serving import champion_version

    seconds: dict[str, float] = {}
    days, rows = [], {}
    if not has_history(settings):
        started = time.perf_counter()
        days, rows = simulate_demo_history(settings, progress)
        seconds["history"] = round(time.perf_counter() - started, 1)
    champion = champion_version(settings)
    if champion is not None:
        return ModelStep(champion, False, False, days, rows, champion_metrics(settings, champion), seconds=seconds)
    started = time.perf_counter()
    result = train_demo_model(settings, progress)
    seconds["train"] = round(time.perf_counter() - started, 1)
    line = result.json_line()
    return ModelStep(
        champion_version=champion_version(settings),
        trained=True,
        promoted=result.promoted,
        history_days=days,
        history_rows=rows,
        metrics={k: line[k] for k in ("pr_auc", "f1", "baseline_f1", "median_lead_time_min")},
        gate_reason=str(line["gate_reason"]),
        training_window=f"{result.first_day}..{result.last_day}",
        seconds=seconds,
    )


def has_history(settings: Settings) -> bool:
    """Whether a historian import (``plantstream simulate history``, an earlier demo) wrote into this lake's bronze."""
    from plantstream.contract.streams import TELEMETRY_STREAM
    from plantstream.orchestration.resources import Lake
    from plantstream.simulator.history import history_app_id

    table = Lake(settings).table("bronze", TELEMETRY_STREAM.name)
    return table is not None and table.transaction_version(history_app_id(TELEMETRY_STREAM)) is not None


def history_days(settings: Settings, today: dt.date | None = None) -> list[dt.date]:
    """The :data:`HISTORY_DAYS` days before today (UTC) and before the first day bronze holds."""
    today = today or dt.datetime.now(dt.UTC).date()
    from plantstream.orchestration.resources import Lake

    held = Lake(settings).days("bronze", "telemetry")
    end = min([today, *held[:1]])
    return [end - dt.timedelta(days=n) for n in range(HISTORY_DAYS, 0, -1)]


def simulate_demo_history(settings: Settings, progress: Progress) -> tuple[list[str], dict[str, int]]:
    """Write the history days into bronze and the ground-truth log (as ``plantstream simulate history``)."""
    from plantstream.assets.predictive_maintenance.ground_truth import ground_truth_dir
    from plantstream.simulator.engine import utc_ms
    from plantstream.simulator.history import history_plant, write_history, write_plant_file

    days = history_days(settings)
    first = days[0]
    progress("history", 0, 1)
    folder = ground_truth_dir(settings) / f"history-{first.isoformat()}-{HISTORY_MACHINES}m"
    plant = history_plant(HISTORY_MACHINES, sample_period_s=HISTORY_PERIOD_S, seed=HISTORY_SEED)
    write_plant_file(plant, folder / "plant.yaml")
    result = write_history(
        settings,
        start_ms=utc_ms(first.year, first.month, first.day),
        hours=24 * len(days),
        plant=plant,
        seed=HISTORY_SEED,
        ground_truth=folder / "ground_truth.jsonl",
    )
    progress("history", 1, 1)
    return [d.isoformat() for d in days], result.rows


def train_demo_model(settings: Settings, progress: Progress):  # -> PipelineResult
    """:func:`train_on_lake` with the demo's quick model; its stages as the ``train`` step's progress."""
    from plantstream.assets.predictive_maintenance.pipeline import train_on_lake

    stages = 4  # silver, ground truth, features and labels, model
    done = 0
    progress("train", done, stages)

    def on_message(message: str) -> None:
        nonlocal done
        if " in " in message and message.endswith(" s") and ": " in message:  # "<stage>: done in 1.2 s"
            done += 1
            progress("train", done, stages)

    return train_on_lake(settings, model_config=DEMO_MODEL_CONFIG, progress=on_message)


def champion_metrics(settings: Settings, version: str) -> dict[str, float | None]:
    """The champion's held-out figures, from its MLflow run (what ``plantstream train`` printed for it)."""
    from plantstream.connect.mlflow import mlflow_client

    client = mlflow_client(settings)
    run_id = client.get_model_version(settings.models.registered_model, version).run_id
    logged = client.get_run(run_id).data.metrics if run_id else {}
    names = {
        "pr_auc": "test_pr_auc",
        "f1": "test_f1",
        "baseline_f1": "baseline_fixed_f1",
        "median_lead_time_min": "test_lead_time_median_min",
    }
    return {key: logged.get(name) for key, name in names.items()}


def _topic_values(settings: Settings, topic: Any) -> Iterator[bytes]:
    """Every value on ``topic`` (a :class:`~plantstream.contract.topics.TopicSpec`) so far; none if it is missing."""
    from plantstream.cli.topic_peek import PeekError, peek
    from plantstream.contract.topics import topic_name

    try:
        for message in peek(settings, topic_name(settings, topic)):
            if message.value is not None:
                yield message.value
    except PeekError:
        return  # no such topic: nothing was ever published there


def read_stream_scores(settings: Settings, since: dt.datetime) -> StreamScores:
    """The stream's scores on ``factory.models.scores`` made from ``since`` on (``read_ts``), one per sample,
    and the ``MaintenanceRequired`` raises it published on ``factory.alerts`` (one per ``alert_id``)."""
    from plantstream.contract import Alert, Codec
    from plantstream.contract.events import AlertAction, AlertType
    from plantstream.contract.promotions import decode_score
    from plantstream.contract.topics import ALERTS, FAILURE_SCORES

    since_ms = int(since.timestamp() * 1000)
    samples: dict[tuple[str, int], Any] = {}
    for value in _topic_values(settings, FAILURE_SCORES):
        score = decode_score(value)
        if score.read_ts >= since_ms:
            samples.setdefault((score.machine_id, score.ts), score)  # at-least-once: one per sample
    codec = Codec(Alert)
    raised = set()
    for value in _topic_values(settings, ALERTS):
        alert = codec.decode(value)
        if (
            alert.alert_type is AlertType.MAINTENANCE_REQUIRED
            and alert.action is AlertAction.RAISE
            and alert.read_ts >= since_ms
        ):
            raised.add(alert.alert_id)
    found = list(samples.values())
    return StreamScores(
        scores=len(found),
        versions=sorted({s.model_version for s in found}, key=_version_key),
        machines=len({s.machine_id for s in found}),
        alerts=sum(1 for s in found if s.alert),
        maintenance_raised=len(raised),
    )


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (1 << 62, version)


def scoring_on(settings: Settings) -> bool:
    """Whether the plant dataflow will attach its scoring branch (the dataflow's own test)."""
    from plantstream.streaming.failure_scoring import scoring_enabled

    return scoring_enabled(settings)
