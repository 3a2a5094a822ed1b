"""Everything about one machine, in one round trip to the hot store: its digital twin.

``machine_twin(settings, "cnc-mill-001")`` runs ONE query - the machine's row of
``twin_state`` in ``FINAL`` (its newest version) together with the server's clock - and
returns the twin as plain JSON types: state, every signal with its value, quality, age and
whether it is stale, the shift's part counters, the energy meter, OEE so far this shift,
open alerts and the failure probability.

Staleness is judged twice, so a twin that stopped being updated is never shown as fresh:
the stream marks what was stale in event time (``TwinState.stale``, ``TwinSignal.stale``),
and here every age is measured against the hot store's clock at query time - a signal (or
the whole machine) older than ``stream.twin_stale_after_seconds`` is stale whatever the
stored flag says.
"""

from __future__ import annotations

from typing import Any

import msgspec

from plantstream.connect.hotstore import hotstore_client
from plantstream.contract.events import TwinState
from plantstream.settings import Settings
from plantstream.streaming.hot_tables import TWIN_STATE_TABLE

_DECODER = msgspec.json.Decoder(TwinState)


def twin_sql(settings: Settings) -> str:
    return (
        f"SELECT document, toUnixTimestamp64Milli(now64(3)) AS now_ms "
        f"FROM {settings.hotstore.database}.{TWIN_STATE_TABLE} FINAL "
        "WHERE machine_id = {machine_id:String} LIMIT 1"
    )


def twin_view(state: TwinState, now_ms: int, stale_after_ms: int) -> dict[str, Any]:
    """The twin as shown to a person or a client at ``now_ms`` (ages and staleness at that moment)."""
    age_ms = now_ms - state.source_ts
    signals = {}
    for name, sig in state.signals.items():
        signal_age = now_ms - sig.ts
        signals[name] = {
            "value": sig.value,
            "unit": sig.unit,
            "quality": sig.quality.value,
            "ts_ms": sig.ts,
            "value_ts_ms": sig.value_ts,
            "age_s": signal_age / 1000,
            "stale": bool(sig.stale or state.stale or signal_age > stale_after_ms),
        }
    view = msgspec.to_builtins(state)
    view.pop("signals")
    view.update(
        {
            "as_of_ms": state.source_ts,
            "updated_ms": state.read_ts,
            "version": state.seq,
            "age_s": age_ms / 1000,
            "stale": bool(state.stale or age_ms > stale_after_ms),
            "signals": signals,
            "now_ms": now_ms,
        }
    )
    return view


def machine_twin(settings: Settings, machine_id: str, *, client: Any = None) -> dict[str, Any] | None:
    """The twin of ``machine_id`` (``None`` if the stream never saw it), in one query."""
    own = client is None
    client = hotstore_client(settings) if own else client
    try:
        rows = client.query(twin_sql(settings), parameters={"machine_id": machine_id}).result_rows
    finally:
        if own:
            client.close()
    if not rows:
        return None
    document, now_ms = rows[0]
    state = _DECODER.decode(document)
    return twin_view(state, int(now_ms), round(settings.stream.twin_stale_after_seconds * 1000))


__all__ = ["machine_twin", "twin_sql", "twin_view"]
