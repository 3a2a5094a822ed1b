"""Machine physics, vectorised over all machines of a plant.

The failure modes follow the published generating rules of the AI4I 2020 predictive
maintenance data set (Matzka 2020), evaluated once per production cycle (one AI4I
record = one cycle here):

* tool wear failure (TWF): each tool reaches its end of life at a wear drawn between
  200 and 240 min; there it fails with probability ``tool_fail_probability`` (AI4I: 51
  of 120 tool ends) and is otherwise replaced in a preventive tool change;
* heat dissipation failure (HDF) when process - air temperature < 8.6 K and speed < 1380 rpm;
* power failure (PWF) when torque x angular speed is outside 3500-9000 W;
* overstrain failure (OSF) when tool wear x torque exceeds 11,000 / 12,000 / 13,000 min*Nm
  for product quality L / M / H;
* random failure (RNF) with probability 0.1 % per cycle.

The process variables are drawn so that their marginals match AI4I (air temperature
300 +- 2 K, process - air 10 +- 1 K, torque N(40, 10) Nm, speed ~1540 +- 190 rpm
falling with torque, correlation -0.88), but the drivers of each failure mode are
*slow* processes, which is what makes failures predictable minutes ahead:

* process - air temperature difference is an Ornstein-Uhlenbeck process (tau 10 min):
  before an HDF the temperature difference drifts down;
* 60 % of the torque variance is a slow load component (tau 5 min), so a PWF (power
  out of band, mostly at low load) is preceded by torque creeping away from 40 Nm;
* torque creeps up and vibration rises as the tool wears towards its limit (TWF, OSF).

After a failure the machine is stopped for a repair that removes its cause (new tool,
cooling restored, load reset), so failures do not repeat cycle after cycle.  The
constants in :class:`Calibration` were tuned so the per-cycle failure mix of a plant
with AI4I's product mix matches AI4I (~3.4 % of cycles); ``tests/simulator`` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plantstream.contract.machine_tags import MACHINE_STATES

OVERSTRAIN_LIMIT = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}
WEAR_PER_CYCLE_MIN = {"L": 2.0, "M": 3.0, "H": 5.0}  # AI4I: tool wear added per process by variant
FAILURE_MODES = ("TWF", "HDF", "PWF", "OSF", "RNF")
#: AI4I 2020: failures per 10,000 records (one record = one cycle here); 339 machine failures.
AI4I_FAILURES_PER_10K = {"TWF": 46, "HDF": 115, "PWF": 95, "OSF": 98, "RNF": 19}
AI4I_MACHINE_FAILURE_RATE = 0.0339

# Machine states (the values of the ``state`` array).
RUNNING, IDLE, STOPPED, MAINTENANCE = 0, 1, 2, 3
STATE_NAMES = MACHINE_STATES  # index = the state code the physics arrays hold


@dataclass(frozen=True)
class Calibration:
    """The tunables of the physics; defaults give an AI4I-like failure mix (see module doc)."""

    air_mean_k: float = 300.0
    air_sd_k: float = 2.0
    air_tau_s: float = 1800.0
    temp_delta_mean_k: float = 9.7
    temp_delta_sd_k: float = 1.0
    temp_delta_tau_s: float = 600.0
    torque_mean_nm: float = 38.5
    torque_sd_nm: float = 10.0
    torque_slow_share: float = 0.6  # share of the torque variance that is slow load drift
    torque_tau_s: float = 300.0
    torque_creep_nm: float = 11.0  # extra torque a tool at its wear limit needs
    speed_mean_rpm: float = 1538.0
    speed_per_nm: float = 15.7  # rpm less per Nm more: speed comes from a roughly constant power
    speed_low_torque_gain: float = 0.1  # rpm per Nm^2 below 28 Nm (AI4I's speed is right-skewed)
    speed_sd_rpm: float = 87.0
    tool_fail_probability: float = 0.72
    random_failure_probability: float = 0.001
    idle_probability: float = 0.01  # per cycle: a micro-stop (starved / blocked)
    idle_mean_s: float = 90.0
    tool_change_s: float = 120.0
    scrap_base: float = 0.01
    repair_s: dict[str, float] = field(
        default_factory=lambda: {"TWF": 300.0, "HDF": 360.0, "PWF": 420.0, "OSF": 300.0, "RNF": 180.0}
    )


@dataclass
class Failure:
    machine_index: int
    mode: str
    detail: dict[str, float]
    repair_s: float = 0.0


@dataclass(frozen=True)
class Transition:
    """A machine's state (or the reason for it) changed during the last step."""

    machine_index: int
    old: int
    new: int
    reason: str


