"""``plantstream topics peek``: the hand tool for reading topics, run as a user runs it,
against the session platform's broker (whose high watermark is wrong: "the last N" must
still be the last N)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from plantstream.connect.kafka import admin, producer
from plantstream.settings import Settings, child_env

pytestmark = pytest.mark.integration
PLANTSTREAM = str(Path(sys.executable).parent / "plantstream")


def _create(settings: Settings, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import NewTopic

    client = admin(settings)
    for future in client.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(timeout=30)


def _produce(settings: Settings, topic: str, records: list[tuple[int, bytes | None, list, bytes | None]]) -> None:
    """(partition, key, headers, value) in one go: one flush, so the broker gets whole batches."""
    p = producer(settings)
    errors: list[str] = []
    for partition, key, headers, value in records:
        p.produce(
            topic,
            partition=partition,
            key=key,
            headers=headers,
            value=value,
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
    assert p.flush(60) == 0 and not errors, errors


def _peek(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLANTSTREAM, "topics", "peek", *args],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _json_lines(done: subprocess.CompletedProcess[str]) -> list[dict]:
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def filled_topic(platform_settings: Settings, unique_name: Callable[..., str]) -> str:
    """Partition 0: 50 JSON messages in one batch; partition 1: binary, null and non-ASCII ones."""
    topic = unique_name("peek")
    _create(platform_settings, topic, partitions=2)
    records = [(0, f"cnc-{i:02d}".encode(), [("seq", str(i).encode())], f'{{"i": {i}}}'.encode()) for i in range(50)]
    records += [
        (1, b"bin", [("plantstream.error.kind", b"schema"), ("raw", b"\xff\x00")], b"\x00\x01\xfe"),
        (1, None, [], None),
        (1, "ключ".encode(), [], "значение".encode()),
    ]
    _produce(platform_settings, topic, records)
    return topic


def test_from_beginning_prints_every_message_with_partition_offset_key_headers_value(
    platform_settings: Settings, filled_topic: str
) -> None:
    topic = filled_topic
    lines = _json_lines(_peek(platform_settings, topic, "--from-beginning", "--json"))
    assert [(m["partition"], m["offset"]) for m in lines] == [(0, i) for i in range(50)] + [(1, i) for i in range(3)]
    assert lines[7] == {
        "topic": topic,
        "partition": 0,
        "offset": 7,
        "timestamp_ms": lines[7]["timestamp_ms"],
        "key": "cnc-07",
        "headers": [{"name": "seq", "value": "7"}],
        "value": '{"i": 7}',
    }
    assert isinstance(lines[7]["timestamp_ms"], int) and lines[7]["timestamp_ms"] > 0
    binary, empty, text = lines[50:]
    assert binary["value"] is None and binary["value_base64"] == "AAH+"
    assert binary["headers"] == [
        {"name": "plantstream.error.kind", "value": "schema"},
        {"name": "raw", "value": None, "value_base64": "/wA="},
    ]
    assert empty["key"] is None and empty["value"] is None and empty["headers"] == []
    assert text["key"] == "ключ" and text["value"] == "значение"

    human = _peek(platform_settings, topic, "--from-beginning", "--partition", "1")
    assert human.returncode == 0, human.stderr
    first = human.stdout.splitlines()[0]
    assert first.startswith("partition=1 offset=0 ")
    assert "key=bin" in first and "headers=plantstream.error.kind=schema,raw=<2 bytes: ff00>" in first
    assert first.endswith("value=<3 bytes: 0001fe>")
    assert "3 message(s)" in human.stderr


def test_last_n_is_the_real_end_even_where_the_broker_watermark_is_low(
    platform_settings: Settings, filled_topic: str
) -> None:
    topic = filled_topic
    lines = _json_lines(_peek(platform_settings, topic, "--last", "5", "--json"))
    assert [(m["partition"], m["offset"]) for m in lines] == [(0, o) for o in range(45, 50)] + [(1, 0), (1, 1), (1, 2)]
    only = _json_lines(_peek(platform_settings, topic, "--last", "2", "-p", "0", "--json"))
    assert [m["key"] for m in only] == ["cnc-48", "cnc-49"]
    default = _json_lines(_peek(platform_settings, topic, "-p", "0", "--json"))
    assert [m["offset"] for m in default] == list(range(40, 50))  # default: the last 10


def test_follow_prints_new_messages_as_they_arrive(
    platform_settings: Settings, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("peek-follow")
    _create(platform_settings, topic, partitions=1)
    _produce(platform_settings, topic, [(0, b"old", [], b"before")])
    proc = subprocess.Popen(
        [PLANTSTREAM, "topics", "peek", topic, "--follow", "--json"],
        env=child_env(platform_settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        assert json.loads(lines.get(timeout=60))["value"] == "before"
        _produce(platform_settings, topic, [(0, b"new", [("h", b"1")], b"after")])
        arrived = json.loads(lines.get(timeout=60))
        assert (arrived["offset"], arrived["key"], arrived["value"]) == (1, "new", "after")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_topic_or_partition_fails_naming_it(platform_settings: Settings, filled_topic: str) -> None:
    topic = filled_topic
    missing = _peek(platform_settings, "no-such-topic-here")
    assert missing.returncode == 1
    assert "no-such-topic-here" in missing.stderr and "does not exist" in missing.stderr
    bad_partition = _peek(platform_settings, topic, "-p", "9")
    assert bad_partition.returncode == 1 and "not [9]" in bad_partition.stderr
    both = _peek(platform_settings, topic, "--from-beginning", "--last", "3")
    assert both.returncode == 2
