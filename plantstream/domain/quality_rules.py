"""Quality rules over inspected parts: a scrap-rate p-chart and runs of one defect code.

Pure (no Bytewax, no Kafka): the stream's quality branch (``streaming/quality_branch.py``)
feeds them per machine and per line; a batch job can feed them the same parts.

**Scrap rate** (:class:`ScrapChart`, one per machine or line).  Parts are counted in
event-time buckets (``bucket_ms``, 5 minutes by default); when a bucket closes the chart
looks at the rolling window of the last ``window_buckets`` buckets (an hour): ``n`` parts,
``x`` scrapped, ``p = x / n``.  The centre line ``p̄`` is the unit's own scrap rate over the
``history_buckets`` buckets before the window (8 hours; buckets that were part of a window
above the limit are left out, as SPC practice removes out-of-control points before computing limits),
or the configured ``center``.  Control limits of a p-chart for a sample of ``n``:
``UCL = p̄ + sigma·sqrt(p̄(1 - p̄)/n)``.  A window above the UCL raises (one alert per
excursion, not one per bucket); ``clear_after`` consecutive windows at or below
``p̄ + clear_sigma·sqrt(p̄(1 - p̄)/n)`` clear.  Nothing is judged before the history holds
``min_history_parts`` parts or when the window holds fewer than ``min_window_parts``.

**Defect runs** (:class:`DefectRuns`, one per machine).  ``run_parts`` consecutive
defective parts (scrap or rework) with the same defect code raise an alert for that
code; ``clear_parts`` consecutive parts that are not that defect clear it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from plantstream.contract.events import Alert, AlertAction, AlertType, Severity
from plantstream.domain.alerts import DEFECT_RUN, SCRAP_RATE, Identity, iso
from plantstream.domain.anomaly import alert_id

Action = Literal["raise", "clear"]


# --------------------------------------------------------------------------------------
# Scrap rate p-chart
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScrapChartConfig:
    bucket_ms: int = 300_000
    window_buckets: int = 12
    history_buckets: int = 96
    sigma: float = 3.0
    clear_sigma: float = 2.0
    min_window_parts: int = 30
    min_history_parts: int = 200
    center: float | None = None  # configured centre line; None = from the unit's history
    clear_after: int = 2

    def __post_init__(self) -> None:
        if self.bucket_ms <= 0 or self.window_buckets < 1 or self.history_buckets < 1 or self.clear_after < 1:
            raise ValueError("bucket_ms, window_buckets, history_buckets and clear_after must be positive")
        if not 0 <= self.clear_sigma <= self.sigma:
            raise ValueError("need 0 <= clear_sigma <= sigma")
        if self.center is not None and not 0 < self.center < 1:
            raise ValueError("a configured centre line is a rate in (0, 1)")

    @classmethod
    def from_settings(cls, settings: Any) -> ScrapChartConfig:
        a = settings.alerts
        return cls(
            bucket_ms=a.scrap_bucket_minutes * 60_000,
            window_buckets=a.scrap_window_buckets,
            history_buckets=a.scrap_history_buckets,
            sigma=a.scrap_sigma,
            clear_sigma=a.scrap_clear_sigma,
            min_window_parts=a.scrap_min_window_parts,
            min_history_parts=a.scrap_min_history_parts,
            center=a.scrap_rate_center,
        )


@dataclass(frozen=True, slots=True)
class ScrapDecision:
    """A raise or clear of a unit's scrap-rate alert, with what the chart saw.

    ``rate``/``parts``/``scrap`` are the window's at the decision (a clear: the window that
    completed the clear; ``peak_rate`` the highest window rate of the episode).
    """

    action: Action
    ts_ms: int  # the closing bucket's end
    raised_at_ms: int
    rate: float
    upper_limit: float
    center: float
    z: float  # (rate - centre) / sigma of the window
    parts: int
    scrap: int
    window_start_ms: int
    window_end_ms: int
    center_source: Literal["history", "configured"]
    peak_rate: float
    buckets: int  # buckets the episode lasted (clear), 1 on a raise


class ScrapChart:
    """The p-chart of one unit; :meth:`close_bucket` once per bucket, in bucket order.

    Window and history are time ranges of buckets (only buckets with parts are kept), so a
    chart that starts judging a few empty buckets earlier reaches the same decisions.
    """

    def __init__(self, config: ScrapChartConfig, state: dict[str, Any] | None = None) -> None:
        self.config = config
        self.buckets: deque[list[int]] = deque()  # [start_ms, parts, scrap, out_of_control], oldest first
        self.open_since: int | None = None
        self.open_center: tuple[float, Literal["history", "configured"]] | None = None  # the centre at the raise
        self.peak = 0.0
        self.episode_buckets = 0
        self.normal_run = 0
        if state is not None:
            self.buckets = deque([list(b) for b in state["buckets"]])
            self.open_since, self.peak = state["open_since"], state["peak"]
            self.open_center = None if state["open_center"] is None else tuple(state["open_center"])  # type: ignore[assignment]
            self.episode_buckets, self.normal_run = state["episode_buckets"], state["normal_run"]

    def snapshot(self) -> dict[str, Any]:
        return {
            "buckets": [list(b) for b in self.buckets],
            "open_since": self.open_since,
            "open_center": None if self.open_center is None else list(self.open_center),
            "peak": self.peak,
            "episode_buckets": self.episode_buckets,
            "normal_run": self.normal_run,
        }

    @property
    def is_open(self) -> bool:
        return self.open_since is not None

    def centre(self, window_start_ms: int) -> tuple[float, Literal["history", "configured"]] | None:
        """The centre line for a window starting at ``window_start_ms`` (None: not enough history)."""
        if self.config.center is not None:
            return self.config.center, "configured"
        parts = scrap = 0
        for start, p, x, out_of_control in self.buckets:
            if start < window_start_ms and not out_of_control:
                parts += p
                scrap += x
        if parts < self.config.min_history_parts:
            return None
        return max(scrap, 0.5) / parts, "history"  # never 0: a history without scrap still has a limit

    def close_bucket(self, start_ms: int, parts: int, scrap: int) -> ScrapDecision | None:
        """Add the closed bucket ``[start_ms, start_ms + bucket_ms)`` and judge the window."""
        c = self.config
        if parts:
            self.buckets.append([start_ms, parts, scrap, 0])
        window_start = start_ms - (c.window_buckets - 1) * c.bucket_ms
        history_start = window_start - c.history_buckets * c.bucket_ms
        while self.buckets and self.buckets[0][0] < history_start:
            self.buckets.popleft()
        window = [b for b in self.buckets if b[0] >= window_start]
        n = sum(b[1] for b in window)
        x = sum(b[2] for b in window)
        # While an alert is open its own excursion is kept out of the history, which may leave
        # too little of it: the centre line of the raise then judges the clear.
        centre = self.centre(window_start) or (self.open_center if self.is_open else None)
        end_ms = start_ms + c.bucket_ms
        decision = None
        if centre is not None and n >= c.min_window_parts:
            p_bar, source = centre
            sd = math.sqrt(p_bar * (1 - p_bar) / n)
            rate = x / n
            ucl = p_bar + c.sigma * sd
            z = (rate - p_bar) / sd if sd > 0 else 0.0

            def decide(action: Action, raised_at: int) -> ScrapDecision:
                return ScrapDecision(
                    action, end_ms, raised_at, rate, ucl, p_bar, z, n, x, window_start, end_ms, source,
                    max(self.peak, rate), self.episode_buckets,
                )  # fmt: skip

            if rate > ucl:  # out of control: this window's buckets stay out of later centre lines
                for b in window:
                    b[3] = 1
            if not self.is_open and rate > ucl:
                self.open_since, self.peak, self.episode_buckets, self.normal_run = end_ms, rate, 1, 0
                self.open_center = centre
                decision = decide("raise", end_ms)
            elif self.is_open:
                self.episode_buckets += 1
                self.peak = max(self.peak, rate)
                self.normal_run = self.normal_run + 1 if rate <= p_bar + c.clear_sigma * sd else 0
                if self.normal_run >= c.clear_after:
                    decision = decide("clear", self.open_since)
                    self.open_since, self.peak, self.episode_buckets, self.normal_run = None, 0.0, 0, 0
                    self.open_center = None
        elif self.is_open:
            self.episode_buckets += 1
        return decision


# --------------------------------------------------------------------------------------
# Runs of one defect code
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DefectRunConfig:
    run_parts: int = 3
    clear_parts: int = 3

    def __post_init__(self) -> None:
        if self.run_parts < 2 or self.clear_parts < 1:
            raise ValueError("run_parts must be >= 2 and clear_parts >= 1")

    @classmethod
    def from_settings(cls, settings: Any) -> DefectRunConfig:
        return cls(run_parts=settings.alerts.defect_run_parts, clear_parts=settings.alerts.defect_clear_parts)


@dataclass(frozen=True, slots=True)
class DefectDecision:
    """A raise (the run reached ``run_parts``) or clear of one defect code's alert."""

    action: Action
    code: str
    ts_ms: int  # the part that decided
    raised_at_ms: int
    first_ts_ms: int  # the run's first defective part (raise) / the raise (clear)
    part_id: str
    defects: int  # defective parts of the code in the run (raise) or the episode (clear)


