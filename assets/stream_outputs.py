"""The stream's outputs as external, observable assets of the Dagster graph.

The Kafka topics, the hot-store tables and the bronze Delta table are written by the
edge and the Bytewax dataflow, not by Dagster; they appear here so lineage runs from
the plant through the stream to the lakehouse (and later to the model the stream
uses).  Observing them records what the stream did: the bronze Delta version becomes
the asset's data version, so downstream assets know when bronze changed.
"""

# No `from __future__ import annotations`: Dagster inspects the context annotation at runtime.
import dagster as dg

from plantstream.contract.streams import STREAMS, TELEMETRY_STREAM
from plantstream.contract.topics import (
    CATALOGUE,
    DEAD_LETTERS,
    FAILURE_SCORES,
    LATE_EVENTS,
    MACHINE_EVENTS,
    MODEL_PROMOTIONS,
    TELEMETRY,
    TopicSpec,
)
from plantstream.orchestration.resources import HotStore, Lake

OWNERS = ["team:data-platform"]


def topic_key(topic: TopicSpec) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic.name.replace(".", "_")])


def _topic_deps(topic: TopicSpec) -> list[dg.AssetKey]:
    """Topics the stream writes derive from the topics it reads."""
    if topic is DEAD_LETTERS:
        return [topic_key(spec.topic) for spec in STREAMS]
    if topic is MODEL_PROMOTIONS:  # announced by the failure model's gate (assets/predictive_maintenance)
        return [dg.AssetKey(["models", "failure_model"])]
    if topic is FAILURE_SCORES:  # the stream's inference branch: the champion on live telemetry and events
        return [topic_key(TELEMETRY), topic_key(MACHINE_EVENTS), topic_key(MODEL_PROMOTIONS)]
    return [topic_key(TELEMETRY)] if topic is LATE_EVENTS else []


KAFKA_TOPICS = [
    dg.AssetSpec(
        topic_key(topic),
        description=f"Kafka topic `{topic.name}`: {topic.description}. Keyed by {topic.key}.",
        group_name="kafka",
        owners=OWNERS,
        kinds={"kafka"},
        deps=_topic_deps(topic),
        metadata={"topic": topic.name, **{f"config/{k}": v for k, v in topic.config().items()}},
    )
    for topic in CATALOGUE
]

HOT_TABLES = {
    **{
        spec.hot_table: (
            spec,
            f"Every valid `{spec.payload.__name__}` event, ReplacingMergeTree on (machine_id, seq): replays are "
            "harmless, the first copy stays.",
        )
        for spec in STREAMS
    },
    "telemetry_windows": (
        TELEMETRY_STREAM,
        "Window aggregates per machine, signal and window size (min/max/mean/std/count/last/p95).",
    ),
}

STREAM_SPECS = [
    *(
        dg.AssetSpec(
            ["hotstore", table],
            description=f"Hot-store table `{table}` written by the plant dataflow. {text}",
            group_name="hot_store",
            owners=OWNERS,
            kinds={"clickhouse"},
            deps=[topic_key(spec.topic)],
        )
        for table, (spec, text) in HOT_TABLES.items()
    ),
    *(
        dg.AssetSpec(
            ["bronze", spec.name],
            description=f"Bronze Delta table of raw `{spec.payload.__name__}` events on S3, appended by the plant "
            "dataflow (effectively-once: Delta application transactions keyed by Kafka partition and offset).",
            group_name="lakehouse",
            owners=OWNERS,
            kinds={"delta", "s3"},
            deps=[topic_key(spec.topic)],
        )
        for spec in STREAMS
    ),
]


@dg.multi_observable_source_asset(specs=STREAM_SPECS, can_subset=True, description=__doc__)
def stream_outputs(
    context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake], hotstore: dg.ResourceParam[HotStore]
):
    """Observe row counts and versions of what the stream wrote."""
    selected = context.selected_asset_keys
    for table in HOT_TABLES:
        key = dg.AssetKey(["hotstore", table])
        if key in selected:
            rows = int(hotstore.scalar(f"SELECT count() FROM {table} FINAL"))  # type: ignore[arg-type]
            yield dg.ObserveResult(asset_key=key, data_version=dg.DataVersion(str(rows)), metadata={"rows": rows})
    for spec in STREAMS:
        bronze_key = dg.AssetKey(["bronze", spec.name])
        if bronze_key not in selected:
            continue
        bronze = lake.table("bronze", spec.name)
        version = -1 if bronze is None else bronze.version()
        rows = 0 if bronze is None else bronze.to_pyarrow_dataset().count_rows()
        yield dg.ObserveResult(
            asset_key=bronze_key,
            data_version=dg.DataVersion(str(version)),
            metadata={
                "delta_version": version,
                "dagster/row_count": rows,
                "dagster/uri": lake.table_uri("bronze", spec.name),
            },
        )


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[*KAFKA_TOPICS, stream_outputs])
