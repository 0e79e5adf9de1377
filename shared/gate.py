"""The quality gate's decision: a candidate's figure on the evaluation set, against what the release in
production scored on the same set (the same file, by sha256, and the same metric), recorded with the release.

The engine calls it once the smoke test passed with the candidate's answers to every row; a candidate that is
worse than production by more than the tolerance fails, with both figures in its reason. A metric that is not
a finite number fails too. With nothing comparable in production (nothing there yet, or a release evaluated on
another set) the candidate passes on its own figure, and says so.

Pure. No I/O.
"""

from __future__ import annotations

import math

from shared import errors, evaluation, ports, quality
from shared.releases import Evaluation, Release


class Unusable(errors.PermanentError):
    """The gate cannot run: its spec or its data set is unusable (the message says which and why)."""

    def __init__(self, message: str, spec: evaluation.Spec | None = None) -> None:
        super().__init__(message)
        self.spec = spec


def data_set(spec: evaluation.Spec, data: bytes) -> evaluation.DataSet:
    """The evaluation set as the builder read it: the same bytes (sha256), parsed."""
    try:
        found = evaluation.read(data, spec.label)
    except evaluation.DataError as e:
        raise Unusable(f"{spec.data}: {e}", spec) from None
    if spec.sha256 and found.sha256 != spec.sha256:
        raise Unusable(f"the evaluation set {spec.data} is not the one the image was built with (sha256 "
                       f"{found.sha256[:12]}, not {spec.sha256[:12]})", spec)
    return found


def comparable(release: Release | None, spec: evaluation.Spec, data: evaluation.DataSet) -> bool:
    """Whether `release` was scored with the same metric on the same rows (by the set's sha256)."""
    figures = release.evaluation if release is not None else None
    return (figures is not None and figures.value is not None and figures.metric == spec.metric
            and figures.data_sha256 == data.sha256)


def judge(spec: evaluation.Spec, data: evaluation.DataSet | None, verdict: ports.Verdict,
          production: Release | None) -> Evaluation:
    """The gate's figures for a candidate whose smoke test passed with `verdict.predictions`, against the
    release `production` runs when it was scored on the same rows with the same metric."""
    baseline = production if production is not None and data is not None and comparable(production, spec, data) \
        else None
    base = baseline.evaluation.value if baseline is not None else None

    def figures(value: float | None, passed: bool, reason: str) -> Evaluation:
        return Evaluation(metric=spec.metric, value=value, data=spec.data,
                          data_sha256=data.sha256 if data is not None else spec.sha256,
                          rows=len(data.rows) if data is not None else 0, passed=passed, reason=reason,
                          baseline=base, baseline_release=baseline.id if baseline is not None else None,
                          seconds=dict(verdict.steps).get("evaluate", 0.0))

    if data is None or verdict.predictions is None:
        return figures(None, False, "the candidate was not scored on the evaluation set")
    try:
        value = quality.score(spec.metric, data.expected, list(verdict.predictions))
        found = quality.compare(spec.metric, value, base, tolerance=spec.tolerance, direction=spec.direction)
    except (errors.InvalidEvent, ArithmeticError, TypeError, ValueError) as e:  # e.g. an overflowing prediction
        return figures(None, False, f"{spec.metric} of the candidate's answers: {e or type(e).__name__}")
    reason = found.reason
    if baseline is not None:
        reason = reason.replace("production's", f"production's ({baseline.id})", 1)
    elif production is not None:  # production runs a release scored on other rows, or not scored at all
        reason = reason.replace("nothing in production to compare with",
                                f"production's {production.id} was not scored on these rows with {spec.metric}", 1)
    return figures(value if math.isfinite(value) else None, found.passed,
                   f"{reason} on {len(data.rows)} rows of {spec.data}")


def not_run(spec: evaluation.Spec | None, reason: str) -> Evaluation:
    """The figures of a gate that could not run (its set missing or unusable): failed, and so overridable."""
    return Evaluation(metric=spec.metric if spec else "", value=None, data=spec.data if spec else "",
                      data_sha256=spec.sha256 if spec else "", rows=0, passed=False, reason=reason)
