"""Calibrated tiers: the isotonic curve and the thresholds by target precision, worked by hand; their file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tickettune.core.errors import UserError
from tickettune.evaluation.calibration import (
    CALIBRATION_FILE,
    Calibration,
    calibrate,
    calibration_lines,
    check_targets,
    fit_calibration,
    halves,
    measure,
    top_results,
)

SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
SAME = np.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1])


def point_fit(scores=SCORES, same=SAME, targets=None, **options):
    """The isotonic point estimate alone (no bound, no support cap): small enough to work by hand."""
    return fit_calibration(scores, same, targets or {"duplicate": 0.9, "related": 0.6}, confidence=None,
                           min_support=0, **options)


def test_each_tier_starts_where_the_curve_reaches_its_target():
    # Pool-adjacent-violators gives 0, 0, 1/3, 1/3, 1/3, 2/3, 2/3, 2/3, 1, 1, linear between the scores. It
    # reaches 0.9 between 0.8 (2/3) and 0.9 (1): 0.8 + 0.1 * (0.9 - 2/3) / (1/3) = 0.87; and 0.6 between 0.5
    # (1/3) and 0.6 (2/3): 0.5 + 0.1 * (0.6 - 1/3) / (1/3) = 0.58. (The set of results at or above 0.87 is
    # 1, 1, 1 and at or above 0.58 is 2/3 + ... : the old rule, a set's precision, gave 0.9 and 0.3.)
    calibration = point_fit()
    assert calibration.thresholds == {"duplicate": pytest.approx(0.87), "related": pytest.approx(0.58)}
    np.testing.assert_allclose(calibration.precision([0.05, 0.25, 0.55, 0.85, 0.87, 0.58, 2.0]),
                               [0, 1 / 6, 0.5, 5 / 6, 0.9, 0.6, 1])
    assert [calibration.tier(s) for s in (0.95, 0.87, 0.869, 0.6, 0.58, 0.579)] == [
        "duplicate", "duplicate", "related", "related", "related", "none"]
    assert calibration.fitted_on == {"results": 10, "same_group": 5, "groups": 10}
    assert calibration.estimates == calibration.precisions and calibration.rule == "pointwise"


def test_tier_and_shown_precision_agree_for_every_score():
    rng = np.random.default_rng(1)
    scores = rng.uniform(size=(300, 10))
    same = rng.uniform(size=scores.shape) < scores ** 2
    calibration = fit_calibration(scores, same, {"duplicate": 0.8, "related": 0.5}, clusters=np.arange(300) // 3)
    probe = np.linspace(0, 1, 2001)
    shown = calibration.precision(probe)
    tiers = np.array([calibration.tier(s) for s in probe])
    assert ((tiers == "duplicate") == (shown >= 0.8)).all()
    assert ((tiers != "none") == (shown >= 0.5)).all()


def test_the_curve_is_a_lower_bound_and_needs_support():
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(2000, 10))
    same = rng.uniform(size=scores.shape) < scores  # the true precision at a score is the score
    point = fit_calibration(scores, same, confidence=None)
    bound = fit_calibration(scores, same)
    assert bound.confidence == 0.95 and np.all(np.asarray(bound.precisions) <= np.asarray(bound.estimates) + 1e-12)
    assert 0.85 < point.thresholds["duplicate"] < bound.thresholds["duplicate"] < 0.97
    # Ten results cannot carry a tier: the curve stays at its value below the top 30, which is all of them.
    few = fit_calibration(SCORES, SAME, {"duplicate": 0.9, "related": 0.6}, confidence=None)
    assert few.thresholds == {"duplicate": None, "related": None} and max(few.precisions) == 0
    # Pure results at the top but fewer than the support: no duplicate tier.
    top = np.r_[np.linspace(0.0, 0.5, 200), np.linspace(0.9, 1.0, 20)]
    hits = np.r_[np.tile([0, 1], 100), np.ones(20)]
    assert point_fit(top, hits).thresholds["duplicate"] is not None
    assert fit_calibration(top, hits, confidence=None).thresholds["duplicate"] is None


def test_an_unreachable_target_leaves_the_tier_out():
    calibration = point_fit(SCORES, SAME[::-1], {"duplicate": 0.95, "related": 0.5})
    assert calibration.thresholds["duplicate"] is None and calibration.tier(1.0) in ("related", "none")
    assert "duplicate: no score reaches precision 0.95" in calibration_lines(calibration)[0]


def test_a_file_of_the_set_rule_is_read_pointwise(tmp_path):
    old = {"scores": [0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 0.9, 1.0], "precisions": [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1],
           "targets": {"duplicate": 0.9, "related": 0.6}, "thresholds": {"duplicate": 0.9, "related": 0.3}}
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(old))
    calibration = Calibration.load(tmp_path)
    assert calibration.thresholds == {"duplicate": pytest.approx(0.87), "related": pytest.approx(0.58)}


def test_measure_counts_precision_and_recall_on_other_results():
    calibration = point_fit()
    held_scores = np.array([[0.95, 0.92, 0.5], [0.91, 0.2, 0.1]])
    held_same = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    seen = measure(calibration, held_scores, held_same)
    # duplicate: 0.95, 0.92, 0.91 kept (curve 1 each), 2 of them same-group, of 4 same-group results; related
    # adds nothing (0.5 is below 0.58). The edge is the lowest quarter of 3, rounded: one result, 0.91.
    assert seen["duplicate"]["precision"] == pytest.approx(2 / 3) and seen["duplicate"]["recall"] == 0.5
    assert seen["duplicate"]["promised"] == pytest.approx(1.0)
    assert seen["duplicate"]["edge"] == {"precision": 1.0, "promised": 1.0, "results": 1, "scores": [0.91, 0.91]}
    assert seen["related"]["precision"] == pytest.approx(2 / 3) and seen["related"]["recall"] == 0.5
    assert seen["duplicate"]["queries_with_one"] == 2 and seen["results"] == 6


def test_top_results_leave_the_query_out_and_count_its_group():
    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2]]
    vectors[1] = [0.8, 0.6, 0, 0]
    scores, same, relevant = top_results(vectors, ["a", "a", "b", "b", "c"], np.array([0, 2]), k=2)
    np.testing.assert_allclose(scores, [[0.8, 0.0], [1.0, 0.6]])
    assert same.tolist() == [[True, False], [True, False]] and relevant.tolist() == [1, 1]


def test_calibrate_fits_on_one_set_and_measures_on_the_other(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 16))
    groups = np.repeat(np.arange(30), 6)
    vectors = centres[groups] + rng.normal(scale=0.6, size=(len(groups), 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    first, second = halves(groups, seed=0)
    assert not set(groups[first]) & set(groups[second])
    calibration = calibrate((vectors[first], groups[first]), (vectors[second], groups[second]), source="toy")
    assert calibration.thresholds["duplicate"] >= calibration.thresholds["related"]
    assert calibration.measured["duplicate"]["results"] > 0
    calibration.save(tmp_path)
    again = Calibration.load(tmp_path)
    assert again == calibration and Calibration.load(tmp_path / "none") is None


@pytest.mark.parametrize(("targets", "message"), [({"duplicate": 1.2, "related": 0.6}, "duplicate_precision is 1.2"),
                                              ({"duplicate": 0.5, "related": 0.6}, "is below related_precision"),
                                              ({"duplicate": 0.9}, "expected duplicate and related")])
def test_bad_targets_are_refused(targets, message):
    with pytest.raises(UserError, match=message):
        check_targets(targets)


def test_one_kind_of_result_cannot_be_calibrated():
    with pytest.raises(UserError, match="needs both same-group and other results"):
        fit_calibration(SCORES, np.ones(10))


def test_a_damaged_file_is_one_clear_error(tmp_path):
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"scores": [0.2, 0.1]}))
    with pytest.raises(UserError, match="not a readable calibration"):
        Calibration.load(tmp_path)
