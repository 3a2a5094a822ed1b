"""Private platform instances: free loopback ports and settings for them.

Tests and benchmarks start their own platform next to a developer's (which uses the
default ports), so every port must be free and distinct.  SeaweedFS listens on each HTTP
port and on port + 10000 (gRPC); ports in the chosen range keep both below the kernel's
ephemeral range (32768+), where outgoing connections take their ports.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

from plantstream.settings import Settings, load_settings

_PORT_LOW, _PORT_HIGH = 11_000, 22_700
_GRPC_OFFSET = 10_000
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_free_port(*, with_grpc: bool = False) -> int:
    """A loopback port that is free now and not handed out before by this process.

    ``with_grpc``: port + 10000 must be free too (SeaweedFS derives its gRPC ports so).
    """
    rng = uuid.uuid4().int
    span = _PORT_HIGH - _PORT_LOW
    for i in range(span):
        port = _PORT_LOW + (rng + i * 7919) % span
        needed = [port, port + _GRPC_OFFSET] if with_grpc else [port]
        if any(p in _handed_out for p in needed):
            continue
        if all(_bindable(p) for p in needed):
            _handed_out.update(needed)
            return port
    raise RuntimeError("no free loopback port found")


def pick_free_port_block(size: int) -> int:
    """The first of ``size`` consecutive loopback ports that are all free now (and not handed out).

    For the metrics port block (``PLANTSTREAM_METRICS__BASE_PORT``): every component's
    port is an offset from one base, so a private instance needs the whole block.
    """
    rng = uuid.uuid4().int
    span = _PORT_HIGH - _PORT_LOW - size
    for i in range(span):
        base = _PORT_LOW + (rng + i * 7919) % span
        block = range(base, base + size)
        if any(p in _handed_out for p in block):
            continue
        if all(_bindable(p) for p in block):
            _handed_out.update(block)
            return base
    raise RuntimeError(f"no block of {size} free loopback ports found")


def isolated_settings(state_dir: Path, **overrides: Any) -> Settings:
    """Settings for a private platform instance: own state dir, free ports for everything.

    ``overrides`` are settings sections (dicts are merged into the generated ones).
    """
    s3_port = pick_free_port(with_grpc=True)
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "kafka": {"bootstrap_servers": f"127.0.0.1:{pick_free_port()}"},
        "s3": {"endpoint_url": f"http://127.0.0.1:{s3_port}"},
        "hotstore": {"host": "127.0.0.1", "port": pick_free_port()},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{pick_free_port()}"},
        "local_ports": {
            "seaweed_master": pick_free_port(with_grpc=True),
            "seaweed_volume": pick_free_port(with_grpc=True),
            "seaweed_filer": pick_free_port(with_grpc=True),
            "seaweed_admin": pick_free_port(with_grpc=True),
            "seaweed_webdav": pick_free_port(),
            "dagster_webserver": pick_free_port(),
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return load_settings(**values)
