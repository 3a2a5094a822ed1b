"""Fixtures for the cold-tier tests: a private hot-store database and lake prefix per test.

``cold_settings()`` is the session platform with this test's own topics, hot-store
database, lake prefix and state dir (``stream_settings``), ``hot_retention_days`` =
:data:`RETENTION_DAYS`, and the hot tables created: their TTL is the retention plus the
backstop margin verified archival needs (docs/cold-tier.md, "The TTL and the order of things").
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from plantstream.settings import Settings
from plantstream.streaming.hot_tables import RAW_TTL_MARGIN_DAYS, ensure_hot_tables

sys.path.insert(0, str(Path(__file__).parent))  # cold_data, the shared data helpers

RETENTION_DAYS = 30
TTL_MARGIN_DAYS = RAW_TTL_MARGIN_DAYS


@pytest.fixture
def cold_settings(stream_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make() -> Settings:
        base = stream_settings()
        settings = base.model_copy(
            update={"hotstore": base.hotstore.model_copy(update={"hot_retention_days": RETENTION_DAYS})}
        )
        ensure_hot_tables(settings)
        return settings

    return make
