"""The suites as Dagster asset checks: one multi-asset check per table, one Dagster check per meaning.

:func:`table_checks` turns a :class:`~plantstream.quality_checks.suites.TableSuite` into a
``@multi_asset_check`` on the suite's asset: one step validates the partition (or each
day of a range) with Great Expectations and reports one ``AssetCheckResult`` per check
name (``schema``, ``signal_ranges``, ``shift_coverage``, ...), so the UI says *which*
property failed.  Metadata of every result: the failed expectations with their observed
values, a sample of failing rows, the days checked and failed, the rows checked, the
time taken, and a link to the validation's Data Docs page.

Blocking: a suite's ERROR checks are ``blocking=True``.  In a run that also materialises
a downstream asset, Dagster skips it when one fails; across runs the downstream asset's
write gate (:mod:`plantstream.quality_checks.gate`) reads the same results and refuses.

Bronze is unpartitioned: its check validates the ``event_date`` days that got data since
the bronze version of its previous evaluation (the first time: the newest
:data:`BRONZE_FIRST_DAYS` days).
"""

# No `from __future__ import annotations`: Dagster inspects the context annotation at runtime.
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from plantstream.assets.cold.delta_log import partitions_changed
from plantstream.assets.gold.calendar import GOLD_PARTITIONS, parse_day
from plantstream.orchestration.resources import Lake
from plantstream.quality_checks import gx_runtime
from plantstream.quality_checks.expectations import Batch
from plantstream.quality_checks.suites import SUITES, Severity, SuiteInputs, TableSuite
from plantstream.settings import Settings

if TYPE_CHECKING:  # the type is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

BRONZE_FIRST_DAYS = 2
#: Executions of a bronze check looked through for the last completed one (runs that failed leave none).
BRONZE_LOOKBACK = 20
#: Failed expectations listed per check result.
FAILURES_SHOWN = 8
OWNER_NOTE = "plantstream.quality_checks"


@dataclass
class DayReport:
    """Outcomes of one partition, by check name."""

    day: str
    rows: dict[str, int] = field(default_factory=dict)
    failures: dict[str, list[gx_runtime.RuleOutcome]] = field(default_factory=dict)
    evaluated: dict[str, int] = field(default_factory=dict)
    docs: dict[str, Any] = field(default_factory=dict)  # check -> the batch that judged it (then its page's URL)
    seconds: float = 0.0


def run_suite(suite: TableSuite, inputs: SuiteInputs, day: dt.date, wanted: set[str] | None = None) -> DayReport:
    """Validate one day of ``suite`` (only the rules of the ``wanted`` checks)."""
    started = time.perf_counter()
    report = DayReport(day.isoformat())
    for batch in suite.batches(inputs, day):
        rules = [r for r in batch.rules if wanted is None or r.check in wanted]
        if not rules:
            continue
        outcome = gx_runtime.validate(
            inputs.settings.state_dir,
            suite.name,
            day.isoformat(),
            Batch(batch.frame, batch.data, rules, batch.sample_columns),
        )
        for rule_outcome in outcome.outcomes:
            check = rule_outcome.rule.check
            report.evaluated[check] = report.evaluated.get(check, 0) + 1
            report.rows[check] = max(report.rows.get(check, 0), outcome.rows)
            if check not in report.docs or not rule_outcome.success:
                report.docs[check] = outcome.identifier
            if not rule_outcome.success:
                report.failures.setdefault(check, []).append(rule_outcome)
    report.seconds = time.perf_counter() - started
    return report


def link_docs(state_dir: Path, reports: list[DayReport]) -> None:
    """Render the Data Docs of every validation the reports refer to; their links replace the keys."""
    identifiers = list({id(i): i for r in reports for i in r.docs.values()}.values())
    urls = gx_runtime.publish(state_dir, identifiers)
    for report in reports:
        report.docs = {check: urls[i] for check, i in report.docs.items() if i in urls}


def check_result(suite: TableSuite, name: str, reports: list[DayReport]) -> dg.AssetCheckResult:
    """One Dagster check's result over the days of the step."""
    definition = suite.check(name)
    failed = [r for r in reports if r.failures.get(name)]
    shown = failed[0] if failed else (reports[0] if reports else None)
    failures = [o for r in failed for o in r.failures[name]]
    metadata: dict[str, Any] = {
        "days_checked": dg.MetadataValue.json([r.day for r in reports]),
        "failed_days": dg.MetadataValue.json([r.day for r in failed]),
        "expectations_evaluated": dg.MetadataValue.int(sum(r.evaluated.get(name, 0) for r in reports)),
        "rows_checked": dg.MetadataValue.int(sum(r.rows.get(name, 0) for r in reports)),
        "seconds": dg.MetadataValue.float(round(sum(r.seconds for r in reports), 3)),
        "suite": dg.MetadataValue.text(suite.name),
    }
    if failures:
        first = failures[0]
        metadata["failed_expectations"] = dg.MetadataValue.json(
            [{"day": r.day, **o.summary()} for r in failed for o in r.failures[name]][:FAILURES_SHOWN]
        )
        metadata["failed_expectation"] = dg.MetadataValue.text(first.rule.describe())
        metadata["observed_value"] = dg.MetadataValue.text(_observed(first))
        metadata["failing_rows"] = dg.MetadataValue.json(first.sample)
    if shown is not None and name in shown.docs:
        metadata["data_docs"] = dg.MetadataValue.url(shown.docs[name])
    description = (
        f"{len(failures)} expectation(s) failed on {', '.join(r.day for r in failed)}: {_observed(failures[0])}"
        if failures
        else f"passed on {len(reports)} day(s)"
    )
    severity = dg.AssetCheckSeverity.WARN if definition.severity is Severity.WARN else dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckResult(
        asset_key=suite.asset_key,
        check_name=name,
        passed=not failures,
        severity=severity,
        metadata=metadata,
        description=description[:1000],
    )


