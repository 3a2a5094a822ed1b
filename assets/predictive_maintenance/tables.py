"""Reading the failure model's tables back: the labelled training frame, at pinned Delta versions.

Training reads ``gold/failure_features`` joined with ``gold/failure_labels`` on
``(machine_id, ts)`` for a window of days, each table at one Delta version: the version
it had when the read started, or the one a reproduction asks for.  Those versions are
logged with the model (MLflow tags ``plantstream.delta.<table>``): training again on the
same versions with the same seed gives the same model and metrics (as long as a vacuum has
not removed the files of those versions: docs/cold-tier.md, retention 7 days).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from plantstream.assets.gold.tables import PARTITION_COLUMN
from plantstream.assets.predictive_maintenance.features import FEATURES_TABLE, LABELS_TABLE
from plantstream.assets.predictive_maintenance.ground_truth import NAME as GROUND_TRUTH_NAME
from plantstream.assets.predictive_maintenance.ground_truth import TIER as GROUND_TRUTH_TIER
from plantstream.contract.columns import TIMESTAMP_MS_UTC
from plantstream.models.features import FEATURE_NAMES
from plantstream.orchestration.resources import Lake

LABEL_COLUMNS = ["label", "minutes_to_failure", "failure_ts", "failure_mode"]


def table_key(tier: str, name: str) -> str:
    return f"{tier}/{name}"


def days_in(table: DeltaTable) -> list[dt.date]:
    """The ``day`` partitions a gold table holds rows for (from the Delta log, no data read)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    column = f"partition.{PARTITION_COLUMN}"
    if not actions.num_rows or column not in actions.column_names:
        return []
    days = pc.unique(actions[column]).to_pylist()
    return sorted(d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)) for d in days if d is not None)


def _open(lake: Lake, name: str, version: int | None) -> DeltaTable:
    table = lake.table("gold", name, version)
    if table is None:
        raise LookupError(f"gold/{name} does not exist yet: materialise it first (plantstream model features)")
    return table


def _read(table: DeltaTable, first: dt.date, last: dt.date, columns: list[str]) -> pa.Table:
    field = pc.field(PARTITION_COLUMN)
    where = (field >= pa.scalar(first, pa.date32())) & (field <= pa.scalar(last, pa.date32()))
    return table.to_pyarrow_dataset().to_table(columns=columns, filter=where)


@dataclass(frozen=True)
class TrainingWindow:
    """What a model is trained on: the labelled frame and exactly which data it came from."""

    frame: pd.DataFrame  # machine_id, ts (epoch ms), FEATURE_NAMES, LABEL_COLUMNS; sorted by (ts, machine_id)
    first_day: dt.date
    last_day: dt.date
    versions: dict[str, int]  # "gold/failure_features" -> Delta version, ...
    uris: dict[str, str]
    cold_samples: int  # left out: the machine's history in the lake was shorter than the lookback

    def describe(self) -> str:
        versions = ", ".join(f"{name} v{version}" for name, version in self.versions.items())
        return f"{self.first_day} .. {self.last_day} ({len(self.frame):,} samples; {versions})"


def training_window(
    lake: Lake,
    *,
    days: int,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    features_version: int | None = None,
    labels_version: int | None = None,
) -> TrainingWindow:
    """The labelled frame of ``first_day .. last_day`` (default: the last ``days`` days that have labels)."""
    features = _open(lake, FEATURES_TABLE, features_version)
    labels = _open(lake, LABELS_TABLE, labels_version)
    labelled_days = days_in(labels)
    if not labelled_days:
        raise LookupError("gold/failure_labels holds no day yet: materialise the features and labels first")
    last = last_day or labelled_days[-1]
    first = first_day or max(labelled_days[0], last - dt.timedelta(days=days - 1))
    if first > last:
        raise ValueError(f"the training window is empty ({first} > {last})")
    x = _read(features, first, last, ["machine_id", "ts", "warm", *FEATURE_NAMES])
    y = _read(labels, first, last, ["machine_id", "ts", *LABEL_COLUMNS])
    joined = x.join(y, keys=["machine_id", "ts"], join_type="inner", use_threads=False)
    warm = joined["warm"].to_numpy(zero_copy_only=False)
    joined = joined.filter(pa.array(warm)).drop_columns(["warm"])
    frame = joined.drop_columns(["ts", "failure_ts"]).to_pandas()
    frame.insert(1, "ts", joined["ts"].cast(TIMESTAMP_MS_UTC).cast(pa.int64()).to_numpy(zero_copy_only=False))
    failure_ts = joined["failure_ts"].cast(TIMESTAMP_MS_UTC).cast(pa.int64()).fill_null(-1)
    frame["failure_ts"] = failure_ts.to_numpy(zero_copy_only=False).astype(np.int64)
    frame["label"] = frame["label"].astype(np.int8)
    # A join's row order is not guaranteed: sort, so the same data always trains the same model.
    frame = frame.sort_values(["ts", "machine_id"], kind="stable", ignore_index=True)
    return TrainingWindow(
        frame=frame,
        first_day=first,
        last_day=last,
        versions={
            table_key("gold", FEATURES_TABLE): features.version(),
            table_key("gold", LABELS_TABLE): labels.version(),
            **_ground_truth_version(lake),
        },
        uris={
            table_key("gold", FEATURES_TABLE): lake.table_uri("gold", FEATURES_TABLE),
            table_key("gold", LABELS_TABLE): lake.table_uri("gold", LABELS_TABLE),
        },
        cold_samples=int((~warm).sum()),
    )


def _ground_truth_version(lake: Lake) -> dict[str, int]:
    """For the record: the ground truth the labels were computed from is at most this version."""
    table = lake.table(GROUND_TRUTH_TIER, GROUND_TRUTH_NAME)
    return {} if table is None else {table_key(GROUND_TRUTH_TIER, GROUND_TRUTH_NAME): table.version()}


def read_feature_day(lake: Lake, day: dt.date, *, version: int | None = None) -> pd.DataFrame:
    """One day of ``gold/failure_features`` as a frame (``ts`` epoch ms), sorted by (machine_id, ts)."""
    rows = _read(_open(lake, FEATURES_TABLE, version), day, day, ["machine_id", "ts", "warm", *FEATURE_NAMES])
    frame = rows.drop_columns(["ts"]).to_pandas()
    frame.insert(1, "ts", rows["ts"].cast(TIMESTAMP_MS_UTC).cast(pa.int64()).to_numpy(zero_copy_only=False))
    return frame.sort_values(["machine_id", "ts"], kind="stable", ignore_index=True)


def read_feature_keys(lake: Lake, day: dt.date) -> pa.Table:
    """``machine_id`` and ``ts`` of one day of ``gold/failure_features`` (what the labels label)."""
    return _read(_open(lake, FEATURES_TABLE, None), day, day, ["machine_id", "ts"])


def read_label_day(lake: Lake, day: dt.date) -> pd.DataFrame:
    """One day of ``gold/failure_labels`` (``machine_id``, ``ts`` epoch ms, ``label``); empty if none."""
    table = lake.table("gold", LABELS_TABLE)
    if table is None:
        return pd.DataFrame({"machine_id": [], "ts": [], "label": []})
    rows = _read(table, day, day, ["machine_id", "ts", "label"])
    frame = rows.drop_columns(["ts"]).to_pandas()
    frame.insert(1, "ts", rows["ts"].cast(TIMESTAMP_MS_UTC).cast(pa.int64()).to_numpy(zero_copy_only=False))
    return frame
