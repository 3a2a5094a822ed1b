"""Gold recomputed a second way: plain SQL over silver in DuckDB.

Nothing here imports the gold package or ``plantstream.domain.oee``: state intervals are
``lead()`` over the state events, windows and clipping are SQL arithmetic, the OEE
waterfall and the energy split are written out as formulas (docs/oee.md, docs/lakehouse.md).
If gold and this disagree, one of them misreads the definition.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

from plantstream.simulator.plant_config import PlantConfig

STATE_ENTRIES = "('MachineStarted', 'MachineStopped', 'MaintenanceStarted')"


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class SilverSql:
    """A DuckDB connection holding silver events, quality and energy, and the plant."""

    def __init__(self, events: pa.Table, quality: pa.Table, energy: pa.Table, plant: PlantConfig) -> None:
        self.con = duckdb.connect()
        self.con.register("ev", events)
        self.con.register("q", quality)
        self.con.register("en", energy)
        machines = plant.machines()
        self.con.register(
            "plant",
            pa.table(
                {
                    "machine_id": [m.machine_id for m in machines],
                    "line": [m.line for m in machines],
                    "ideal": [float(m.cycle_s) for m in machines],
                }
            ),
        )
        shifts = [(s.name, _minutes(s.start), _minutes(s.end)) for s in plant.shifts]
        self.con.register(
            "shifts",
            pa.table(
                {"name": [s[0] for s in shifts], "start_min": [s[1] for s in shifts], "end_min": [s[2] for s in shifts]}
            ),
        )

    def _prepare(self, day: dt.date) -> None:
        d0 = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
        d1 = d0 + 86_400_000
        before, after = day - dt.timedelta(days=1), day + dt.timedelta(days=1)
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE win AS
            SELECT 'day' AS shift, {d0}::BIGINT AS ws, {d1}::BIGINT AS we
            UNION ALL
            SELECT name, greatest(inst, {d0}), least(inst + len, {d1}) FROM (
                SELECT name, {d0} + o.off * 86400000 + start_min * 60000 AS inst,
                       (CASE WHEN end_min > start_min THEN end_min - start_min ELSE end_min - start_min + 1440 END)
                       * 60000 AS len
                FROM shifts, (VALUES (-1), (0)) o(off))
            WHERE least(inst + len, {d1}) > greatest(inst, {d0});

            CREATE OR REPLACE TEMP TABLE se AS
            SELECT machine_id, epoch_ms(event_time) AS t, seq, state, coalesce(reason, '') AS reason
            FROM ev WHERE event_type IN {STATE_ENTRIES} AND event_date <= DATE '{after}';

            CREATE OR REPLACE TEMP TABLE hz AS
            SELECT machine_id, max(t) AS h FROM (
                SELECT machine_id, epoch_ms(event_time) AS t FROM ev
                WHERE event_date BETWEEN DATE '{before}' AND DATE '{after}'
                UNION ALL SELECT machine_id, epoch_ms(event_time) FROM q
                WHERE event_date BETWEEN DATE '{before}' AND DATE '{after}'
                UNION ALL SELECT machine_id, epoch_ms(event_time) FROM en
                WHERE event_date BETWEEN DATE '{before}' AND DATE '{after}')
            GROUP BY machine_id;

            CREATE OR REPLACE TEMP TABLE iv AS
            SELECT se.machine_id, state, reason, t AS s,
                   coalesce(lead(t) OVER w, greatest(hz.h, t)) AS e,
                   lead(t) OVER w IS NULL AS open
            FROM se JOIN hz USING (machine_id)
            WINDOW w AS (PARTITION BY se.machine_id ORDER BY t, seq);

            CREATE OR REPLACE TEMP TABLE present AS
            SELECT DISTINCT machine_id FROM iv WHERE e > {d0} AND s < {d1}
            UNION SELECT DISTINCT machine_id FROM q WHERE epoch_ms(event_time) >= {d0} AND epoch_ms(event_time) < {d1};

            CREATE OR REPLACE TEMP TABLE secs AS
            SELECT iv.machine_id, w.shift, w.ws,
                   CASE WHEN state = 'running' THEN 'run'
                        WHEN reason = 'off_shift' OR reason LIKE 'planned:%' THEN 'planned'
                        ELSE 'unplanned' END AS cls,
                   sum(least(iv.e, w.we) - greatest(iv.s, w.ws)) / 1000.0 AS sec
            FROM iv JOIN win w ON iv.e > w.ws AND iv.s < w.we AND iv.e > iv.s
            GROUP BY ALL;

            CREATE OR REPLACE TEMP TABLE parts AS
            SELECT q.machine_id, w.shift, w.ws, count(*) AS total, count(*) FILTER (WHERE result = 'good') AS good
            FROM q JOIN win w ON epoch_ms(q.event_time) >= w.ws AND epoch_ms(q.event_time) < w.we
            GROUP BY ALL;

            CREATE OR REPLACE TEMP TABLE machine_window AS
            SELECT p.machine_id, pl.line, pl.ideal, w.shift, w.ws,
                   coalesce((SELECT sum(sec) FROM secs s WHERE s.machine_id = p.machine_id AND s.ws = w.ws
                             AND s.shift = w.shift AND cls = 'run'), 0) AS run_s,
                   coalesce((SELECT sum(sec) FROM secs s WHERE s.machine_id = p.machine_id AND s.ws = w.ws
                             AND s.shift = w.shift AND cls = 'unplanned'), 0) AS unplanned_s,
                   coalesce((SELECT sum(sec) FROM secs s WHERE s.machine_id = p.machine_id AND s.ws = w.ws
                             AND s.shift = w.shift AND cls = 'planned'), 0) AS planned_s,
                   coalesce(pa.total, 0) AS total, coalesce(pa.good, 0) AS good
            FROM present p JOIN plant pl USING (machine_id) CROSS JOIN win w
            LEFT JOIN parts pa ON pa.machine_id = p.machine_id AND pa.ws = w.ws AND pa.shift = w.shift;
            """
        )

    def oee(self, day: dt.date) -> pa.Table:
        """Per machine and per line, for the day and each shift segment: the OEE waterfall and ratios."""
        self._prepare(day)
        return (
            self.con.sql(
                """
            WITH machine AS (
                SELECT 'machine' AS scope, line, machine_id, shift, ws, run_s, unplanned_s, planned_s,
                       ideal * total AS net_run_s, ideal * good AS fully_productive_s, total, good, 1 AS ideals
                FROM machine_window),
            line AS (
                SELECT 'line' AS scope, line, NULL AS machine_id, shift, ws, sum(run_s), sum(unplanned_s),
                       sum(planned_s), sum(net_run_s), sum(fully_productive_s), sum(total), sum(good),
                       count(DISTINCT ideal)
                FROM (SELECT *, ideal * total AS net_run_s, ideal * good AS fully_productive_s FROM machine_window)
                GROUP BY line, shift, ws),
            both_ AS (SELECT * FROM machine UNION ALL SELECT * FROM line)
            SELECT scope, line, machine_id, shift, ws, run_s, unplanned_s, planned_s,
                   run_s + unplanned_s AS planned_production_s, net_run_s, fully_productive_s, total, good,
                   CASE WHEN run_s + unplanned_s > 0 THEN run_s / (run_s + unplanned_s) END AS availability,
                   CASE WHEN run_s + unplanned_s > 0 AND run_s > 0 THEN net_run_s / run_s END AS performance,
                   CASE WHEN run_s + unplanned_s > 0 AND total > 0
                        THEN (CASE WHEN ideals = 1 THEN good / total ELSE fully_productive_s / net_run_s END) END
                        AS quality
            FROM both_
            """
            )
            .arrow()
            .read_all()
        )

    def downtime(self, day: dt.date) -> pa.Table:
        self._prepare(day)
        d0 = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
        return (
            self.con.sql(
                f"""
            SELECT machine_id, s AS start_ms, e AS end_ms, (e - s) / 1000.0 AS duration_s, state, reason, open
            FROM iv WHERE state <> 'running' AND s >= {d0} AND s < {d0 + 86_400_000} AND e > s
            ORDER BY machine_id, s
            """
            )
            .arrow()
            .read_all()
        )

    def reliability(self, day: dt.date) -> pa.Table:
        """MTBF = run seconds of the day / failures; MTTR = mean duration of the failures that ended."""
        stops = self.downtime(day)
        self.con.register("stops", stops)
        return (
            self.con.sql(
                """
            SELECT m.machine_id, m.run_s,
                   count(s.machine_id) AS failures,
                   count(s.machine_id) FILTER (WHERE NOT s.open) AS repairs_ended,
                   avg(s.duration_s) FILTER (WHERE NOT s.open) AS mttr_s,
                   CASE WHEN count(s.machine_id) > 0 THEN m.run_s / count(s.machine_id) END AS mtbf_s
            FROM machine_window m
            LEFT JOIN stops s ON s.machine_id = m.machine_id AND s.reason LIKE 'failure:%'
            WHERE m.shift = 'day'
            GROUP BY m.machine_id, m.run_s
            """
            )
            .arrow()
            .read_all()
        )

    def energy(self, day: dt.date) -> pa.Table:
        """kWh per machine and window: each meter interval shared out by time, resets left out."""
        self._prepare(day)
        before, after = day - dt.timedelta(days=1), day + dt.timedelta(days=1)
        return (
            self.con.sql(
                f"""
            WITH r AS (SELECT machine_id, epoch_ms(event_time) AS t, energy_kwh AS k FROM en
                       WHERE event_date BETWEEN DATE '{before}' AND DATE '{after}'),
                 p AS (SELECT machine_id, t AS t0, lead(t) OVER w AS t1, k AS k0, lead(k) OVER w AS k1 FROM r
                       WINDOW w AS (PARTITION BY machine_id ORDER BY t)),
                 e AS (SELECT p.machine_id, w.shift, w.ws,
                              sum((k1 - k0) * (least(t1, w.we) - greatest(t0, w.ws)) / (t1 - t0)) AS energy_kwh
                       FROM p JOIN win w ON t1 > w.ws AND t0 < w.we
                       WHERE t1 IS NOT NULL AND t1 > t0 AND k1 >= k0
                       GROUP BY ALL)
            SELECT e.machine_id, e.shift, e.ws, e.energy_kwh, coalesce(pa.good, 0) AS good,
                   CASE WHEN coalesce(pa.good, 0) > 0 THEN e.energy_kwh / pa.good END AS kwh_per_good_part
            FROM e LEFT JOIN parts pa ON pa.machine_id = e.machine_id AND pa.shift = e.shift AND pa.ws = e.ws
            """
            )
            .arrow()
            .read_all()
        )
