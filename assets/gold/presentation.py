"""What a gold materialisation shows in the Dagster UI: a preview of its rows and plots.

Previews are Markdown tables of the first rows (the UI renders ``MetadataValue.md``).
Plots are small PNGs (matplotlib, Agg backend, ~100 dpi) embedded in Markdown as base64
``data:`` images - the UI shows them on the materialisation - and also written under
``<state dir>/gold/plots/`` so they can be opened outside the UI (``MetadataValue.path``).
Everything here is presentation: no figure in it is used by a computation.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import math
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

PREVIEW_ROWS = 10


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):  # map columns come back as (key, value) pairs
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value[:4]) + (" ..." if len(value) > 4 else "")
    return str(value).replace("|", "\\|")


def preview(rows: pa.Table, columns: list[str], limit: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """The first ``limit`` rows of ``columns`` as a Markdown table."""
    head = rows.select(columns).slice(0, limit).to_pylist()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in head]
    if rows.num_rows > limit:
        lines.append(f"\n{limit} of {rows.num_rows:,} rows")
    return dg.MetadataValue.md("\n".join(lines))


def _figure(width: float = 7.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def oee_trend_png(history: pa.Table, day: dt.date) -> bytes | None:
    """OEE per line and day (the day window of line rows) up to ``day``; ``None`` without data."""
    rows = history.filter(pc.and_(pc.equal(history["scope"], "line"), pc.equal(history["shift"], "day")))
    rows = rows.filter(pc.invert(pc.is_null(rows["oee"])))
    if not rows.num_rows:
        return None
    plt, fig, ax = _figure()
    for line in sorted(set(rows["line"].to_pylist())):
        mine = rows.filter(pc.equal(rows["line"], line)).sort_by("day")
        ax.plot(mine["day"].to_pylist(), [v * 100 for v in mine["oee"].to_pylist()], marker="o", label=line)
    ax.set_ylabel("OEE %")
    ax.set_title(f"OEE per line and day, up to {day.isoformat()}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=4)
    fig.autofmt_xdate()
    return _png(plt, fig)


def downtime_pareto_png(downtime: pa.Table, day: dt.date, top: int = 12) -> bytes | None:
    """Unplanned stop time by reason (bars) and its cumulative share (line); ``None`` without stops."""
    stops = downtime.filter(pc.equal(downtime["stop_class"], "unplanned_stop"))
    if not stops.num_rows:
        return None
    by_reason = stops.group_by("reason").aggregate([("duration_s", "sum")]).sort_by([("duration_s_sum", "descending")])
    reasons = [r or "(none)" for r in by_reason["reason"].to_pylist()][:top]
    hours = [s / 3600 for s in by_reason["duration_s_sum"].to_pylist()]
    total = sum(hours)
    cumulative, running = [], 0.0
    for value in hours[:top]:
        running += value
        cumulative.append(100 * running / total)
    plt, fig, ax = _figure()
    ax.bar(reasons, hours[:top], color="#c0504d")
    ax.set_ylabel("machine-hours")
    ax.set_title(f"Unplanned downtime by reason, {day.isoformat()}")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    share = ax.twinx()
    share.plot(reasons, cumulative, color="#1f497d", marker="o")
    share.set_ylim(0, 105)
    share.set_ylabel("cumulative %")
    return _png(plt, fig)


def image_metadata(png: bytes | None, title: str, path: Path) -> dict[str, dg.MetadataValue]:
    """The PNG embedded in Markdown and written to ``path`` (nothing for no plot)."""
    if png is None:
        return {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    encoded = base64.b64encode(png).decode()
    return {
        title: dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})"),
        f"{title}_png": dg.MetadataValue.path(str(path)),
    }
