"""``python -m plantstream.services.hotstore [--data-dir DIR] [--host H] [--port P]``.

Defaults come from :func:`plantstream.settings.load_settings`; the user name and password
only from settings (``PLANTSTREAM_HOTSTORE__USERNAME``/``__PASSWORD``), never from the
command line, where every user of the machine could read them.

The process runs with ``TZ=UTC``: chDB reports the process time zone as the server's
``timezone()``, and clickhouse-connect converts DateTime values with it.  It is set here,
before chDB is imported (hence the imports inside :func:`main`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    os.environ["TZ"] = "UTC"
    time.tzset()

    from plantstream.observability.ports import metrics_host, metrics_port
    from plantstream.services.hotstore.auth import Credentials
    from plantstream.services.hotstore.service import ServiceConfig, run_service
    from plantstream.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m plantstream.services.hotstore", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=settings.state_dir / "hotstore", help="chDB data directory")
    parser.add_argument("--host", default=settings.hotstore.host, help="address to listen on")
    parser.add_argument("--port", type=int, default=settings.hotstore.port, help="port (0 = any free port)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServiceConfig(
        data_dir=args.data_dir.expanduser().resolve(),
        host=args.host,
        port=args.port,
        credentials=Credentials(settings.hotstore.username, settings.hotstore.password.get_secret_value()),
        metrics_address=(
            (metrics_host(settings), metrics_port(settings, "hotstore")) if settings.metrics.enabled else None
        ),
    )
    return run_service(config)


if __name__ == "__main__":
    sys.exit(main())
