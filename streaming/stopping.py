"""How a dataflow process stops: on request (Ctrl-C, SIGTERM) and when a sink's service stays away.

Two rules, both about never leaving through Bytewax's Rust core with a Python exception
(it panics, aborts the process and prints hundreds of lines):

* **A stop request** (SIGINT/SIGTERM) sets :data:`STOP`; every source partition then ends
  its input at its next poll, the flow completes its last epoch as at the end of a drain
  (sinks flush, state is snapshotted) and the runner returns.  A second request while the
  first is still finishing (a sink waiting out an outage) stops the process at once:
  whatever the last epoch did not finish is replayed at the next start.
* **A sink whose service is away** retries with exponential backoff and jitter for up to
  ``stream.sink_retry_seconds`` (:func:`retry_within_budget`) while the flow waits for
  it (backpressure: the source keeps its position).  A transient outage is ridden out;
  a lasting one ends the process with one line naming the service and the reason and
  exit code :data:`EXIT_SINK_UNAVAILABLE` (:func:`stop_process`).  Nothing is lost either
  way: the epoch the sink could not finish never completed its snapshot, so a restart
  replays it (the sinks are effectively-once).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Set when the process was asked to stop; sources end their input when they see it.
STOP = threading.Event()
#: Exit codes of a dataflow process (``sysexits.h`` where one fits).
EXIT_STOPPED = 130  # stopped by a signal before the input's end
EXIT_SINK_UNAVAILABLE = 75  # EX_TEMPFAIL: a sink's service stayed away longer than the retry budget
EXIT_OFFSETS_LOST = 76  # the broker's log ended below what the flow had read, for longer than the grace

_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 10.0


class SinkUnavailableError(RuntimeError):
    """A sink's service did not accept a write within the retry budget."""


def stop_process(reason: str, code: int) -> NoReturn:
    """Log ``reason``, print it as one line on stderr and end the process with ``code``.

    ``os._exit``: no interpreter finalisation, which would run into Bytewax's threads.
    The recovery store is SQLite: the last completed snapshot is intact, as after kill -9.
    """
    log.error(reason, extra={"event": "process_stop", "exit_code": code})
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.write(f"plantstream stream: {reason}\n")
    sys.stderr.flush()
    os._exit(code)


def retry_within_budget(what: str, attempt: Callable[[], T], *, budget_s: float) -> T:
    """Call ``attempt`` until it succeeds, with backoff and jitter, for up to ``budget_s``.

    Raises :class:`SinkUnavailableError` (chained to the last failure) once the budget is
    spent.  Every retry is logged with how long the service has been away so far.
    """
    began = time.monotonic()
    delay = _BACKOFF_MIN_S
    tries = 0
    while True:
        tries += 1
        try:
            return attempt()
        except Exception as exc:  # the clients raise many types; an outage looks like any of them
            away = time.monotonic() - began
            if away + delay > budget_s:
                raise SinkUnavailableError(
                    f"{what} failed for {away:.0f} s ({tries} tries, budget {budget_s:.0f} s): {exc}"
                ) from exc
            log.warning(
                "%s failed (%s); retry %d in %.1f s (away %.0f s of %.0f s)",
                what,
                exc,
                tries,
                delay,
                away,
                budget_s,
                extra={"event": "sink_retry", "what": what},
            )
            time.sleep(delay)
            delay = min(_BACKOFF_MAX_S, delay * 2) * random.uniform(0.8, 1.2)


def install_stop_signals() -> None:
    """SIGINT/SIGTERM ask the flow to finish its epoch and return; a second one stops at once."""

    def request(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if STOP.is_set():
            stop_process(f"stopped by a second {name} before the last epoch finished", EXIT_STOPPED)
        STOP.set()
        log.warning("%s: finishing the current epoch, then stopping (again to stop at once)", name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request)
