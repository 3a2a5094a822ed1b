"""Per-test isolation on the shared session platform for the dataflow tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from plantstream.settings import Settings


@pytest.fixture
def stream_settings(
    platform_settings: Settings, unique_name: Callable[..., str], tmp_path: Path
) -> Callable[..., Settings]:
    """``stream_settings(**stream_overrides)``: the session platform with private topics,
    hot-store database, lake prefix and recovery state for this test."""

    def make(**stream: object) -> Settings:
        base = unique_name("tel", sep="_")
        topics = {
            "telemetry_topic": f"{base}.telemetry",
            "dead_letter_topic": f"{base}.deadletter",
            "late_topic": f"{base}.late",
        }
        return platform_settings.model_copy(
            update={
                "state_dir": tmp_path / "state",
                "stream": platform_settings.stream.model_copy(update={**topics, **stream}),
                "hotstore": platform_settings.hotstore.model_copy(update={"database": base}),
                "lake": platform_settings.lake.model_copy(update={"prefix": f"test/{base}"}),
            }
        )

    return make
