"""The quality gate's arithmetic (issue 13): a model's metric on an evaluation set, and whether a candidate is
worse than the release in production on the same set.

Metrics, each with its direction:

    rmse, mae, log_loss     lower is better
    r2, accuracy, f1,       higher is better
    roc_auc

Regression metrics take numbers; accuracy and f1 take labels (f1 of the positive label, 1 unless told);
roc_auc and log_loss take binary labels (0/1) and the predicted probability of 1. Pure Python, so that the
Function App does not carry numpy: 10,000 rows take milliseconds.

`compare` says whether a candidate passes: not worse than the baseline by more than `tolerance` (in the
metric's own units). A metric that is not a finite number fails, with both figures in the reason.

Pure. No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared import errors

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reason: str


def _numbers(values: Sequence[object], what: str) -> list[float]:
    out = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise errors.InvalidEvent(f"{what} row {i}: {value!r} is not a number")
        out.append(float(value))
    return out


def _pairs(y_true: Sequence[object], y_pred: Sequence[object]) -> None:
    if len(y_true) != len(y_pred):
        raise errors.InvalidEvent(f"{len(y_true)} expected values but {len(y_pred)} predictions")
    if not y_true:
        raise errors.InvalidEvent("the evaluation set is empty")


def rmse(y_true: Sequence[object], y_pred: Sequence[object]) -> float:
    _pairs(y_true, y_pred)
    t, p = _numbers(y_true, "expected"), _numbers(y_pred, "prediction")
    return math.sqrt(math.fsum((a - b) ** 2 for a, b in zip(t, p)) / len(t))


def mae(y_true: Sequence[object], y_pred: Sequence[object]) -> float:
    _pairs(y_true, y_pred)
    t, p = _numbers(y_true, "expected"), _numbers(y_pred, "prediction")
    return math.fsum(abs(a - b) for a, b in zip(t, p)) / len(t)


def r2(y_true: Sequence[object], y_pred: Sequence[object]) -> float:
    _pairs(y_true, y_pred)
    t, p = _numbers(y_true, "expected"), _numbers(y_pred, "prediction")
    mean = math.fsum(t) / len(t)
    total = math.fsum((a - mean) ** 2 for a in t)
    residual = math.fsum((a - b) ** 2 for a, b in zip(t, p))
    if total == 0:
        return 1.0 if residual == 0 else 0.0  # a constant target: scikit-learn's convention
    return 1.0 - residual / total


def accuracy(y_true: Sequence[object], y_pred: Sequence[object]) -> float:
    _pairs(y_true, y_pred)
    return sum(1 for a, b in zip(y_true, y_pred) if a == b) / len(y_true)


def f1(y_true: Sequence[object], y_pred: Sequence[object], *, positive: object = 1) -> float:
    _pairs(y_true, y_pred)
    tp = sum(1 for a, b in zip(y_true, y_pred) if a == positive and b == positive)
    fp = sum(1 for a, b in zip(y_true, y_pred) if a != positive and b == positive)
    fn = sum(1 for a, b in zip(y_true, y_pred) if a == positive and b != positive)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def _binary(y_true: Sequence[object]) -> list[int]:
    labels = []
    for i, value in enumerate(y_true):
        if isinstance(value, str) or value not in (0, 1):
            raise errors.InvalidEvent(f"expected row {i}: {value!r} is not a binary label (0 or 1)")
        labels.append(int(value))
    return labels


def roc_auc(y_true: Sequence[object], y_score: Sequence[object]) -> float:
    """The probability that a random positive scores above a random negative (ties count half)."""
    _pairs(y_true, y_score)
    labels, scores = _binary(y_true), _numbers(y_score, "score")
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise errors.InvalidEvent("roc_auc needs both classes in the evaluation set")
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum, i = 0.0, 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        rank = (i + j) / 2 + 1
        rank_sum += rank * sum(labels[order[k]] for k in range(i, j + 1))
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def log_loss(y_true: Sequence[object], y_prob: Sequence[object], *, eps: float = 1e-15) -> float:
    _pairs(y_true, y_prob)
    labels, probs = _binary(y_true), _numbers(y_prob, "probability")
    for i, p in enumerate(probs):
        if not 0.0 <= p <= 1.0:
            raise errors.InvalidEvent(f"probability row {i}: {p!r} is not between 0 and 1")
    clipped = [min(max(p, eps), 1 - eps) for p in probs]
    return -math.fsum(math.log(p) if y else math.log(1 - p) for y, p in zip(labels, clipped)) / len(labels)


METRICS: dict[str, tuple[Callable[..., float], str]] = {
    "rmse": (rmse, LOWER), "mae": (mae, LOWER), "r2": (r2, HIGHER), "accuracy": (accuracy, HIGHER),
    "f1": (f1, HIGHER), "roc_auc": (roc_auc, HIGHER), "log_loss": (log_loss, LOWER),
}


def score(metric: str, y_true: Sequence[object], y_pred: Sequence[object]) -> float:
    """The metric of predictions against expected values; InvalidEvent for an unknown metric or bad rows."""
    try:
        function, _ = METRICS[metric]
    except KeyError:
        raise errors.InvalidEvent(f"no metric {metric!r}; there are {', '.join(METRICS)}") from None
    return function(y_true, y_pred)


def compare(metric: str, candidate: float, baseline: float | None, *, tolerance: float = 0.0,
            direction: str | None = None) -> Verdict:
    """Whether `candidate` may go on: not worse than `baseline` (the production release's figure on the same set)
    by more than `tolerance`. No baseline (nothing evaluated in production yet): it passes on its own figure.
    `direction` (higher, lower) overrides the metric's own."""
    if metric not in METRICS:
        raise errors.InvalidEvent(f"no metric {metric!r}; there are {', '.join(METRICS)}")
    if tolerance < 0 or not math.isfinite(tolerance):
        raise errors.InvalidEvent(f"a tolerance is a finite number of at least 0, not {tolerance!r}")
    direction = direction or METRICS[metric][1]
    if direction not in (HIGHER, LOWER):
        raise errors.InvalidEvent(f"a direction is {HIGHER} or {LOWER}, not {direction!r}")
    shown = f"{metric} {candidate:.6g}" + (f" against production's {baseline:.6g}" if baseline is not None else "")
    if not math.isfinite(candidate):
        return Verdict(False, f"{shown}: the candidate's {metric} is not a number")
    if baseline is None:
        return Verdict(True, f"{shown} (nothing in production to compare with)")
    if not math.isfinite(baseline):
        return Verdict(False, f"{shown}: production's {metric} is not a number; evaluate it again or override")
    worse_by = (baseline - candidate) if direction == HIGHER else (candidate - baseline)
    if worse_by > tolerance:
        return Verdict(False, f"{shown}: worse by {worse_by:.6g} ({direction} is better, tolerance {tolerance:g})")
    return Verdict(True, f"{shown}: not worse ({direction} is better, tolerance {tolerance:g})")
