"""Waiting on a condition with a deadline: the one polling loop (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout_s: float, what: str | Callable[[], str], *, poll_s: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy and return that.

    Raises :class:`TimeoutError` naming ``what`` (a callable is asked at the deadline, so
    the message can say how things stood then).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {described}")
        time.sleep(poll_s)
