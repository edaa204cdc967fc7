"""The promotion gate: thresholds from configuration, applied with MLflow's model validation.

Three checks on one metric (ROC AUC by default), all on the same frozen test split:

* ``floor``: the candidate reaches an absolute value;
* ``beats_champion``: the candidate improves on the current champion by a minimum margin
  (skipped when there is no champion yet, or when the candidate already is the champion);
* ``beats_baseline``: the candidate is better than the Spark MLlib baseline.

Each check is one ``mlflow.validate_evaluation_results`` call with a ``MetricThreshold``, so a
failure names exactly the check and the figures at fault.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops_jobs.evaluation.metrics import GREATER_IS_BETTER

TABLE_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier_score", "precision", "recall")


class GateConfigError(ValueError):
    """A promotion threshold is unknown or invalid; the message names it."""


@dataclass(frozen=True)
class GateConfig:
    """Promotion thresholds (``promotion_config.json``, overridable per run)."""

    metric: str = "roc_auc"
    floor: float = 0.7
    min_improvement_over_champion: float = 0.002
    min_improvement_over_baseline: float = 0.0
    operating_threshold: float = 0.3
    segments: tuple[str, ...] = ("plan", "region")

    @classmethod
    def load(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> GateConfig:
        """The thresholds of the pipeline's config file ``path``, ``overrides`` over them."""
        raw = json.loads(Path(path).read_text())
        raw.update(overrides or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise GateConfigError(
                f"unknown promotion thresholds: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        try:
            config = cls(
                metric=str(raw["metric"]),
                floor=float(raw["floor"]),
                min_improvement_over_champion=float(raw["min_improvement_over_champion"]),
                min_improvement_over_baseline=float(raw["min_improvement_over_baseline"]),
                operating_threshold=float(raw["operating_threshold"]),
                segments=tuple(str(s) for s in raw["segments"]),
            )
        except KeyError as err:
            raise GateConfigError(f"missing promotion threshold {err}") from None
        except (TypeError, ValueError) as err:
            raise GateConfigError(f"invalid promotion threshold value: {err}") from None
        config.validate()
        return config

    def validate(self) -> None:
        if self.metric not in GREATER_IS_BETTER:
            raise GateConfigError(
                f"metric {self.metric!r} is not one of {', '.join(GREATER_IS_BETTER)}"
            )
        for name in ("min_improvement_over_champion", "min_improvement_over_baseline"):
            if getattr(self, name) < 0:
                raise GateConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.operating_threshold < 1.0:
            raise GateConfigError(
                f"operating_threshold must lie in (0, 1), got {self.operating_threshold}"
            )
        if not math.isfinite(self.floor):
            raise GateConfigError(f"floor must be a number, got {self.floor}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "segments": list(self.segments)}


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and the figures it was reached on."""

    passed: bool
    metric: str
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "metric": self.metric,
            "checks": [asdict(c) for c in self.checks],
        }


def _check(
    name: str,
    metric: str,
    threshold: Any,
    candidate: Mapping[str, float],
    reference: Mapping[str, float] | None,
    describe: str,
) -> GateCheck:
    import mlflow
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    value = _number(candidate.get(metric))
    if not math.isfinite(value):
        return GateCheck(name, False, f"candidate has no {metric} on the test split")
    if reference is not None and not math.isfinite(_number(reference.get(metric))):
        return GateCheck(name, False, f"{describe}: the reference has no {metric}")
    try:
        mlflow.validate_evaluation_results(
            {metric: threshold},
            EvaluationResult(metrics=dict(candidate), artifacts={}),
            EvaluationResult(metrics=dict(reference), artifacts={}) if reference else None,
        )
    except ModelValidationFailedException as err:
        # MLflow repeats the figures; keep the name of the check that failed.
        failed = re.findall(r"Metric \S+ (.+? check) failed", err.message)
        return GateCheck(name, False, f"{describe}: {', '.join(failed) or err.message} failed")
    return GateCheck(name, True, describe)


def decide(
    config: GateConfig,
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    champion: Mapping[str, float] | None = None,
    *,
    candidate_is_champion: bool = False,
) -> GateDecision:
    """Apply the thresholds to the candidate's, champion's and baseline's metrics."""
    from mlflow.models import MetricThreshold

    metric = config.metric
    better = GREATER_IS_BETTER[metric]
    cand = _number(candidate.get(metric))
    checks = [
        _check(
            "floor",
            metric,
            MetricThreshold(threshold=config.floor, greater_is_better=better),
            candidate,
            None,
            f"{metric} {cand:.4f} {'>=' if better else '<='} floor {config.floor:.4f}",
        )
    ]
    if champion is None or candidate_is_champion:
        reason = "the candidate already is the champion" if candidate_is_champion else "none yet"
        checks.append(GateCheck("beats_champion", True, f"no comparison with a champion: {reason}"))
    else:
        margin = config.min_improvement_over_champion
        checks.append(
            _check(
                "beats_champion",
                metric,
                _improvement(margin, better),
                candidate,
                champion,
                f"{metric} {cand:.4f} against champion {_number(champion.get(metric)):.4f} "
                f"({_needs(margin)})",
            )
        )
    margin = config.min_improvement_over_baseline
    checks.append(
        _check(
            "beats_baseline",
            metric,
            _improvement(margin, better),
            candidate,
            baseline,
            f"{metric} {cand:.4f} against baseline {_number(baseline.get(metric)):.4f} "
            f"({_needs(margin)})",
        )
    )
    return GateDecision(passed=all(c.passed for c in checks), metric=metric, checks=checks)


def _number(value: Any) -> float:
    """A metric as a float; a missing one (None in JSON) as NaN."""
    return float("nan") if value is None else float(value)


def _needs(margin: float) -> str:
    return f"needs a margin of {margin:g}" if margin > 0 else "must be better"


def _improvement(margin: float, greater_is_better: bool) -> Any:
    from mlflow.models import MetricThreshold

    if margin > 0:
        return MetricThreshold(min_absolute_change=margin, greater_is_better=greater_is_better)
    # "Better than", no margin: MLflow's smallest relative change (1e-10 past a zero baseline).
    return MetricThreshold(min_relative_change=1e-9, greater_is_better=greater_is_better)


def markdown_table(evaluation: Mapping[str, Any], decision: GateDecision | None = None) -> str:
    """Candidate vs champion vs baseline as a Markdown table, then the checks."""
    columns = [("candidate", evaluation["candidate"])]
    if evaluation.get("champion"):
        columns.append(("champion", evaluation["champion"]))
    columns.append(("baseline", evaluation["baseline"]))

    def title(role: str, model: Mapping[str, Any]) -> str:
        version = model.get("version")
        return f"{role} (v{version})" if version else role

    lines = [
        "| metric | " + " | ".join(title(r, m) for r, m in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name in TABLE_METRICS:
        cells = [_fmt(m["metrics"].get(name)) for _, m in columns]
        arrow = "↑" if GREATER_IS_BETTER[name] else "↓"
        lines.append(f"| {name} {arrow} | " + " | ".join(cells) + " |")
    rows = evaluation.get("evaluated_on", {}).get("rows")
    if rows is not None:
        lines.append("")
        lines.append(
            f"Test split: {rows} rows of feature set `{evaluation['evaluated_on'].get('uri')}`; "
            f"operating threshold {evaluation.get('threshold')}."
        )
    later = evaluation.get("out_of_time")
    if later:
        roles = [role for role, _ in columns if role in later["metrics"]]
        lines += [
            "",
            f"Out of time: trained on ds={later.get('label_ds')}, tested on {later.get('rows')} "
            f"rows of ds={later.get('ds')} (customers of the test split).",
            "",
            "| metric | " + " | ".join(roles) + " |",
            "|---|" + "---:|" * len(roles),
        ]
        for name in ("roc_auc", "pr_auc", "log_loss"):
            cells = [_fmt(later["metrics"][role].get(name)) for role in roles]
            arrow = "↑" if GREATER_IS_BETTER[name] else "↓"
            lines.append(f"| {name} {arrow} | " + " | ".join(cells) + " |")
    if decision is not None:
        lines.append("")
        lines.append(f"**Gate: {'passed' if decision.passed else 'rejected'}**")
        # Words, not emoji: the UI's fonts (and a log viewer's) may have no emoji glyphs.
        lines += [
            f"- {'pass' if c.passed else '**FAIL**'} `{c.name}`: {c.detail}"
            for c in decision.checks
        ]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(number) else f"{number:.4f}"
