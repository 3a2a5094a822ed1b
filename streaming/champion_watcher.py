"""Which failure model the stream scores with: the registry's ``champion``, swapped without a restart.

One :class:`ChampionWatcher` per process and registered model (:func:`champion_watcher`)
runs a daemon thread that

* reads ``factory.models.promotions`` from its end (no consumer group: nothing is
  committed, every process sees every announcement) and treats each announcement as "look
  now";
* otherwise polls the alias every ``PLANTSTREAM_MODELS__CHAMPION_POLL_SECONDS`` (about 6 ms
  a call locally), so a missed announcement, or an alias moved by hand in the MLflow UI,
  is picked up too;

and, when the alias points somewhere new, loads that version
(:func:`plantstream.models.serving.load_version`) *before* publishing it: :meth:`current`
always returns a complete model, the old one until the new one is ready.  The registry is
the source of truth: a rollback is just the alias moving back, and is handled the same way.

The scoring step reads :meth:`current` once per batch, so a swap falls between two
batches: every sample is scored exactly once, by one version, and says which.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from plantstream.models.serving import ServingModel, champion_version, load_version
from plantstream.settings import Settings
from plantstream.streaming import metrics

log = logging.getLogger(__name__)

#: Kafka poll timeout of the announcement reader: how long an announcement can wait for it.
ANNOUNCEMENT_POLL_S = 0.5


class ChampionWatcher:
    """Keeps the champion of ``settings.models.registered_model`` loaded (see the module docstring)."""

    def __init__(self, settings: Settings, *, loader: Callable[[Settings, str], ServingModel] = load_version) -> None:
        self._settings = settings
        self._loader = loader
        self._model: ServingModel | None = None
        self._lock = threading.Lock()
        self._first_look = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.swaps: list[tuple[float, str | None]] = []  # (wall time, version) of every change
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._thread.start()

    # -- what the scoring step calls ----------------------------------------------------

    def current(self, *, wait_s: float = 0.0) -> ServingModel | None:
        """The loaded champion (``None``: none yet).  ``wait_s``: wait for the first look at the registry."""
        if wait_s:
            self._first_look.wait(wait_s)
        with self._lock:
            return self._model

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    # -- the thread -----------------------------------------------------------------------

    def _refresh(self) -> None:
        version = champion_version(self._settings)
        loaded = self._model.version if self._model is not None else None
        if version == loaded:
            return
        model = self._loader(self._settings, version) if version is not None else None
        with self._lock:
            self._model = model
        self.swaps.append((time.time(), version))
        metrics.set_model_version(self._settings.models.registered_model, version, loaded)
        log.warning(
            "failure model swapped",
            extra={"event": "champion_swap", "model": self._settings.models.registered_model, "version": version,
                   "previous_version": loaded},
        )  # fmt: skip

    def _look(self) -> None:
        try:
            self._refresh()
            self.last_error = None
        except Exception as exc:  # the registry is away: keep scoring with what is loaded, say so, retry
            if self.last_error != str(exc):
                log.warning("cannot refresh the failure model: %s", exc)
            self.last_error = str(exc)
        finally:
            self._first_look.set()

    def _announcements(self) -> None:
        """Wake the poller for every announcement of this model (from the topic's end on)."""
        from confluent_kafka import OFFSET_END, TopicPartition

        from plantstream.connect.kafka import consumer
        from plantstream.connect.topics import ensure_topics
        from plantstream.contract.promotions import decode_promotion
        from plantstream.contract.topics import MODEL_PROMOTIONS, topic_name

        settings = self._settings
        name = topic_name(settings, MODEL_PROMOTIONS)
        ensure_topics(settings, (MODEL_PROMOTIONS,))
        client = consumer(settings, **{"group.id": "plantstream-champion-watcher", "enable.auto.commit": False})
        try:
            metadata = client.list_topics(name, timeout=30).topics[name]
            client.assign([TopicPartition(name, p, OFFSET_END) for p in metadata.partitions])
            while not self._stop.is_set():
                message = client.poll(ANNOUNCEMENT_POLL_S)
                if message is None or message.error() is not None:
                    continue
                try:
                    promotion = decode_promotion(message.value())
                except Exception:  # not an announcement: the poll still covers it
                    continue
                if promotion.model == settings.models.registered_model:
                    self._wake.set()
        finally:
            client.close()

    def _run(self) -> None:
        reader = threading.Thread(target=self._read_announcements, name="champion-announcements", daemon=True)
        reader.start()
        poll_s = self._settings.models.champion_poll_seconds
        while not self._stop.is_set():
            self._look()
            self._wake.wait(poll_s)
            self._wake.clear()

    def _read_announcements(self) -> None:
        while not self._stop.is_set():
            try:
                self._announcements()
            except Exception as exc:  # the broker is away: the poll goes on; try again
                log.warning("cannot read model announcements: %s", exc)
                self._stop.wait(5.0)


_WATCHERS: dict[tuple[str, str, str], ChampionWatcher] = {}
_WATCHERS_LOCK = threading.Lock()


def champion_watcher(settings: Settings) -> ChampionWatcher:
    """The process's watcher of ``settings``' registered model (started on first use)."""
    key = (settings.mlflow.tracking_uri, settings.models.registered_model, settings.kafka.topic_prefix)
    with _WATCHERS_LOCK:
        watcher = _WATCHERS.get(key)
        if watcher is None:
            watcher = _WATCHERS[key] = ChampionWatcher(settings)
        return watcher


__all__ = ["ChampionWatcher", "champion_watcher"]
