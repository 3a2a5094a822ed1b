"""What each stream checks beyond the contract, vectorised over a decoded batch.

The contract (msgspec) already checked types, required fields and bounds; the decoder
checks what every stream shares (event time against its hand-off time).  A stream's
own rules live here, one function per stream that has any, registered in
:data:`VALIDATORS`: telemetry names only known signals and carries values inside their
physical range (the same ranges the lakehouse's quality checks use:
``plantstream.contract.signals``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from plantstream.contract import ContractError, ErrorKind
from plantstream.contract.signals import SIGNALS, valid_range
from plantstream.contract.streams import TELEMETRY_STREAM, StreamSpec


@dataclass(frozen=True, slots=True)
class Rejected:
    """Row ``row`` of a decoded batch breaks a rule."""

    row: int
    error: ContractError


Validator = Callable[[pa.Table], list[Rejected]]


def telemetry_signals(table: pa.Table) -> list[Rejected]:
    """Unknown signals and physically impossible values (outside the signal's valid range)."""
    # Judge the distinct signal names once (a batch has a handful), then every row
    # through its dictionary code, without comparing Python strings per row.
    encoded = table.column("signal").combine_chunks().dictionary_encode()
    names = encoded.dictionary.to_numpy(zero_copy_only=False)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    values = table.column("value").combine_chunks().to_numpy(zero_copy_only=False)  # None -> NaN
    ranges = [valid_range(str(name)) for name in names]
    unknown = np.array([r is None for r in ranges], dtype=bool)[codes]
    low = np.array([-np.inf if r is None else r[0] for r in ranges], dtype=np.float64)[codes]
    high = np.array([np.inf if r is None else r[1] for r in ranges], dtype=np.float64)[codes]
    impossible = (values < low) | (values > high)  # NaN (missing value) compares False
    bad = unknown | impossible
    if not bad.any():
        return []
    out = []
    for row in np.flatnonzero(bad):
        name = str(names[codes[row]])
        if unknown[row]:
            error = ContractError(ErrorKind.SCHEMA, f"unknown signal {name!r}", "signal")
        else:
            spec = SIGNALS[name]
            error = ContractError(
                ErrorKind.IMPOSSIBLE_VALUE,
                f"{name}={float(values[row])!r} outside its valid range [{spec.valid_min}, {spec.valid_max}]",
                "value",
            )
        out.append(Rejected(int(row), error))
    return out


def _nothing(_table: pa.Table) -> list[Rejected]:
    return []


VALIDATORS: dict[str, Validator] = {TELEMETRY_STREAM.name: telemetry_signals}


def validator_for(spec: StreamSpec) -> Validator:
    return VALIDATORS.get(spec.name, _nothing)
