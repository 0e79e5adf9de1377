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


def data_set(spec: evaluation.Spec, data: bytes) -> evaluation.DataSet:
    """The evaluation set as the builder read it: the same bytes (sha256), parsed."""
    try:
        found = evaluation.read(data, spec.label)
    except evaluation.DataError as e:
        raise Unusable(f"{spec.data}: {e}") from None
    if spec.sha256 and found.sha256 != spec.sha256:
        raise Unusable(f"the evaluation set {spec.data} is not the one the image was built with (sha256 "
                       f"{found.sha256[:12]}, not {spec.sha256[:12]})")
    return found


def comparable(release: Release | None, spec: evaluation.Spec, data: evaluation.DataSet) -> bool:
    """Whether `release` was scored with the same metric on the same rows (by the set's sha256)."""
    figures = release.evaluation if release is not None else None
    return (figures is not None and figures.value is not None and figures.metric == spec.metric
            and figures.data_sha256 == data.sha256)


def judge(spec: evaluation.Spec, data: evaluation.DataSet | None, verdict: ports.Verdict,
          baseline: Release | None) -> Evaluation:
    """The gate's figures for a candidate whose smoke test passed with `verdict.predictions`."""
    def figures(value: float | None, passed: bool, reason: str) -> Evaluation:
        base = baseline.evaluation if baseline is not None and data is not None and \
            comparable(baseline, spec, data) else None
        return Evaluation(metric=spec.metric, value=value, data=spec.data,
                          data_sha256=data.sha256 if data is not None else spec.sha256,
                          rows=len(data.rows) if data is not None else 0, passed=passed, reason=reason,
                          baseline=base.value if base else None, baseline_release=baseline.id if base else None,
                          seconds=dict(verdict.steps).get("evaluate", 0.0))

    if data is None or verdict.predictions is None:
        return figures(None, False, "the candidate was not scored on the evaluation set")
    try:
        value = quality.score(spec.metric, data.expected, list(verdict.predictions))
    except errors.InvalidEvent as e:
        return figures(None, False, f"{spec.metric} of the candidate's answers: {e}")
    base = baseline.evaluation.value if baseline is not None and comparable(baseline, spec, data) else None
    verdict_ = quality.compare(spec.metric, value, base, tolerance=spec.tolerance, direction=spec.direction)
    if base is not None:
        reason = verdict_.reason.replace("production's", f"production's ({baseline.id})", 1)
    else:
        reason = verdict_.reason
    return figures(value if math.isfinite(value) else None, verdict_.passed, f"{reason} on {len(data.rows)} rows "
                   f"of {spec.data}")
