"""Fixtures for the cold-tier tests: a private hot-store database and lake prefix per test.

``cold_settings(**hotstore)`` is the session platform with this test's own topics,
hot-store database, lake prefix and state dir (``stream_settings``), and the hot tables
created.  The tables' TTL is the retention plus a margin (:data:`TTL_MARGIN_DAYS`): the
backstop verified archival needs (docs/cold-tier.md, "The TTL and the order of things").
Archival then runs with ``hot_retention_days`` = :data:`RETENTION_DAYS`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from plantstream.settings import Settings
from plantstream.streaming.hot_tables import ensure_hot_tables

sys.path.insert(0, str(Path(__file__).parent))  # cold_data, the shared data helpers

RETENTION_DAYS = 30
TTL_MARGIN_DAYS = 7


@pytest.fixture
def cold_settings(stream_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(*, ttl_days: int = RETENTION_DAYS + TTL_MARGIN_DAYS) -> Settings:
        base = stream_settings()
        ddl = base.model_copy(update={"hotstore": base.hotstore.model_copy(update={"hot_retention_days": ttl_days})})
        ensure_hot_tables(ddl)
        return base.model_copy(
            update={"hotstore": base.hotstore.model_copy(update={"hot_retention_days": RETENTION_DAYS})}
        )

    return make
