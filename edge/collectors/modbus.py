"""Modbus TCP polling: one task per machine (unit id), batched reads per contiguous block.

Modbus has no timestamps, so ``source_ts`` is ``None`` and the read time is the event
time.  A register map holds signals (each becomes a :class:`Reading`) and controller tags
(state, stop reason, part counters, energy meter: ``contract.machine_tags``), which go
together as one :class:`StatusReading` per poll; tags read in one block come from one
instant of the device, which is why the plant file keeps its status registers contiguous.
An exception response is an answer (the device is there): its signals are emitted with
``quality="bad"``.  No answer (timeout, refused, reset) drops the
connection and reconnects with backoff; the staleness tracker marks the machine stale
meanwhile.  The poll schedule is absolute (``t0 + k * interval``) so a slow read does
not make the period drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from plantstream.contract import Quality
from plantstream.contract.edge_wire import MAX_READ_REGISTERS, Register
from plantstream.contract.signals import SIGNALS
from plantstream.edge.collectors.base import Backoff, Observation, Reading, Sink, StatusReading, now_ms, sleep_or_stop
from plantstream.edge.config import MachineConfig

log = logging.getLogger(__name__)
PROTOCOL = "modbus"


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers from ``start`` in one table, and what is in them."""

    table: str
    start: int
    count: int
    signals: tuple[tuple[str, Register], ...]


def plan_blocks(registers: dict[str, Register], max_gap: int = 0) -> list[Block]:
    """Group registers into as few reads as possible (contiguous, ≤ 125 registers each)."""
    blocks: list[Block] = []
    for table in ("holding", "input"):
        items = sorted(((n, r) for n, r in registers.items() if r.table == table), key=lambda x: x[1].address)
        current: list[tuple[str, Register]] = []
        start = end = 0
        for name, reg in items:
            reg_end = reg.address + reg.words
            if current and reg.address <= end + max_gap and reg_end - start <= MAX_READ_REGISTERS:
                current.append((name, reg))
                end = max(end, reg_end)
                continue
            if current:
                blocks.append(Block(table, start, end - start, tuple(current)))
            current, start, end = [(name, reg)], reg.address, reg_end
        if current:
            blocks.append(Block(table, start, end - start, tuple(current)))
    return blocks


def decode(words: list[int], reg: Register) -> float:
    """Register words -> engineering value (word order, type, scale for integer types)."""
    if reg.words == 2 and reg.word_order == "little":
        words = [words[1], words[0]]
    raw = b"".join(struct.pack(">H", w & 0xFFFF) for w in words)
    fmt = {"float32": ">f", "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I"}[reg.type]
    (value,) = struct.unpack(fmt, raw)
    return float(value) if reg.type == "float32" else float(value) * reg.scale


def encode(value: float, reg: Register) -> list[int]:
    """Engineering value -> register words (the inverse of :func:`decode`; for servers in tests)."""
    fmt = {"float32": ">f", "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I"}[reg.type]
    raw = struct.pack(fmt, value if reg.type == "float32" else round(value / reg.scale))
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return [words[1], words[0]] if reg.words == 2 and reg.word_order == "little" else words


async def run_machine(
    machine: MachineConfig,
    registers: dict[str, Register],
    sink: Sink,
    stop: asyncio.Event,
    backoff: Backoff,
) -> None:
    blocks = plan_blocks(registers)
    sink.known_signals(machine.machine_id, sorted(name for name in registers if name in SIGNALS))
    connected_before = False
    while not stop.is_set():
        client = AsyncModbusTcpClient(
            machine.host, port=machine.port, timeout=machine.modbus.timeout_s, retries=0, reconnect_delay=0
        )
        try:
            if not await client.connect():
                raise ConnectionError(f"cannot connect to {machine.endpoint}")
            sink.connection(machine.machine_id, PROTOCOL, True)
            if connected_before:
                sink.reconnect(PROTOCOL)
            connected_before = True
            backoff.reset()
            await _poll(machine, blocks, client, sink, stop)
        except (ModbusException, OSError, ConnectionError, TimeoutError) as exc:
            log.info("modbus %s (%s): %s", machine.machine_id, machine.endpoint, exc)
        finally:
            with contextlib.suppress(Exception):
                client.close()
            sink.connection(machine.machine_id, PROTOCOL, False)
        if stop.is_set():
            break
        await sleep_or_stop(stop, backoff.next_delay())


async def _poll(
    machine: MachineConfig, blocks: list[Block], client: AsyncModbusTcpClient, sink: Sink, stop: asyncio.Event
) -> None:
    next_at = time.monotonic()
    while not stop.is_set():
        readings: list[Observation] = []
        tags: dict[str, float | str] = {}
        tags_read_ts = 0
        for block in blocks:
            read = client.read_holding_registers if block.table == "holding" else client.read_input_registers
            response = await read(block.start, count=block.count, device_id=machine.modbus.unit_id)
            read_ts = now_ms()
            if response.isError():  # the device is there; its signals are bad, its tags unknown
                readings += [
                    Reading(machine.machine_id, name, None, Quality.BAD, None, read_ts)
                    for name, _ in block.signals
                    if name in SIGNALS
                ]
                continue
            words = list(response.registers)
            for name, reg in block.signals:
                offset = reg.address - block.start
                value = decode(words[offset : offset + reg.words], reg)
                if name in SIGNALS:
                    readings.append(Reading(machine.machine_id, name, value, Quality.GOOD, None, read_ts))
                else:
                    tags[name] = value
                    tags_read_ts = read_ts
        if tags:
            readings.append(StatusReading(machine.machine_id, tags, None, tags_read_ts))
        sink.alive(machine.machine_id)
        sink.submit(PROTOCOL, readings)
        next_at += machine.interval_s
        delay = next_at - time.monotonic()
        if delay < 0:
            next_at = time.monotonic()  # behind schedule: do not burst to catch up
            delay = 0
        if await sleep_or_stop(stop, delay):
            return
