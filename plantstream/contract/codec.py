"""Encode and decode contract events, one at a time or a whole Kafka batch at once.

Batch decoding runs msgspec over the whole batch in one comprehension (about 0.3 us
per message); only when that fails does it go message by message to find which are
bad and why.  (Joining the values into one JSON array is no faster and lets two
malformed messages combine into one plausible event, so it is not done.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

import msgspec

from plantstream.contract.events import SCHEMA_VERSION, _Event

E = TypeVar("E", bound=_Event)

_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_ABOVE_MAX_VERSION = f"Expected `int` <= {SCHEMA_VERSION}"
_NUMBER_OUT_OF_RANGE = "Number out of range"
# NaN/Infinity as bare words: what Python's json.dumps writes for non-finite floats.
_NON_FINITE_WORD = re.compile(rb"[:\[,]\s*-?(?:Infinity|NaN)\b")


class ErrorKind(StrEnum):
    EMPTY = "empty"
    MALFORMED = "malformed"
    SCHEMA = "schema"
    FUTURE_VERSION = "future_version"
    IMPOSSIBLE_VALUE = "impossible_value"
    FUTURE_EVENT_TIME = "future_event_time"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class ContractError(ValueError):
    """Why a payload is not a valid event; ``field`` names the offending field if any."""

    kind: ErrorKind
    reason: str
    field: str | None = None

    def __str__(self) -> str:
        where = f" (field `{self.field}`)" if self.field else ""
        return f"{self.kind.value}{where}: {self.reason}"


def _contract_error(exc: msgspec.MsgspecError) -> ContractError:
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        match = _AT_PATH.search(text) or _MISSING.search(text)
        field = match.group(1) if match else None
        reason = _AT_PATH.sub("", text)
        if field == "v" and text.startswith(_ABOVE_MAX_VERSION):
            # Only a well-typed version number above ours is from the future; `v: true`,
            # `v: "12.5"` or `v: null` are simply wrong.
            return ContractError(
                ErrorKind.FUTURE_VERSION, f"schema version not supported (this reader knows <= {SCHEMA_VERSION})", "v"
            )
        if reason == _NUMBER_OUT_OF_RANGE:
            # Valid JSON (e.g. 1e400) that no 64-bit float holds: a value no sensor measured.
            return ContractError(ErrorKind.IMPOSSIBLE_VALUE, "number out of the 64-bit float range", field or None)
        return ContractError(ErrorKind.SCHEMA, reason, field or None)
    return ContractError(ErrorKind.MALFORMED, text)


class Codec(Generic[E]):
    """JSON codec for one event type."""

    def __init__(self, event_type: type[E]) -> None:
        self.event_type = event_type
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(event_type)

    def encode(self, event: E) -> bytes:
        return self._encoder.encode(event)

    def encode_many(self, events: list[E]) -> list[bytes]:
        encode = self._encoder.encode
        return [encode(e) for e in events]

    def decode(self, data: bytes | None) -> E:
        """Decode one payload; raises :class:`ContractError` naming the bad field."""
        if not data:
            raise ContractError(ErrorKind.EMPTY, "empty payload")
        try:
            return self._decoder.decode(data)
        except msgspec.MsgspecError as exc:
            error = _contract_error(exc)
            if error.kind is ErrorKind.MALFORMED and _NON_FINITE_WORD.search(data):
                error = ContractError(ErrorKind.MALFORMED, f"{error.reason}: NaN and Infinity are not JSON numbers")
            raise error from None

    def decode_batch(self, values: list[bytes | None]) -> tuple[list[E | None], list[tuple[int, ContractError]]]:
        """Decode many payloads.

        Returns the decoded events aligned with ``values`` (``None`` where invalid) and
        the list of ``(index, error)`` for the invalid ones.
        """
        try:
            # map() over the C method: no Python frame per message (~7 % faster than a
            # list comprehension at ~0.35 us per message).
            return list(map(self._decoder.decode, values)), []  # type: ignore[arg-type]
        except (msgspec.MsgspecError, TypeError):
            pass  # find the culprits one by one below
        events: list[E | None] = []
        errors: list[tuple[int, ContractError]] = []
        for index, value in enumerate(values):
            try:
                events.append(self.decode(value))
            except ContractError as err:
                events.append(None)
                errors.append((index, err))
        return events, errors