def _observed(outcome: gx_runtime.RuleOutcome) -> str:
    if outcome.error:
        return f"{outcome.rule.describe()} raised: {outcome.error}"
    parts = []
    if outcome.unexpected_count is not None:
        parts.append(f"{outcome.unexpected_count} of {outcome.element_count} rows unexpected")
    if outcome.observed is not None:
        parts.append(f"observed {json.dumps(outcome.observed, default=str)[:200]}")
    if outcome.sample:
        parts.append(f"e.g. {json.dumps(outcome.sample[0], default=str)[:300]}")
    return f"{outcome.rule.describe()}: " + "; ".join(parts)


def _bronze_days(context: dg.AssetCheckExecutionContext, suite: TableSuite, lake: Lake) -> tuple[list[str], int]:
    """Days with bronze rows since the bronze version the previous evaluation saw; and the version now."""
    table = lake.table(*suite.asset_key.path)
    if table is None:
        return [], -1
    version = table.version()
    first_key = dg.AssetCheckKey(suite.asset_key, suite.checks[0].name)
    # The latest execution is this run's own (planned, no evaluation yet): look past it.
    history = context.instance.event_log_storage.get_asset_check_execution_history(first_key, limit=BRONZE_LOOKBACK)
    seen = -1
    for record in history:
        evaluation = record.event.asset_check_evaluation if record.event is not None else None
        if evaluation is not None and "bronze_version" in evaluation.metadata:
            seen = int(evaluation.metadata["bronze_version"].value)
            break
    days = sorted(partitions_changed(table, seen, "event_date", storage_options=lake.storage_options))
    if seen < 0:
        days = days[-BRONZE_FIRST_DAYS:]
    return [str(d) for d in days], version


def table_checks(suite: TableSuite) -> dg.AssetChecksDefinition:
    """The Dagster checks of one suite (one step; subsettable by check)."""
    specs = [
        dg.AssetCheckSpec(
            c.name,
            asset=suite.asset_key,
            description=c.description,
            blocking=suite.blocking and c.severity is Severity.ERROR,
            partitions_def=suite.partitions_def,
            metadata={"severity": c.severity.value, "suite": suite.name},
        )
        for c in suite.checks
    ]

    @dg.multi_asset_check(
        specs=specs,
        name="quality_" + suite.name.replace(".", "_"),
        description=f"Great Expectations suite {suite.name}: {suite.description}",
        can_subset=True,
        op_tags={"plantstream/kind": "quality"},
    )
    def _checks(
        context: dg.AssetCheckExecutionContext, lake: dg.ResourceParam[Lake], settings: dg.ResourceParam[Settings]
    ):
        wanted = {key.name for key in context.selected_asset_check_keys}
        extra: dict[str, Any] = {}
        if suite.partitioned:
            days = list(context.partition_keys)
        else:
            days, version = _bronze_days(context, suite, lake)
            extra["bronze_version"] = dg.MetadataValue.int(version)
        inputs = SuiteInputs(lake, settings)
        reports = [run_suite(suite, inputs, parse_day(day), wanted) for day in days]
        link_docs(settings.state_dir, reports)
        context.log.info(
            f"{suite.name}: {len(days)} day(s) in {sum(r.seconds for r in reports):.1f} s; failed: "
            f"{ {name: [r.day for r in reports if r.failures.get(name)] for name in sorted(wanted)} }"
        )
        for check in suite.checks:
            if check.name in wanted:
                result = check_result(suite, check.name, reports)
                yield result.with_metadata({**result.metadata, **extra}) if extra else result

    return _checks


def all_checks() -> list[dg.AssetChecksDefinition]:
    return [table_checks(suite) for suite in SUITES]


#: Bronze's checks (warnings: bronze is at-least-once) on their own, every hour: what arrived since the last time.
bronze_quality = dg.define_asset_job(
    "bronze_quality",
    selection=dg.AssetSelection.checks_for_assets(*(s.asset_key for s in SUITES if not s.partitioned)),
    description="The data-quality checks of the four bronze tables, over the days that got rows since the last run.",
    tags={"plantstream/kind": "quality"},
)


def silver_quality_job(partitions: dg.PartitionsDefinition) -> "UnresolvedAssetJobDefinition":
    """The silver days' checks alone, for a day (or a range): to re-check a day after its data was repaired."""
    return dg.define_asset_job(
        "silver_quality",
        selection=dg.AssetSelection.checks_for_assets(*(s.asset_key for s in SUITES if s.name.startswith("silver."))),
        partitions_def=partitions,
        description="The data-quality checks of the silver days (blocking for gold), without materialising anything.",
        tags={"plantstream/kind": "quality"},
    )


def defs() -> dg.Definitions:
    hourly = dg.ScheduleDefinition(
        name="bronze_quality_hourly",
        job=bronze_quality,
        cron_schedule="17 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every hour: the bronze checks over the days that got rows since the previous evaluation.",
    )
    jobs = [bronze_quality, silver_quality_job(GOLD_PARTITIONS)]
    return dg.Definitions(asset_checks=all_checks(), jobs=jobs, schedules=[hourly])
