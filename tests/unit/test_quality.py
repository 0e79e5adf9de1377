"""shared/quality.py against scikit-learn's metrics (the reference; the Function App does not carry it) on
random data, and the gate's verdicts: worse, within tolerance, NaN, no baseline, bad rows."""

from __future__ import annotations

import math
import random

import pytest
from sklearn import metrics as sk

from shared import errors, quality


@pytest.fixture
def rng() -> random.Random:
    return random.Random(12)


def test_regression_metrics_match_scikit_learn(rng):
    y = [rng.gauss(150, 60) for _ in range(2000)]
    p = [v + rng.gauss(0, 25) for v in y]
    assert quality.score("rmse", y, p) == pytest.approx(math.sqrt(sk.mean_squared_error(y, p)), rel=1e-12)
    assert quality.score("mae", y, p) == pytest.approx(sk.mean_absolute_error(y, p), rel=1e-12)
    assert quality.score("r2", y, p) == pytest.approx(sk.r2_score(y, p), rel=1e-12)
    assert quality.score("r2", [3.0] * 5, [3.0] * 5) == sk.r2_score([3.0] * 5, [3.0] * 5)


def test_classification_metrics_match_scikit_learn(rng):
    y = [rng.randint(0, 1) for _ in range(3000)]
    prob = [min(1.0, max(0.0, 0.35 * v + rng.random() * 0.65)) for v in y]
    prob[:50] = [round(p, 1) for p in prob[:50]]  # ties
    labels = [int(p >= 0.5) for p in prob]
    assert quality.score("accuracy", y, labels) == pytest.approx(sk.accuracy_score(y, labels))
    assert quality.score("f1", y, labels) == pytest.approx(sk.f1_score(y, labels))
    assert quality.score("roc_auc", y, prob) == pytest.approx(sk.roc_auc_score(y, prob), rel=1e-12)
    assert quality.score("log_loss", y, prob) == pytest.approx(sk.log_loss(y, prob), rel=1e-9)
    assert quality.f1(["spam", "ham", "spam"], ["spam", "spam", "ham"], positive="spam") == pytest.approx(
        sk.f1_score(["spam", "ham", "spam"], ["spam", "spam", "ham"], pos_label="spam"))


@pytest.mark.parametrize(("metric", "y", "p", "why"), [
    ("rmse", [1.0, 2.0], [1.0], "2 expected values but 1 predictions"),
    ("mae", [], [], "empty"),
    ("rmse", [1.0, 2.0], [1.0, "x"], "prediction row 1: 'x' is not a number"),
    ("roc_auc", [1, 1], [0.2, 0.9], "both classes"),
    ("roc_auc", [0, 2], [0.2, 0.9], "row 1: 2 is not a binary label"),
    ("log_loss", [0, 1], [0.2, 1.5], "row 1: 1.5 is not between 0 and 1"),
    ("mse", [1.0], [1.0], "no metric 'mse'"),
])
def test_bad_rows_are_refused_with_the_row(metric, y, p, why):
    with pytest.raises(errors.InvalidEvent, match=why):
        quality.score(metric, y, p)


def test_a_candidate_worse_than_production_fails_with_both_figures():
    verdict = quality.compare("rmse", 54.2, 51.0, tolerance=1.0)
    assert not verdict.passed
    assert "rmse 54.2 against production's 51" in verdict.reason and "worse by 3.2" in verdict.reason
    assert not quality.compare("r2", 0.40, 0.45).passed  # higher is better


def test_within_the_tolerance_or_better_passes():
    assert quality.compare("rmse", 51.5, 51.0, tolerance=1.0).passed
    assert quality.compare("accuracy", 0.91, 0.90).passed
    assert quality.compare("log_loss", 0.30, 0.30).passed


def test_nan_fails_and_no_baseline_passes_on_its_own():
    assert not quality.compare("r2", float("nan"), 0.4).passed
    assert "not a number" in quality.compare("rmse", 1.0, float("inf")).reason
    first = quality.compare("mae", 40.0, None)
    assert first.passed and "nothing in production" in first.reason
    with pytest.raises(errors.InvalidEvent):
        quality.compare("rmse", 1.0, 1.0, tolerance=-1)
