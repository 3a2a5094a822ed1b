"""Stateful keys routed to the worker that reads their Kafka partition (real Bytewax cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plantstream.streaming.runner import free_local_addresses
from plantstream.streaming.worker_routing import (
    MAX_ALIGNED_WORKERS,
    bytewax_worker_of_key,
    partition_key,
    search_partition_key,
    siphash13,
    worker_of_part,
)


def test_siphash13_equals_cpython_siphash13_with_zero_keys() -> None:
    # CPython hashes bytes with SipHash-1-3; PYTHONHASHSEED=0 makes its keys zero, as Rust's DefaultHasher.
    samples = [b"a", b"0000.1\xff", b"abcdefgh", b"abcdefghi", bytes(range(37))]
    script = f"import sys; print([hash(b) & ((1 << 64) - 1) for b in {samples!r}])"
    out = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, check=True
    )
    assert json.loads(out.stdout) == [siphash13(b) for b in samples]


def test_partition_keys_are_aligned_for_every_cluster_size_up_to_eight() -> None:
    keys = [partition_key(p) for p in range(32)]
    assert keys == sorted(keys), "sorted keys must be in partition order (part i = partition i)"
    for workers in range(1, MAX_ALIGNED_WORKERS + 1):
        for p, key in enumerate(keys):
            assert bytewax_worker_of_key(key, workers) == worker_of_part(p, workers), (key, workers)


def test_precomputed_partition_keys_equal_the_search() -> None:
    assert [partition_key(p) for p in range(64)] == [search_partition_key(p) for p in range(64)]
    assert partition_key(64) == search_partition_key(64)
    with pytest.raises(ValueError):
        partition_key(-1)


_CLUSTER_FLOW = textwrap.dedent(
    """
    import json, os, sys
    from bytewax.dataflow import Dataflow
    import bytewax.operators as op
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
    from bytewax.operators import StatefulBatchLogic
    from bytewax.testing import TestingSink, cluster_main
    from plantstream.streaming.worker_routing import partition_key

    PARTITIONS = int(sys.argv[3])

    class Part(StatefulSourcePartition):
        def __init__(self, key):
            self.key, self.done = key, False
        def next_batch(self):
            if self.done:
                raise StopIteration
            self.done = True
            return [(self.key, os.getpid())]
        def snapshot(self):
            return None

    class Source(FixedPartitionedSource):
        def list_parts(self):
            return sorted(partition_key(p) for p in range(PARTITIONS))
        def build_part(self, step_id, for_part, resume_state):
            return Part(for_part)

    class Record(StatefulBatchLogic):
        def on_batch(self, values):
            with open(sys.argv[4], "a") as out:
                for source_pid in values:
                    out.write(json.dumps([source_pid, os.getpid()]) + "\\n")
            return [], StatefulBatchLogic.DISCARD

        def snapshot(self):
            return None

    flow = Dataflow("routing")
    keyed = op.input("in", flow, Source())
    op.output("out", op.stateful_batch("state", keyed, lambda resume: Record()), TestingSink([]))
    cluster_main(flow, sys.argv[2].split(";"), int(sys.argv[1]))
    """
)


@pytest.mark.parametrize("partitions", [4, 7])
def test_state_of_each_partition_lives_in_the_process_that_reads_it(tmp_path: Path, partitions: int) -> None:
    script = tmp_path / "flow.py"
    script.write_text(_CLUSTER_FLOW)
    record = tmp_path / "record.jsonl"
    addresses = ";".join(free_local_addresses(2))
    members = [
        subprocess.Popen([sys.executable, str(script), str(k), addresses, str(partitions), str(record)])
        for k in range(2)
    ]
    for member in members:
        assert member.wait(60) == 0
    pairs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(pairs) == partitions
    readers = {source_pid for source_pid, _ in pairs}
    assert len(readers) == 2, "both processes must read partitions"
    assert all(source_pid == state_pid for source_pid, state_pid in pairs), pairs
