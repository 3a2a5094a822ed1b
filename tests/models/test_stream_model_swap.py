"""Train -> promote -> the running stream scores with the new version within 30 s; rollback the same way.

Real parts only: the session platform (Tansu, chDB hot store, SeaweedFS) and its MLflow
server; ``plantstream stream`` as a user runs it (a subprocess); the lifecycle's own
:func:`~plantstream.models.lifecycle.train_register_gate` (train, register, gate, promote and
announce) on a simulated plant's labelled features; telemetry produced while the stream runs.
What is checked on ``factory.models.scores``: every sample of the produced period is scored
exactly once (none twice, none skipped, also across the two swaps), the versions follow the
alias (v1, then v2, then v1 again), and each swap shows within 30 s of its announcement.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from plantstream.connect.kafka import consumer, producer
from plantstream.contract import Codec, MachineEvent, Telemetry
from plantstream.contract.events import MachineEventType
from plantstream.contract.promotions import FailureScore, decode_score
from plantstream.contract.topics import FAILURE_SCORES, MACHINE_EVENTS, TELEMETRY, message_key, topic_name
from plantstream.models.evaluation import training_frame
from plantstream.models.features import MINUTE_MS
from plantstream.models.lifecycle import train_register_gate
from plantstream.models.registry import read_announcements, rollback
from plantstream.models.sim_dataset import simulate_dataset
from plantstream.models.training import TrainingConfig
from plantstream.observability.ports import PORT_SPAN, metrics_port
from plantstream.services.isolated import pick_free_port_block
from plantstream.settings import Settings, child_env
from plantstream.streaming.runner import prepare_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SWAP_WITHIN_S = 30.0
MACHINES = ("cnc-mill-001", "cnc-mill-002")
SIGNALS = {"torque": 40.0, "rotational_speed": 1500.0, "air_temperature": 300.0, "process_temperature": 310.0,
           "tool_wear": 50.0, "vibration": 2.0, "power": 6.0}  # fmt: skip
READING_EVERY_MS = 10_000
STEP_MS = 2 * MINUTE_MS  # the sample grid (models.sample_every_min)


class LivePlant:
    """Two running machines' telemetry, produced on a background thread: 2 minutes of event time per 0.5 s."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        now = int(time.time() * 1000)
        self.start = (now - 6 * 3_600_000) // STEP_MS * STEP_MS  # recent (hot-store TTL), well in the past
        self.produced_until = self.start
        self._seq = dict.fromkeys(MACHINES, 0)
        self._stop = threading.Event()
        self._producer = producer(settings)
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _envelope(self, machine: str, ts: int) -> dict:
        self._seq[machine] += 1
        return {"site": "plant-1", "area": "machining", "line": "line-1", "machine_id": machine,
                "seq": self._seq[machine], "source_ts": ts, "read_ts": ts + 3, "ingest_ts": ts + 7}  # fmt: skip

    def _send(self, topic, codec, event) -> None:
        self._producer.produce(
            topic_name(self.settings, topic),
            value=codec.encode(event),
            key=message_key(event.machine_id),
            on_delivery=lambda err, _m: self.errors.append(str(err)) if err else None,
        )

    def start_running(self) -> None:
        codec = Codec(MachineEvent)
        for machine in MACHINES:
            self._send(
                MACHINE_EVENTS,
                codec,
                MachineEvent(
                    **self._envelope(machine, self.start),
                    event_type=MachineEventType.MACHINE_STARTED,
                    state="running",
                ),
            )
        self._thread.start()

    def _run(self) -> None:
        codec = Codec(Telemetry)
        k = 0
        while not self._stop.is_set():
            for _ in range(STEP_MS // READING_EVERY_MS):
                ts = self.produced_until
                for machine in MACHINES:
                    for i, (name, base) in enumerate(SIGNALS.items()):
                        value = base * (1 + 0.01 * ((k * 7 + i) % 11 - 5))
                        self._send(TELEMETRY, codec, Telemetry(**self._envelope(machine, ts), signal=name, value=value))
                k += 1
                self.produced_until += READING_EVERY_MS
            self._producer.flush(30)
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        assert self._producer.flush(30) == 0 and not self.errors, self.errors


class ScoreReader:
    """Every record of the scores topic so far (no consumer group), in arrival order."""

    def __init__(self, settings: Settings) -> None:
        name = topic_name(settings, FAILURE_SCORES)
        self._client = consumer(settings, **{"group.id": f"scores-{uuid.uuid4().hex[:6]}"})
        partitions = self._client.list_topics(name, timeout=30).topics[name].partitions
        self._client.assign([TopicPartition(name, p, 0) for p in partitions])
        self.scores: list[FailureScore] = []

    def poll(self) -> list[FailureScore]:
        for message in self._client.consume(1000, timeout=0.2):
            if message.error() is None:
                self.scores.append(decode_score(message.value()))
        return self.scores

    def first(self, version: str, after_ms: int) -> FailureScore | None:
        found = [s for s in self.poll() if s.model_version == version and s.read_ts >= after_ms]
        return found[0] if found else None


def _train(settings: Settings, frame) -> str:
    outcome = train_register_gate(
        settings, frame, TrainingConfig(max_iter=60, importance_repeats=1), data={"window": "simulated"}, versions={}
    )
    assert outcome.promoted, outcome.decision.reason
    return outcome.candidate.version


@pytest.fixture
def swap_settings(mlflow_settings: Settings, stream_settings: Callable[..., Settings]) -> Settings:
    base = stream_settings(snapshot_interval_seconds=5.0)
    name = f"swap-{uuid.uuid4().hex[:10]}"
    return base.model_copy(
        update={
            "mlflow": mlflow_settings.mlflow,
            # Margin 0: retraining on the same data (an identical model) wins, so v2 is promoted.
            "models": base.models.model_copy(
                update={"registered_model": name, "experiment": name, "gate_margin": 0.0, "champion_poll_seconds": 60}
            ),
            "alerts": base.alerts.model_copy(update={"machine_state_wait_seconds": 30.0}),
            "metrics": base.metrics.model_copy(update={"enabled": True, "base_port": pick_free_port_block(PORT_SPAN)}),
        }
    )


def _inference_metrics(settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The stream process's inference samples from its /metrics."""
    url = f"http://127.0.0.1:{metrics_port(settings, 'stream', 0)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("plantstream_inference_") and not s.name.endswith("_created")
    }


def test_the_running_stream_swaps_to_a_promoted_model_and_back_within_30_s(swap_settings: Settings) -> None:
    settings = swap_settings
    frame = training_frame(simulate_dataset(machines=12, days=3, seed=5, sample_period_s=5.0))
    v1 = _train(settings, frame)
    prepare_flow(settings)
    plant = LivePlant(settings)
    stream = subprocess.Popen(
        [str(Path(sys.executable).parent / "plantstream"), "stream"],
        env=child_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        plant.start_running()
        reader = ScoreReader(settings)
        wait_for(lambda: reader.first(v1, 0), 120, f"the stream scoring with v{v1}", poll_s=0.2)

        v2 = _train(settings, frame)  # promoted and announced
        promoted_ms = read_announcements(settings)[-1].ts
        first_v2 = wait_for(lambda: reader.first(v2, 0), 60, f"a score by v{v2}", poll_s=0.2)
        assert first_v2.read_ts - promoted_ms <= SWAP_WITHIN_S * 1000

        back = rollback(settings, reason="test")
        assert back.version == v1
        first_back = wait_for(lambda: reader.first(v1, back.ts), 60, f"a score by v{v1} again", poll_s=0.2)
        assert first_back.read_ts - back.ts <= SWAP_WITHIN_S * 1000
        print(f"swap to v{v2}: {first_v2.read_ts - promoted_ms} ms, back to v{v1}: {first_back.read_ts - back.ts} ms")
        wait_for(lambda: len([s for s in reader.poll() if s.read_ts > first_back.read_ts]) >= 10, 60, "more scores")
        # /metrics says which version scores now (only that one) and counts what it published.
        model = settings.models.registered_model
        read = len(reader.poll())  # before the scrape: the counter counts at least what was read
        served = _inference_metrics(settings)
        versions = [dict(k)["version"] for (name, k), v in served.items()
                    if name == "plantstream_inference_model_version_info" and v == 1]  # fmt: skip
        assert versions == [v1], served
        published = served[("plantstream_inference_scores_total", (("flow", "plant"), ("model", model)))]
        assert published >= read > 20
    finally:
        plant.stop()
        stream.send_signal(signal.SIGINT)
        try:
            _, stderr = stream.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            stream.kill()
            _, stderr = stream.communicate()
    assert stream.returncode in (0, 130), stderr[-3000:]

    scores = reader.poll()
    for machine in MACHINES:
        mine = [s for s in scores if s.machine_id == machine]
        times = [s.ts for s in mine]
        # Each sample once (none twice), and consecutive: none skipped, across both swaps.
        assert len(times) == len(set(times)) > 20
        assert sorted(times) == list(range(min(times), max(times) + 1, STEP_MS))
        # Scored in time order, by v1, then v2, then v1 again: the alias's moves, nothing in between.
        ordered = [s.model_version for s in sorted(mine, key=lambda s: s.ts)]
        runs = [v for i, v in enumerate(ordered) if i == 0 or v != ordered[i - 1]]
        assert runs == [v1, v2, v1], runs