@dataclass
class PlantPhysics:
    """State of every machine as numpy arrays (index = machine position in the plant).

    ``step`` returns the failures; the other outcomes of the last step (state
    transitions, completed cycles with good/scrap parts, tool changes) are left in
    attributes for the engine to turn into events.
    """

    product_quality: list[str]
    rng: np.random.Generator
    cycle_s: float | np.ndarray = 30.0
    repair_s: float = 600.0  # kept for callers of the skeleton; per-mode times are in calibration
    idle_kw: float | np.ndarray = 0.4
    standby_kw: float = 0.15
    calibration: Calibration = field(default_factory=Calibration)
    record_cycles: bool = False

    def __post_init__(self) -> None:
        n = len(self.product_quality)
        rng, cal = self.rng, self.calibration
        self.n = n
        self._cycle_s = np.broadcast_to(np.asarray(self.cycle_s, dtype=float), (n,)).copy()
        self._idle_kw = np.broadcast_to(np.asarray(self.idle_kw, dtype=float), (n,)).copy()
        self.air_temp = cal.air_mean_k + rng.normal(0, cal.air_sd_k, n)
        self.temp_delta = cal.temp_delta_mean_k + rng.normal(0, cal.temp_delta_sd_k, n)
        self.process_temp = self.air_temp + self.temp_delta
        self._slow_sd = cal.torque_sd_nm * np.sqrt(cal.torque_slow_share)
        self._fast_sd = cal.torque_sd_nm * np.sqrt(1 - cal.torque_slow_share)
        self.torque_slow = rng.normal(0, self._slow_sd, n)
        self.tool_wear = rng.uniform(0, 200, n)
        self.wear_limit = rng.uniform(200, 240, n)
        self.tool_fails = rng.random(n) < cal.tool_fail_probability
        self.cycle_count = rng.integers(10_000, 100_000, n).astype(float)
        self.cycle_clock_s = rng.uniform(0, 1, n) * self._cycle_s
        self.energy_kwh = rng.uniform(1_000, 50_000, n)
        self._wear_rate = np.array([WEAR_PER_CYCLE_MIN[q] for q in self.product_quality]) / self._cycle_s
        self._osf_limit = np.array([OVERSTRAIN_LIMIT[q] for q in self.product_quality])
        # The state machine: a hold (repair / tool change / micro-stop) overrides the schedule.
        self.state = np.full(n, RUNNING, dtype=np.int8)
        self.reason = ["" for _ in range(n)]
        self.hold_state = np.full(n, RUNNING, dtype=np.int8)
        self.hold_left_s = np.zeros(n)
        self.hold_reason = ["" for _ in range(n)]
        self.cycle_torque = np.zeros(n)
        self.cycle_speed = np.zeros(n)
        self._new_cycle(np.ones(n, dtype=bool))
        self.torque = np.zeros(n)
        self.speed = np.zeros(n)
        self.vibration = np.zeros(n)
        self.power = np.zeros(n)
        # Outcomes of the last step.
        self.transitions: list[Transition] = []
        self.cycle_done = np.zeros(n, dtype=bool)
        self.scrap = np.zeros(n, dtype=bool)
        self.defect: dict[int, str] = {}
        self.tool_changes: list[int] = []
        self.cycle_records: list[dict[str, np.ndarray]] = []
        self._sample(self.running)

    @property
    def running(self) -> np.ndarray:
        return self.state == RUNNING

    @property
    def repair_left_s(self) -> np.ndarray:
        return np.where(self.hold_state == STOPPED, self.hold_left_s, 0.0)

    def _ou(self, x: np.ndarray, mean: float, sd: float, tau_s: float, dt_s: float) -> np.ndarray:
        """One exact step of an Ornstein-Uhlenbeck process (stationary N(mean, sd))."""
        decay = np.exp(-dt_s / tau_s)
        return mean + (x - mean) * decay + sd * np.sqrt(1 - decay**2) * self.rng.normal(0, 1, x.shape[0])

    def _new_cycle(self, mask: np.ndarray) -> None:
        """Draw the process setpoints of the cycles starting now (AI4I: one record each)."""
        cal, k = self.calibration, int(mask.sum())
        if not k:
            return
        wear_ratio = np.clip(self.tool_wear[mask] / self.wear_limit[mask], 0, 1.2)
        torque = (
            cal.torque_mean_nm
            + self.torque_slow[mask]
            + self.rng.normal(0, self._fast_sd, k)
            + cal.torque_creep_nm * wear_ratio**3
        )
        torque = np.clip(torque, 3.8, None)
        speed = (
            cal.speed_mean_rpm
            - cal.speed_per_nm * (torque - cal.torque_mean_nm)
            + cal.speed_low_torque_gain * np.maximum(0.0, 28.0 - torque) ** 2
            + self.rng.normal(0, cal.speed_sd_rpm, k)
        )
        self.cycle_torque[mask] = torque
        self.cycle_speed[mask] = np.clip(speed, 1100.0, None)

    def step(
        self,
        dt_s: float,
        schedule_state: np.ndarray | None = None,
        schedule_reason: list[str] | None = None,
    ) -> list[Failure]:
        """Advance every machine by ``dt_s`` seconds; returns the failures that happened.

        ``schedule_state`` (per machine: RUNNING = scheduled to produce, STOPPED = off
        shift, MAINTENANCE = planned downtime) and ``schedule_reason`` come from the
        plant's shift calendar; without them every machine is scheduled all the time.
        """
        cal, _n = self.calibration, self.n
        self.transitions, self.tool_changes, self.defect = [], [], {}
        # Slow processes evolve whatever the machine does.
        self.air_temp = self._ou(self.air_temp, cal.air_mean_k, cal.air_sd_k, cal.air_tau_s, dt_s)
        self.temp_delta = self._ou(
            self.temp_delta, cal.temp_delta_mean_k, cal.temp_delta_sd_k, cal.temp_delta_tau_s, dt_s
        )
        self.torque_slow = self._ou(self.torque_slow, 0.0, self._slow_sd, cal.torque_tau_s, dt_s)
        self.process_temp = self.air_temp + self.temp_delta
        # Holds run out; then the schedule decides.
        self.hold_left_s = np.maximum(self.hold_left_s - dt_s, 0.0)
        self.hold_state[self.hold_left_s <= 0] = RUNNING
        self._settle_state(schedule_state, schedule_reason)
        running = self.running
        self.tool_wear += np.where(running, self._wear_rate * dt_s, 0.0)
        self.cycle_clock_s += np.where(running, dt_s, 0.0)
        finished = running & (self.cycle_clock_s >= self._cycle_s)
        self.cycle_clock_s[finished] -= self._cycle_s[finished]
        self.cycle_count[finished] += 1
        self.cycle_done = finished
        failures = self._cycle_end(finished)
        self._settle_state(schedule_state, schedule_reason)
        self._new_cycle(finished)  # after the repair resets: a restarted machine begins a fresh cycle
        self._sample(self.running)
        self.energy_kwh += self.power * dt_s / 3600.0
        return failures

    def _settle_state(self, schedule_state: np.ndarray | None, schedule_reason: list[str] | None) -> None:
        """Effective state = hold (repair, tool change) > schedule > micro-stop > running."""
        sched = np.full(self.n, RUNNING, dtype=np.int8) if schedule_state is None else schedule_state
        hard_hold = (self.hold_left_s > 0) & (self.hold_state != IDLE)
        idle = (self.hold_left_s > 0) & (self.hold_state == IDLE)
        new = np.where(hard_hold, self.hold_state, np.where(sched != RUNNING, sched, np.where(idle, IDLE, RUNNING)))
        for index in np.flatnonzero((new != self.state) | (self.state != RUNNING)):
            if hard_hold[index] or (idle[index] and sched[index] == RUNNING):
                reason = self.hold_reason[index]
            elif sched[index] != RUNNING:
                reason = schedule_reason[index] if schedule_reason else "off_shift"
            else:
                reason = ""
            if new[index] != self.state[index] or reason != self.reason[index]:
                self.transitions.append(Transition(index, int(self.state[index]), int(new[index]), reason))
                self.state[index] = new[index]
                self.reason[index] = reason

    def _hold(self, index: int, state: int, seconds: float, reason: str) -> None:
        self.hold_state[index] = state
        self.hold_left_s[index] = seconds
        self.hold_reason[index] = reason

    def _new_tool(self, index: int) -> None:
        self.tool_wear[index] = 0.0
        self.wear_limit[index] = self.rng.uniform(200, 240)
        self.tool_fails[index] = self.rng.random() < self.calibration.tool_fail_probability

    def _cycle_end(self, at_cycle_end: np.ndarray) -> list[Failure]:
        cal = self.calibration
        temp_diff = self.temp_delta
        omega = self.cycle_speed * 2 * np.pi / 60
        mech_power_w = self.cycle_torque * omega
        strain = self.tool_wear * self.cycle_torque
        tool_end = self.tool_wear >= self.wear_limit
        n = self.n
        modes = {
            "TWF": tool_end & self.tool_fails,
            "HDF": (temp_diff < 8.6) & (self.cycle_speed < 1380),
            "PWF": (mech_power_w < 3500) | (mech_power_w > 9000),
            "OSF": strain > self._osf_limit,
            "RNF": self.rng.random(n) < cal.random_failure_probability,
        }
        wear_ratio = np.clip(self.tool_wear / self.wear_limit, 0, 1.2)
        scrap_p = cal.scrap_base + 0.08 * wear_ratio**6 + 0.04 * (temp_diff < 9.0)
        self.scrap = at_cycle_end & (self.rng.random(n) < scrap_p)
        if self.record_cycles and at_cycle_end.any():
            self.cycle_records.append(
                {
                    "machine": np.flatnonzero(at_cycle_end),
                    "torque": self.cycle_torque[at_cycle_end].copy(),
                    "speed": self.cycle_speed[at_cycle_end].copy(),
                    "temp_diff": temp_diff[at_cycle_end].copy(),
                    "tool_wear": self.tool_wear[at_cycle_end].copy(),
                    "tool_end": tool_end[at_cycle_end].copy(),
                    **{mode: hit[at_cycle_end].copy() for mode, hit in modes.items()},
                }
            )
        failures = []
        for index in np.flatnonzero(at_cycle_end):
            hit = [mode for mode in FAILURE_MODES if modes[mode][index]]
            if not hit:
                if tool_end[index]:  # end of tool life without failure: preventive tool change
                    self.tool_changes.append(int(index))
                    self._new_tool(int(index))
                    self._hold(int(index), MAINTENANCE, cal.tool_change_s, "tool_change")
                elif self.rng.random() < cal.idle_probability:
                    self._hold(int(index), IDLE, self.rng.exponential(cal.idle_mean_s), "starved")
                continue
            detail = {
                "tool_wear_min": float(self.tool_wear[index]),
                "torque_nm": float(self.cycle_torque[index]),
                "speed_rpm": float(self.cycle_speed[index]),
                "temp_diff_k": float(temp_diff[index]),
                "power_w": float(mech_power_w[index]),
            }
            repair = max(cal.repair_s[mode] for mode in hit)
            failures.extend(Failure(int(index), mode, detail, repair) for mode in hit)
            self.scrap[index] = True
            self.defect[int(index)] = hit[0]
            # The repair removes the cause: a new tool, cooling restored, load back to nominal.
            if {"TWF", "OSF"} & set(hit) or tool_end[index]:
                self._new_tool(int(index))
            if "HDF" in hit:
                self.temp_delta[index] = cal.temp_delta_mean_k + self.rng.normal(0, 0.3)
            if "PWF" in hit:
                self.torque_slow[index] = 0.0
            self._hold(int(index), STOPPED, repair, "failure:" + "+".join(hit))
        return failures

    def _sample(self, running: np.ndarray) -> None:
        """The instantaneous readings: cycle setpoints plus measurement noise."""
        cal, n, rng = self.calibration, self.n, self.rng
        wear_ratio = np.clip(self.tool_wear / self.wear_limit, 0, 1.5)
        self.torque = np.where(running, np.clip(self.cycle_torque + rng.normal(0, 0.4, n), 0.0, None), 0.0)
        self.speed = np.where(running, self.cycle_speed + rng.normal(0, 4.0, n), 0.0)
        load = np.abs(self.cycle_torque - cal.torque_mean_nm)
        self.vibration = np.where(
            running,
            1.6 + 6.0 * wear_ratio**4 + 0.05 * load + np.abs(rng.normal(0, 0.3, n)),
            0.2 + np.abs(rng.normal(0, 0.05, n)),
        )
        mech_kw = self.torque * self.speed * 2 * np.pi / 60 / 1000
        self.power = np.where(running, mech_kw / 0.9 + self._idle_kw, np.where(self.state == IDLE, self._idle_kw, 0.0))
        self.power = np.where((self.state == STOPPED) | (self.state == MAINTENANCE), self.standby_kw, self.power)

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
            "pressure": np.where(running, 180 * self.cycle_torque / 40 + self.rng.normal(0, 4, n), 0.0),
            "belt_speed": np.where(running, 1.2 * self.cycle_speed / 1538 + self.rng.normal(0, 0.02, n), 0.0),
            "cycle_count": self.cycle_count,
        }
