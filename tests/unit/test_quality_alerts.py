"""Quality alerts: the scrap-rate p-chart against hand-computed limits, defect runs, and the
quality branch's determinism per partition and across partitions (the lines)."""

from __future__ import annotations

import math
import pickle
import random

import msgspec
import pytest

from plantstream.contract.events import AlertAction, AlertType, PartResult, QualityMetric
from plantstream.domain.quality_rules import (
    DefectRunConfig,
    DefectRuns,
    ScrapChart,
    ScrapChartConfig,
)
from plantstream.streaming.alert_replay import Decoder
from plantstream.streaming.quality_branch import LineCounts, LineScrap, PartitionQuality, QualityConfig

B = 300_000  # 5-minute buckets
T0 = 1_772_445_600_000  # 2026-03-02 10:00 UTC, a bucket boundary
CHART = ScrapChartConfig(bucket_ms=B, window_buckets=4, history_buckets=20, min_window_parts=30, min_history_parts=200)


def feed(chart: ScrapChart, buckets: list[tuple[int, int]], start: int = 0) -> list:
    out = []
    for k, (parts, scrap) in enumerate(buckets):
        d = chart.close_bucket(T0 + (start + k) * B, parts, scrap)
        if d is not None:
            out.append((start + k, d))
    return out


def test_the_p_chart_limit_is_the_textbook_one_and_one_excursion_is_one_alert() -> None:
    chart = ScrapChart(CHART)
    history = [(40, 1)] * 20  # 800 parts, 20 scrapped: p = 2.5 %
    assert feed(chart, history) == []
    # The window (4 buckets of 40) climbs to 12 scrapped of 160 = 7.5 %, then calms down.
    climb = [(40, 1), (40, 2), (40, 3), (40, 3), (40, 4), (40, 4), (40, 1), (40, 0), (40, 1), (40, 1), (40, 0)]
    decisions = feed(chart, climb, 20)
    assert [d.action for _, d in decisions] == ["raise", "clear"]
    (k_raise, up), (k_clear, down) = decisions
    p_bar = 20 / 800
    n = 160
    ucl = p_bar + 3 * math.sqrt(p_bar * (1 - p_bar) / n)
    assert up.center == pytest.approx(p_bar) and up.upper_limit == pytest.approx(ucl)
    assert up.rate > ucl and up.parts == n and up.center_source == "history"
    assert up.window_start_ms == T0 + (k_raise - 3) * B and up.window_end_ms == T0 + (k_raise + 1) * B
    assert up.z == pytest.approx((up.rate - p_bar) / math.sqrt(p_bar * (1 - p_bar) / n))
    assert down.raised_at_ms == up.ts_ms and down.peak_rate >= up.rate
    # Cleared after two windows at or below centre + 2 sigma.
    clear_line = down.center + 2 * math.sqrt(down.center * (1 - down.center) / down.parts)
    assert down.rate <= clear_line and k_clear > k_raise


def test_out_of_control_buckets_stay_out_of_the_centre_line() -> None:
    chart = ScrapChart(CHART)
    feed(chart, [(40, 1)] * 20)
    decisions = feed(chart, [(40, 6)] * 3 + [(40, 0)] * 4, 20)  # an excursion, then calm
    assert [d.action for _, d in decisions] == ["raise", "clear"]
    # The next window starts at bucket 24: its history is buckets 4-23, of which the ones in
    # the excursion's windows (18-25) are left out - what remains is the 2.5 % of before.
    centre, source = chart.centre(T0 + 24 * B)
    assert source == "history" and centre == pytest.approx(1 / 40)


def test_a_configured_centre_line_is_used_from_the_first_window() -> None:
    chart = ScrapChart(ScrapChartConfig(bucket_ms=B, window_buckets=4, center=0.01, min_window_parts=30))
    (d,) = [d for _, d in feed(chart, [(40, 0), (40, 2), (40, 3), (40, 3)])]
    assert d.action == "raise" and d.center == 0.01 and d.center_source == "configured"


