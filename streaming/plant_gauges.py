"""What the plant looks like right now, as Prometheus gauges: OEE per line, machines per state, open alerts.

The stream already knows all three: live OEE computes each line's figures (``LineOeeRow``)
and the digital twin holds every machine's state and open alerts (``TwinState``).  This
collector keeps the newest of each, per process, and turns them into gauges at scrape time:

* ``plantstream_oee_ratio``, ``plantstream_oee_{availability,performance,quality}_ratio``
  ``{area, line, kind}`` - ``kind`` is ``shift`` (the current shift so far) or ``hour``
  (the rolling hour); an undefined factor (no planned time, no parts) has no sample;
* ``plantstream_machines{area, line, state}`` - machines per twin state (``stale`` when
  the twin marks the machine stale, ``unknown`` before its first state event);
* ``plantstream_plant_alerts_open{area, line, severity}`` - alerts raised and not cleared.

Labels stay per line, never per machine (docs/observability.md, labels): the per-machine
view is the twin's hot table.  A line's OEE lives on the worker that owns the line and a
machine's twin on the worker of its partition, so each series comes from exactly one
process; dashboards ``sum``/``avg`` across processes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from plantstream.streaming.oee_live import LineOeeRow
    from plantstream.streaming.twin import TwinStates

OEE_FACTORS = ("availability", "performance", "quality")
STALE = "stale"
UNKNOWN = "unknown"


class PlantGauges(Collector):
    """The newest line OEE rows and machine twins of this process, collected as gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (area, line, kind) -> ((window start, as of), {factor: ratio})
        self._oee: dict[tuple[str, str, str], tuple[tuple[int, int], dict[str, float | None]]] = {}
        # machine -> (twin seq, area, line, state, severities of its open alerts)
        self._machines: dict[str, tuple[int, str, str, str, tuple[str, ...]]] = {}

    def add_line_row(self, row: LineOeeRow) -> None:
        """Keep ``row`` if it is the newest of its line and window kind (rows can arrive out of order)."""
        key = (row.area, row.line, row.window.kind)
        order = (row.window.start_ms, row.as_of_ms)
        r = row.result
        with self._lock:
            known = self._oee.get(key)
            if known is None or known[0] <= order:
                self._oee[key] = (order, {"oee": r.oee, **{f: getattr(r, f) for f in OEE_FACTORS}})

    def add_twins(self, states: TwinStates) -> None:
        """Keep the newest version (``seq``) of each machine's twin."""
        with self._lock:
            for s in states.states:
                known = self._machines.get(s.machine_id)
                if known is not None and known[0] > s.seq:
                    continue
                state = STALE if s.stale else (s.state or UNKNOWN)
                severities = tuple(str(a.severity) for a in s.open_alerts)
                self._machines[s.machine_id] = (s.seq, s.area, s.line, state, severities)

    def clear(self) -> None:
        with self._lock:
            self._oee.clear()
            self._machines.clear()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            oee = dict(self._oee)
            machines = list(self._machines.values())
        labels = ["area", "line", "kind"]
        families = {
            "oee": GaugeMetricFamily("plantstream_oee_ratio", "OEE of the line (0..1), shift so far or rolling hour.",
                                     labels=labels),
            **{f: GaugeMetricFamily(f"plantstream_oee_{f}_ratio", f"OEE {f} of the line (0..1).", labels=labels)
               for f in OEE_FACTORS},
        }  # fmt: skip
        for (area, line, kind), (_order, ratios) in sorted(oee.items()):
            for name, family in families.items():
                value = ratios[name]
                if value is not None:
                    family.add_metric([area, line, kind], value)
        yield from families.values()
        by_state = Counter((area, line, state) for _seq, area, line, state, _sev in machines)
        states = GaugeMetricFamily(
            "plantstream_machines", "Machines per line and twin state.", labels=["area", "line", "state"]
        )
        for key, n in sorted(by_state.items()):
            states.add_metric(list(key), n)
        yield states
        open_alerts = Counter((area, line, sev) for _seq, area, line, _state, sevs in machines for sev in sevs)
        alerts = GaugeMetricFamily(
            "plantstream_plant_alerts_open",
            "Alerts raised and not cleared, per line and severity (as the twin sees them).",
            labels=["area", "line", "severity"],
        )
        for key, n in sorted(open_alerts.items()):
            alerts.add_metric(list(key), n)
        yield alerts


#: The process's plant gauges (registered in the default registry by ``streaming.metrics``).
PLANT_GAUGES = PlantGauges()

__all__ = ["PLANT_GAUGES", "PlantGauges"]