class DefectRuns:
    """Consecutive defective parts per defect code, of one machine, in part order."""

    def __init__(self, config: DefectRunConfig, state: dict[str, Any] | None = None) -> None:
        self.config = config
        self.run_code: str | None = None
        self.run_len = 0
        self.run_first = 0
        self.open: dict[str, list[int]] = {}  # code -> [raised_at, defects, clear_run]
        if state is not None:
            self.run_code, self.run_len, self.run_first = state["run"]
            self.open = {k: list(v) for k, v in state["open"].items()}

    def snapshot(self) -> dict[str, Any]:
        return {
            "run": [self.run_code, self.run_len, self.run_first],
            "open": {k: list(v) for k, v in self.open.items()},
        }

    def part(self, ts_ms: int, part_id: str, defect: str | None) -> list[DefectDecision]:
        """One inspected part; ``defect`` is its defect code when it is defective, else None."""
        out: list[DefectDecision] = []
        for code in sorted(self.open):
            raised_at, defects, clear_run = self.open[code]
            if code == defect:
                self.open[code] = [raised_at, defects + 1, 0]
                continue
            clear_run += 1
            if clear_run >= self.config.clear_parts:
                del self.open[code]
                out.append(DefectDecision("clear", code, ts_ms, raised_at, raised_at, part_id, defects))
            else:
                self.open[code] = [raised_at, defects, clear_run]
        if defect is None:
            self.run_code, self.run_len = None, 0
            return out
        if defect == self.run_code:
            self.run_len += 1
        else:
            self.run_code, self.run_len, self.run_first = defect, 1, ts_ms
        if self.run_len >= self.config.run_parts and defect not in self.open:
            self.open[defect] = [ts_ms, self.run_len, 0]
            out.append(DefectDecision("raise", defect, ts_ms, ts_ms, self.run_first, part_id, self.run_len))
        return out


