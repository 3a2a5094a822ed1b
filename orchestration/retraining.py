"""When the failure model is retrained and the last day scored: jobs, schedules, the drift sensor.

Wiring only; the work is in :mod:`plantstream.assets.predictive_maintenance`.

* ``failure_model_retrain`` (job): the ground truth imported, the features and labels of
  the training window rebuilt (one step for the range), then ``models/failure_model``
  (train, register, gate, promote or refuse).  Launched with the range tags
  (``dagster/asset_partition_range_start`` / ``_end``).
* ``failure_model_weekly`` (schedule, Mondays 09:00 UTC): that job over the last
  ``PLANTSTREAM_MODELS__TRAINING_DAYS`` days up to yesterday.  Monday, so the week's
  gold closes and lake maintenance (06:30 and 07:30 UTC) are done.
* ``failure_scores_daily`` (schedule, 08:30 UTC): the ground truth, yesterday's features
  and labels, and yesterday's batch scores by the champion.
* ``failure_model_drift`` (sensor, hourly):
  :func:`~plantstream.assets.predictive_maintenance.monitoring.evaluate_champion`; feature
  drift or degraded precision requests the retraining job, once per champion and day
  (run key ``drift:<version>:<day>``).

The schedules and the sensor are on by default, like the lakehouse's: the platform's
Dagster (``plantstream platform up --with-dagster``) runs the daemon.
"""

# No `from __future__ import annotations`: Dagster inspects the annotations at runtime.
import datetime as dt
import json

import dagster as dg

from plantstream.assets.gold.calendar import GOLD_PARTITIONS
from plantstream.assets.predictive_maintenance.assets import (
    FEATURES_KEY,
    GROUND_TRUTH_KEY,
    LABELS_KEY,
    MODEL_KEY,
    SCORES_KEY,
)
from plantstream.orchestration.resources import Lake
from plantstream.settings import Settings

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
WEEKLY_CRON = "0 9 * * 1"
DAILY_SCORES_CRON = "30 8 * * *"
DRIFT_INTERVAL_S = 3600

failure_model_retrain = dg.define_asset_job(
    "failure_model_retrain",
    selection=dg.AssetSelection.assets(GROUND_TRUTH_KEY, FEATURES_KEY, LABELS_KEY, MODEL_KEY),
    partitions_def=GOLD_PARTITIONS,
    description="Ground truth imported, features and labels of the run's days rebuilt, then the failure model "
    "trained, registered and gated (promoted and announced only if it beats the champion).",
    tags={"plantstream/kind": "retraining"},
)

failure_scores_job = dg.define_asset_job(
    "failure_scores_refresh",
    selection=dg.AssetSelection.assets(GROUND_TRUTH_KEY, FEATURES_KEY, LABELS_KEY, SCORES_KEY),
    partitions_def=GOLD_PARTITIONS,
    description="Ground truth imported, then the day's features, labels and the champion's batch scores.",
    tags={"plantstream/kind": "scoring"},
)


def training_range(settings: Settings, today: dt.date) -> tuple[str, str]:
    """The training window's days ending yesterday."""
    last = today - dt.timedelta(days=1)
    first = last - dt.timedelta(days=settings.models.training_days - 1)
    return first.isoformat(), last.isoformat()


@dg.schedule(
    name="failure_model_weekly",
    job=failure_model_retrain,
    cron_schedule=WEEKLY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Mondays 09:00 UTC: retrain the failure model on the last PLANTSTREAM_MODELS__TRAINING_DAYS days "
    "(features and labels rebuilt first); the gate decides whether it replaces the champion.",
)
def failure_model_weekly(context: dg.ScheduleEvaluationContext, settings: dg.ResourceParam[Settings]) -> dg.RunRequest:
    today = context.scheduled_execution_time.astimezone(dt.UTC).date()
    first, last = training_range(settings, today)
    return dg.RunRequest(
        run_key=f"retrain-weekly-{today.isoformat()}",
        tags={RANGE_START: first, RANGE_END: last, "plantstream/retrain": "weekly"},
    )


@dg.schedule(
    name="failure_scores_daily",
    job=failure_scores_job,
    cron_schedule=DAILY_SCORES_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day 08:30 UTC: yesterday's features, labels and the champion's batch scores.",
)
def failure_scores_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    yesterday = (context.scheduled_execution_time.astimezone(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"scores-{yesterday}", partition_key=yesterday)


@dg.sensor(
    name="failure_model_drift",
    job=failure_model_retrain,
    minimum_interval_seconds=DRIFT_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Hourly: PSI of each feature of the newest complete day against the champion's training window, "
    "and the precision of its alerts against the labels; drift or degraded precision -> retraining (once per "
    "champion and day).",
)
def failure_model_drift(context: dg.SensorEvaluationContext, lake: dg.ResourceParam[Lake]) -> dg.SensorResult:
    from plantstream.assets.predictive_maintenance.monitoring import evaluate_champion

    health = evaluate_champion(lake)
    checked = f"{health.champion}:{health.day}"
    new_cursor = json.dumps(
        {"checked": checked, "max_psi": max(health.psi.values(), default=0.0), "precision": health.precision}
    )
    if health.champion is None:
        return dg.SensorResult(skip_reason=dg.SkipReason("no champion yet"), cursor=new_cursor)
    if health.day is None:
        return dg.SensorResult(skip_reason=dg.SkipReason("no complete day of features yet"), cursor=new_cursor)
    if not health.retrain:
        worst = max(health.psi.items(), key=lambda item: item[1], default=("-", 0.0))
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"v{health.champion} fit on {health.day}: largest PSI {worst[0]} {worst[1]:.3f}, "
                f"precision {health.precision} (test {health.test_precision})"
            ),
            cursor=new_cursor,
        )
    first, last = training_range(lake.settings, dt.date.fromisoformat(health.day) + dt.timedelta(days=1))
    context.log.warning("; ".join(health.reasons))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift:{checked}",
                tags={
                    RANGE_START: first,
                    RANGE_END: last,
                    "plantstream/retrain": "drift",
                    "plantstream/retrain_reason": "; ".join(health.reasons)[:4000],
                },
            )
        ],
        cursor=new_cursor,
    )


def defs() -> dg.Definitions:
    return dg.Definitions(
        jobs=[failure_model_retrain, failure_scores_job],
        schedules=[failure_model_weekly, failure_scores_daily],
        sensors=[failure_model_drift],
    )
