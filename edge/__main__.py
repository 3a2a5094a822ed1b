"""``python -m plantstream.edge [CONFIG]``: run the gateway with settings from the environment.

The same as ``plantstream gateway``; tests start it this way to ``kill -9`` a real process.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from plantstream.edge.config import load_config
from plantstream.edge.gateway import config_path, run_gateway
from plantstream.settings import load_settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else config_path(settings)
    run_gateway(settings, load_config(path))


if __name__ == "__main__":
    main()
