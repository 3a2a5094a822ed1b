"""What the stream saw go wrong upstream, kept where ``plantstream gaps`` can report it.

An incident is something the flow cannot repair by itself and an operator must know of:
a partition whose log ended below what the flow had already read (the broker lost or
reused offsets: docs/platform.md), a machine whose sequence jumped.  Each is logged (as an
error or warning), counted in a metric, and appended as one JSON line to
``<state_dir>/incidents/stream.jsonl`` on the host that runs the flow, which
``plantstream gaps`` prints next to its report.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from plantstream.settings import Settings

_lock = threading.Lock()


def incidents_path(settings: Settings) -> Path:
    return settings.state_dir / "incidents" / "stream.jsonl"


def record_incident(settings: Settings, kind: str, **fields: Any) -> None:
    """Append one incident (``kind`` plus its fields and the time) to the incident log."""
    path = incidents_path(settings)
    line = json.dumps({"ts_ms": int(time.time() * 1000), "kind": kind, **fields}, sort_keys=True, default=str)
    with _lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(line + "\n")


def read_incidents(settings: Settings) -> list[dict[str, Any]]:
    path = incidents_path(settings)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
