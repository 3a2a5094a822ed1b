"""The stream's failure-scoring state (streaming/failure_scoring.py) on simulated data, without services.

Real parts: the simulator's physics, the shared feature definition, real (small) scikit-learn
models.  What the inference branch must guarantee:

* the samples it decides are the lake's sample grid (running machines, every
  ``sample_every_min``), each exactly once, also when the model is swapped mid-stream and
  when its state is pickled and restored (a Bytewax snapshot);
* its feature vectors equal ``offline_features`` (what ``gold/failure_features`` holds) for
  the same machine and time, and its probabilities equal the batch path's;
* alerts raise and clear alternately per machine, with ids that a replay reproduces.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from plantstream.contract.columns import TIMESTAMP_MS_UTC
from plantstream.contract.events import AlertAction, AlertType
from plantstream.models.features import FEATURE_NAMES, MINUTE_MS, feature_matrix, history_from_events, offline_features
from plantstream.models.labels import label_samples, sample_grid
from plantstream.models.serving import ServingModel
from plantstream.models.sim_dataset import SimDataset, simulate_dataset
from plantstream.streaming.failure_scoring import PartitionScoring, ScoringConfig
from plantstream.streaming.windowing import ClosedWindows

EVERY_MIN = 2
LATENESS_MS = 30_000


@pytest.fixture(scope="module")
def dataset() -> SimDataset:
    return simulate_dataset(machines=4, days=0.25, seed=7, sample_period_s=5.0)


def _events_table(dataset: SimDataset) -> pa.Table:
    ev = dataset.machine_events.reset_index(drop=True)
    seq = ev.groupby("machine_id").cumcount().to_numpy(dtype=np.int64)
    return pa.table(
        {
            "machine_id": pa.array(ev["machine_id"].astype(str)),
            "seq": pa.array(seq),
            "event_ts": pa.array(ev["ts"].to_numpy(dtype=np.int64)).cast(TIMESTAMP_MS_UTC),
            "event_type": pa.array(ev["event_type"].astype(str)),
            "state": pa.array(ev["state"].astype(str)),
            "reason": pa.array(ev["reason"].astype(str)),
            "site": pa.array(["plant-1"] * len(ev)),
            "area": pa.array(["area-1"] * len(ev)),
            "line": pa.array(["line-1"] * len(ev)),
        }
    )


def _model(dataset: SimDataset, version: str, iterations: int) -> ServingModel:
    """A small real model trained on the dataset's labelled offline features."""
    history = history_from_events(dataset.machine_events)
    machines = dataset.machines["machine_id"].to_numpy()
    samples = sample_grid(dataset.machine_events, machines, dataset.start_ms, dataset.end_ms, every_min=EVERY_MIN)
    frame = label_samples(offline_features(dataset.minute_aggregates, samples, history), dataset.ground_truth)
    booster = HistGradientBoostingClassifier(max_iter=iterations, random_state=0)
    booster.fit(feature_matrix(frame), frame["label"].to_numpy())
    return ServingModel("test-model", version, booster, 0.5, 10, tuple(FEATURE_NAMES), "")


def _minutes(dataset: SimDataset) -> list[ClosedWindows]:
    aggs = dataset.minute_aggregates
    starts = aggs["window_start"].cast(pa.int64()).to_numpy()
    out = []
    for start in np.unique(starts):
        rows = aggs.filter(pa.array(starts == start))
        out.append(ClosedWindows("t", 0, 60, int(start), int(pa.compute.sum(rows["count"]).as_py()), True, rows))
    return out