def test_a_chart_that_starts_with_empty_buckets_decides_the_same() -> None:
    data = [(40, 1)] * 20 + [(40, 4)] * 3 + [(40, 0)] * 6
    late = [(d.action, d.ts_ms, d.rate) for _, d in feed(ScrapChart(CHART), data, 10)]
    early = [(d.action, d.ts_ms, d.rate) for _, d in feed(ScrapChart(CHART), [(0, 0)] * 10 + data)]
    assert late == early and late


def test_a_run_of_one_defect_code_raises_once_and_clears() -> None:
    runs = DefectRuns(DefectRunConfig(run_parts=3, clear_parts=2))
    parts = [None, "burr", "burr", "crack", "burr", "burr", "burr", "burr", None, "burr", None, None, None]
    out = []
    for k, code in enumerate(parts):
        out += [(k, d.action, d.code, d.defects) for d in runs.part(T0 + k * 1000, f"p{k}", code)]
    # burr x2 then crack breaks the run; burr x3 raises at part 6; a good part, a burr (the run is
    # still on), then two good parts in a row clear it.
    assert out == [(6, "raise", "burr", 3), (11, "clear", "burr", 5)]


def parts_for(machines: int, minutes: int, seed: int, scrap_p) -> list[QualityMetric]:
    rng = random.Random(seed)
    out = []
    for m in range(machines):
        line = f"line-{m % 2 + 1}"
        for k in range(minutes * 2):  # a part every 30 s
            ts = T0 + k * 30_000 + m * 100
            scrap = rng.random() < scrap_p(m, k)
            code = ("burr" if rng.random() < 0.7 else "crack") if scrap else None
            out.append(
                QualityMetric(
                    site="plant-1",
                    area="machining",
                    line=line,
                    machine_id=f"m-{m}",
                    seq=k,
                    source_ts=ts,
                    read_ts=ts,
                    ingest_ts=ts,
                    part_id=f"m-{m}-{k}",
                    result=PartResult.SCRAP if scrap else PartResult.GOOD,
                    defect_code=code,
                )
            )
    return sorted(out, key=lambda p: p.source_ts)


def quality_config(**chart) -> QualityConfig:
    return QualityConfig(
        chart=ScrapChartConfig(**{"bucket_ms": B, "window_buckets": 6, "history_buckets": 24, **chart}),
        runs=DefectRunConfig(3, 3),
        lateness_ms=30_000,
        expiry_ms=3_600_000,
        line_wait_s=60.0,
    )


def excursion(m: int, k: int) -> float:
    return 0.25 if m == 1 and 300 <= k < 360 else 0.02  # machine 1 scraps a quarter for half an hour


def plain(alerts) -> list:
    return sorted(
        (msgspec.structs.replace(a, read_ts=0, ingest_ts=0) for a in alerts), key=lambda a: (a.machine_id, a.seq)
    )


def test_partition_quality_finds_the_excursion_and_does_not_depend_on_batch_cuts() -> None:
    parts = parts_for(4, 240, seed=3, scrap_p=excursion)
    config = quality_config()

    def run(cuts: list[int], restart_every: int = 0) -> tuple[list, list]:
        core = PartitionQuality(config, partition=0, clock=lambda: 0.0)
        decoder = Decoder()
        alerts, counts, i = [], [], 0
        for k, n in enumerate(cuts):
            a, c = core.process([decoder.batch("quality", parts[i : i + n])])
            alerts += a
            counts += c
            i += n
            if restart_every and k % restart_every == 0:
                core = PartitionQuality(config, pickle.loads(pickle.dumps(core.snapshot())), clock=lambda: 0.0)
        return plain(alerts), counts

    reference, ref_counts = run([len(parts)])
    scrap = [a for a in reference if a.kind == "scrap_rate" and a.machine_id == "m-1"]
    assert [a.action for a in scrap] == [AlertAction.RAISE, AlertAction.CLEAR]
    up = scrap[0]
    assert up.alert_type is AlertType.QUALITY_ALERT and up.value > up.threshold > up.reference
    assert T0 + 300 * 30_000 <= up.source_ts <= T0 + 330 * 30_000
    assert {a.attributes["defect_code"] for a in reference if a.kind == "defect_run"} <= {"burr", "crack"}
    rng = random.Random(5)
    for _ in range(3):
        cuts = []
        while sum(cuts) < len(parts):
            cuts.append(rng.randint(1, 300))
        got, counts = run(cuts, restart_every=rng.randint(1, 9))
        assert got == reference
        assert [(c.bucket_start, c.lines) for c in counts] == [(c.bucket_start, c.lines) for c in ref_counts]


