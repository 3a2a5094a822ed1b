"""Fixtures for gateway tests: real mosquitto, Modbus and OPC UA servers on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edge_peers import MosquittoBroker


@pytest.fixture
def mosquitto(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
