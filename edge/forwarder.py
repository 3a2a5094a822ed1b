"""Buffer -> Kafka: an idempotent producer (``acks=all``), rows deleted only on delivery.

The forwarder reads the buffer in ``id`` order (per-machine sequence order) and hands
events to librdkafka, at most ``MAX_IN_FLIGHT`` at a time so a long outage accumulates
on disk, not in memory.  A row is deleted in the same transaction that records the
partition offset Kafka reported for it.

Three failure modes need more than librdkafka's own retries:

* **Stuck producer.**  After a broker restart an idempotent producer can wait forever
  (``UNKNOWN_PRODUCER_ID`` with ``message.timeout.ms=0``).  If events are in flight,
  nothing was delivered for ``edge.producer_stuck_s`` and the broker answers a metadata
  request, or librdkafka reports a fatal error, the producer is purged and recreated.
* **Acknowledged without an offset.**  librdkafka reports a ``DUPLICATE_SEQUENCE_NUMBER``
  answer as a delivery with no offset; after a broker restart that answer is not proof.
  Such rows are kept and verified by reconciliation (found: deleted; not found: resent).
* **Unknown fate.**  Events sent just before a producer was replaced or the gateway was
  killed may or may not have been written.  Before (re)sending, the forwarder
  *reconciles*: it reads each partition from just after the last offset it saw
  delivered (or, the first time, from the oldest buffered read time) to the end
  (``enable.partition.eof``, never the broker's high watermark) and deletes buffered
  events whose ``(machine_id, seq)`` is already there.  Kafka therefore holds each
  event once, even across ``kill -9``; if reconciliation cannot finish in time the
  gateway resends anyway (at-least-once; the sinks deduplicate on ``(machine_id, seq)``).
* **Acknowledged, then lost.**  The local broker, restarted after ``kill -9`` while a
  consumer was reading, acknowledged writes at offsets that already held other records
  and kept none of them (docs/platform.md has the figures).  So every row sent in the
  first ``edge.verify_after_reconnect_s`` after a (re)connection is *held* after its
  acknowledgement, not deleted: once the window has passed and nothing is in flight, the
  forwarder reads those offsets back and deletes the rows it finds there; the others are
  counted (``plantstream_edge_lost_after_ack_total``), logged and resent - under a new
  window, until Kafka holds them.  A gateway killed meanwhile reconciles the held rows
  at its next start like any unsettled ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import msgspec

from plantstream.connect.kafka import consumer, producer
from plantstream.connect.kafka_scan import NotReadToEndError, scan_keys
from plantstream.connect.topics import ensure_topics
from plantstream.contract import Codec
from plantstream.contract.streams import STREAMS
from plantstream.contract.topics import message_key, topic_name
from plantstream.edge.buffer import EdgeStore, Row
from plantstream.edge.collectors.base import Backoff, sleep_or_stop
from plantstream.edge.metrics import GatewayMetrics
from plantstream.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_IN_FLIGHT = 50_000
#: Rows held for read-back before verification starts anyway (bounds the held set's memory).
MAX_HELD = 200_000
RECONCILE_TIMEOUT_S = 60.0
#: The oldest buffered read time is moved back by this much to find its first possible offset.
CLOCK_MARGIN_MS = 60_000


class Forwarder:
    def __init__(
        self,
        settings: Settings,
        store: EdgeStore,
        db: Executor,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.db = db
        self.metrics = metrics
        self.topics = {spec.name: topic_name(settings, spec.topic) for spec in STREAMS}
        self._stream_of_topic = {topic: stream for stream, topic in self.topics.items()}
        self.wake = asyncio.Event()
        self.codecs = {spec.name: Codec(spec.payload) for spec in STREAMS}
        self._producer: Any = None
        self._generation = 0
        self._last_sent_id = 0
        self._in_flight: set[int] = set()
        self._delivered: list[tuple[int, str, int, int | None, str]] = []  # id, topic, partition, offset, protocol
        self._progress_at = time.monotonic()
        self._fatal = False
        self._broker_lost = False
        self._unverified: set[int] = set()
        self._verify_all = False
        self.connected = False
        self.delivered_total = 0
        self._verify_until: float | None = None  # monotonic end of the window after a (re)connection
        self._keys: dict[int, tuple[str, int]] = {}  # row id -> (machine_id, seq), sent in the window
        self._held: list[tuple[int, str, int, int | None, str]] = []  # delivered in the window, not yet read back
        # Per stream: rows removed from the buffer because Kafka holds them, in this process's
        # life - acknowledged and verified, or found by reconciliation (also rows an earlier,
        # killed process had sent).
        self.delivered: Counter[str] = Counter()

    @property
    def verifying(self) -> bool:
        """Rows sent now would be held for read-back (the window after a (re)connection)."""
        return self._verify_until is not None or bool(self._held)

    @property
    def in_flight(self) -> int:
        """Events handed to the producer whose delivery is not settled (or not yet read back)."""
        return len(self._in_flight) + len(self._delivered) + len(self._held)

    async def _run_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.db, fn, *args)

    # -- librdkafka callbacks (called from poll() on the event loop thread) --------------

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            log.error("Kafka producer fatal error: %s; it will be recreated", err)
            self._fatal = True
        else:
            log.warning("Kafka: %s", err)
            if "ALL_BROKERS_DOWN" in err.name() or "TRANSPORT" in err.name():
                self.metrics.kafka_up.set(0)
            if "ALL_BROKERS_DOWN" in err.name():
                self._broker_lost = True

    def _on_delivery(self, row_id: int, protocol: str, generation: int, err: Any, msg: Any) -> None:
        if err is None:
            self._in_flight.discard(row_id)
            self._progress_at = time.monotonic()
            offset = msg.offset()
            if offset is None or offset < 0:
                # "Delivered" without an offset: librdkafka reports a DUPLICATE_SEQUENCE_NUMBER answer
                # so, trusting the broker already has it.  A restarted broker can say that about a
                # write it lost, so the row stays until reconciliation finds it in the partition.
                self._unverified.add(row_id)
                return
            self._delivered.append((row_id, msg.topic(), msg.partition(), offset, protocol))
            return
        # Purged by a recreate (resent later) or failed for good: the row stays buffered.
        if generation == self._generation:
            self._in_flight.discard(row_id)
            if "PURGE" not in err.name():
                log.warning("delivery failed for buffered row %d: %s; producer will be recreated", row_id, err)
                self._fatal = True

    # -- connection ----------------------------------------------------------------------

    async def _connect(self) -> None:
        """Create the topic if needed, reconcile what is already in Kafka, then a fresh producer."""
        loop = asyncio.get_running_loop()
        topics = tuple(spec.topic for spec in STREAMS)
        await loop.run_in_executor(None, lambda: ensure_topics(self.settings, topics, timeout_s=5.0))
        removed = await loop.run_in_executor(None, self._reconcile)
        if removed:
            self.delivered.update(removed)
            self.metrics.reconciled.inc(removed.total())
            log.info("reconciled %d buffered events that Kafka already had", removed.total())
        self._verify_all = False
        self._generation += 1
        self._producer = producer(self.settings, error_cb=self._on_error)
        self._last_sent_id = 0
        self._in_flight.clear()
        self._unverified.clear()
        self._fatal = False
        self._broker_lost = False
        self._progress_at = time.monotonic()
        self._open_verify_window()
        self.connected = True
        self.metrics.kafka_up.set(1)

    def _open_verify_window(self) -> None:
        window = self.settings.edge.verify_after_reconnect_s
        self._verify_until = time.monotonic() + window if window > 0 else None
        self._keys.clear()
        self._held.clear()

    def _reconcile(self) -> Counter[str]:
        """Delete buffered rows whose (machine_id, seq) their stream's topic already holds
        (runs in a worker thread); returns how many per stream."""
        from concurrent.futures import Future

        def on_db(fn: Callable[..., T], *args: Any) -> T:
            fut: Future[T] = self.db.submit(fn, *args)
            return fut.result()

        keys_by_stream = on_db(self.store.buffered_keys)
        found: dict[str, list[int]] = {}
        for stream, keys in keys_by_stream.items():
            oldest = on_db(self.store.min_read_ts, stream) or 0
            # A key Kafka holds twice (an earlier at-least-once resend) is one buffered row.
            found[stream] = sorted(set(self._found_in_topic(self.topics[stream], keys, oldest, on_db)))
        rows = [row for ids in found.values() for row in ids]
        if rows:
            on_db(self.store.delete, rows)
        return Counter({stream: len(ids) for stream, ids in found.items() if ids})

    def _found_in_topic(
        self, topic: str, keys: dict[tuple[str, int], int], oldest: int, on_db: Callable[..., Any]
    ) -> list[int]:
        """Row ids of ``keys`` that ``topic`` holds, read from where they can first be."""
        from confluent_kafka import OFFSET_END, TopicPartition

        # After an offset-less acknowledgement the copy may sit *before* the last offset seen
        # delivered (the broker kept the first attempt and later events went after it): search
        # every partition from the oldest buffered read time instead.
        known = {} if self._verify_all else on_db(self.store.kafka_offsets, topic)
        cons = consumer(
            self.settings,
            **{"group.id": f"{self.settings.kafka.client_id}-edge-reconcile", "enable.partition.eof": True},
        )
        found: list[int] = []
        try:
            meta = cons.list_topics(topic, timeout=10)
            partitions = sorted(meta.topics[topic].partitions)
            starts: list[Any] = []
            by_time = [TopicPartition(topic, p, max(oldest - CLOCK_MARGIN_MS, 0)) for p in partitions if p not in known]
            if by_time:
                starts += cons.offsets_for_times(by_time, timeout=10)
            starts += [TopicPartition(topic, p, known[p] + 1) for p in partitions if p in known]
            starts = [tp for tp in starts if tp.offset >= 0 and tp.offset != OFFSET_END]
            if not starts:
                return []
            try:
                for key in scan_keys(cons, topic, starts, RECONCILE_TIMEOUT_S):
                    row_id = None if key is None else keys.get((key.machine_id, key.seq))
                    if row_id is not None:
                        found.append(row_id)
            except NotReadToEndError as exc:
                log.warning("reconciliation did not reach the end of %s; resending (at-least-once)", exc.partitions)
        finally:
            cons.close()
        return found

    def _drop_producer(self) -> None:
        old, self._producer = self._producer, None
        self.connected = False
        if old is None:
            return
        self._generation += 1
        try:
            old.purge(in_queue=True, in_flight=True)
            old.poll(0)
            old.flush(0)
        except Exception as exc:  # a broken producer must not stop the gateway
            log.warning("purging the old producer failed: %r", exc)

    async def _broker_answers(self) -> bool:
        prod = self._producer
        if prod is None:
            return False
        try:
            topic = self.topics["telemetry"]
            await asyncio.get_running_loop().run_in_executor(None, lambda: prod.list_topics(topic, timeout=3))
        except Exception:
            return False
        return True

    # -- main loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.edge.backoff_min_s, self.settings.edge.backoff_max_s)
        while not stop.is_set():
            if self._producer is None:
                try:
                    await self._connect()
                    backoff.reset()
                except Exception as exc:
                    self.metrics.kafka_up.set(0)
                    delay = backoff.next_delay()
                    log.warning("Kafka not reachable (%s); retrying in %.1f s, collecting meanwhile", exc, delay)
                    await sleep_or_stop(stop, delay)
                    continue
            try:
                sent = await self._pump()
            except Exception:
                log.exception("forwarder step failed; recreating the producer")
                self._drop_producer()
                continue
            if self._broker_lost:
                # A broker that comes back may have lost what it acknowledged last, yet still
                # remember this producer's sequence numbers (it then answers DUPLICATE_SEQUENCE
                # for writes it does not have, and resends land after later events).  A fresh
                # producer reconciles first: what Kafka holds is deleted, the rest resent in order.
                log.warning(
                    "all Kafka brokers down with %d events in flight; a fresh producer will reconcile "
                    "and resend them when Kafka is back",
                    len(self._in_flight),
                )
                self.metrics.producer_recreated.inc()
                self._drop_producer()
                continue
            if self._unverified and not self._in_flight:
                log.warning(
                    "%d events were acknowledged without an offset; verifying them against Kafka", len(self._unverified)
                )
                self.metrics.unverified_acks.inc(len(self._unverified))
                self._unverified.clear()
                self._verify_all = True
                self._drop_producer()  # reconnecting reconciles: found rows are deleted, the rest resent
                continue
            if self._fatal or await self._stuck():
                self.metrics.producer_recreated.inc()
                log.warning("Kafka producer made no progress with %d in flight; recreating it", len(self._in_flight))
                self._drop_producer()
                continue
            if self._verify_due():
                try:
                    await self._verify_held()
                except Exception:
                    log.exception("verifying delivered events failed; recreating the producer (it reconciles)")
                    self._drop_producer()
                continue
            if not sent and not self._delivered:
                self.wake.clear()
                with_timeout = 0.05 if self._in_flight else 0.5
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=with_timeout)
        await self._shutdown()

    def _verify_due(self) -> bool:
        if self._verify_until is None or self._in_flight or self._delivered:
            return False
        return time.monotonic() >= self._verify_until or len(self._held) >= MAX_HELD

    async def _verify_held(self) -> None:
        """Read back what was delivered in the window; delete what Kafka holds, resend the rest."""
        held, keys = self._held, self._keys
        if not held:
            self._keys, self._verify_until = {}, None
            return
        found = await asyncio.get_running_loop().run_in_executor(None, self._read_back, held, keys)
        self._held, self._keys, self._verify_until = [], {}, None
        if found is None:  # Kafka could not be read back: keep them; reconciliation will settle them
            log.warning("could not read back %d delivered events; reconciling them with a fresh producer", len(held))
            self._drop_producer()
            return
        self._delivered = [d for d in held if d[0] in found]
        await self._settle_delivered()
        missing = sorted(d[0] for d in held if d[0] not in found)
        if missing:
            self.metrics.lost_after_ack.inc(len(missing))
            log.warning(
                "Kafka acknowledged %d events it does not hold (read back after a reconnection); resending them",
                len(missing),
            )
            self._last_sent_id = missing[0] - 1  # resend in id order: the missing rows, then what follows
            self._open_verify_window()

    def _read_back(
        self, held: list[tuple[int, str, int, int | None, str]], keys: dict[int, tuple[str, int]]
    ) -> set[int] | None:
        """Row ids of ``held`` whose (machine_id, seq) their partitions hold between the offsets
        Kafka gave them (one consumer over all the ranges at once)."""
        from plantstream.connect.kafka_scan import NotReadToEndError, scan_ranges

        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        for _row, topic, partition, offset, _protocol in held:
            if offset is not None and offset >= 0:
                low, high = ranges.get((topic, partition), (offset, offset))
                ranges[(topic, partition)] = (min(low, offset), max(high, offset))
        cons = consumer(self.settings, **{"group.id": f"{self.settings.kafka.client_id}-edge-verify"})
        try:
            present = {
                (topic, key.machine_id, key.seq)
                for topic, key in scan_ranges(cons, ranges, timeout_s=RECONCILE_TIMEOUT_S)
            }
        except (NotReadToEndError, Exception) as exc:  # a broker gone again: settle by reconciliation
            log.warning("reading back delivered events failed: %r", exc)
            return None
        finally:
            cons.close()
        return {row for row, topic, *_ in held if (topic, *keys.get(row, ("", -1))) in present}

    async def _stuck(self) -> bool:
        if not self._in_flight:
            self._progress_at = time.monotonic()
            return False
        if time.monotonic() - self._progress_at < self.settings.edge.producer_stuck_s:
            return False
        if await self._broker_answers():
            return True
        self.metrics.kafka_up.set(0)
        self._progress_at = time.monotonic()  # broker is down: wait for it, this is not a stuck producer
        return False

    async def _pump(self) -> int:
        """Send a batch, serve callbacks, delete what was delivered.  Returns rows sent."""
        prod = self._producer
        sent = 0
        room = MAX_IN_FLIGHT - len(self._in_flight)
        if self._verify_until is not None and (time.monotonic() >= self._verify_until or len(self._held) >= MAX_HELD):
            room = 0  # the window is over: let what is in flight settle, then read it back
        if room > 0:
            rows = await self._run_db(
                self.store.read_after, self._last_sent_id, min(room, self.settings.edge.forward_batch)
            )
            sent = self._produce(prod, rows)
        prod.poll(0)
        await self._settle_delivered()
        return sent

    async def _settle_delivered(self) -> None:
        """Delete delivered rows (with the offsets Kafka gave them) and count them out."""
        if not self._delivered:
            return
        done, self._delivered = self._delivered, []
        if self._verify_until is not None:  # in the window: hold for read-back instead of deleting
            self._held += [d for d in done if d[0] in self._keys]
            done = [d for d in done if d[0] not in self._keys]
            if not done:
                return
        offsets: dict[tuple[str, int], int] = {}
        per_protocol: Counter[str] = Counter()
        for _row_id, topic, partition, offset, protocol in done:
            self.delivered[self._stream_of_topic[topic]] += 1
            if offset is not None and offset >= 0:  # some brokers report no offset after a restart
                offsets[(topic, partition)] = max(offsets.get((topic, partition), -1), offset)
            per_protocol[protocol] += 1
        await self._run_db(self.store.delete, [d[0] for d in done], offsets)
        for protocol, n in per_protocol.items():
            self.metrics.events_out.labels(protocol).inc(n)
        self.delivered_total += len(done)
        self.metrics.kafka_up.set(1)

    def _produce(self, prod: Any, rows: list[Row]) -> int:
        now = time.time_ns() // 1_000_000
        generation = self._generation
        for row in rows:
            codec = self.codecs[row.stream]
            value = codec.encode(msgspec.structs.replace(codec.decode(row.payload), ingest_ts=now))
            topic = self.topics[row.stream]
            callback = lambda err, msg, i=row.id, p=row.protocol, g=generation: self._on_delivery(i, p, g, err, msg)  # noqa: E731
            while True:
                try:
                    prod.produce(topic, value=value, key=message_key(row.machine_id), on_delivery=callback)
                    break
                except BufferError:
                    prod.poll(0.05)  # librdkafka's queue is full: serve callbacks, then retry
            if not self._in_flight:
                self._progress_at = time.monotonic()
            self._in_flight.add(row.id)
            if self._verify_until is not None:
                self._keys[row.id] = (row.machine_id, row.seq)
            self._last_sent_id = row.id
        return len(rows)

    async def _shutdown(self) -> None:
        prod = self._producer
        if prod is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: prod.flush(5.0))
        try:
            await self._settle_delivered()
        finally:
            self._drop_producer()
