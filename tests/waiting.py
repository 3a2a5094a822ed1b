"""Waiting on a condition with a deadline: the one way tests wait (never a bare sleep)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from plantstream.waiting import wait_until

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, *, poll_s: float = 0.05) -> T:
    """:func:`plantstream.waiting.wait_until`, failing the test (not erroring) on timeout."""
    try:
        return wait_until(condition, timeout_s, what, poll_s=poll_s)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None
