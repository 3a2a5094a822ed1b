"""Machine physics, vectorised over all machines of a plant.

The failure modes follow the published generating rules of the AI4I 2020 predictive
maintenance data set (Matzka 2020), evaluated once per production cycle:

* tool wear failure (TWF) when tool wear reaches a limit drawn between 200 and 240 min;
* heat dissipation failure (HDF) when process - air temperature < 8.6 K and speed < 1380 rpm;
* power failure (PWF) when torque x angular speed is outside 3500-9000 W;
* overstrain failure (OSF) when tool wear x torque exceeds 11,000 / 12,000 / 13,000 min*Nm
  for product quality L / M / H;
* random failure (RNF) with probability 0.1 % per cycle.

Precursors make failures predictable minutes ahead: vibration rises and torque creeps
as the tool wears towards its limit.  The edge issue extends this module (sensor and
device faults, shifts, planned downtime); the rules above are its contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OVERSTRAIN_LIMIT = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}
WEAR_PER_CYCLE_MIN = {"L": 2.0, "M": 3.0, "H": 5.0}  # AI4I: tool wear added per process by variant
FAILURE_MODES = ("TWF", "HDF", "PWF", "OSF", "RNF")


@dataclass
class Failure:
    machine_index: int
    mode: str
    detail: dict[str, float]


@dataclass
class PlantPhysics:
    """State of every machine as numpy arrays (index = machine position in the plant)."""

    product_quality: list[str]
    rng: np.random.Generator
    cycle_s: float = 30.0
    repair_s: float = 600.0
    air_temp: np.ndarray = field(init=False)
    process_temp: np.ndarray = field(init=False)
    speed: np.ndarray = field(init=False)
    torque: np.ndarray = field(init=False)
    tool_wear: np.ndarray = field(init=False)
    wear_limit: np.ndarray = field(init=False)
    vibration: np.ndarray = field(init=False)
    power: np.ndarray = field(init=False)
    cycle_count: np.ndarray = field(init=False)
    repair_left_s: np.ndarray = field(init=False)
    cycle_clock_s: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.product_quality)
        rng = self.rng
        self.air_temp = 300.0 + rng.normal(0, 2, n)
        self.process_temp = self.air_temp + 10.0
        self.speed = np.full(n, 1500.0)
        self.torque = np.full(n, 40.0)
        self.tool_wear = rng.uniform(0, 200, n)
        self.wear_limit = rng.uniform(200, 240, n)
        self.vibration = np.full(n, 2.0)
        self.power = np.zeros(n)
        self.cycle_count = rng.integers(10_000, 100_000, n).astype(float)
        self.repair_left_s = np.zeros(n)
        self.cycle_clock_s = rng.uniform(0, self.cycle_s, n)
        self._wear_rate = np.array([WEAR_PER_CYCLE_MIN[q] for q in self.product_quality]) / self.cycle_s
        self._osf_limit = np.array([OVERSTRAIN_LIMIT[q] for q in self.product_quality])

    @property
    def running(self) -> np.ndarray:
        return self.repair_left_s <= 0

    def step(self, dt_s: float) -> list[Failure]:
        """Advance every machine by ``dt_s`` seconds; returns the failures that happened."""
        rng, n = self.rng, len(self.product_quality)
        running = self.running
        # Ambient temperature: a slow random walk around 300 K; process runs ~10 K above it.
        self.air_temp += rng.normal(0, 0.05, n) + 0.002 * (300.0 - self.air_temp)
        self.process_temp = self.air_temp + 10.0 + rng.normal(0, 0.3, n)
        wear_ratio = np.clip(self.tool_wear / self.wear_limit, 0, 1.5)
        # Speed from a ~2860 W nominal power, torque around 40 Nm; a worn tool needs more torque.
        self.torque = np.where(running, np.clip(rng.normal(40, 5, n) + 8.0 * wear_ratio**3, 3, None), 0.0)
        self.speed = np.where(running, np.clip(rng.normal(1500, 60, n), 1100, None), 0.0)
        self.power = self.torque * self.speed * 2 * np.pi / 60 / 1000 + 0.4  # kW incl. idle draw
        self.vibration = 1.8 + 6.0 * wear_ratio**4 + np.abs(rng.normal(0, 0.3, n)) + np.where(running, 0.0, -1.5)
        self.tool_wear += np.where(running, self._wear_rate * dt_s, 0.0)
        self.repair_left_s = np.maximum(self.repair_left_s - dt_s, 0.0)
        self.cycle_clock_s += np.where(running, dt_s, 0.0)
        finished = running & (self.cycle_clock_s >= self.cycle_s)
        self.cycle_clock_s[finished] -= self.cycle_s
        self.cycle_count[finished] += 1
        return self._failures(finished)

    def _failures(self, at_cycle_end: np.ndarray) -> list[Failure]:
        temp_diff = self.process_temp - self.air_temp
        omega = self.speed * 2 * np.pi / 60
        mech_power_w = self.torque * omega
        strain = self.tool_wear * self.torque
        modes = {
            "TWF": self.tool_wear >= self.wear_limit,
            "HDF": (temp_diff < 8.6) & (self.speed < 1380),
            "PWF": (mech_power_w < 3500) | (mech_power_w > 9000),
            "OSF": strain > self._osf_limit,
            "RNF": self.rng.random(len(self.tool_wear)) < 0.001,
        }
        failures = []
        for index in np.flatnonzero(at_cycle_end):
            hit = [mode for mode in FAILURE_MODES if modes[mode][index]]
            if not hit:
                continue
            detail = {
                "tool_wear_min": float(self.tool_wear[index]),
                "torque_nm": float(self.torque[index]),
                "speed_rpm": float(self.speed[index]),
                "temp_diff_k": float(temp_diff[index]),
                "power_w": float(mech_power_w[index]),
            }
            failures.extend(Failure(int(index), mode, detail) for mode in hit)
            # Repair: the machine stops; a new tool is fitted.
            self.repair_left_s[index] = self.repair_s
            self.tool_wear[index] = 0.0
            self.wear_limit[index] = self.rng.uniform(200, 240)
        return failures

    def signal_values(self) -> dict[str, np.ndarray]:
        """Current value of every signal for every machine."""
        n = len(self.product_quality)
        running = self.running
        return {
            "air_temperature": self.air_temp,
            "process_temperature": self.process_temp,
            "rotational_speed": self.speed,
            "torque": self.torque,
            "tool_wear": self.tool_wear,
            "vibration": np.maximum(self.vibration, 0.05),
            "power": self.power,
            "current": self.power * 1000 / (400 * np.sqrt(3) * 0.85),
            "pressure": np.where(running, 180 + self.rng.normal(0, 4, n), 0.0),
            "belt_speed": np.where(running, 1.2 + self.rng.normal(0, 0.02, n), 0.0),
            "cycle_count": self.cycle_count,
        }
