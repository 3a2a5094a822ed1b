"""The gateway benchmark reports what it measured when a step fails (issue 24, item 9).

The failure path is exercised with the benchmark's own step runner and report, and with
its real OPC UA server wrapper under a zero build budget; the full benchmark is not run
here (it takes minutes: ``plantstream bench gateway --quick --json`` does that)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from plantstream.benchmarks import gateway
from plantstream.benchmarks.gateway import StepRunner, finish
from plantstream.cli import bench_cmd
from plantstream.cli.main import app


def _console() -> Console:
    return Console(file=io.StringIO(), width=240)


def _failing_run(console: Console) -> dict[str, Any]:
    runner = StepRunner(console)
    runner.run("mqtt", "MQTT", lambda out: out.update(mqtt_events_per_s=1234))

    def ceiling(out: dict[str, Any]) -> None:
        out["opcua_ceiling"] = [
            {"tags": 500, "server_build_s": 0.2, "server_rounds_per_s": 1.0, "catch_up_s": 0.1, "sustained": True}
        ]
        out["opcua_tags_sustained"] = 500
        raise TimeoutError("benchmark: the OPC UA server did not start")

    runner.run("opcua_ceiling", "ceiling", ceiling)
    runner.run("modbus", "Modbus", lambda out: out.update(modbus_events_per_s=99))
    return finish(runner, console, params={"mqtt_messages": 10}, quick=True, write=False)


def test_a_failed_step_is_marked_and_every_other_figure_is_kept() -> None:
    console = _console()
    figures = _failing_run(console)

    assert figures["steps"]["mqtt"]["status"] == "ok"
    assert figures["steps"]["modbus"]["status"] == "ok"  # the step after the failure still ran
    failed = figures["steps"]["opcua_ceiling"]
    assert failed["status"] == "failed"
    assert failed["error"] == "TimeoutError: benchmark: the OPC UA server did not start"
    assert figures["failed_steps"] == ["opcua_ceiling"]
    assert figures["mqtt_events_per_s"] == 1234 and figures["modbus_events_per_s"] == 99
    assert figures["opcua_tags_sustained"] == 500  # measured before the failure: kept
    assert figures["mqtt_messages"] == 10 and figures["quick"] is True
    json.dumps(figures)  # the JSON line can always be written

    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert "mqtt_events_per_s" in printed and "1,234" in printed  # the figures table
    assert "opcua_ceiling" in printed and "failed" in printed  # the steps table
    assert "did not start" in printed and "Traceback" in printed


def test_an_interrupt_skips_the_rest_but_the_report_still_comes() -> None:
    console = _console()
    runner = StepRunner(console)

    def interrupted(_out: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    cleaned: list[bool] = []
    runner.run("mqtt", "MQTT", interrupted)
    assert not runner.run("modbus", "Modbus", lambda out: out.update(modbus_events_per_s=1))
    assert runner.run("cleanup", "clean-up", lambda _out: cleaned.append(True), always=True)
    figures = finish(runner, console, params={}, quick=True, write=False)
    assert figures["steps"]["mqtt"]["status"] == "interrupted"
    assert figures["steps"]["modbus"]["status"] == "skipped"
    assert "modbus_events_per_s" not in figures
    assert cleaned == [True] and figures["failed_steps"] == ["mqtt", "modbus"]


def test_bench_cli_prints_the_json_line_and_exits_1_when_a_step_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setitem(bench_cmd.BENCHMARKS, "fake", f"{__name__}:fake_benchmark")
    result = CliRunner().invoke(app, ["bench", "fake", "--json"])
    assert result.exit_code == 1, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["failed_steps"] == ["opcua_ceiling"]
    assert figures["mqtt_events_per_s"] == 1234


def fake_benchmark(_settings: object, console: Console, _quick: bool) -> dict[str, Any]:
    """What ``plantstream bench fake`` runs: the gateway benchmark's report with one failed step."""
    return _failing_run(console)


def test_tag_server_that_misses_its_build_budget_fails_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    # A zero budget: the real server process is started, the wait gives up at once, names
    # the tag count and the progress, and the child process is gone afterwards.
    monkeypatch.setattr(gateway, "SERVER_BUILD_BASE_S", 0.0)
    monkeypatch.setattr(gateway, "SERVER_BUILD_PER_TAG_S", 0.0)
    processes: list[Any] = []
    real_init = gateway._TagServer.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        processes.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(gateway._TagServer, "__init__", spy)
    with pytest.raises(TimeoutError, match=r"the 20,000-tag OPC UA server was not up after 0 s .* tags built"):
        gateway._TagServer(20_000, period_s=1.0)
    assert not processes[0]._process.is_alive()
