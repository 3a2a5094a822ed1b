"""What the demo shows beyond counts: the stream's conclusions and the lakehouse's gold.

Read back from where a user would look, after the run: the hot store's ``alerts``,
``oee_live`` and ``twin_state`` tables (what the stream concluded), and the gold Delta
tables of the run's days (what Dagster materialised).  Alerts are counted by the stream's
conclusion time (``read_ts``) from the run's start, so consecutive demo runs each report
their own; the OEE rows and the twin are the latest state, whoever wrote it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from plantstream.settings import Settings


@dataclass(frozen=True)
class LineOee:
    """A line's live OEE for its current (or just closed) shift, from ``oee_live``."""

    line: str
    shift: str
    final: bool
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    total_count: int


@dataclass(frozen=True)
class StreamInsights:
    alerts_raised: dict[str, int]  # alert type -> raises concluded in this run
    alerts_open: int  # raised and not cleared, over every alert the hot store holds
    oee: list[LineOee]
    twin_machines: int
    twin_stale: int
    twin_scored: int  # machines whose twin carries a failure probability
    failure_alerts: int  # MaintenanceRequired raised by the failure model in this run

    def summary(self) -> dict[str, Any]:
        return {
            "alerts_raised": self.alerts_raised,
            "alerts_open": self.alerts_open,
            "oee_live": [vars(row) for row in self.oee],
            "twin_machines": self.twin_machines,
            "twin_stale": self.twin_stale,
            "twin_scored": self.twin_scored,
            "failure_alerts": self.failure_alerts,
        }


@dataclass(frozen=True)
class GoldResult:
    days: list[str]
    rows: dict[str, int]  # gold table -> rows for the run's days
    line_oee: dict[str, float | None] = field(default_factory=dict)  # line -> OEE of the day (gold)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)  # "asset: check" of each failed quality check
    succeeded: bool = True  # False: a blocking check kept gold (or part of it) from materialising

    def summary(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "rows": self.rows,
            "line_oee": self.line_oee,
            "checks_passed": self.checks_passed,
            "checks_failed": self.checks_failed,
            "succeeded": self.succeeded,
        }


def _as_float(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def stream_insights(settings: Settings, since: dt.datetime) -> StreamInsights:
    """Alerts, live OEE per line and the twin, read from the hot store."""
    from plantstream.orchestration.resources import HotStore
    from plantstream.streaming.failure_scoring import FAILURE_RISK

    hot = HotStore(settings)
    since_s = since.strftime("%Y-%m-%d %H:%M:%S")
    raised = hot.rows(
        "SELECT toString(alert_type), count() FROM alerts FINAL "
        f"WHERE action = 'raise' AND read_ts >= toDateTime64('{since_s}', 3, 'UTC') GROUP BY 1 ORDER BY 1"
    )
    alerts_raised = {str(kind): int(n) for kind, n in raised}
    open_count = hot.scalar(
        "SELECT count() FROM (SELECT alert_id, groupArray(toString(action)) AS actions FROM alerts FINAL "
        "GROUP BY alert_id) WHERE NOT has(actions, 'clear')"
    )
    lines = hot.rows(
        "SELECT line, shift, final, availability, performance, quality, oee, total_count FROM oee_live FINAL "
        "WHERE scope = 'line' AND window_kind = 'shift' ORDER BY line, as_of DESC LIMIT 1 BY line"
    )
    oee_rows = [
        LineOee(str(line), str(shift), bool(final), _as_float(a), _as_float(p), _as_float(q), _as_float(o), int(n))
        for line, shift, final, a, p, q, o, n in lines
    ]
    twin = hot.rows(
        "SELECT count(), countIf(stale = 1), countIf(failure_probability IS NOT NULL) FROM twin_state FINAL"
    )
    machines, stale, scored = (int(v) for v in twin[0]) if twin else (0, 0, 0)
    failure = hot.scalar(
        "SELECT count() FROM alerts FINAL WHERE action = 'raise' AND kind = {kind:String} "
        f"AND read_ts >= toDateTime64('{since_s}', 3, 'UTC')",
        {"kind": FAILURE_RISK},
    )
    return StreamInsights(
        alerts_raised=alerts_raised,
        alerts_open=int(open_count or 0),
        oee=oee_rows,
        twin_machines=machines,
        twin_stale=stale,
        twin_scored=scored,
        failure_alerts=int(failure or 0),
    )


def materialize_gold(settings: Settings, days: list[dt.date]) -> GoldResult:
    """Run the code location's ``gold_refresh`` job (gold, its warm copies and the silver
    days' blocking checks) for the run's days in one run, in process, and read gold back."""
    import dagster as dg

    from plantstream.assets.gold.assets import GOLD_ASSETS
    from plantstream.assets.gold.tables import read_gold_days
    from plantstream.orchestration.definitions import build_definitions
    from plantstream.orchestration.resources import Lake

    definitions = build_definitions(settings)
    job = definitions.resolve_job_def("gold_refresh")
    first, last = min(days), max(days)
    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        tags=tags,
        raise_on_error=False,  # a failed blocking check is a finding to show, not a crash
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    evaluations = result.get_asset_check_evaluations()
    failed = sorted(f"{e.asset_key.to_user_string()}: {e.check_name}" for e in evaluations if not e.passed)
    if not result.success and not failed:
        raise RuntimeError("materialising gold failed (see the run's log above)")
    lake = Lake(settings)
    names = [key.path[-1] for asset in GOLD_ASSETS for key in asset.keys]
    rows = {name: read_gold_days(lake, name, first, last).num_rows for name in names}
    line_oee: dict[str, float | None] = {}
    oee = read_gold_days(lake, "oee", first, last)
    if oee.num_rows:
        for row in oee.to_pylist():
            if row.get("scope") == "line" and row.get("shift") == "day" and row.get("day") == last:
                line_oee[str(row["line"])] = _as_float(row.get("oee"))
    return GoldResult(
        [d.isoformat() for d in days],
        rows,
        line_oee,
        checks_passed=sum(1 for e in evaluations if e.passed),
        checks_failed=failed,
        succeeded=result.success,
    )
