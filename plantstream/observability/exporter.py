"""The platform exporter: consumer lag that is right even when the flow is down, disk
usage of the state directory and whether each platform service is up.

``python -m plantstream.observability.exporter`` (the supervisor starts it as service
``exporter`` with ``platform up --with-monitoring``) serves on
``metrics_port(settings, "exporter")``.  It is the supervisor's view of the platform:
the services cannot report their own death, and a stopped flow cannot report its lag.

Consumer lag, per flow, topic and partition::

    plantstream_stream_committed_lag_messages = log end - committed offset

* *committed offset*: the next offset a restart of the flow would read, from the flow's
  own Bytewax recovery store (:mod:`.recovery_positions`); a partition the store has no
  offset for would be read from the beginning (0).  Which topic a source step reads is
  :func:`catalogue_source_topic` (the plant flow's naming; pluggable);
* *log end*: the high watermark carried by fetch responses (:mod:`.log_end`), never the
  ListOffsets answer, which the local broker gets wrong.

The work happens on one background thread, once per cycle
(``metrics.scrape_interval_seconds``): the tracker's consumer fetches for most of the
cycle, then positions are read, services probed and (every :data:`DISK_EVERY_S`) the
state directory measured.  A scrape only copies the last results, so it stays cheap
whatever the platform's size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from plantstream.observability.log_end import LogEndTracker
from plantstream.observability.recovery_positions import find_recovery_stores, read_positions
from plantstream.settings import Settings

log = logging.getLogger(__name__)

#: Walking the state directory costs ~1 s per 100k files: not every cycle.
DISK_EVERY_S = 30.0
#: Partition counts can grow on a real Kafka (``create_partitions``): looked up again this often.
PARTITIONS_EVERY_S = 60.0


@dataclass
class _Results:
    """What the last cycle found (replaced whole, so a scrape never sees half a cycle)."""

    log_end: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (flow, topic, partition)
    lag: dict[tuple[str, str, int], int] = field(default_factory=dict)
    resume_epoch: dict[tuple[str, str], int] = field(default_factory=dict)
    service_up: dict[str, int] = field(default_factory=dict)
    state_bytes: dict[str, int] = field(default_factory=dict)
    fs_size: int | None = None
    fs_avail: int | None = None
    finished_at: float | None = None  # wall clock


class _ResultsCollector(Collector):
    def __init__(self, exporter: PlatformExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterator[GaugeMetricFamily]:
        r = self._exporter.results
        end = GaugeMetricFamily(
            "plantstream_kafka_log_end_offset",
            "High watermark of the partition from the latest fetch response (not ListOffsets).",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(r.log_end.items()):
            end.add_metric([topic, str(partition)], value)
        yield end
        committed = GaugeMetricFamily(
            "plantstream_stream_committed_offset",
            "Next offset a restart of the flow would read (its Bytewax recovery store).",
            labels=["flow", "topic", "partition"],
        )
        for (flow, topic, partition), value in sorted(r.committed.items()):
            committed.add_metric([flow, topic, str(partition)], value)
        yield committed
        lag = GaugeMetricFamily(
            "plantstream_stream_committed_lag_messages",
            "Log end minus committed offset: what the flow has not durably processed (also while it is down).",
            labels=["flow", "topic", "partition"],
        )
        for (flow, topic, partition), value in sorted(r.lag.items()):
            lag.add_metric([flow, topic, str(partition)], value)
        yield lag
        epoch = GaugeMetricFamily(
            "plantstream_stream_recovery_resume_epoch",
            "Epoch a restart of the flow would resume from; grows once per snapshot interval while it runs.",
            labels=["flow", "topic"],
        )
        for (flow, topic), value in sorted(r.resume_epoch.items()):
            epoch.add_metric([flow, topic], value)
        yield epoch
        up = GaugeMetricFamily(
            "plantstream_platform_service_up",
            "1 if the platform service runs (pid file and process) and answers its health check.",
            labels=["service"],
        )
        for service, value in sorted(r.service_up.items()):
            up.add_metric([service], value)
        yield up
        state = GaugeMetricFamily(
            "plantstream_platform_state_bytes",
            "Bytes under each top-level directory of the state directory (the local broker's data is in seaweedfs).",
            labels=["dir"],
        )
        for name, value in sorted(r.state_bytes.items()):
            state.add_metric([name], value)
        yield state
        if r.fs_size is not None and r.fs_avail is not None:
            yield GaugeMetricFamily(
                "plantstream_platform_filesystem_size_bytes",
                "Size of the filesystem that holds the state directory.",
                value=r.fs_size,
            )
            yield GaugeMetricFamily(
                "plantstream_platform_filesystem_avail_bytes",
                "Bytes available to unprivileged users on the filesystem of the state directory.",
                value=r.fs_avail,
            )
        if r.finished_at is not None:
            yield GaugeMetricFamily(
                "plantstream_exporter_last_cycle_timestamp_seconds",
                "When the exporter last finished a cycle (its results are that old).",
                value=r.finished_at,
            )


def partition_of_key(key: str) -> int | None:
    """The Kafka partition of a Bytewax part key (``partition_key(p)``: ``"NNNN.salt"``), else None.

    Checked against :func:`plantstream.streaming.worker_routing.partition_key` itself, so
    a change of the key format yields None (nothing exported) rather than wrong numbers.
    """
    from plantstream.streaming.worker_routing import partition_key

    head = key.split(".", 1)[0]
    if not head.isdigit():
        return None
    partition = int(head)
    return partition if partition_key(partition) == key else None


def catalogue_source_topic(namespace: str, step_id: str) -> str | None:
    """The topic a source step of the plant flow reads, or None if ``step_id`` is no source.

    The plant flow (``streaming/plant_flow.py``) names the input of stream ``S``
    ``<flow>.S_in`` and reads ``topic_prefix + <S's catalogue topic>``; the runner names
    the recovery namespace after the prefix (``catalogue`` for none).
    """
    from plantstream.contract.streams import stream_named

    _flow, _, step = step_id.partition(".")
    if not step.endswith("_in"):
        return None
    try:
        spec = stream_named(step.removesuffix("_in"))
    except KeyError:
        return None
    prefix = "" if namespace == "catalogue" else namespace
    return prefix + spec.topic.name


def directory_bytes(path: Path) -> int:
    """Apparent size of the files under ``path`` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class PlatformExporter:
    """Computes the platform's metrics in a background thread; :attr:`registry` serves them."""

    def __init__(
        self,
        settings: Settings,
        *,
        interval_s: float | None = None,
        source_topic: Callable[[str, str], str | None] = catalogue_source_topic,
    ) -> None:
        self.settings = settings
        self.source_topic = source_topic
        self.interval_s = interval_s or settings.metrics.scrape_interval_seconds
        self.results = _Results()
        self.registry = CollectorRegistry()
        self.registry.register(_ResultsCollector(self))
        # Its own CPU and memory (process_cpu_seconds_total, ...): what watching costs.
        ProcessCollector(registry=self.registry)
        self._cycle_duration = Histogram(
            "plantstream_exporter_cycle_duration_seconds",
            "Work of one exporter cycle by part, not counting the time its consumer waits for fetches.",
            ["part"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self._tail_messages = Counter(
            "plantstream_exporter_tail_messages",
            "Messages the log-end consumer received (and dropped) to learn the high watermarks.",
            registry=self.registry,
        )
        self._errors = Counter(
            "plantstream_exporter_errors", "Exporter cycle parts that failed.", ["part"], registry=self.registry
        )
        for part in ("positions", "services", "disk", "kafka"):
            self._cycle_duration.labels(part)
            self._errors.labels(part)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_disk = 0.0
        self._last_error: str | None = None
        self._topics: set[str] = set()
        self._partitions: dict[str, list[int]] = {}
        self._partitions_at = 0.0
        self._epochs: dict[tuple[str, str], int] = {}

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> PlatformExporter:
        self._thread = threading.Thread(target=self._run, name="platform-exporter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10 + self.interval_s)

    def health(self) -> dict[str, Any]:
        """Healthy while cycles keep finishing (a stuck cycle would freeze every value)."""
        finished = self.results.finished_at
        age = None if finished is None else time.time() - finished
        ok = age is not None and age < 3 * self.interval_s + 10
        return {"ok": ok, "component": "exporter", "last_cycle_age_s": age, "last_error": self._last_error}

    def _run(self) -> None:
        tracker = LogEndTracker(self.settings)
        try:
            while not self._stop.is_set():
                self.cycle(tracker)
        finally:
            tracker.close()

    # -- one cycle --------------------------------------------------------------------

    def cycle(self, tracker: LogEndTracker) -> None:
        """Fetch for about one interval, then compute and publish everything once."""
        with self._part("positions"):
            sources = self._sources()
        with self._part("kafka"):
            topics = {topic for _flow, _step, topic, _offsets in sources}
            stale = time.monotonic() - self._partitions_at > PARTITIONS_EVERY_S
            if topics != self._topics or stale or not all(self._partitions.get(t) for t in topics):
                self._partitions = {t: tracker.partitions(t) for t in topics}
                tracker.watch(topics)
                self._topics = topics
                self._partitions_at = time.monotonic()
        before = tracker.messages_read
        # The first cycle is short: health (and so ``platform up``) waits for it.
        tracker.poll(self.interval_s if self.results.finished_at is not None else min(self.interval_s, 1.0))
        self._tail_messages.inc(tracker.messages_read - before)
        results = _Results(
            log_end=tracker.ends(),
            state_bytes=self.results.state_bytes,
            fs_size=self.results.fs_size,
            fs_avail=self.results.fs_avail,
        )
        with self._part("positions"):
            self._lag(self._sources(), results)  # read again: as close to the log ends as possible
        with self._part("services"):
            results.service_up = self._services()
        if time.monotonic() - self._last_disk >= DISK_EVERY_S:
            with self._part("disk"):
                self._disk(results)
                self._last_disk = time.monotonic()
        results.finished_at = time.time()
        self.results = results

    def _sources(self) -> list[tuple[str, str, str, dict[int, int | None]]]:
        """(flow, source step, topic, partition -> next offset) of every flow's recovery store."""
        out = []
        self._epochs: dict[tuple[str, str], int] = {}
        for store in find_recovery_stores(self.settings.recovery_dir):
            positions = read_positions(store, partition_of_key)
            for step, offsets in positions.offsets.items():
                topic = self.source_topic(store.namespace, step)
                if topic is None:
                    continue
                out.append((store.flow, step, topic, offsets))
                if positions.resume_epoch is not None:
                    self._epochs[(store.flow, topic)] = positions.resume_epoch
        return out

    def _lag(self, sources: list[tuple[str, str, str, dict[int, int | None]]], results: _Results) -> None:
        results.resume_epoch = dict(self._epochs)
        for flow, _step, topic, offsets in sources:
            for partition in self._partitions.get(topic, sorted(offsets)):
                committed = offsets.get(partition) or 0  # no position yet: a restart reads from the start
                key = (flow, topic, partition)
                results.committed[key] = committed
                end = results.log_end.get((topic, partition))
                if end is not None:
                    results.lag[key] = max(0, end - committed)

    @contextlib.contextmanager
    def _part(self, part: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:  # one failing part must not stop the others (logged, counted)
            self._errors.labels(part).inc()
            self._last_error = f"{part}: {type(exc).__name__}: {exc}"
            log.warning("exporter %s failed: %s", part, exc)
        finally:
            self._cycle_duration.labels(part).observe(time.perf_counter() - started)

    def _services(self) -> dict[str, int]:
        """Services this state dir runs (a pid file exists): 1 if alive and healthy.

        Only the local profile has a supervised platform; production services are
        watched by their own exporters.
        """
        from plantstream.services.spec import pid_path
        from plantstream.services.supervisor import ALL_SERVICES, LocalPlatform
        from plantstream.settings import Profile

        if self.settings.profile is not Profile.LOCAL:
            return {}
        platform = LocalPlatform(self.settings)
        out = {}
        for name in ALL_SERVICES:
            if not pid_path(self.settings, name).exists():
                continue
            record = platform.record(name)
            alive = record is not None and record.alive()
            out[name] = int(alive and _probe(platform, name))
        return out

    def _disk(self, results: _Results) -> None:
        state = self.settings.state_dir
        results.state_bytes = {
            entry.name: directory_bytes(Path(entry.path)) for entry in os.scandir(state) if entry.is_dir()
        }
        fs = os.statvfs(state)
        results.fs_size = fs.f_blocks * fs.f_frsize
        results.fs_avail = fs.f_bavail * fs.f_frsize


def _probe(platform: Any, name: str) -> bool:
    try:
        return bool(platform.spec(name).healthy())
    except Exception:
        return False


def main() -> int:
    """Serve until SIGTERM/SIGINT."""
    from plantstream.observability.server import serve_component
    from plantstream.settings import SettingsError, load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    exporter = PlatformExporter(settings)
    server = serve_component(settings, "exporter", exporter.registry, health=exporter.health)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    exporter.start()
    stop.wait()
    exporter.stop()
    server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
