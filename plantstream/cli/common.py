"""Helpers shared by the CLI commands."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

from plantstream.settings import Settings, SettingsError, load_settings

err_console = Console(stderr=True)


def settings_or_exit() -> Settings:
    """Load settings; on error print which keys are wrong and exit 2 (fail at start-up).

    Printed verbatim (no markup: a message may quote ``[::1]`` or JSON) and unwrapped, so
    it stays one paragraph a user can read and a script can grep.
    """
    try:
        return load_settings()
    except SettingsError as exc:
        err_console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def emit_json_line(payload: dict[str, Any]) -> None:
    """The machine-readable result: one JSON line, last on stdout."""
    sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
    sys.stdout.flush()
