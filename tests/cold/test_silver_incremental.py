"""Silver updated incrementally, batch after batch: first copy wins, conflicts counted, and every
file stays readable with a string filter (no ``string_view`` columns, which a delta-rs merge wrote)."""

from __future__ import annotations

import datetime as dt

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
from cold_data import decode, telemetry, write_bronze

from plantstream.assets.silver import update_silver
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.orchestration.resources import Lake

pytestmark = pytest.mark.integration
TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [TODAY - dt.timedelta(days=n) for n in (3, 2, 1)]


def test_silver_grows_batch_by_batch_keeps_first_copies_and_stays_filterable_on_strings(stream_settings) -> None:
    settings = stream_settings()
    lake = Lake(settings)
    events = telemetry(3, DAYS, 60)
    first, later = events[: len(events) // 2], events[len(events) // 2 :]
    write_bronze(settings, TELEMETRY_STREAM, decode(TELEMETRY_STREAM, first), commits=2)
    assert update_silver(lake, TELEMETRY_STREAM)["rows_inserted"] == len(first)

    # The second half, re-sends of the first (same content) and one conflicting copy (another value).
    resent = first[::7]
    changed = msgspec.structs.replace(first[3], value=(first[3].value or 0.0) + 1.0)
    batch = decode(TELEMETRY_STREAM, [*later, *resent, changed], first_offset=10_000)
    write_bronze(settings, TELEMETRY_STREAM, batch, commits=3)
    report = update_silver(lake, TELEMETRY_STREAM)
    assert report["rows_inserted"] == len(later)
    assert report["conflicting_duplicates"] == 1
    assert report["silver_rows"] == len(events)
    assert update_silver(lake, TELEMETRY_STREAM)["rows_inserted"] == 0  # nothing new: nothing changes

    table = lake.table("silver", "telemetry")
    kept = table.to_pyarrow_dataset().to_table(filter=pads.field("seq") == first[3].seq)
    kept = kept.filter(pc.equal(kept["machine_id"], first[3].machine_id))
    assert kept["value"].to_pylist() == [first[3].value]  # the first copy won
    for fragment in table.to_pyarrow_dataset().get_fragments():
        physical = fragment.physical_schema
        assert not any(pa.types.is_string_view(f.type) for f in physical), (fragment.path, physical)
    machine = first[0].machine_id
    rows = table.to_pyarrow_dataset().to_table(filter=pads.field("machine_id") == machine)
    assert rows.num_rows == sum(1 for e in events if e.machine_id == machine)