def _feed(dataset, models, *, swap_at_ms: int, snapshot_every: int = 0, chunk: int = 1):
    """Windows in time order, each after the events up to its closing watermark, ``chunk`` windows per batch
    (a backlog); the model swaps at ``swap_at_ms``."""
    events = _events_table(dataset)
    event_ms = events["event_ts"].cast(pa.int64()).to_numpy()
    order = np.argsort(event_ms, kind="stable")
    events, event_ms = events.take(pa.array(order)), event_ms[order]
    state = PartitionScoring(ScoringConfig(every_min=EVERY_MIN, state_wait_ms=0))
    done = 0
    decided, scores, alerts = [], [], []
    minutes = _minutes(dataset)
    for i in range(0, len(minutes), chunk):
        batch_values = []
        for closed in minutes[i : i + chunk]:
            watermark = closed.window_start_ms + 60_000 + LATENESS_MS
            upto = int(np.searchsorted(event_ms, watermark, side="left"))
            batch_values += [events.slice(done, upto - done), closed]
            done = upto
        due = state.process(batch_values)
        decided.extend(due)
        model = models[0] if closed.window_start_ms < swap_at_ms else models[1]
        batch = state.score(model, due, now_ms=0)
        scores.extend(batch.scores)
        alerts.extend(batch.alerts)
        if snapshot_every and (i // chunk) % snapshot_every == 0:
            state = pickle.loads(pickle.dumps(state))  # a Bytewax snapshot, restored
    return state, decided, scores, alerts


def test_the_stream_scores_the_lakes_samples_once_across_a_swap_with_the_offline_features(dataset) -> None:
    models = (_model(dataset, "1", 10), _model(dataset, "2", 30))
    swap_at = dataset.start_ms + 3 * 3600_000
    state, decided, scores, alerts = _feed(dataset, models, swap_at_ms=swap_at, snapshot_every=7)

    # The decided samples are the lake's sample grid up to what has closed, each once.
    keys = [(s.machine_id, s.ts) for s in scores]
    assert len(keys) == len(set(keys)) == len(decided) > 300
    machines = dataset.machines["machine_id"].to_numpy()
    grid = sample_grid(dataset.machine_events, machines, dataset.start_ms, state.windows_until, every_min=EVERY_MIN)
    assert set(keys) == set(zip(grid["machine_id"], grid["ts"].astype(int), strict=True))

    # Feature parity with the offline definition (gold/failure_features), same machine and time.
    history = history_from_events(dataset.machine_events)
    samples = pd.DataFrame({"machine_id": [k[0] for k in keys], "ts": np.array([k[1] for k in keys], dtype=np.int64)})
    offline = offline_features(dataset.minute_aggregates, samples, history)
    online = np.array([[vector[name] for name in FEATURE_NAMES] for _, _, vector in decided])
    np.testing.assert_allclose(online, offline[list(FEATURE_NAMES)].to_numpy(), rtol=1e-9, atol=1e-9)

    # Every sample by exactly one version: the old one before the swap, the new one after; the batch path agrees.
    versions = np.array([s.model_version for s in scores])
    closed_at = np.array([s.ts for s in scores])  # a sample is decided when the minute ending at it closes
    assert set(versions[closed_at < swap_at]) == {"1"} and set(versions[closed_at > swap_at + MINUTE_MS]) == {"2"}
    for version, model in (("1", models[0]), ("2", models[1])):
        mine = versions == version
        batch = model.predict_proba(offline.loc[mine])
        np.testing.assert_allclose([s.probability for s, m in zip(scores, mine, strict=True) if m], batch, atol=1e-12)
    assert state.unscored == state.unanswerable == 0

    # MaintenanceRequired: raise and clear alternate per machine and share an id; a replay gives the same ids.
    assert alerts and {a.alert_type for a in alerts} == {AlertType.MAINTENANCE_REQUIRED}
    for machine in machines:
        mine = [a for a in alerts if a.machine_id == machine]
        actions = [a.action for a in mine]
        assert actions == [AlertAction.RAISE, AlertAction.CLEAR] * (len(actions) // 2) + [AlertAction.RAISE] * (
            len(actions) % 2
        )
        for raised, cleared in zip(mine[::2], mine[1::2], strict=False):
            assert raised.alert_id == cleared.alert_id and raised.raised_at == cleared.raised_at
        assert all(0.0 <= float(a.attributes["failure_probability"]) <= 1.0 for a in mine)
        seqs = [a.seq for a in mine]
        assert seqs == sorted(set(seqs))
    _, _, again_scores, again_alerts = _feed(dataset, models, swap_at_ms=swap_at)
    assert [(a.alert_id, a.action, a.seq) for a in again_alerts] == [(a.alert_id, a.action, a.seq) for a in alerts]
    assert [(s.machine_id, s.ts, s.probability) for s in again_scores] == [
        (s.machine_id, s.ts, s.probability) for s in scores
    ]


def test_a_backlog_of_hours_in_one_batch_decides_the_same_samples_with_the_same_features(dataset) -> None:
    models = (_model(dataset, "1", 10), _model(dataset, "1", 10))
    _, decided, scores, _ = _feed(dataset, models, swap_at_ms=dataset.end_ms)
    state, backlog, backlog_scores, _ = _feed(dataset, models, swap_at_ms=dataset.end_ms, chunk=120)
    assert state.unanswerable == 0
    assert [(m, t) for m, t, _ in backlog] == [(m, t) for m, t, _ in decided]
    assert [s.probability for s in backlog_scores] == [s.probability for s in scores]


def test_without_a_model_samples_are_decided_and_counted_not_published(dataset) -> None:
    state, decided, scores, alerts = _feed(dataset, (None, None), swap_at_ms=dataset.start_ms)
    assert decided and not scores and not alerts
    assert state.unscored == len(decided)
