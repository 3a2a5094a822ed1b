"""Keys that Bytewax routes to the worker that reads their Kafka partition.

Why: the telemetry flow keeps its state per Kafka partition.  In a cluster of several
processes, state must live on the worker that reads the partition, or every batch is
pickled and shipped to another process (which erases the gain of scaling out).
Bytewax 0.21 decides both placements itself, in its Rust core (``src/timely.rs``,
``src/operators.rs``, checked against the v0.21.1 source):

* **source and sink partitions**: every worker lists all parts; worker 0 assigns each
  part a *primary* (``calc_primaries``): parts in sorted order, each to the worker with
  the fewest parts so far, ties to the lowest index.  With every worker seeing every
  part, part ``i`` of the sorted ``list_parts()`` lands on worker ``i % n``.  Sinks
  route an item to the primary of ``part_fn(key)``.
* **stateful keys** (``stateful_batch``): worker ``siphash13(key) % n``, where the hash
  is Rust's ``DefaultHasher`` (SipHash-1-3, keys 0/0) over the key's UTF-8 bytes
  followed by ``0xFF`` (how Rust hashes a ``str``).

So a key for partition ``i`` is aligned in a cluster of ``n`` workers when
``siphash13(key) % n == i % n``.  :func:`partition_key` salts the zero-padded partition
number until the hash is congruent to ``i`` modulo :data:`ALIGNED_MODULUS` = lcm(1..8):
the key is then aligned for **every** cluster of 1 to 8 workers at once.  It does not
depend on the worker count, so recovery state keyed by it stays valid when the cluster
is resized (larger clusters still work, with some batches exchanged between workers).
``tests/streaming/test_worker_routing.py`` runs a real 2-process Bytewax cluster and
checks that the window state of every partition lives in the process that reads it.
"""

from __future__ import annotations

import functools
import math

MAX_ALIGNED_WORKERS = 8
ALIGNED_MODULUS = math.lcm(*range(1, MAX_ALIGNED_WORKERS + 1))  # 840

_MASK = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 of ``data`` (64-bit), as Rust's ``std`` ``SipHasher13`` computes it."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def sipround() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    length = len(data)
    full = length - length % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        sipround()
        v0 ^= m
    b = ((length & 0xFF) << 56) | int.from_bytes(data[full:], "little")
    v3 ^= b
    sipround()
    v0 ^= b
    v2 ^= 0xFF
    sipround()
    sipround()
    sipround()
    return v0 ^ v1 ^ v2 ^ v3


def bytewax_key_hash(key: str) -> int:
    """The hash Bytewax 0.21 routes a stateful key by (Rust ``str`` hashing appends 0xFF)."""
    return siphash13(key.encode() + b"\xff")


def bytewax_worker_of_key(key: str, workers: int) -> int:
    """The worker that holds the state of ``key`` in a cluster of ``workers``."""
    return bytewax_key_hash(key) % workers


def worker_of_part(index: int, workers: int) -> int:
    """The primary worker of the ``index``-th part (in sorted order) of a partitioned
    source or sink, when every worker can reach every part."""
    return index % workers


# The salts of partitions 0..63, as :func:`search_partition_key` finds them (the search
# hashes up to a few thousand keys in pure Python, ~50 ms per process for 4 partitions;
# ``tests/streaming/test_worker_routing.py`` checks this table against the search).
_PRECOMPUTED_SALTS: tuple[int, ...] = (
    724, 14, 1975, 2523, 3, 1006, 651, 380, 1296, 893, 1185, 95, 788, 1782, 226, 33,
    140, 846, 871, 801, 262, 3847, 878, 276, 1977, 1486, 272, 354, 380, 0, 190, 273,
    957, 713, 1219, 2516, 242, 1416, 2879, 178, 52, 1905, 963, 19, 459, 869, 185, 60,
    597, 1778, 2422, 1498, 186, 114, 1678, 1368, 215, 916, 1097, 1772, 2790, 328, 1135, 1319,
)  # fmt: skip


@functools.lru_cache(maxsize=4096)
def partition_key(partition: int) -> str:
    """Bytewax key of Kafka partition ``partition``: used for the source parts, the
    ``stateful_batch`` key and the sink parts, so that all of them stay on one worker.

    ``"NNNN.salt"``: zero-padded so sorted keys are in partition order (part ``i`` is
    partition ``i`` of a topic with partitions ``0..N-1``), salted so that the stateful
    key routes to the same worker as part ``i`` in any cluster of up to 8 workers.
    """
    if 0 <= partition < len(_PRECOMPUTED_SALTS):
        return f"{partition:04d}.{_PRECOMPUTED_SALTS[partition]}"
    return search_partition_key(partition)


def search_partition_key(partition: int) -> str:
    """:func:`partition_key` by searching the lowest salt (what the table holds)."""
    if partition < 0:
        raise ValueError(f"partition must be >= 0, got {partition}")
    target = partition % ALIGNED_MODULUS
    salt = 0
    while True:
        key = f"{partition:04d}.{salt}"
        if bytewax_key_hash(key) % ALIGNED_MODULUS == target:
            return key
        salt += 1


class PartsLikeTheSource:
    """Mixin for ``FixedPartitionedSink``: one sink partition per Kafka partition, named
    by :func:`partition_key`, so an item keyed by its partition's key is written by the
    worker that read it (no batch crosses processes)."""

    def __init__(self, partitions: list[int]) -> None:
        self._parts = sorted(partition_key(p) for p in partitions)
        self._index = {key: i for i, key in enumerate(self._parts)}

    def list_parts(self) -> list[str]:
        return self._parts

    def part_fn(self, item_key: str) -> int:
        return self._index[item_key]
