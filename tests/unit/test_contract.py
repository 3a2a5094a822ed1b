"""The event contract: round trips, clear errors naming the field, JSON Schemas."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plantstream.contract import Codec, ContractError, ErrorKind, MachineEvent, MachineEventType, Telemetry
from plantstream.contract.events import EVENT_TYPES, SCHEMA_VERSION
from plantstream.contract.promotions import FailureScore, ModelPromotion
from plantstream.contract.schemas import export_json_schemas, json_schemas
from plantstream.contract.topics import CATALOGUE, DEAD_LETTERS, TELEMETRY

CODEC = Codec(Telemetry)


def reading(**changes: object) -> Telemetry:
    base = dict(
        site="plant-1",
        area="machining",
        line="line-1",
        machine_id="cnc-01",
        seq=7,
        source_ts=1_700_000_000_000,
        read_ts=1_700_000_000_005,
        ingest_ts=1_700_000_000_010,
        signal="torque",
        value=40.5,
        unit="Nm",
    )
    base.update(changes)
    return Telemetry(**base)  # type: ignore[arg-type]


def payload(**changes: object) -> bytes:
    data = msgspec.to_builtins(reading())
    data.update(changes)
    return json.dumps(data).encode()


@given(
    seq=st.integers(min_value=0, max_value=2**53),
    value=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    source_ts=st.one_of(st.none(), st.integers(min_value=0, max_value=4_000_000_000_000)),
)
def test_telemetry_round_trips(seq: int, value: float | None, source_ts: int | None) -> None:
    event = reading(seq=seq, value=value, source_ts=source_ts)
    assert CODEC.decode(CODEC.encode(event)) == event


def test_event_time_prefers_the_source_timestamp() -> None:
    assert reading().event_ts == 1_700_000_000_000
    assert reading(source_ts=None).event_ts == 1_700_000_000_005


@pytest.mark.parametrize(
    ("bad", "kind", "field"),
    [
        (payload(seq="seven"), ErrorKind.SCHEMA, "seq"),
        (payload(seq=-1), ErrorKind.SCHEMA, "seq"),
        (payload(value="hot"), ErrorKind.SCHEMA, "value"),
        (payload(machine_id=""), ErrorKind.SCHEMA, "machine_id"),
        (payload(quality="excellent"), ErrorKind.SCHEMA, "quality"),
        (payload(v=SCHEMA_VERSION + 1), ErrorKind.FUTURE_VERSION, "v"),
        # Wrongly typed versions are schema errors, not messages from the future.
        (payload(v=True), ErrorKind.SCHEMA, "v"),
        (payload(v="12.5"), ErrorKind.SCHEMA, "v"),
        (payload(v=None), ErrorKind.SCHEMA, "v"),
        (payload(v=0), ErrorKind.SCHEMA, "v"),
        # Valid JSON that no float holds, vs. Python's non-JSON words for non-finite floats.
        (payload().replace(b'"value": 40.5', b'"value": 1e400'), ErrorKind.IMPOSSIBLE_VALUE, "value"),
        (payload().replace(b'"value": 40.5', b'"value": -Infinity'), ErrorKind.MALFORMED, None),
        (b'{"site": "plant-1"}', ErrorKind.SCHEMA, "signal"),
        (b'{"site": ', ErrorKind.MALFORMED, None),
        (b"\xff\xfe", ErrorKind.MALFORMED, None),
        (b"", ErrorKind.EMPTY, None),
        (None, ErrorKind.EMPTY, None),
    ],
)
def test_malformed_payload_names_the_field(bad: bytes | None, kind: ErrorKind, field: str | None) -> None:
    with pytest.raises(ContractError) as info:
        CODEC.decode(bad)
    assert info.value.kind is kind
    assert info.value.field == field
    if field:
        assert f"`{field}`" in str(info.value)


def test_batch_decode_isolates_bad_messages() -> None:
    good = CODEC.encode(reading())
    values = [good, b"not json", None, payload(seq="x"), good]
    events, errors = CODEC.decode_batch(values)
    assert [e is not None for e in events] == [True, False, False, False, True]
    assert [(i, e.kind) for i, e in errors] == [(1, ErrorKind.MALFORMED), (2, ErrorKind.EMPTY), (3, ErrorKind.SCHEMA)]


def test_batch_decode_cannot_merge_two_fragments_into_one_event() -> None:
    whole = CODEC.encode(reading()).decode()
    head, tail = whole[: len(whole) // 2], whole[len(whole) // 2 :]
    events, errors = CODEC.decode_batch([head.encode(), tail.encode()])
    assert events == [None, None]
    assert len(errors) == 2


def test_unknown_fields_are_tolerated_for_forward_compatible_additions() -> None:
    assert CODEC.decode(payload(new_optional_field=1)) == reading()


def test_machine_events_round_trip() -> None:
    codec = Codec(MachineEvent)
    event = MachineEvent(
        site="plant-1",
        area="a",
        line="l",
        machine_id="press-2",
        seq=1,
        read_ts=1,
        ingest_ts=2,
        event_type=MachineEventType.MACHINE_STOPPED,
        reason="tool change",
    )
    assert codec.decode(codec.encode(event)) == event


def test_every_payload_topic_has_a_json_schema(tmp_path) -> None:
    schemas = json_schemas()
    assert set(schemas) == {t.name for t in CATALOGUE if t.payload is not None}
    written = export_json_schemas(tmp_path)
    telemetry = json.loads((tmp_path / f"{TELEMETRY.name}.json").read_text())
    definition = telemetry["$defs"]["Telemetry"]
    assert {"machine_id", "seq", "read_ts", "ingest_ts", "signal"} <= set(definition["required"])
    assert len(written) == len(schemas)


def test_catalogue_has_the_four_streams_plus_alerts_and_dead_letters() -> None:
    names = {t.name for t in CATALOGUE}
    assert {
        "factory.machine.telemetry",
        "factory.machine.events",
        "factory.quality.metrics",
        "factory.energy.usage",
        "factory.alerts",
        DEAD_LETTERS.name,
    } <= names
    assert {t.payload for t in CATALOGUE if t.payload} <= {*EVENT_TYPES, ModelPromotion, FailureScore}
    for topic in CATALOGUE:
        assert {"retention.ms", "cleanup.policy"} <= set(topic.config())


def test_published_json_schemas_match_the_contract() -> None:
    """docs/schemas is what integrators read; regenerate with `plantstream schemas export`."""
    from pathlib import Path

    published = Path(__file__).parents[2] / "docs" / "schemas"
    for topic, schema in json_schemas().items():
        on_disk = json.loads((published / f"{topic}.json").read_text())
        assert on_disk == json.loads(json.dumps(schema)), f"{topic}: run `plantstream schemas export`"
