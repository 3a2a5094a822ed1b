"""Create the topic catalogue on the broker (idempotent)."""

from __future__ import annotations

from plantstream.contract.topics import CATALOGUE, TopicSpec, partitions_for, topic_name
from plantstream.settings import Settings


def ensure_topics(settings: Settings, topics: tuple[TopicSpec, ...] = CATALOGUE, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics under their deployed names (:func:`topic_name`).  Returns the names created.

    Raises if an existing topic has fewer partitions than configured, since keys
    would then map to other partitions than the ones the data already lives in.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    from plantstream.connect.kafka import admin

    client = admin(settings)
    existing = client.list_topics(timeout=timeout_s).topics
    created: list[str] = []
    wanted = []
    for topic in topics:
        name = topic_name(settings, topic)
        want = partitions_for(settings, topic)
        if name in existing:
            have = len(existing[name].partitions)
            if have < want:
                raise RuntimeError(f"topic {name} has {have} partitions, settings ask for {want}")
            continue
        wanted.append(
            NewTopic(
                name, num_partitions=want, replication_factor=settings.kafka.replication_factor, config=topic.config()
            )
        )
    if not wanted:
        return created
    for name, future in client.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created
