"""Fixtures for the simulator's tests, usable by the edge gateway's tests too.

``mosquitto_broker``: a real mosquitto on a free loopback port (own config and
persistence dir under tmp_path), stopped afterwards.  ``free_plant``: the shipped
default plant moved to free ports, random faults off, so a test decides which faults
happen.  Helpers live in :mod:`plantstream.simulator.protocols.mosquitto` and
:mod:`plantstream.simulator.serve`; these fixtures only wire them to pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plantstream.simulator.plant_config import FaultConfig, PlantConfig, load_plant
from plantstream.simulator.protocols.mosquitto import MosquittoBroker


@pytest.fixture
def mosquitto_broker(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[MosquittoBroker]:
    """A running mosquitto (``.host``, ``.port``, ``.url``; ``.restart()`` keeps its persistence)."""
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto").start(timeout=10)
    try:
        yield broker
    finally:
        broker.stop()


def plant_on_free_ports(port: Callable[[], int], faults: FaultConfig | None = None) -> PlantConfig:
    """The default plant with every endpoint on a free port and only the given faults."""
    plant = load_plant()
    plant = plant.with_endpoint_ports({name: port() for name in plant.endpoints})
    return plant.with_faults(faults or FaultConfig())


@pytest.fixture
def free_plant(free_port: Callable[[], int]) -> PlantConfig:
    return plant_on_free_ports(free_port)
