"""The local platform is durable: what was written to every service survives a crash
(``kill -9`` of every process group) and a clean ``down``, followed by ``up``.

Each run writes to all four services on a private instance: a Delta table on S3, a
Kafka topic with N messages and a committed consumer-group offset, a hot-store table,
an MLflow registered model version whose artifact lives in the S3 bucket; then reads
everything back exactly after the restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic
from deltalake import DeltaTable, write_deltalake

from plantstream.connect.hotstore import hotstore_client
from plantstream.connect.kafka import admin, consumer, producer
from plantstream.connect.s3 import delta_storage_options
from plantstream.services.supervisor import ALL_SERVICES, LocalPlatform
from plantstream.settings import Settings

pytestmark = pytest.mark.integration

N_MESSAGES = 2_000
PARTITIONS = 3
COMMITTED = {0: 123, 1: 456, 2: 7}  # committed offset per partition
GROUP = "durability-group"


@dataclass
class Written:
    delta_uri: str
    delta_rows: list[dict[str, object]]
    topic: str
    messages: set[tuple[int, bytes, bytes]]  # (partition, key, value)
    hot_table: str
    hot_rows: list[tuple[int, str]]
    model_name: str
    model_version: str
    run_id: str
    artifact_text: str


def _write_everything(settings: Settings, name: Callable[..., str]) -> Written:
    # Delta table on S3
    delta_uri = settings.lake.table_uri("bronze", name("delta", sep="_"))
    rows = [{"id": i, "machine": f"m{i % 4}", "value": i * 0.5} for i in range(500)]
    write_deltalake(delta_uri, pa.Table.from_pylist(rows), storage_options=delta_storage_options(settings))
    write_deltalake(
        delta_uri,
        pa.Table.from_pylist([{"id": 500, "machine": "m0", "value": 250.0}]),
        mode="append",
        storage_options=delta_storage_options(settings),
    )
    rows.append({"id": 500, "machine": "m0", "value": 250.0})

    # Kafka topic, messages and a committed consumer-group offset
    topic = name("topic")
    kafka_admin = admin(settings)  # keep a reference: a collected client fails its futures
    futures = kafka_admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    futures[topic].result(timeout=30)
    prod = producer(settings)
    messages = set()
    for i in range(N_MESSAGES):
        partition = i % PARTITIONS
        key, value = f"k{i}".encode(), f"message-{i}".encode()
        prod.produce(topic, value=value, key=key, partition=partition)
        messages.add((partition, key, value))
    assert prod.flush(30) == 0
    cons = consumer(settings, **{"group.id": GROUP})
    try:
        offsets = [TopicPartition(topic, p, off) for p, off in COMMITTED.items()]
        cons.commit(offsets=offsets, asynchronous=False)
    finally:
        cons.close()

    # Hot-store table
    hot_table = name("hot", sep="_")
    hot_rows = [(i, f"row-{i}") for i in range(300)]
    client = hotstore_client(settings)
    try:
        client.command(f"CREATE TABLE {hot_table} (id UInt32, label String) ENGINE = MergeTree ORDER BY id")
        client.insert(hot_table, hot_rows, column_names=["id", "label"])
    finally:
        client.close()

    # MLflow: a run with an artifact (stored in the S3 bucket via the server's proxy) and
    # a registered model version pointing at it
    from mlflow import MlflowClient

    ml = MlflowClient(tracking_uri=settings.mlflow.tracking_uri, registry_uri=settings.mlflow.tracking_uri)
    experiment_id = ml.create_experiment(name("exp"))
    run = ml.create_run(experiment_id)
    artifact_text = f"model card {time.time()}"
    ml.log_text(run.info.run_id, artifact_text, "model/card.txt")
    ml.set_terminated(run.info.run_id)
    model_name = name("model")
    ml.create_registered_model(model_name)
    version = ml.create_model_version(model_name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return Written(
        delta_uri,
        rows,
        topic,
        messages,
        hot_table,
        hot_rows,
        model_name,
        version.version,
        run.info.run_id,
        artifact_text,
    )


def _read_all_messages(
    settings: Settings, topic: str, expected: int, timeout: float = 60
) -> set[tuple[int, bytes, bytes]]:
    """Consume every partition from the beginning until ``expected`` messages arrived.

    Counts messages instead of trusting the broker's high watermark (wrong on Tansu).
    """
    cons = consumer(settings, **{"group.id": f"{GROUP}-reader"})
    got: set[tuple[int, bytes, bytes]] = set()
    try:
        cons.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            for msg in cons.consume(1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                got.add((msg.partition(), msg.key(), msg.value()))
    finally:
        cons.close()
    return got


def _check_everything(settings: Settings, w: Written) -> None:
    table = DeltaTable(w.delta_uri, storage_options=delta_storage_options(settings))
    assert table.version() == 1
    assert sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["id"]) == w.delta_rows

    assert _read_all_messages(settings, w.topic, len(w.messages)) == w.messages
    cons = consumer(settings, **{"group.id": GROUP})
    try:
        committed = cons.committed([TopicPartition(w.topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        cons.close()
    assert {tp.partition: tp.offset for tp in committed} == COMMITTED

    client = hotstore_client(settings)
    try:
        rows = client.query(f"SELECT id, label FROM {w.hot_table} ORDER BY id").result_rows
    finally:
        client.close()
    assert [tuple(r) for r in rows] == w.hot_rows

    from mlflow import MlflowClient

    ml = MlflowClient(tracking_uri=settings.mlflow.tracking_uri, registry_uri=settings.mlflow.tracking_uri)
    version = ml.get_model_version(w.model_name, w.model_version)
    assert version.run_id == w.run_id
    assert [v.version for v in ml.search_model_versions(f"name='{w.model_name}'")] == [w.model_version]
    assert ml.get_run(w.run_id).info.status == "FINISHED"
    text = ml.download_artifacts(w.run_id, "model/card.txt")
    with open(text) as fh:
        assert fh.read() == w.artifact_text


@pytest.mark.parametrize(
    "restart",
    ["kill-9", pytest.param("down", marks=pytest.mark.slow)],  # a clean stop is the easier case (~36 s)
)
def test_everything_survives_a_restart(
    make_platform: Callable[..., LocalPlatform],
    unique_name: Callable[..., str],
    kill9: Callable[..., list[int]],
    restart: str,
) -> None:
    platform = make_platform(ALL_SERVICES)
    settings = platform.settings
    first = platform.up()
    written = _write_everything(settings, unique_name)
    _check_everything(settings, written)  # the check itself works before the restart

    if restart == "kill-9":
        killed = kill9(settings)
        assert len(killed) == len(ALL_SERVICES)
    else:
        stopped = platform.down()
        # Clean SIGTERM shutdown is test_platform_lifecycle's business; under a loaded CI
        # machine a service may need the SIGKILL fallback, and its data must survive that too.
        assert set(stopped.values()) <= {"stopped", "killed"}, stopped
    assert not any(s.running for s in platform.status(probe=False))

    second = LocalPlatform(settings, die_with_parent=True).up()
    assert all(s.started for s in second.services)
    assert {s.pid for s in second.services}.isdisjoint({s.pid for s in first.services})
    _check_everything(settings, written)
