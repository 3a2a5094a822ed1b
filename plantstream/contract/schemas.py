"""Export the contract as JSON Schema files (one per topic payload)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from plantstream.contract.topics import CATALOGUE


def json_schemas() -> dict[str, dict]:
    """JSON Schema of each topic's payload, keyed by topic name."""
    return {t.name: msgspec.json.schema(t.payload) for t in CATALOGUE if t.payload is not None}


def export_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, schema in json_schemas().items():
        path = directory / f"{topic}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
