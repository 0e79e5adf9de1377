"""The quality gate's decision: a candidate's figure on the evaluation set, against what the release in
production scored on the same set (the same file, by sha256, and the same metric), recorded with the release.

The engine calls it once the smoke test passed with the candidate's answers to every row; a candidate that is
worse than production by more than the tolerance fails, with both figures in its reason. A metric that is not
a finite number fails too. When production's recorded figure is of another set (a registry pipeline that logs
a new test set with each version) or of none, the engine scores production's own image on the candidate's set
(`rescore`) and that figure is the baseline, as MLOpsPython's evaluate step scores the production model on the
new test data. With nothing in production, or production's image not scorable, the candidate passes on its own
figure, and says why.

Pure. No I/O.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True, slots=True)
class Rescored:
    """Production's image scored now on the candidate's set: its figure, or why there is none."""

    value: float | None
    why_not: str = ""


def rescore(spec: evaluation.Spec, data: evaluation.DataSet, verdict: ports.Verdict) -> Rescored:
    """Production's figure from its own image's answers to the set (`verdict` of its run)."""
    if not verdict.passed or verdict.predictions is None:
        return Rescored(None, verdict.reason or "it gave no answers")
    try:
        value = quality.score(spec.metric, data.expected, list(verdict.predictions))
    except (errors.InvalidEvent, ArithmeticError, TypeError, ValueError) as e:
        return Rescored(None, f"{spec.metric} of its answers: {e or type(e).__name__}")
    return Rescored(value) if math.isfinite(value) else Rescored(None, f"its {spec.metric} is not a number")


def judge(spec: evaluation.Spec, data: evaluation.DataSet | None, verdict: ports.Verdict,
          production: Release | None, rescored: Rescored | None = None) -> Evaluation:
    """The gate's figures for a candidate whose smoke test passed with `verdict.predictions`, against the
    release `production` runs: its recorded figure when it was scored on the same rows with the same metric,
    else `rescored` (its image scored now on these rows), when there is one."""
    recorded = production is not None and data is not None and comparable(production, spec, data)
    now = rescored is not None and rescored.value is not None and not recorded
    baseline = production if recorded or now else None
    base = (rescored.value if now else baseline.evaluation.value) if baseline is not None else None

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
        reason = reason.replace("production's", f"production's ({baseline.id}{', scored now' if now else ''})", 1)
    elif production is not None:  # production runs a release scored on other rows, or not scored at all
        why = f": {rescored.why_not}" if rescored is not None and rescored.why_not else ""
        reason = reason.replace("nothing in production to compare with",
                                f"production's {production.id} was not scored on these rows with {spec.metric}"
                                f"{why}", 1)
    return figures(value if math.isfinite(value) else None, found.passed,
                   f"{reason} on {len(data.rows)} rows of {spec.data}")


def not_run(spec: evaluation.Spec | None, reason: str) -> Evaluation:
    """The figures of a gate that could not run (its set missing or unusable): failed, and so overridable."""
    return Evaluation(metric=spec.metric if spec else "", value=None, data=spec.data if spec else "",
                      data_sha256=spec.sha256 if spec else "", rows=0, passed=False, reason=reason)
