"""Which sequence numbers of a machine's stream were already seen: a few ranges, not a set.

A machine numbers each stream's events ``0, 1, 2, ...`` (docs/contract.md), so what a
branch has seen is almost always one range ``[lo, hi]``; a gap (lost or not yet re-sent
events) splits it in two until the gap is filled.  Stateful branches that count events
(OEE's parts, the twin's counters) use this to count a replayed or re-sent duplicate once,
with state of a few integers per machine instead of every seq.  Bounded: beyond
``MAX_RANGES`` ranges the two lowest are merged (an event re-sent into that old gap would
then be taken for a duplicate; a warning says so).
"""

from __future__ import annotations

import bisect
import logging

log = logging.getLogger(__name__)

MAX_RANGES = 32


def add_seq(ranges: list[list[int]], seq: int) -> bool:
    """Record ``seq`` in ``ranges`` (sorted, disjoint ``[lo, hi]`` lists); False if already there."""
    if ranges:
        last = ranges[-1]
        if seq == last[1] + 1:  # the common case: the next event of the machine
            last[1] = seq
            return True
        if last[0] <= seq <= last[1]:
            return False
    i = bisect.bisect_right(ranges, [seq, float("inf")])  # first range with lo > seq
    if i > 0 and ranges[i - 1][0] <= seq <= ranges[i - 1][1]:
        return False
    joins_left = i > 0 and ranges[i - 1][1] + 1 == seq
    joins_right = i < len(ranges) and ranges[i][0] - 1 == seq
    if joins_left and joins_right:
        ranges[i - 1][1] = ranges[i][1]
        del ranges[i]
    elif joins_left:
        ranges[i - 1][1] = seq
    elif joins_right:
        ranges[i][0] = seq
    else:
        ranges.insert(i, [seq, seq])
        if len(ranges) > MAX_RANGES:
            log.warning("more than %d gaps in one machine's sequence: merging the oldest two", MAX_RANGES)
            ranges[0][1] = ranges[1][1]
            del ranges[1]
    return True


def copy_ranges(ranges: list[list[int]]) -> list[list[int]]:
    return [list(r) for r in ranges]


__all__ = ["MAX_RANGES", "add_seq", "copy_ranges"]
