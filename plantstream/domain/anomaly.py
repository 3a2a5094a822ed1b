"""Per-series anomaly detection: one pure, vectorised, replay-deterministic detector per (machine, signal).

The stream's anomaly branch keeps one detector per series and turns its transitions into
alerts on Kafka; offline code (the scoring in :mod:`.alert_scoring`, notebooks) runs the same
detector on recorded series.  Nothing here knows about Bytewax or Kafka.

Rules (each with its own hysteresis: one fault = ONE raise and ONE clear):

* ``stale`` - a ``quality="stale"`` reading (the gateway's "device stopped answering" marker);
* ``dropout`` - ``N`` consecutive missing (``None``/NaN) or ``quality="bad"`` readings;
* ``stuck`` - the value repeats exactly for ``N`` samples while the machine runs and the
  signal has varied before;
* ``spike`` - a robust z-score far outside a rolling block-median baseline (``k``
  consecutive samples, or one strong sample);
* ``limit`` - a configured engineering limit crossed (per machine type and signal, tighter
  than the physical valid ranges of :mod:`plantstream.contract.signals`);
* ``rate`` - a configured maximum rate of rise/fall exceeded;
* ``drift`` - a slow precursor: a CUSUM of block medians standardised against a long
  baseline (vibration rising before TWF/OSF, temperature difference falling before HDF,
  torque away from normal before PWF).

Why blocks: the baseline is built from fixed, count-aligned blocks of ``block_size``
baseline samples (median and MAD of each block); the centre for scoring is the median of
the last three block medians, the scale combines the typical within-block MAD with the
mean change between consecutive block medians over the last ``history_blocks`` blocks.
Medians are robust (a spike or a short fault cannot move them) and - unlike a clipped
EWMA, whose clipping depends on its own state sample by sample - a block statistic is a
pure function of the block's values, so a whole batch of many series is computed with a
few numpy calls and the result is bit-for-bit the same however the events were cut into
batches.  The only per-sample recursion left, hysteresis, is solved exactly with run
lengths (``_hysteresis``); the drift CUSUM recurs per *block* (a handful per batch),
vectorised across series.

Determinism: every transition (timestamps, kind, evidence values) depends only on the
series' events in order, never on batch boundaries: :meth:`DetectorBank.update_batch` on
one batch, on the same events cut anywhere, or :meth:`SeriesDetector.update` event by
event, give identical transitions and identical snapshots (tests/unit/test_anomaly_detector.py
checks it with hypothesis).  Alert ids are derived from transitions (:func:`alert_id`).

State: per series a fixed number of numbers (docs/anomaly.md, "State"), independent of
how long the series runs; :meth:`snapshot` gives plain dicts (picklable, JSON-able).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from plantstream.contract.events import AlertType, Severity
from plantstream.contract.signals import SIGNALS

# --------------------------------------------------------------------------------------
# Kinds, quality codes
# --------------------------------------------------------------------------------------

STALE, DROPOUT, STUCK, SPIKE, LIMIT, RATE, DRIFT = range(7)
KINDS: tuple[str, ...] = ("stale", "dropout", "stuck", "spike", "limit", "rate", "drift")
N_RULES = len(KINDS)

#: Alert type on ``factory.alerts`` for each kind.  ``stale``: the stream's anomaly branch
#: turns a machine's per-series stale transitions into ONE MachineStale per machine;
#: ``dropout``/``stuck`` say the sensor is broken (SensorFault), the others that the process is.
ALERT_TYPES: dict[str, AlertType] = {
    "stale": AlertType.MACHINE_STALE,
    "dropout": AlertType.SENSOR_FAULT,
    "stuck": AlertType.SENSOR_FAULT,
    "spike": AlertType.ANOMALY_DETECTED,
    "limit": AlertType.ANOMALY_DETECTED,
    "rate": AlertType.ANOMALY_DETECTED,
    "drift": AlertType.MAINTENANCE_REQUIRED,
}

GOOD, UNCERTAIN, BAD, STALE_Q = 0, 1, 2, 3
QUALITY_CODES: dict[str, int] = {"good": GOOD, "uncertain": UNCERTAIN, "bad": BAD, "stale": STALE_Q}

#: The derived signal for the HDF precursor; the caller computes it (see :func:`paired_difference`).
TEMPERATURE_DIFFERENCE = "temperature_difference"
#: Derived signals and the measured signals they are computed from (scoring matches faults
#: on a source signal to alerts on the derived one).
DERIVED_SIGNALS: dict[str, tuple[str, ...]] = {TEMPERATURE_DIFFERENCE: ("process_temperature", "air_temperature")}

_MAD_TO_SD = 1.4826  # MAD of a normal distribution x 1.4826 = its standard deviation
_MEAN_AD_TO_SD = math.sqrt(math.pi / 2)  # mean absolute deviation of a normal x 1.2533 = its sd
_CENTER_BLOCKS = 3
_SINCE_CAP = 1 << 30


def alert_id(machine_id: str, signal: str, kind: str, raised_at_ms: int) -> str:
    """Deterministic alert identity: the same transition on a replay gets the same id.

    A hash (not Python's salted ``hash``) of the fields that identify an alert, so every
    process, run and replay agrees; consumers deduplicate alerts on it.
    """
    key = f"{machine_id}\x1f{signal}\x1f{kind}\x1f{int(raised_at_ms)}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """Engineering limits of one signal on one machine type (``None`` = no limit).

    ``low`` is only checked while the machine runs (a stopped drive legitimately reads 0);
    ``high`` always.  Rates are per second of event time between consecutive valid readings.
    """

    low: float | None = None
    high: float | None = None
    max_rise_per_s: float | None = None
    max_fall_per_s: float | None = None

    def without_rates(self) -> Limits:
        return Limits(self.low, self.high)


@dataclass(frozen=True, slots=True)
class LimitTable:
    """Engineering limits per machine type and signal: ``by_type[type][signal]`` over ``common[signal]``.

    Validated against the signals' physical valid ranges: an engineering limit outside
    them could never fire (such readings are dead-lettered before they get here).
    """

    common: Mapping[str, Limits]
    by_type: Mapping[str, Mapping[str, Limits]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tables = [("*", self.common), *self.by_type.items()]
        for machine_type, table in tables:
            for signal, lim in table.items():
                spec = SIGNALS.get(signal)
                if spec is None:
                    continue  # derived signals have no valid range
                for name, bound in (("low", lim.low), ("high", lim.high)):
                    if bound is not None and not spec.valid_min <= bound <= spec.valid_max:
                        raise ValueError(
                            f"engineering limit {machine_type}.{signal}.{name}={bound} is outside the valid range "
                            f"[{spec.valid_min}, {spec.valid_max}] of {signal}"
                        )

    def for_series(self, machine_type: str | None, signal: str) -> Limits:
        typed = self.by_type.get(machine_type or "", {})
        return typed.get(signal) or self.common.get(signal) or Limits()


#: Default engineering limits.  The simulator's machine types share one drive model, so the
#: common table carries most limits; the overrides are where types differ (idle draw, press
#: hydraulics, conveyor belts).  Plants configure their own (``LimitTable(...)``).
DEFAULT_LIMITS = LimitTable(
    common={
        "air_temperature": Limits(low=285.0, high=315.0),
        "process_temperature": Limits(low=290.0, high=330.0),
        TEMPERATURE_DIFFERENCE: Limits(low=8.6),  # AI4I: heat dissipation fails below 8.6 K
        "rotational_speed": Limits(low=1_000.0, high=2_500.0),
        "torque": Limits(low=5.0, high=90.0),
        "vibration": Limits(high=12.0),
        "power": Limits(high=20.0),
        "current": Limits(high=35.0),
        "pressure": Limits(low=40.0, high=400.0),
        "belt_speed": Limits(low=0.5, high=2.5),
        "tool_wear": Limits(high=250.0, max_rise_per_s=0.5),  # tools end at 200-240 min; falls = new tool
        # A counter: +1 per cycle (30 s), never down.  One count between two readings taken
        # 0.999 s apart is 1.001/s: the rise limit leaves room for sampling jitter.
        "cycle_count": Limits(max_rise_per_s=5.0, max_fall_per_s=0.0),
    },
    by_type={
        "press": {"power": Limits(high=25.0), "current": Limits(high=45.0)},
        "robot_cell": {"torque": Limits(low=5.0, high=80.0)},
        "conveyor": {"power": Limits(high=15.0), "current": Limits(high=25.0)},
    },
)


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """The slow precursor rule: a CUSUM over block medians standardised against a long baseline.

    Per completed block: ``z = (block median - long mean) / short-term scale``; the long
    mean is an average over the last ``long_blocks`` blocks (a running mean until then);
    ``S+ = max(0, S+ + z - slack)`` (``up``), ``S- = max(0, S- - z - slack)`` (``down``),
    both capped at ``cap x threshold`` so that an alert clears within a bounded time.
    Raise when ``max(S+, S-) >= threshold``; a block with it below
    ``clear_fraction x threshold`` is normal.
    """

    direction: Literal["up", "down", "both"] = "both"
    slack: float = 1.0
    threshold: float = 12.0
    clear_fraction: float = 0.5
    cap: float = 3.0
    long_blocks: int = 120  # 1 h of 30-sample blocks at 1 Hz
    warmup_blocks: int = 20
    clear_after_blocks: int = 2


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """The rules of one series.  ``None``/``False`` disables a rule; counts are in samples.

    ``raise_after``/``clear_after`` are the hysteresis of the spike rule (``clear_after``
    also clears stale, dropout, stuck, limit and rate alerts); the stuck and dropout rules
    raise after ``stuck_samples``/``dropout_samples`` consecutive samples, limits and rates
    after ``limit_raise_after``.  ``follows_running=False`` for signals that do not depend on
    the machine's state (ambient air): the running flag is then ignored for the series.
    ``restart_grace``: samples after the machine starts again (running after not running)
    that the spike rule does not judge - a restart changes levels legitimately (new tool,
    new cycle, temperatures moved while it stood) - while the baseline re-learns from them.
    """

    zscore: bool = True
    z_threshold: float = 8.0
    z_clear: float = 4.0
    z_strong: float = 10.0
    raise_after: int = 3
    clear_after: int = 5
    scale_floor: float = 1e-6
    stuck_samples: int | None = 10
    dropout_samples: int | None = 3
    stale: bool = True
    limits: Limits = Limits()
    limit_raise_after: int = 1
    drift: DriftConfig | None = None
    follows_running: bool = True
    restart_grace: int = 90

    def __post_init__(self) -> None:
        counts = {"raise_after": self.raise_after, "clear_after": self.clear_after, "limit": self.limit_raise_after}
        counts |= {"stuck_samples": self.stuck_samples or 1, "dropout_samples": self.dropout_samples or 1}
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 <= self.z_clear <= self.z_threshold <= self.z_strong:
            raise ValueError("need 0 <= z_clear <= z_threshold <= z_strong")
        if self.scale_floor <= 0:
            raise ValueError("scale_floor must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorConfig:
        data = dict(data)
        data["limits"] = Limits(**data.get("limits", {}))
        drift = data.get("drift")
        data["drift"] = None if drift is None else DriftConfig(**drift)
        return cls(**data)


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    """Geometry of the robust baseline, shared by all series of a :class:`DetectorBank`.

    A block is ``block_size`` baseline samples (good quality, machine not stopped, value
    different from the previous one); the baseline for scoring is built from the last
    ``history_blocks`` completed blocks, so at 1 Hz it covers ~5 minutes and is warm after
    ``block_size x history_blocks`` samples.
    """

    block_size: int = 30
    history_blocks: int = 10

    def __post_init__(self) -> None:
        if self.block_size < 2 or self.history_blocks < 2:
            raise ValueError("block_size and history_blocks must be >= 2")


#: Per-signal rule settings: what kind of signal each one is decides which rules make sense.
_SCALE_FLOORS: dict[str, float] = {
    "air_temperature": 0.05,
    "process_temperature": 0.05,
    TEMPERATURE_DIFFERENCE: 0.05,
    "rotational_speed": 1.0,
    "torque": 0.2,
    "vibration": 0.05,
    "current": 0.1,
    "power": 0.05,
    "pressure": 1.0,
    "belt_speed": 0.01,
    "tool_wear": 0.1,
    "cycle_count": 1.0,
}
#: Counters: monotone between resets, a z-score against a median is meaningless (rates catch jumps).
_COUNTERS = frozenset({"tool_wear", "cycle_count"})
#: Signals that normally hold still for a while even when the machine runs (cycle_count: 1 per 30 s cycle).
_STUCK_SAMPLES: dict[str, int] = {"cycle_count": 120}
#: Signals that do not follow the machine's state: a stopped machine's ambient air keeps changing.
_AMBIENT = frozenset({"air_temperature"})
_DRIFT: dict[str, DriftConfig] = {
    "vibration": DriftConfig(direction="up"),
    "torque": DriftConfig(direction="both"),
    TEMPERATURE_DIFFERENCE: DriftConfig(direction="down"),
}


def default_config(machine_type: str | None, signal: str, limits: LimitTable = DEFAULT_LIMITS) -> DetectorConfig:
    """The default rules of a series: limits from ``limits``, rule choice by the kind of signal."""
    return DetectorConfig(
        zscore=signal not in _COUNTERS,
        scale_floor=_SCALE_FLOORS.get(signal, 1e-6),
        stuck_samples=_STUCK_SAMPLES.get(signal, 10),
        limits=limits.for_series(machine_type, signal),
        drift=_DRIFT.get(signal),
        follows_running=signal not in _AMBIENT,
    )


def limits_only(config: DetectorConfig) -> DetectorConfig:
    """The trivial baseline detector: the same fixed high/low engineering limits and nothing else."""
    return replace(
        config,
        zscore=False,
        stuck_samples=None,
        dropout_samples=None,
        stale=False,
        drift=None,
        limits=config.limits.without_rates(),
    )


def paired_difference(
    a: np.ndarray, a_quality: np.ndarray, b: np.ndarray, b_quality: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``a - b`` for readings paired by the caller (same machine and source timestamp), with a quality.

    The derived value takes the worse of the two qualities (stale > bad > uncertain > good)
    and is NaN unless both are valid; e.g. the HDF precursor is
    ``paired_difference(process_temperature, q_p, air_temperature, q_a)``.
    """
    qa, qb = _quality_codes(a_quality, len(a)), _quality_codes(b_quality, len(b))
    quality = np.maximum(qa, qb)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    value = np.where(quality <= UNCERTAIN, a - b, np.nan)
    return value, quality


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a transition happened.

    Raise: ``first_ts_ms`` = first sample of the anomalous run that raised, ``last_ts_ms`` =
    the raising sample, ``value``/``statistic`` at that sample, ``samples`` = length of the
    run.  Clear: ``first_ts_ms`` = the raise, ``last_ts_ms`` = the last anomalous sample,
    ``value``/``statistic`` at the peak (largest ``|statistic|`` since the raise),
    ``samples`` = anomalous samples in the episode.  ``threshold`` is the one crossed,
    ``reference`` what the value was compared with (baseline centre, previous value, long
    mean), ``None`` where there is none.  The statistic per kind: spike = robust z-score,
    limit = distance beyond the limit, rate = units per second, drift = CUSUM (negative:
    downwards), stale/dropout/stuck = run length in samples.
    """

    first_ts_ms: int
    last_ts_ms: int
    value: float | None
    statistic: float
    threshold: float
    reference: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class Transition:
    """One alert raise or clear of one series."""

    machine_id: str
    signal: str
    kind: str
    action: Literal["raise", "clear"]
    ts_ms: int
    raised_at_ms: int
    severity: Severity
    evidence: Evidence

    @property
    def alert_id(self) -> str:
        return alert_id(self.machine_id, self.signal, self.kind, self.raised_at_ms)

    @property
    def alert_type(self) -> AlertType:
        return ALERT_TYPES[self.kind]


@dataclass(frozen=True, slots=True)
class Decision:
    """What :meth:`SeriesDetector.update` concludes about one reading.

    ``score``: the robust z-score magnitude (NaN when the sample is not scored: missing,
    machine stopped, baseline not warm, counter signals); ``anomalous``: some rule finds
    this sample anomalous (before hysteresis); ``active``: kinds with an open alert after
    it; ``transitions``: raises/clears this sample caused.
    """

    score: float
    anomalous: bool
    active: frozenset[str]
    transitions: tuple[Transition, ...]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per event (in input order): ``scores``, ``anomalous``; and the batch's transitions (series, then time)."""

    scores: np.ndarray
    anomalous: np.ndarray
    transitions: list[Transition]


# --------------------------------------------------------------------------------------
# Struct-of-arrays state of many series
# --------------------------------------------------------------------------------------

_INF = math.inf
_NAN = math.nan
_R = (N_RULES,)

# name -> (dtype, trailing shape, default).  Config arrays are rebuilt from DetectorConfig.
_CONFIG_FIELDS: dict[str, tuple[Any, tuple[int, ...], Any]] = {
    "k": (np.int64, _R, 0),  # raise after k relevant anomalous samples; 0 = rule off
    "m": (np.int64, _R, 1),  # clear after m relevant normal samples
    "z_thr": (np.float64, (), _INF),
    "z_clear": (np.float64, (), 0.0),
    "z_strong": (np.float64, (), _INF),
    "floor": (np.float64, (), 1e-6),
    "lo": (np.float64, (), -_INF),
    "hi": (np.float64, (), _INF),
    "rise": (np.float64, (), _INF),
    "fall": (np.float64, (), _INF),
    "d_up": (np.bool_, (), False),
    "d_down": (np.bool_, (), False),
    "d_slack": (np.float64, (), 0.0),
    "d_h": (np.float64, (), _INF),
    "d_hclear": (np.float64, (), 0.0),
    "d_cap": (np.float64, (), _INF),
    "d_long": (np.int64, (), 1),
    "d_warm": (np.int64, (), 0),
    "gated": (np.bool_, (), True),
    "grace": (np.int64, (), 0),
}


def _state_fields(block: int, history: int) -> dict[str, tuple[Any, tuple[int, ...], Any]]:
    return {
        "fill": (np.int64, (), 0),  # baseline samples in the current (partial) block
        "partial": (np.float64, (block,), _NAN),
        "n_hist": (np.int64, (), 0),  # completed blocks in the history (saturates at history)
        "hist_med": (np.float64, (history,), _NAN),  # oldest first
        "hist_mad": (np.float64, (history,), _NAN),
        "center": (np.float64, (), _NAN),  # baseline in effect now (NaN: not warm)
        "scale": (np.float64, (), _NAN),
        "last_s": (np.float64, (), _NAN),  # last good value while running (stuck comparison)
        "last_v": (np.float64, (), _NAN),  # last valid value and its time (rate)
        "last_v_ts": (np.int64, (), 0),
        "last_run": (np.int64, (), -1),  # running code of the last sample
        "since_start": (np.int64, (), _SINCE_CAP),  # samples since the machine last started (saturates)
        "mu": (np.float64, (), _NAN),  # drift: long mean of block medians
        "mu_n": (np.int64, (), 0),
        "cp": (np.float64, (), 0.0),
        "cm": (np.float64, (), 0.0),
        "active": (np.bool_, _R, False),
        "arun": (np.int64, _R, 0),  # inactive: anomalous run so far (< k)
        "nrun": (np.int64, _R, 0),  # active: normal run so far (< m)
        "astart": (np.int64, _R, 0),  # inactive with arun > 0: ts of the run's first sample
        "raised_at": (np.int64, _R, 0),  # active: the episode
        "peak_stat": (np.float64, _R, _NAN),
        "peak_value": (np.float64, _R, _NAN),
        "peak_thr": (np.float64, _R, _NAN),
        "n_anom": (np.int64, _R, 0),
        "last_anom": (np.int64, _R, 0),
    }


def _mid(sorted_rows: np.ndarray) -> np.ndarray:
    """Median along the last axis of already sorted rows (exact: a selection and one halving)."""
    n = sorted_rows.shape[-1]
    if n % 2:
        return sorted_rows[..., n // 2]
    return 0.5 * (sorted_rows[..., n // 2 - 1] + sorted_rows[..., n // 2])


def _segments(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal keys in a sorted array."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return starts, np.diff(np.append(starts, n))


def _seg_prev(values: np.ndarray, seg_first: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Previous element within each segment; the segment's first element gets ``carried``."""
    prev = np.empty_like(values)
    prev[1:] = values[:-1]
    prev[seg_first] = carried
    return prev


def _quality_codes(quality: Any, n: int) -> np.ndarray:
    """Quality names (or codes already) as :data:`QUALITY_CODES`; ``None`` = all good."""
    if quality is None:
        return np.zeros(n, dtype=np.int8)
    arr = np.asarray(quality)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int8, copy=False)
    names, inverse = np.unique(arr.astype(str), return_inverse=True)
    try:
        codes = np.array([QUALITY_CODES[str(q)] for q in names], dtype=np.int8)
    except KeyError as exc:
        raise ValueError(f"unknown quality {exc.args[0]!r}; expected one of {sorted(QUALITY_CODES)}") from None
    return codes[inverse]


def _running_codes(running: Any, n: int) -> np.ndarray:
    """1 running, 0 not running, -1 unknown (judged as if running: scored, stuck and low limits apply)."""
    if running is None:
        return np.full(n, -1, dtype=np.int8)
    arr = np.asarray(running)
    if arr.dtype == np.bool_:
        return arr.astype(np.int8)
    return arr.astype(np.int8, copy=False)


@dataclass(slots=True)
class _Hyst:
    """The outcome of :func:`_hysteresis` on one rule's relevant samples (subset coordinates)."""

    pos: np.ndarray  # run length (incl. a run carried from the previous batch)
    run_start: np.ndarray  # subset index where the sample's run starts
    carried_run: np.ndarray  # the run started in an earlier batch
    raises: np.ndarray
    clears: np.ndarray
    seg_starts: np.ndarray
    seg_ends: np.ndarray
    seg_slots: np.ndarray
    active_end: np.ndarray
    c_end: np.ndarray


def _hysteresis(
    sl: np.ndarray,
    c: np.ndarray,
    *,
    strong: np.ndarray | None,
    k: np.ndarray,
    m: np.ndarray,
    active0: np.ndarray,
    arun0: np.ndarray,
    nrun0: np.ndarray,
) -> _Hyst:
    """Exact, vectorised raise-after-k / clear-after-m state machine over many series at once.

    ``sl`` (slot per sample, non-decreasing), ``c`` (1 anomalous, 0 normal), ``strong``
    (raise at once); ``k, m, active0, arun0, nrun0`` are indexed by slot.  A raise
    candidate is an anomalous sample whose anomalous run (carried from the last batch
    included) reaches ``k``, or a strong one; a clear candidate is a normal sample whose
    normal run reaches ``m``.  The state after a sample is the type of the last candidate
    at or before it in its series (or the carried state); transitions are where the state
    changes.  This equals the sequential machine because candidates of the current state's
    own type change nothing, and runs are counted independently of the state.
    """
    n = len(c)
    idx = np.arange(n)
    seg_first = np.empty(n, dtype=bool)
    seg_first[0] = True
    np.not_equal(sl[1:], sl[:-1], out=seg_first[1:])
    first = seg_first.copy()
    first[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(first)
    run_id = np.cumsum(first) - 1
    run_start = starts[run_id]
    seg_starts = np.flatnonzero(seg_first)
    seg_id = np.cumsum(seg_first) - 1
    seg_start_of = seg_starts[seg_id]
    carried_run = run_start == seg_start_of
    carry = np.where(carried_run, np.where(c == 1, arun0[sl], nrun0[sl]), 0)
    carried_run &= carry > 0
    pos = idx - run_start + 1 + carry
    raise_c = (c == 1) & (pos >= k[sl])
    if strong is not None:
        raise_c |= (c == 1) & strong
    clear_c = (c == 0) & (pos >= m[sl])
    last = np.maximum.accumulate(np.where(raise_c | clear_c, idx, -1))
    inseg = last >= seg_start_of
    state = np.where(inseg, raise_c[np.maximum(last, 0)], active0[sl])
    prev = np.empty_like(state)
    prev[1:] = state[:-1]
    prev[seg_starts] = active0[sl[seg_starts]]
    trans = state != prev
    seg_ends = np.append(seg_starts[1:], n) - 1
    return _Hyst(
        pos=pos,
        run_start=run_start,
        carried_run=carried_run,
        raises=np.flatnonzero(trans & state),
        clears=np.flatnonzero(trans & ~state),
        seg_starts=seg_starts,
        seg_ends=seg_ends,
        seg_slots=sl[seg_starts],
        active_end=state[seg_ends],
        c_end=c[seg_ends],
    )


def _py(x: float) -> float | None:
    """A numpy float as evidence: a plain float, or None for NaN (so equal evidence compares equal)."""
    v = float(x)
    return None if math.isnan(v) else v


@dataclass(slots=True)
class _RuleData:
    """Per-sample arrays of one rule, for the samples ``_Step._rule`` asked for."""

    cls: np.ndarray  # 1 anomalous, 0 normal, -1 not relevant
    stat: np.ndarray | None  # None: the statistic is the run length
    threshold: np.ndarray | float
    reference: np.ndarray | None = None
    strong: np.ndarray | None = None
    severity: np.ndarray | None = None  # bool per sample: critical (else the rule's default)


_CRITICAL_KINDS = frozenset({LIMIT})


class DetectorBank:
    """Detectors of many series in struct-of-arrays form: one vectorised step per batch.

    Register series with :meth:`add` (or let :meth:`codes` do it through ``resolver``),
    then feed batches with :meth:`update_batch` (``series`` = the codes :meth:`add`
    returned).  One bank is one unit of state (e.g. one Kafka partition's series);
    :meth:`snapshot` / :meth:`from_snapshot` save and restore it.
    """

    def __init__(
        self,
        baseline: BaselineConfig | None = None,
        resolver: Callable[[str, str], DetectorConfig] | None = None,
    ) -> None:
        self.baseline = baseline or BaselineConfig()
        self.resolver = resolver or _default_resolver
        self._keys: list[tuple[str, str]] = []
        self._configs: list[DetectorConfig] = []
        self._index: dict[tuple[str, str], int] = {}
        self._fields = {**_CONFIG_FIELDS, **_state_fields(self.baseline.block_size, self.baseline.history_blocks)}
        self._cap = 0
        self._a: dict[str, np.ndarray] = {}
        self._grow(8)

    # -- registry ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> list[tuple[str, str]]:
        return list(self._keys)

    def config(self, code: int) -> DetectorConfig:
        return self._configs[code]

    def _grow(self, cap: int) -> None:
        old = self._cap
        for name, (dtype, shape, default) in self._fields.items():
            arr = np.full((cap, *shape), default, dtype=dtype)
            if old:
                arr[:old] = self._a[name]
            self._a[name] = arr
        self._cap = cap

    def add(self, machine_id: str, signal: str, config: DetectorConfig | None = None) -> int:
        """Register a series (idempotent) and return its code."""
        key = (machine_id, signal)
        code = self._index.get(key)
        if code is not None:
            return code
        code = len(self._keys)
        if code >= self._cap:
            self._grow(max(8, 2 * self._cap))
        self._keys.append(key)
        self._index[key] = code
        self._configs.append(config or self.resolver(machine_id, signal))
        self._set_config(code, self._configs[code])
        return code

    def code(self, machine_id: str, signal: str) -> int:
        return self._index[(machine_id, signal)]

    def codes(self, machine_ids: Any, signals: Any) -> np.ndarray:
        """Series code per event, registering unknown series through the resolver.

        ``machine_ids``/``signals``: sequences, numpy or pyarrow string arrays (an Arrow
        column of a decoded batch).  Both columns are dictionary-encoded by Arrow, so the
        Python work is one look-up per distinct series, not per event.
        """
        m_idx, m_dict = _dictionary(machine_ids)
        s_idx, s_dict = _dictionary(signals)
        if len(m_idx) != len(s_idx):
            raise ValueError("machine_ids and signals must have the same length")
        ns = max(len(s_dict), 1)
        pair = m_idx * ns + s_idx
        seen = np.zeros(len(m_dict) * ns, dtype=bool)  # dense: machines x signals is small, no sort needed
        seen[pair] = True
        table = np.full(len(seen), -1, dtype=np.int64)
        for u in np.flatnonzero(seen).tolist():
            table[u] = self.add(m_dict[u // ns], s_dict[u % ns])
        return table[pair]

    def _set_config(self, code: int, cfg: DetectorConfig) -> None:
        a = self._a
        k = np.zeros(N_RULES, dtype=np.int64)
        mm = np.full(N_RULES, cfg.clear_after, dtype=np.int64)
        k[STALE] = 1 if cfg.stale else 0
        k[DROPOUT] = cfg.dropout_samples or 0
        k[STUCK] = cfg.stuck_samples or 0
        k[SPIKE] = cfg.raise_after if cfg.zscore else 0
        lim = cfg.limits
        has_limits = lim.low is not None or lim.high is not None
        has_rates = lim.max_rise_per_s is not None or lim.max_fall_per_s is not None
        k[LIMIT] = cfg.limit_raise_after if has_limits else 0
        k[RATE] = cfg.limit_raise_after if has_rates else 0
        d = cfg.drift
        k[DRIFT] = 1 if d is not None else 0
        if d is not None:
            mm[DRIFT] = d.clear_after_blocks
        a["k"][code] = k
        a["m"][code] = mm
        a["z_thr"][code] = cfg.z_threshold
        a["z_clear"][code] = cfg.z_clear
        a["z_strong"][code] = cfg.z_strong
        a["floor"][code] = cfg.scale_floor
        a["gated"][code] = cfg.follows_running
        a["grace"][code] = cfg.restart_grace
        a["lo"][code] = -_INF if lim.low is None else lim.low
        a["hi"][code] = _INF if lim.high is None else lim.high
        a["rise"][code] = _INF if lim.max_rise_per_s is None else lim.max_rise_per_s
        a["fall"][code] = _INF if lim.max_fall_per_s is None else lim.max_fall_per_s
        a["d_up"][code] = d is not None and d.direction in ("up", "both")
        a["d_down"][code] = d is not None and d.direction in ("down", "both")
        if d is not None:
            a["d_slack"][code] = d.slack
            a["d_h"][code] = d.threshold
            a["d_hclear"][code] = d.threshold * d.clear_fraction
            a["d_cap"][code] = d.threshold * d.cap
            a["d_long"][code] = d.long_blocks
            a["d_warm"][code] = d.warmup_blocks

    # -- snapshot ----------------------------------------------------------------------

    def _states(self) -> list[dict[str, Any]]:
        """Canonical plain-data state of every series, built column-wise (one pass per field).

        Canonical: fields that mean nothing in the current state (an open alert's peak while
        it is closed, a run start without a run) are written as defaults, so two detectors
        that reached the same state by different batch cuts give equal snapshots.
        """
        a, n = self._a, len(self._keys)
        hist = self.baseline.history_blocks
        active = a["active"][:n]
        pending = ~active & (a["arun"][:n] > 0)

        def floats(arr: np.ndarray) -> list[Any]:
            out = arr.astype(object)
            out[np.isnan(arr)] = None
            return out.tolist()

        def masked(name: str, keep: np.ndarray, default: float) -> list[Any]:
            arr = np.where(keep, a[name][:n], default)
            return floats(arr) if arr.dtype.kind == "f" else arr.tolist()

        fill = a["fill"][:n].tolist()
        n_hist = a["n_hist"][:n].tolist()
        cols: dict[str, list[Any]] = {
            "partial": [row[:f] for row, f in zip(floats(a["partial"][:n]), fill, strict=True)],
            "hist_med": [row[hist - h :] for row, h in zip(floats(a["hist_med"][:n]), n_hist, strict=True)],
            "hist_mad": [row[hist - h :] for row, h in zip(floats(a["hist_mad"][:n]), n_hist, strict=True)],
            **{name: floats(a[name][:n]) for name in ("center", "scale", "last_s", "last_v", "mu", "cp", "cm")},
            **{name: a[name][:n].tolist() for name in ("last_v_ts", "last_run", "mu_n", "arun", "nrun")},
            "since_start": np.minimum(a["since_start"][:n], a["grace"][:n]).tolist(),
            "active": active.tolist(),
            "astart": masked("astart", pending, 0),
            **{name: masked(name, active, 0) for name in ("raised_at", "n_anom", "last_anom")},
            **{name: masked(name, active, _NAN) for name in ("peak_stat", "peak_value", "peak_thr")},
        }
        names = list(cols)
        rows = zip(*(cols[name] for name in names), strict=True)
        return [
            {"fill": f, "n_hist": h, **dict(zip(names, row, strict=True))}
            for f, h, row in zip(fill, n_hist, rows, strict=True)
        ]

    def _config_dicts(self) -> list[dict[str, Any]]:
        """Each series' config as a dict (``asdict`` is slow: equal configs share one conversion)."""
        cache: dict[DetectorConfig, dict[str, Any]] = {}
        out = []
        for cfg in self._configs:
            d = cache.get(cfg)
            if d is None:
                d = cache[cfg] = cfg.to_dict()
            out.append(d)
        return out

    def _load_state(self, code: int, st: Mapping[str, Any]) -> None:
        a = self._a
        hist = self.baseline.history_blocks
        fill = int(st["fill"])
        if fill >= self.baseline.block_size or len(st["partial"]) != fill:
            raise ValueError("snapshot does not match the bank's block size")
        a["fill"][code] = fill
        a["partial"][code] = _NAN
        a["partial"][code, :fill] = _floats(st["partial"])
        n_hist = int(st["n_hist"])
        if n_hist > hist or len(st["hist_med"]) != n_hist:
            raise ValueError("snapshot does not match the bank's history length")
        a["n_hist"][code] = n_hist
        for name in ("hist_med", "hist_mad"):
            a[name][code] = _NAN
            a[name][code, hist - n_hist :] = _floats(st[name])
        for name in ("center", "scale", "last_s", "last_v", "mu", "cp", "cm"):
            a[name][code] = _NAN if st[name] is None else float(st[name])
        for name in ("last_v_ts", "mu_n", "last_run", "since_start"):
            a[name][code] = int(st[name])
        for name in ("active", "arun", "nrun", "astart", "raised_at", "n_anom", "last_anom"):
            a[name][code] = st[name]
        for name in ("peak_stat", "peak_value", "peak_thr"):
            a[name][code] = _floats(st[name])

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state of every series (pickle or JSON it); see docs/anomaly.md for its size."""
        return {
            "version": 1,
            "baseline": asdict(self.baseline),
            "series": [
                {"machine_id": machine_id, "signal": signal, "config": config, "state": state}
                for (machine_id, signal), config, state in zip(
                    self._keys, self._config_dicts(), self._states(), strict=True
                )
            ],
        }

    @classmethod
    def from_snapshot(
        cls,
        snapshot: Mapping[str, Any],
        resolver: Callable[[str, str], DetectorConfig] | None = None,
        *,
        keep_configs: bool = True,
    ) -> DetectorBank:
        """Restore a bank; ``keep_configs=False`` re-resolves each series' rules (a config change on deploy)."""
        if snapshot.get("version") != 1:
            raise ValueError(f"unknown detector snapshot version {snapshot.get('version')!r}")
        bank = cls(BaselineConfig(**snapshot["baseline"]), resolver)
        for entry in snapshot["series"]:
            config = DetectorConfig.from_dict(entry["config"]) if keep_configs else None
            code = bank.add(entry["machine_id"], entry["signal"], config)
            bank._load_state(code, entry["state"])
        return bank

    def active_kinds(self, code: int) -> frozenset[str]:
        return frozenset(KINDS[r] for r in np.flatnonzero(self._a["active"][code]))

    # -- the vectorised step -------------------------------------------------------------

    def update_batch(
        self,
        series: np.ndarray | Sequence[int],
        ts: np.ndarray | Sequence[int],
        values: np.ndarray | Sequence[float | None],
        quality: np.ndarray | Sequence[str] | Sequence[int] | None = None,
        running: np.ndarray | Sequence[bool] | None = None,
    ) -> BatchResult:
        """Feed one batch of events of many series (any interleaving; per series in arrival order).

        ``series``: codes from :meth:`add`/:meth:`codes`; ``ts``: event time (epoch ms);
        ``values``: floats, NaN or ``None`` = missing; ``quality``: names or
        :data:`QUALITY_CODES` (default good); ``running``: per event whether the machine runs
        (bool, or int8 with -1 = unknown; default unknown).
        """
        codes = np.asarray(series, dtype=np.int64)
        n = len(codes)
        if n == 0:
            return BatchResult(np.zeros(0), np.zeros(0, dtype=bool), [])
        if codes.min() < 0 or codes.max() >= len(self._keys):
            raise ValueError("unknown series code (register series with add() or codes() first)")
        ts_arr = np.asarray(ts, dtype=np.int64)
        val = np.asarray(values, dtype=np.float64) if not _has_none(values) else _none_to_nan(values)
        q = _quality_codes(quality, n)
        run = _running_codes(running, n)
        if not (len(ts_arr) == len(val) == len(q) == len(run) == n):
            raise ValueError("series, ts, values, quality and running must have the same length")
        if n > 1 and np.any(codes[1:] < codes[:-1]):
            order = np.argsort(codes.astype(np.uint16) if self._cap <= 65_535 else codes, kind="stable")
            step = _Step(self, codes[order], ts=ts_arr[order], x=val[order], q=q[order], run=run[order])
        else:
            order = None
            step = _Step(self, codes, ts=ts_arr, x=val, q=q, run=run)
        scores, anomalous, transitions = step.run()
        if order is not None:
            out_s = np.empty(n)
            out_a = np.empty(n, dtype=bool)
            out_s[order] = scores
            out_a[order] = anomalous
            scores, anomalous = out_s, out_a
        return BatchResult(scores, anomalous, transitions)


def _dictionary(values: Any) -> tuple[np.ndarray, list[str]]:
    """Indices and dictionary of a string column (Arrow does the hashing in C++)."""
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(np.asarray(values, dtype=object))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    if arr.null_count:
        raise ValueError("series names must not be null")
    return arr.indices.to_numpy(zero_copy_only=False).astype(np.int64), [str(v) for v in arr.dictionary.to_pylist()]


def _default_resolver(machine_id: str, signal: str) -> DetectorConfig:
    """Rules by signal alone (no machine type known): common engineering limits."""
    return default_config(None, signal)


def _floats(values: Iterable[Any]) -> list[float]:
    return [_NAN if v is None else float(v) for v in values]


def _has_none(values: Any) -> bool:
    return not isinstance(values, np.ndarray) and any(v is None for v in values)


def _none_to_nan(values: Iterable[float | None]) -> np.ndarray:
    return np.array([_NAN if v is None else v for v in values], dtype=np.float64)


class _Step:
    """One batch through a bank: grouped arrays in, outputs and updated state out."""

    def __init__(
        self, bank: DetectorBank, sl: np.ndarray, *, ts: np.ndarray, x: np.ndarray, q: np.ndarray, run: np.ndarray
    ) -> None:
        self.bank, self.a = bank, bank._a
        self.sl, self.ts, self.x, self.q, self.running = sl, ts, x, q, run
        self.n = len(sl)
        self.seg_starts, self.seg_len = _segments(sl)
        self.seg_slots = sl[self.seg_starts]
        self.transitions: list[tuple[int, int, Transition]] = []

    # -- baseline ------------------------------------------------------------------------

    def _baseline(self, s_idx: np.ndarray, b_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Form blocks from the baseline samples (``b_idx``) and update the carried baseline.

        Returns, per S-sample (``s_idx``), the baseline in effect when it arrived - centre,
        scale and the number of history blocks behind it (blocks completed earlier in this
        batch count) - and the completed blocks for the drift rule.
        """
        a, bank = self.a, self.bank
        bsz, hist = bank.baseline.block_size, bank.baseline.history_blocks
        center = a["center"][self.sl[s_idx]]
        scale = a["scale"][self.sl[s_idx]]
        nh = a["n_hist"][self.sl[s_idx]]
        blocks: dict[str, np.ndarray] = {}
        if len(b_idx) == 0:
            return center, scale, nh, blocks
        bsl = self.sl[b_idx]
        vstart, n_v = _segments(bsl)
        rows = bsl[vstart]
        nr = len(rows)
        c0 = a["fill"][rows]
        tot = c0 + n_v
        off = np.zeros(nr + 1, dtype=np.int64)
        np.cumsum(tot, out=off[1:])
        buf = np.empty(int(off[-1]))
        jj = np.arange(bsz)
        if c0.any():
            pm = jj[None, :] < c0[:, None]
            buf[(off[:-1, None] + jj[None, :])[pm]] = a["partial"][rows][pm]
        row_of_v = np.repeat(np.arange(nr), n_v)
        vpos = off[:-1][row_of_v] + c0[row_of_v] + (np.arange(len(b_idx)) - vstart[row_of_v])
        buf[vpos] = self.x[b_idx]
        nfull = tot // bsz
        rem = tot - nfull * bsz
        # the new partial blocks
        a["fill"][rows] = rem
        newp = np.full((nr, bsz), _NAN)
        pm = jj[None, :] < rem[:, None]
        newp[pm] = buf[((off[:-1] + nfull * bsz)[:, None] + jj[None, :])[pm]]
        a["partial"][rows] = newp
        nbt = int(nfull.sum())
        if nbt == 0:
            return center, scale, nh, blocks
        # completed blocks: robust statistics
        row_of_b = np.repeat(np.arange(nr), nfull)
        boff = np.cumsum(nfull) - nfull
        b_in_row = np.arange(nbt) - boff[row_of_b]
        bstart = off[:-1][row_of_b] + b_in_row * bsz
        vals = buf[bstart[:, None] + jj[None, :]]
        med = _mid(np.sort(vals, axis=1))
        mad = _mid(np.sort(np.abs(vals - med[:, None]), axis=1))
        end_v = bstart + bsz - 1 - off[:-1][row_of_b] - c0[row_of_b] + vstart[row_of_b]
        comp_idx = b_idx[end_v]  # the grouped-order sample that completes each block
        # baselines after each block: windows over history + new blocks
        has = nfull > 0
        f_rows = rows[has]
        f_nb = nfull[has]
        f_of_row = np.cumsum(has) - 1
        nbmax = int(f_nb.max())
        hm = np.full((len(f_rows), hist + nbmax), _NAN)
        ha = np.full((len(f_rows), hist + nbmax), _NAN)
        hm[:, :hist] = a["hist_med"][f_rows]
        ha[:, :hist] = a["hist_mad"][f_rows]
        fr = f_of_row[row_of_b]
        hm[fr, hist + b_in_row] = med
        ha[fr, hist + b_in_row] = mad
        win_m = np.lib.stride_tricks.sliding_window_view(hm, hist, axis=1)[:, 1:]
        win_a = np.lib.stride_tricks.sliding_window_view(ha, hist, axis=1)[:, 1:]
        # Centre: median of the last CENTER_BLOCKS block medians (little lag, and one odd block
        # cannot move it).  Spread: the mean absolute change between consecutive block medians
        # (the error of predicting the next block from the last), combined with the typical
        # within-block MAD.  Sums run column by column so results never depend on array shapes.
        cen = _mid(np.sort(win_m[..., hist - _CENTER_BLOCKS :], axis=-1))
        step = np.abs(win_m[..., 1] - win_m[..., 0])
        for j in range(2, hist):
            step += np.abs(win_m[..., j] - win_m[..., j - 1])
        between = step * (_MEAN_AD_TO_SD / (hist - 1))
        within = _MAD_TO_SD * _mid(np.sort(win_a, axis=-1))
        scl = np.maximum(np.sqrt(within * within + between * between), a["floor"][f_rows][:, None])
        n_hist0 = a["n_hist"][f_rows]
        warm_w = (n_hist0[:, None] + 1 + np.arange(nbmax)[None, :]) >= hist
        cen = np.where(warm_w, cen, _NAN)
        scl = np.where(warm_w, scl, _NAN)
        cen_b = cen[fr, b_in_row]
        scl_b = scl[fr, b_in_row]
        # carried state: the last hist blocks, the latest baseline
        take = f_nb[:, None] + np.arange(hist)[None, :]
        ar = np.arange(len(f_rows))[:, None]
        a["hist_med"][f_rows] = hm[ar, take]
        a["hist_mad"][f_rows] = ha[ar, take]
        a["n_hist"][f_rows] = np.minimum(n_hist0 + f_nb, hist)
        last_w = f_nb - 1
        scale_before_b = np.where(b_in_row == 0, a["scale"][rows[row_of_b]], scl_b[np.maximum(np.arange(nbt) - 1, 0)])
        a["center"][f_rows] = cen[np.arange(len(f_rows)), last_w]
        a["scale"][f_rows] = scl[np.arange(len(f_rows)), last_w]
        # per S-sample: which baseline generation applies (blocks completed before it in this batch)
        comp = np.zeros(self.n, dtype=np.int64)
        comp[comp_idx] = 1
        cs = np.cumsum(comp)
        base = np.repeat(cs[self.seg_starts] - comp[self.seg_starts], self.seg_len)
        g = (cs - base - comp)[s_idx]
        blk_off = np.zeros(self.bank._cap, dtype=np.int64)
        blk_off[f_rows] = np.cumsum(f_nb) - f_nb
        use = g > 0
        if use.any():
            fi = blk_off[self.sl[s_idx][use]] + g[use] - 1
            center[use] = cen_b[fi]
            scale[use] = scl_b[fi]
            nh[use] = np.minimum(nh[use] + g[use], hist)
        blocks = {
            "slot": rows[row_of_b],
            "b_in_row": b_in_row,
            "med": med,
            "scale_before": scale_before_b,
            "comp_idx": comp_idx,
        }
        return center, scale, nh, blocks

    def _drift(self, blocks: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Per-block CUSUM rounds (block r of every series at once); cls at the completing samples."""
        a = self.a
        if not blocks:
            return None
        slot = blocks["slot"]
        on = a["k"][slot, DRIFT] > 0
        if not on.any():
            return None
        sel_all = np.flatnonzero(on)
        b_in_row = blocks["b_in_row"][sel_all]
        slot = slot[sel_all]
        med = blocks["med"][sel_all]
        scl = blocks["scale_before"][sel_all]
        nb = len(sel_all)
        stat = np.full(nb, _NAN)
        ok_b = np.zeros(nb, dtype=bool)
        ref = np.full(nb, _NAN)
        for r in range(int(b_in_row.max()) + 1):
            sel = np.flatnonzero(b_in_row == r)
            s = slot[sel]
            mu, mu_n = a["mu"][s], a["mu_n"][s]
            ok = (mu_n >= a["d_warm"][s]) & np.isfinite(scl[sel])
            z = np.where(ok, (med[sel] - mu) / np.where(ok, scl[sel], 1.0), 0.0)
            cap = a["d_cap"][s]
            cp = np.where(ok & a["d_up"][s], np.minimum(np.maximum(0.0, a["cp"][s] + z - a["d_slack"][s]), cap), 0.0)
            cm = np.where(ok & a["d_down"][s], np.minimum(np.maximum(0.0, a["cm"][s] - z - a["d_slack"][s]), cap), 0.0)
            a["cp"][s], a["cm"][s] = cp, cm
            a["mu"][s] = np.where(mu_n == 0, med[sel], mu + (med[sel] - mu) / np.minimum(mu_n + 1, a["d_long"][s]))
            a["mu_n"][s] = np.minimum(mu_n + 1, a["d_long"][s])
            stat[sel] = np.where(cp >= cm, cp, -cm)
            ok_b[sel] = ok
            ref[sel] = mu
        cls = np.full(self.n, -1, dtype=np.int8)
        where = blocks["comp_idx"][sel_all]
        mag = np.abs(stat)
        h = a["d_h"][slot]
        c_b = np.where(mag >= h, 1, np.where(mag < a["d_hclear"][slot], 0, -1))
        cls[where] = np.where(ok_b, c_b, -1)
        full_stat = np.full(self.n, _NAN)
        full_stat[where] = stat
        full_ref = np.full(self.n, _NAN)
        full_ref[where] = ref
        return cls, full_stat, full_ref

    def _since_start(self, run: np.ndarray) -> np.ndarray:
        """Per sample: samples since its machine last started (0 at the first running sample)."""
        a, n = self.a, self.n
        idx = np.arange(n)
        seg_first = np.zeros(n, dtype=bool)
        seg_first[self.seg_starts] = True
        prev = _seg_prev(run.astype(np.int64), seg_first, a["last_run"][self.seg_slots])
        start = (run == 1) & (prev == 0)
        seg_start_of = np.repeat(self.seg_starts, self.seg_len)
        last = np.maximum.accumulate(np.where(start, idx, -1))
        carried = np.minimum(np.repeat(a["since_start"][self.seg_slots], self.seg_len), _SINCE_CAP) + 1
        since = np.where(last >= seg_start_of, idx - last, carried + (idx - seg_start_of))
        since = np.minimum(since, _SINCE_CAP)
        ends = self.seg_starts + self.seg_len - 1
        a["last_run"][self.seg_slots] = run[ends]
        a["since_start"][self.seg_slots] = since[ends]
        return since

    # -- the whole step ----------------------------------------------------------------------

    def run(self) -> tuple[np.ndarray, np.ndarray, list[Transition]]:
        """Baseline, then each rule: per-event scores and anomaly flags (grouped order), transitions."""
        a, sl, x, q = self.a, self.sl, self.x, self.q
        n = self.n
        hist = self.bank.baseline.history_blocks
        seg_slots, seg_len = self.seg_slots, self.seg_len
        run = np.where(np.repeat(a["gated"][seg_slots], seg_len), self.running, np.int8(-1))
        self.on = a["k"][seg_slots] > 0  # (segments, rules): rule enabled for the series
        self.anomalous = np.zeros(n, dtype=bool)
        finite = np.isfinite(x)
        valid = finite & (q <= UNCERTAIN)
        good = finite & (q == GOOD)
        s_mask = good & (run != 0)
        s_idx = np.flatnonzero(s_mask)
        # repeats among S-samples (stuck); the previous S value is carried across batches
        s_sl = sl[s_idx]
        s_first = np.ones(len(s_idx), dtype=bool)
        if len(s_idx) > 1:
            np.not_equal(s_sl[1:], s_sl[:-1], out=s_first[1:])
        xs = x[s_idx]
        rep = xs == _seg_prev(xs, s_first, a["last_s"][s_sl[s_first]])
        center, scale, nh, blocks = self._baseline(s_idx, s_idx[~rep])
        if len(s_idx):
            s_last = np.append(s_first[1:], True)
            a["last_s"][s_sl[s_last]] = xs[s_last]
        since = self._since_start(run)

        # stale: the gateway's marker; dropout: missing or bad values
        all_good = bool(good.all())
        stale_q = None if all_good else q == STALE_Q
        missing = None if all_good else (q == BAD) | ((q <= UNCERTAIN) & ~finite)

        def stale_data(i: np.ndarray) -> _RuleData:
            cls = np.where(valid[i], 0, -1) if stale_q is None else np.where(stale_q[i], 1, np.where(valid[i], 0, -1))
            return _RuleData(cls, None, 1.0)

        def dropout_data(i: np.ndarray) -> _RuleData:
            cls = np.where(valid[i], 0, -1) if missing is None else np.where(missing[i], 1, np.where(valid[i], 0, -1))
            return _RuleData(cls, None, a["k"][sl[i], DROPOUT].astype(float))

        self._rule(STALE, stale_q, stale_data)
        self._rule(DROPOUT, missing, dropout_data)

        # stuck: a repeat while running, once the series has formed a block (it varies)
        stuck_cls = np.full(n, -1, dtype=np.int8)
        stuck_cls[s_idx] = np.where(rep, np.where(nh >= 1, 1, -1), 0)
        self._rule(STUCK, stuck_cls == 1, lambda i: _RuleData(stuck_cls[i], None, a["k"][sl[i], STUCK].astype(float)))

        # spike: robust z-score against the block baseline
        z = np.full(n, _NAN)
        scored = (nh >= hist) & np.isfinite(scale) & (since[s_idx] >= a["grace"][s_sl])
        z[s_idx] = np.where(scored, (xs - center) / np.where(scored, scale, 1.0), _NAN)
        absz = np.abs(z)
        with np.errstate(invalid="ignore"):
            spike = absz >= np.repeat(a["z_thr"][seg_slots], seg_len)
        ref = np.full(n, _NAN)
        ref[s_idx] = center

        def spike_data(i: np.ndarray) -> _RuleData:
            zi = absz[i]
            has = np.isfinite(zi)
            thr = a["z_thr"][sl[i]]
            cls = np.where(has, np.where(zi >= thr, 1, np.where(zi < a["z_clear"][sl[i]], 0, -1)), -1)
            strong = has & (zi >= a["z_strong"][sl[i]])
            return _RuleData(cls, z[i], thr, ref[i], strong=strong, severity=strong)

        self._rule(SPIKE, spike, spike_data)

        # engineering limits (low only while the machine runs)
        lim_seg = self.on[:, LIMIT]
        if lim_seg.any():
            li = np.flatnonzero(np.repeat(lim_seg, seg_len))
            lo, hi = a["lo"][sl[li]], a["hi"][sl[li]]
            xv, vv = x[li], valid[li]
            over = vv & (xv > hi)
            under = vv & (xv < lo) & (run[li] != 0)
            lim_anom = np.zeros(n, dtype=bool)
            lim_anom[li] = over | under
            pos_in_li = np.full(n, -1, dtype=np.int64)
            pos_in_li[li] = np.arange(len(li))

            def limit_data(i: np.ndarray) -> _RuleData:
                j = pos_in_li[i]
                ov, un = over[j], under[j]
                cls = np.where(ov | un, 1, np.where(vv[j], 0, -1))
                stat = np.where(ov, xv[j] - hi[j], np.where(un, xv[j] - lo[j], 0.0))
                return _RuleData(cls, stat, np.where(un, lo[j], hi[j]))

            self._rule(LIMIT, lim_anom, limit_data)
        else:
            self._rule(LIMIT, None, None)

        # rate between consecutive valid readings (series with rate limits only)
        rate_seg = self.on[:, RATE]
        if rate_seg.any():
            ri = np.flatnonzero(np.repeat(rate_seg, seg_len) & valid)
            r_cls = np.full(n, -1, dtype=np.int8)
            rate = np.full(n, _NAN)
            prev_v = np.full(n, _NAN)
            if len(ri):
                v_sl = sl[ri]
                v_first = np.ones(len(ri), dtype=bool)
                np.not_equal(v_sl[1:], v_sl[:-1], out=v_first[1:])
                pv = _seg_prev(x[ri], v_first, a["last_v"][v_sl[v_first]])
                pt = _seg_prev(self.ts[ri], v_first, a["last_v_ts"][v_sl[v_first]])
                dt = (self.ts[ri] - pt) / 1000.0
                ok = np.isfinite(pv) & (dt > 0)
                rr = np.where(ok, (x[ri] - pv) / np.where(ok, dt, 1.0), _NAN)
                bad_rate = ok & ((rr > a["rise"][v_sl]) | (rr < -a["fall"][v_sl]))
                r_cls[ri] = np.where(ok, np.where(bad_rate, 1, 0), -1)
                rate[ri] = rr
                prev_v[ri] = pv
                v_last = np.append(v_first[1:], True)
                a["last_v"][v_sl[v_last]] = x[ri][v_last]
                a["last_v_ts"][v_sl[v_last]] = self.ts[ri][v_last]
            self._rule(
                RATE,
                r_cls == 1,
                lambda i: _RuleData(
                    r_cls[i], rate[i], np.where(rate[i] < 0, -a["fall"][sl[i]], a["rise"][sl[i]]), prev_v[i]
                ),
            )
        else:
            self._rule(RATE, None, None)

        drift = self._drift(blocks)
        if drift is None:
            self._rule(DRIFT, None, None)
        else:
            d_cls, d_stat, d_ref = drift
            self._rule(DRIFT, d_cls == 1, lambda i: _RuleData(d_cls[i], d_stat[i], a["d_h"][sl[i]], d_ref[i]))
        self.transitions.sort(key=lambda t: (t[0], t[1]))
        return absz, self.anomalous, [t[2] for t in self.transitions]

    # -- hysteresis and evidence per rule ------------------------------------------------------

    def _rule(self, r: int, anom: np.ndarray | None, build: Callable[[np.ndarray], _RuleData] | None) -> None:
        """Hysteresis and evidence of rule ``r``, computed only for the series that need it.

        ``anom``: per sample, anomalous under the rule (None: none are); ``build(idx)`` gives
        the rule's data for the samples ``idx`` of the series that are involved (an anomaly
        in this batch, an open alert, or an anomalous run carried from the last batch).
        """
        a = self.a
        seg_slots = self.seg_slots
        on = self.on[:, r]
        involved = a["active"][seg_slots, r] | (a["arun"][seg_slots, r] > 0)
        if anom is not None:
            has_anom = np.logical_or.reduceat(anom, self.seg_starts) & on
            if has_anom.any():
                self.anomalous |= anom & np.repeat(on, self.seg_len)
                involved = involved | has_anom
        if build is None or not involved.any():  # build None: no sample of the batch is relevant
            return
        idx = np.flatnonzero(np.repeat(involved, self.seg_len))
        data = build(idx)
        keep = data.cls >= 0
        sub = idx[keep]
        if len(sub) == 0:
            return
        sl = self.sl[sub]
        c = data.cls[keep].astype(np.int8)
        strong = None if data.strong is None else data.strong[keep]
        h = _hysteresis(
            sl,
            c,
            strong=strong,
            k=a["k"][:, r],
            m=a["m"][:, r],
            active0=a["active"][:, r],
            arun0=a["arun"][:, r],
            nrun0=a["nrun"][:, r],
        )
        ts = self.ts[sub]
        x = self.x[sub]
        # Run-length rules: the raise's statistic is the run length; within an open episode
        # every anomalous sample weighs the same (the run length restarts per batch there).
        run_length = data.stat is None
        stat = np.ones(len(sub)) if run_length else data.stat[keep]
        thr = data.threshold[keep] if isinstance(data.threshold, np.ndarray) else np.full(len(sub), data.threshold)
        ref = None if data.reference is None else data.reference[keep]
        crit = None if data.severity is None else data.severity[keep]
        kind = KINDS[r]
        events = np.zeros(len(sub), dtype=np.int8)
        events[h.raises] = 1
        events[h.clears] = 2
        busy = np.logical_or.reduceat(events > 0, h.seg_starts) | a["active"][h.seg_slots, r] | h.active_end
        for si in np.flatnonzero(busy):
            slot = int(h.seg_slots[si])
            lo_i, hi_i = int(h.seg_starts[si]), int(h.seg_ends[si]) + 1
            machine_id, signal = self.bank._keys[slot]
            ep = _Episode.carried(a, slot, r) if a["active"][slot, r] else None
            ep_from = lo_i
            for t in (np.flatnonzero(events[lo_i:hi_i]) + lo_i).tolist():
                if events[t] == 1:
                    start = a["astart"][slot, r] if h.carried_run[t] else ts[h.run_start[t]]
                    critical = r in _CRITICAL_KINDS or (crit is not None and bool(crit[t]))
                    ev = Evidence(
                        first_ts_ms=int(start),
                        last_ts_ms=int(ts[t]),
                        value=_py(x[t]),
                        statistic=float(h.pos[t]) if run_length else float(stat[t]),
                        threshold=float(thr[t]),
                        reference=None if ref is None else _py(ref[t]),
                        samples=int(h.pos[t]),
                    )
                    severity = Severity.CRITICAL if critical else Severity.WARNING
                    tr = Transition(machine_id, signal, kind, "raise", int(ts[t]), int(ts[t]), severity, ev)
                    self.transitions.append((int(sub[t]), r, tr))
                    ep = _Episode(int(ts[t]), _NAN, _NAN, _NAN, int(h.pos[t]) - 1, int(ts[t]))
                    ep_from = t
                else:
                    assert ep is not None  # a clear always follows a raise or a carried active alert
                    ep.fold(c[ep_from:t], stat[ep_from:t], x[ep_from:t], thr[ep_from:t], ts[ep_from:t])
                    ev = Evidence(
                        first_ts_ms=ep.raised_at,
                        last_ts_ms=ep.last_anom,
                        value=_py(ep.peak_value),
                        statistic=float(ep.n_anom) if run_length else (_py(ep.peak_stat) or 0.0),
                        threshold=_py(ep.peak_thr) or 0.0,
                        reference=None,
                        samples=ep.n_anom,
                    )
                    tr = Transition(machine_id, signal, kind, "clear", int(ts[t]), ep.raised_at, Severity.INFO, ev)
                    self.transitions.append((int(sub[t]), r, tr))
                    ep = None
            if ep is not None:
                ep.fold(c[ep_from:hi_i], stat[ep_from:hi_i], x[ep_from:hi_i], thr[ep_from:hi_i], ts[ep_from:hi_i])
                ep.store(a, slot, r)
        # carried run state per involved series
        slots = h.seg_slots
        active1 = h.active_end
        pend = h.pos[h.seg_ends]
        a["active"][slots, r] = active1
        a["arun"][slots, r] = np.where(~active1 & (h.c_end == 1), pend, 0)
        a["nrun"][slots, r] = np.where(active1 & (h.c_end == 0), pend, 0)
        pending = ~active1 & (h.c_end == 1)
        if pending.any():
            e = h.seg_ends[pending]
            a["astart"][slots[pending], r] = np.where(
                h.carried_run[e], a["astart"][slots[pending], r], ts[h.run_start[e]]
            )


@dataclass(slots=True)
class _Episode:
    """An open alert: when it was raised and the peak, count and last time of its anomalous samples.

    The peak is the first sample with the largest ``|statistic|`` (ties keep the earlier
    one), so folding samples in pieces gives the same result as folding them at once.
    """

    raised_at: int
    peak_stat: float
    peak_value: float
    peak_thr: float
    n_anom: int
    last_anom: int

    @classmethod
    def carried(cls, a: dict[str, np.ndarray], slot: int, r: int) -> _Episode:
        return cls(
            int(a["raised_at"][slot, r]),
            float(a["peak_stat"][slot, r]),
            float(a["peak_value"][slot, r]),
            float(a["peak_thr"][slot, r]),
            int(a["n_anom"][slot, r]),
            int(a["last_anom"][slot, r]),
        )

    def store(self, a: dict[str, np.ndarray], slot: int, r: int) -> None:
        a["raised_at"][slot, r] = self.raised_at
        a["peak_stat"][slot, r] = self.peak_stat
        a["peak_value"][slot, r] = self.peak_value
        a["peak_thr"][slot, r] = self.peak_thr
        a["n_anom"][slot, r] = self.n_anom
        a["last_anom"][slot, r] = self.last_anom

    def fold(self, c: np.ndarray, stat: np.ndarray, x: np.ndarray, thr: np.ndarray, ts: np.ndarray) -> None:
        mask = c == 1
        if not mask.any():
            return
        st = stat[mask]
        i = int(np.argmax(np.abs(st)))
        if math.isnan(self.peak_stat) or abs(st[i]) > abs(self.peak_stat):
            self.peak_stat, self.peak_value, self.peak_thr = float(st[i]), float(x[mask][i]), float(thr[mask][i])
        self.n_anom += int(mask.sum())
        self.last_anom = int(ts[mask][-1])


# --------------------------------------------------------------------------------------
# One series
# --------------------------------------------------------------------------------------


class SeriesDetector:
    """The detector of one series: ``update`` per reading, ``update_batch`` per array of readings.

    Both run the same vectorised code as :class:`DetectorBank` (a bank of one series), so
    a series fed event by event, in batches, or inside a many-series bank yields the same
    transitions.
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        machine_id: str = "",
        signal: str = "",
        baseline: BaselineConfig | None = None,
    ) -> None:
        self._bank = DetectorBank(baseline)
        self._code = self._bank.add(machine_id, signal, config or default_config(None, signal))
        self._one = np.zeros(1, dtype=np.int64)

    @property
    def config(self) -> DetectorConfig:
        return self._bank.config(self._code)

    def update(self, ts_ms: int, value: float | None, quality: str = "good", running: bool | None = None) -> Decision:
        """Feed one reading; returns its score, whether it is anomalous, and any transitions."""
        result = self._bank.update_batch(
            self._one,
            np.array([ts_ms], dtype=np.int64),
            np.array([_NAN if value is None else value], dtype=np.float64),
            np.array([QUALITY_CODES[quality]], dtype=np.int8),
            np.array([-1 if running is None else int(running)], dtype=np.int8),
        )
        return Decision(
            float(result.scores[0]),
            bool(result.anomalous[0]),
            self._bank.active_kinds(self._code),
            tuple(result.transitions),
        )

    def update_batch(
        self,
        ts: np.ndarray | Sequence[int],
        values: np.ndarray | Sequence[float | None],
        quality: np.ndarray | Sequence[str] | Sequence[int] | None = None,
        running: np.ndarray | Sequence[bool] | None = None,
    ) -> BatchResult:
        """Feed readings of this series in time order (vectorised; see :meth:`DetectorBank.update_batch`)."""
        n = len(ts)
        return self._bank.update_batch(np.zeros(n, dtype=np.int64), ts, values, quality, running)

    @property
    def active(self) -> frozenset[str]:
        return self._bank.active_kinds(self._code)

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (picklable, JSON-able), bounded in size; restore with :meth:`from_snapshot`."""
        return self._bank.snapshot()

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> SeriesDetector:
        if len(snapshot.get("series", ())) != 1:
            raise ValueError("a SeriesDetector snapshot holds exactly one series")
        self = cls.__new__(cls)
        self._bank = DetectorBank.from_snapshot(snapshot)
        self._code = 0
        self._one = np.zeros(1, dtype=np.int64)
        return self


def detect_many(
    bank: DetectorBank,
    machine_ids: Sequence[str] | np.ndarray,
    signals: Sequence[str] | np.ndarray,
    ts: np.ndarray,
    values: np.ndarray,
    *,
    quality: np.ndarray | Sequence[str] | None = None,
    running: np.ndarray | None = None,
) -> BatchResult:
    """A whole batch of many series by name: codes (registering new series), then one vectorised step."""
    return bank.update_batch(bank.codes(machine_ids, signals), ts, values, quality, running)


__all__ = [
    "ALERT_TYPES",
    "DEFAULT_LIMITS",
    "DERIVED_SIGNALS",
    "KINDS",
    "QUALITY_CODES",
    "TEMPERATURE_DIFFERENCE",
    "BaselineConfig",
    "BatchResult",
    "Decision",
    "DetectorBank",
    "DetectorConfig",
    "DriftConfig",
    "Evidence",
    "LimitTable",
    "Limits",
    "SeriesDetector",
    "Transition",
    "alert_id",
    "default_config",
    "detect_many",
    "limits_only",
    "paired_difference",
]