# --------------------------------------------------------------------------------------
# As alerts
# --------------------------------------------------------------------------------------


def scrap_alert(
    unit: str,
    identity: Identity,
    d: ScrapDecision,
    *,
    scope: Literal["machine", "line"],
    seq: int,
    concluded_ms: int,
) -> Alert:
    """The ``QualityAlert`` of a scrap-rate decision of a machine or a line (``unit``)."""
    where = f"{unit}" if scope == "machine" else f"line {identity.line}"
    window = f"{iso(d.window_start_ms)} to {iso(d.window_end_ms)}"
    if d.action == "raise":
        message = (
            f"{where} scrap rate {d.rate:.1%} ({d.scrap} of {d.parts} parts, {window}) above the p-chart limit "
            f"{d.upper_limit:.1%} (centre {d.center:.1%} from {d.center_source}, {d.z:.1f} sigma)"
        )
    else:
        message = (
            f"{where} scrap rate back to {d.rate:.1%} ({d.scrap} of {d.parts} parts) after {d.buckets} buckets; "
            f"peak {d.peak_rate:.1%}"
        )
    return Alert(
        site=identity.site,
        area=identity.area,
        line=identity.line,
        machine_id=unit,
        seq=seq,
        source_ts=d.ts_ms,
        read_ts=concluded_ms,
        ingest_ts=concluded_ms,
        alert_type=AlertType.QUALITY_ALERT,
        severity=Severity.WARNING if d.action == "raise" else Severity.INFO,
        message=message,
        attributes={
            "scope": scope,
            "center_source": d.center_source,
            "scrap": str(d.scrap),
            "peak_rate": f"{d.peak_rate:.6g}",
        },
        alert_id=alert_id(unit, "", SCRAP_RATE, d.raised_at_ms),
        action=AlertAction(d.action),
        kind=SCRAP_RATE,
        raised_at=d.raised_at_ms,
        value=d.rate,
        threshold=d.upper_limit,
        statistic=d.z,
        reference=d.center,
        window_start=d.window_start_ms,
        window_end=d.window_end_ms,
        samples=d.parts,
    )


def defect_alert(
    machine_id: str, identity: Identity, d: DefectDecision, *, run_parts: int, seq: int, concluded_ms: int
) -> Alert:
    """The ``QualityAlert`` of a defect-run decision of one machine."""
    if d.action == "raise":
        message = (
            f"{machine_id}: {d.defects} defective parts in a row with defect {d.code!r} "
            f"(since {iso(d.first_ts_ms)}, last {d.part_id})"
        )
    else:
        message = f"{machine_id}: defect {d.code!r} run over ({d.defects} defective parts in the episode)"
    return Alert(
        site=identity.site,
        area=identity.area,
        line=identity.line,
        machine_id=machine_id,
        seq=seq,
        source_ts=d.ts_ms,
        read_ts=concluded_ms,
        ingest_ts=concluded_ms,
        alert_type=AlertType.QUALITY_ALERT,
        severity=Severity.WARNING if d.action == "raise" else Severity.INFO,
        message=message,
        attributes={"scope": "machine", "defect_code": d.code, "part_id": d.part_id},
        alert_id=alert_id(machine_id, d.code, DEFECT_RUN, d.raised_at_ms),
        action=AlertAction(d.action),
        kind=DEFECT_RUN,
        raised_at=d.raised_at_ms,
        statistic=float(d.defects),
        threshold=float(run_parts),
        window_start=d.first_ts_ms,
        window_end=d.ts_ms,
        samples=d.defects,
    )


__all__ = [
    "DefectDecision",
    "DefectRunConfig",
    "DefectRuns",
    "ScrapChart",
    "ScrapChartConfig",
    "ScrapDecision",
    "defect_alert",
    "scrap_alert",
]
