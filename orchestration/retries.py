"""Retries for transient S3 and hot-store errors, and only for those.

A Dagster ``RetryPolicy`` retries every failure of a step.  That is right for an S3
endpoint that is restarting or a hot store that refused a connection, and wrong for a
verification that found a mismatch or a bug: retrying those three times with backoff
only delays the red run by minutes and hides the first error among the retries.  So
steps that touch S3 or the hot store run their body inside :func:`retry_if_transient`:
a transient error is re-raised as it is (the step's :data:`TRANSIENT_RETRY` policy then
retries it with exponential backoff and jitter), anything else becomes a
``dg.Failure(allow_retries=False)`` that fails the step at once.

What counts as transient (:func:`is_transient`): connection and timeout errors
(``OSError``, which is also what delta-rs raises when the object store cannot be
reached after its own retries), a Delta commit that lost a race to a concurrent writer
(``CommitFailedError``: the next attempt reloads the table), ``clickhouse_connect``'s
``OperationalError`` (the server could not be reached, as opposed to ``DatabaseError``,
which carries the server's answer to a bad statement), and boto3's connection errors and
throttling / 5xx answers (listing the lake's tables).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg

#: The retry policy of every step that talks to S3 or the hot store: 10 s, 20 s, 40 s (+/- jitter).
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


#: S3 error codes that mean "try again" (throttling, a server-side hiccup).
_S3_RETRY_CODES = frozenset({"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "503", "500"})


def _transient_one(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from clickhouse_connect.driver.exceptions import OperationalError
    from deltalake.exceptions import CommitFailedError

    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return False  # an OSError, but no later attempt finds the file or the permission
    if isinstance(exc, (OSError, CommitFailedError, OperationalError, BotoConnectionError, HTTPClientError)):
        return True
    if isinstance(exc, ClientError):  # boto3 (listing the lake's tables): only throttling and 5xx
        return str(exc.response.get("Error", {}).get("Code", "")) in _S3_RETRY_CODES
    return False


def is_transient(exc: BaseException) -> bool:
    """True for errors a later attempt can succeed past (see the module docstring)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # a wrapped cause counts too
        seen.add(id(current))
        if _transient_one(current):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def retry_if_transient(what: str) -> Iterator[None]:
    """Let transient errors through to the retry policy; turn every other error into a final failure."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise
        raise dg.Failure(description=f"{what}: {type(exc).__name__}: {exc}", allow_retries=False) from exc
