"""``plantstream bench broker``: does the local broker keep what it acknowledged across ``kill -9``?

The probe behind docs/platform.md ("A kill -9 of the broker can lose acknowledged
writes").  Each round starts a private SeaweedFS + Tansu (S3 storage, the shipped
default), creates a 4-partition topic, and has a plain confluent-kafka producer write
numbered messages at full speed while a separate consumer process reads the topic (the
loss was only ever seen with a concurrent reader).  Part-way the broker is killed with
``kill -9`` and restarted; the producer keeps going (librdkafka retries).  At the end the
topic is read back to each partition's end (``enable.partition.eof``) and compared with
every delivery report that said "stored at offset o":

* ``lost_acked``: acknowledged messages that are not in the topic at all;
* ``offsets_reused``: acknowledged offsets that now hold a *different* message.

Side by side in one run: the project's producer settings (idempotent, ``acks=all``) and
``enable.idempotence=false`` with one request in flight (the one client setting that
looked like it might close the hole).  PlantStream's producers do not depend on the
answer: they read back what they sent after every reconnect (docs/platform.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.connect.kafka import admin, consumer, producer
from plantstream.services.isolated import isolated_settings
from plantstream.services.supervisor import LocalPlatform
from plantstream.settings import Settings

TOPIC = "broker-loss-probe"
PARTITIONS = 4
CLIENTS: dict[str, dict[str, Any]] = {
    "idempotent (project default)": {},
    "idempotence off, 1 in flight": {"enable.idempotence": False, "max.in.flight.requests.per.connection": 1},
}
_READER = """
import sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "broker-loss-reader", "fetch.queue.backoff.ms": 10})
c.assign([TopicPartition(sys.argv[2], p, 0) for p in range(int(sys.argv[3]))])
while True:
    c.consume(10000, timeout=0.5)
"""


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:
    messages = 200_000 if quick else 1_500_000
    rounds = 1 if quick else 3
    results: dict[str, list[dict[str, int]]] = {name: [] for name in CLIENTS}
    with console.status("probing the broker") as status:
        for round_no in range(1, rounds + 1):
            for name, extra in CLIENTS.items():
                status.update(f"round {round_no}/{rounds}: {name}, {messages:,} messages, kill -9 part-way")
                results[name].append(_round(messages, extra))
    figures: dict[str, Any] = {
        "messages_per_round": messages,
        "rounds": rounds,
        "clients": {
            name: {
                "lost_acked": [r["lost_acked"] for r in rs],
                "offsets_reused": [r["offsets_reused"] for r in rs],
                "acked": [r["acked"] for r in rs],
            }
            for name, rs in results.items()
        },
    }
    figures["lost_acked_total"] = sum(sum(c["lost_acked"]) for c in figures["clients"].values())
    _print(console, figures)
    write_results("broker", figures, quick=quick)
    return figures


def _round(messages: int, extra: dict[str, Any]) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="plantstream-bench-broker-") as tmp:
        settings = isolated_settings(Path(tmp) / "state")
        platform = LocalPlatform(settings, services=["seaweedfs", "tansu"], die_with_parent=True)
        platform.up()
        reader = None
        try:
            from confluent_kafka.admin import NewTopic

            adm = admin(settings)
            adm.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(10)
            reader = subprocess.Popen(
                [sys.executable, "-c", _READER, settings.kafka.bootstrap_servers, TOPIC, str(PARTITIONS)]
            )
            acked = _produce_with_a_kill(settings, platform, messages, extra)
            return _compare(settings, acked)
        finally:
            if reader is not None:
                reader.kill()
                reader.wait(10)
            platform.down()


def _produce_with_a_kill(
    settings: Settings, platform: LocalPlatform, messages: int, extra: dict[str, Any]
) -> dict[tuple[int, int], int]:
    """Write ``messages`` numbered messages; kill -9 the broker after a third; returns
    ``(partition, offset) -> number`` of every delivery report with an offset."""
    acked: dict[tuple[int, int], int] = {}

    def delivered(err: Any, msg: Any) -> None:
        if err is None and msg.offset() is not None and msg.offset() >= 0:
            acked[(msg.partition(), msg.offset())] = int(msg.value())

    prod = producer(settings, **extra)
    for number in range(messages):
        while True:
            try:
                prod.produce(TOPIC, str(number).encode(), key=str(number % 100).encode(), on_delivery=delivered)
                break
            except BufferError:
                prod.poll(0.05)
        if number % 10_000 == 0:
            prod.poll(0)
        if number == messages // 3:
            record = platform.record("tansu")
            assert record is not None
            os.killpg(record.pid, signal.SIGKILL)
            time.sleep(0.5)
            platform.up()
    prod.flush(300)
    return acked


def _compare(settings: Settings, acked: dict[tuple[int, int], int]) -> dict[str, int]:
    from confluent_kafka import KafkaError, TopicPartition

    cons = consumer(settings, **{"enable.partition.eof": True, "group.id": "broker-loss-verify"})
    present: dict[tuple[int, int], int] = {}
    try:
        cons.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        open_parts = set(range(PARTITIONS))
        deadline = time.monotonic() + 180
        while open_parts and time.monotonic() < deadline:
            for msg in cons.consume(10_000, timeout=0.5):
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(msg.partition())
                    continue
                present[(msg.partition(), msg.offset())] = int(msg.value())
        if open_parts:
            raise TimeoutError(f"partitions {sorted(open_parts)} not read to the end")
    finally:
        cons.close()
    numbers_present = set(present.values())
    return {
        "acked": len(set(acked.values())),
        "lost_acked": len(set(acked.values()) - numbers_present),
        "offsets_reused": sum(1 for where, n in acked.items() if where in present and present[where] != n),
    }


def _print(console: Console, figures: dict[str, Any]) -> None:
    table = Table(title=f"kill -9 of the broker mid-write ({figures['messages_per_round']:,} messages per round)")
    table.add_column("producer")
    table.add_column("acknowledged, then lost (per round)", justify="right")
    table.add_column("offsets reused (per round)", justify="right")
    for name, c in figures["clients"].items():
        table.add_row(
            name, ", ".join(f"{n:,}" for n in c["lost_acked"]), ", ".join(f"{n:,}" for n in c["offsets_reused"])
        )
    console.print(table)