def test_lines_are_judged_from_every_partition_in_any_arrival_order() -> None:
    parts = parts_for(6, 240, seed=8, scrap_p=lambda m, k: 0.3 if m % 2 == 0 and 300 <= k < 360 else 0.02)
    config = quality_config()
    partition_of = {f"m-{m}": m % 3 for m in range(6)}  # line-1's machines on three partitions
    counts: list[LineCounts] = []
    for p in range(3):
        core = PartitionQuality(config, partition=p, clock=lambda: 0.0)
        _, c = core.process([Decoder().batch("quality", [x for x in parts if partition_of[x.machine_id] == p], p)])
        counts += c

    def judge(items: list[LineCounts]) -> list:
        lines = LineScrap(config, [0, 1, 2], clock=lambda: 0.0)
        out = []
        for i in range(0, len(items), 7):
            out += lines.process(items[i : i + 7])
        return plain(out)

    by_time = sorted(counts, key=lambda c: (c.bucket_start, c.partition))
    reference = judge(by_time)
    line_1 = [a for a in reference if a.machine_id == "line:plant-1/line-1"]
    assert [a.action for a in line_1] == [AlertAction.RAISE, AlertAction.CLEAR]
    assert line_1[0].attributes["scope"] == "line" and line_1[0].samples > 100  # three machines' parts
    assert T0 + 300 * 30_000 <= line_1[0].source_ts <= T0 + 330 * 30_000
    rng = random.Random(2)
    per_partition = [[c for c in counts if c.partition == p] for p in range(3)]
    for _ in range(3):  # each partition in order, the partitions interleaved at random
        queues = [list(q) for q in per_partition]
        shuffled = []
        while any(queues):
            q = rng.choice([q for q in queues if q])
            shuffled.append(q.pop(0))
        assert judge(shuffled) == reference


def test_a_silent_partition_holds_the_lines_back_for_the_wait_limit_only() -> None:
    now = [1000.0]
    lines = LineScrap(quality_config(), [0, 1], clock=lambda: now[0])
    counts = {("plant-1", "line-1"): (10, 0, "machining")}
    for k in range(6):  # partition 1 never reports (its machines make no parts)
        lines.process([LineCounts(0, T0 + k * B, counts)])
    assert lines.next_bucket is None and lines.wake_at() == 1060.0
    now[0] = 1059.0
    lines.process([])
    assert lines.next_bucket is None
    now[0] = 1060.0
    lines.process([])  # waited long enough: judged without partition 1
    assert lines.next_bucket == T0 + 6 * B
    lines.process([LineCounts(0, T0 + 6 * B, counts)])  # still silent: no new wait
    assert lines.next_bucket == T0 + 7 * B
    lines.process([LineCounts(1, T0 + 2 * B, counts)])  # back, but for a bucket already judged: dropped
    lines.process([LineCounts(1, T0 + 7 * B, counts), LineCounts(0, T0 + 7 * B, counts)])
    assert lines.next_bucket == T0 + 8 * B and lines.waiting_since is None
