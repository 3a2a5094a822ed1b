"""The plant gauges: the newest line OEE and machine twins of a process, as Prometheus serves them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plantstream.contract.events import AlertType, Severity, TwinAlert, TwinState
from plantstream.domain.oee import oee
from plantstream.observability.scheme import registry_shapes, scheme_problems
from plantstream.streaming.oee_live import HOUR, SHIFT, LineOeeRow, WindowId
from plantstream.streaming.plant_gauges import PlantGauges
from plantstream.streaming.twin import TwinStates


def _samples(gauges: PlantGauges) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(gauges)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _line_row(line: str, kind: str, start_ms: int, as_of_ms: int, good: int) -> LineOeeRow:
    result = oee({("running", ""): 600.0}, ideal_cycle_s=30.0, total_count=20, good_count=good)
    window = WindowId(kind, "early" if kind == SHIFT else "", start_ms if kind == SHIFT else 0, start_ms, start_ms + 1)
    key = f"plant-1/machining/{line}"
    return LineOeeRow(key, "plant-1", "machining", line, window, as_of_ms, False, result, 4, 0.0)


def _twin(machine: str, seq: int, state: str | None, *, stale: bool = False, alerts: int = 0) -> TwinState:
    open_alerts = [
        TwinAlert(alert_id=f"{machine}-{i}", alert_type=AlertType.ANOMALY_DETECTED, severity=Severity.WARNING,
                  raised_ts=1_000)
        for i in range(alerts)
    ]  # fmt: skip
    return TwinState(site="plant-1", area="machining", line="line-1", machine_id=machine, seq=seq, read_ts=1,
                     ingest_ts=1, state=state, stale=stale, open_alerts=open_alerts)  # fmt: skip


def test_line_oee_keeps_the_newest_row_per_line_and_kind() -> None:
    gauges = PlantGauges()
    gauges.add_line_row(_line_row("line-1", SHIFT, 0, 2_000, good=18))
    gauges.add_line_row(_line_row("line-1", SHIFT, 0, 1_000, good=10))  # older: ignored
    gauges.add_line_row(_line_row("line-1", HOUR, 500, 2_000, good=20))
    samples = _samples(gauges)
    shift = (("area", "machining"), ("kind", "shift"), ("line", "line-1"))
    hour = (("area", "machining"), ("kind", "hour"), ("line", "line-1"))
    assert samples[("plantstream_oee_quality_ratio", shift)] == 0.9
    assert samples[("plantstream_oee_quality_ratio", hour)] == 1.0
    assert samples[("plantstream_oee_availability_ratio", shift)] == 1.0
    assert samples[("plantstream_oee_ratio", shift)] == samples[("plantstream_oee_performance_ratio", shift)] * 0.9
    gauges.add_line_row(_line_row("line-1", SHIFT, 10_000, 10_500, good=5))  # the next shift replaces it
    assert _samples(gauges)[("plantstream_oee_quality_ratio", shift)] == 0.25


def test_machines_per_state_and_open_alerts_follow_each_machines_newest_twin() -> None:
    gauges = PlantGauges()
    gauges.add_twins(TwinStates(0, (_twin("m1", 5, "running", alerts=2), _twin("m2", 3, None)), (b"", b"")))
    gauges.add_twins(TwinStates(1, (_twin("m3", 1, "stopped", stale=True), _twin("m1", 4, "stopped")), (b"", b"")))
    samples = _samples(gauges)
    line = (("area", "machining"), ("line", "line-1"))
    assert samples[("plantstream_machines", (*line, ("state", "running")))] == 1  # m1's seq 4 came late
    assert samples[("plantstream_machines", (*line, ("state", "unknown")))] == 1
    assert samples[("plantstream_machines", (*line, ("state", "stale")))] == 1
    assert ("plantstream_machines", (*line, ("state", "stopped"))) not in samples
    assert samples[("plantstream_plant_alerts_open", (("area", "machining"), ("line", "line-1"),
                                                      ("severity", "warning")))] == 2  # fmt: skip
    gauges.add_twins(TwinStates(0, (_twin("m1", 6, "running"),), (b"",)))  # both alerts cleared
    assert not any(name == "plantstream_plant_alerts_open" for name, _ in _samples(gauges))


def test_the_gauges_follow_the_metric_scheme() -> None:
    gauges = PlantGauges()
    gauges.add_line_row(_line_row("line-1", SHIFT, 0, 2_000, good=18))
    gauges.add_twins(TwinStates(0, (_twin("m1", 5, "running", alerts=1),), (b"",)))
    registry = CollectorRegistry()
    registry.register(gauges)
    assert scheme_problems(registry_shapes(registry)) == []
