"""The event contract shared by the edge, the stream and the lakehouse."""

from plantstream.contract.codec import Codec, ContractError, ErrorKind
from plantstream.contract.events import (
    SCHEMA_VERSION,
    Alert,
    AlertType,
    EnergyUsage,
    MachineEvent,
    MachineEventType,
    PartResult,
    Quality,
    QualityMetric,
    Severity,
    Telemetry,
)

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "AlertType",
    "Codec",
    "ContractError",
    "EnergyUsage",
    "ErrorKind",
    "MachineEvent",
    "MachineEventType",
    "PartResult",
    "Quality",
    "QualityMetric",
    "Severity",
    "Telemetry",
]
