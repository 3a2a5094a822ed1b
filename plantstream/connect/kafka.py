"""Kafka client configuration, built from the settings only here.

Nothing here depends on the local broker's quirks (see docs/infrastructure.md):
no transactions, no reliance on the broker's high watermark, no compaction.
"""

from __future__ import annotations

from typing import Any, Literal

from plantstream.settings import Settings

Role = Literal["producer", "consumer", "admin"]


def kafka_config(settings: Settings, role: Role, **overrides: Any) -> dict[str, Any]:
    """librdkafka configuration for one client role.

    Producers are idempotent with ``acks=all`` (at-least-once without reordering);
    consumers never auto-commit (offsets are owned by whoever processes the data) and
    use a short ``fetch.queue.backoff.ms`` (the 1 s default stalls fetching).
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "client.id": settings.kafka.client_id,
    }
    if role == "producer":
        conf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                "linger.ms": 20,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
                # Never expire a message locally: an outage is waited out, not dropped.
                "message.timeout.ms": 0,
            }
        )
    elif role == "consumer":
        conf.update(
            {
                "group.id": f"{settings.kafka.client_id}-consumer",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.queue.backoff.ms": 10,
                "fetch.min.bytes": 1,
                "queued.max.messages.kbytes": 262_144,
                "session.timeout.ms": 6_000,
                "heartbeat.interval.ms": 1_000,
            }
        )
    conf.update(settings.kafka.extra_config)
    conf.update(overrides)
    return conf


def producer(settings: Settings, **overrides: Any):  # -> confluent_kafka.Producer
    from confluent_kafka import Producer

    return Producer(kafka_config(settings, "producer", **overrides))


def consumer(settings: Settings, **overrides: Any):  # -> confluent_kafka.Consumer
    from confluent_kafka import Consumer

    return Consumer(kafka_config(settings, "consumer", **overrides))


def admin(settings: Settings, **overrides: Any):  # -> confluent_kafka.admin.AdminClient
    from confluent_kafka.admin import AdminClient

    return AdminClient(kafka_config(settings, "admin", **overrides))
