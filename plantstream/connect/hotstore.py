"""The hot-store client: ``clickhouse-connect`` in both profiles.

Locally it talks to the chDB-backed service (``plantstream.services.hotstore``), in
production to a ClickHouse server; the code above this line never knows which.
"""

from __future__ import annotations

from typing import Any

from plantstream.settings import Settings


def hotstore_client(settings: Settings, *, database: str | None = None, **overrides: Any):
    """A ``clickhouse_connect`` client (one HTTP session; not shared between threads)."""
    import clickhouse_connect

    hs = settings.hotstore
    kwargs: dict[str, Any] = {
        "host": hs.host,
        "port": hs.port,
        "username": hs.username,
        "password": hs.password.get_secret_value(),
        "secure": hs.secure,
        "database": hs.database if database is None else database,
        "connect_timeout": 10,
        "send_receive_timeout": 300,
    }
    kwargs.update(overrides)
    return clickhouse_connect.get_client(**kwargs)


def ensure_database(settings: Settings) -> None:
    """Create the PlantStream database (connecting to ``default`` first)."""
    client = hotstore_client(settings, database="default")
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {settings.hotstore.database}")
    finally:
        client.close()
