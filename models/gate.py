"""The evaluation gate: may a candidate replace the champion?  A pure decision over figures.

Both models are scored on the **same held-out period** (the candidate's test part, which
it has never seen) by the caller; this module only compares.  A candidate is promoted
when every check passes:

* ``better_than_chance``: its ROC-AUC is at least :data:`MIN_ROC_AUC` and its PR-AUC at
  least the prevalence + ``margin`` (a score that knows nothing has a ROC-AUC of 0.5 and a
  PR-AUC equal to the prevalence, give or take ~0.01 on a few thousand test samples: a
  model trained on shuffled labels lands there);
* ``beats_rule``: its F1 at its threshold is above the engineer's rule's F1 on the same
  period (:mod:`plantstream.models.baseline`, fixed limits);
* ``beats_always_alert``: its F1 is above that of alerting on every sample, ``2p / (1 + p)``
  at prevalence ``p`` (a model without skill, thresholded for the best F1, ends up alerting
  on nearly everything: this is where it would otherwise pass);
* with a champion, ``pr_auc_gain``: its PR-AUC beats the champion's by at least
  ``margin`` (retraining on the same data gives the same model: no gain, no promotion);
* with a champion, ``f1_not_lower``: its F1 at its own threshold is not below the
  champion's F1 at the champion's threshold.

The decision and the figures are what the registry records (MLflow tags) and Dagster
shows (metadata); ``reason`` says in one sentence why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

MIN_ROC_AUC = 0.55
"""Clearly better than chance (0.5): a shuffled-label model measured 0.509 on 3 days x 12 machines."""
GATE_FIGURES: tuple[str, ...] = ("pr_auc", "roc_auc", "f1", "precision", "recall", "lead_time_median_min")
"""The held-out figures the gate looks at or reports, per model."""


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    margin: float
    prevalence: float
    baseline_f1: float
    candidate: dict[str, float]
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    # The champion was trained or calibrated on data of the candidate's test period (it was
    # trained later, on a later window): the comparison then favours the champion.
    champion_saw_test_period: bool = False
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return not self.promote

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _figures(metrics: Mapping[str, float]) -> dict[str, float]:
    return {name: float(metrics[name]) for name in GATE_FIGURES if name in metrics}


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def decide(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    prevalence: float,
    baseline_f1: float,
    margin: float,
    champion_version: str | None = None,
    champion_saw_test_period: bool = False,
) -> GateDecision:
    """The gate's decision for ``candidate`` against ``champion`` (``None``: there is no champion yet).

    ``candidate`` holds at least ``pr_auc``, ``roc_auc`` and ``f1``, ``champion`` ``pr_auc`` and
    ``f1``, both on the same held-out
    period; NaN (e.g. a period with one class only) fails the check it is in.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    pr_auc, roc_auc, f1 = float(candidate["pr_auc"]), float(candidate["roc_auc"]), float(candidate["f1"])
    always_alert_f1 = 2 * prevalence / (1 + prevalence)
    checks = {
        "better_than_chance": roc_auc >= MIN_ROC_AUC and pr_auc >= prevalence + margin,
        "beats_rule": f1 > baseline_f1,
        "beats_always_alert": f1 > always_alert_f1,
    }
    why = {
        "better_than_chance": f"no better than chance: ROC-AUC {_fmt(roc_auc)} (needs {MIN_ROC_AUC}), PR-AUC "
        f"{_fmt(pr_auc)} (needs prevalence {_fmt(prevalence)} + margin {margin})",
        "beats_rule": f"F1 {_fmt(f1)} <= the engineer's rule's F1 {_fmt(baseline_f1)}",
        "beats_always_alert": f"F1 {_fmt(f1)} <= alerting always ({_fmt(always_alert_f1)})",
    }
    if champion is not None:
        champion_pr_auc, champion_f1 = float(champion["pr_auc"]), float(champion["f1"])
        checks["pr_auc_gain"] = pr_auc >= champion_pr_auc + margin
        checks["f1_not_lower"] = f1 >= champion_f1
        why["pr_auc_gain"] = (
            f"PR-AUC {_fmt(pr_auc)} does not beat champion v{champion_version}'s {_fmt(champion_pr_auc)} "
            f"by the margin {margin}"
        )
        why["f1_not_lower"] = f"F1 {_fmt(f1)} < champion v{champion_version}'s {_fmt(champion_f1)}"
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        reason = "refused: " + "; ".join(why[name] for name in failed)
    elif champion is None:
        reason = f"promoted (first champion): PR-AUC {_fmt(pr_auc)}, F1 {_fmt(f1)} vs the rule's {_fmt(baseline_f1)}"
    else:
        reason = (
            f"promoted: PR-AUC {_fmt(pr_auc)} vs champion v{champion_version}'s {_fmt(float(champion['pr_auc']))} "
            f"(margin {margin}), F1 {_fmt(f1)} vs {_fmt(float(champion['f1']))}"
        )
    if champion_saw_test_period:
        reason += " (the champion was trained on part of this held-out period)"
    return GateDecision(
        promote=not failed,
        reason=reason,
        margin=margin,
        prevalence=prevalence,
        baseline_f1=baseline_f1,
        candidate=_figures(candidate),
        champion=_figures(champion) if champion is not None else None,
        champion_version=champion_version,
        champion_saw_test_period=champion_saw_test_period,
        checks=checks,
    )


__all__ = ["GATE_FIGURES", "MIN_ROC_AUC", "GateDecision", "decide"]
