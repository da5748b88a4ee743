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


def test_thresholds_are_the_lowest_scores_reaching_each_target():
    # Pool-adjacent-violators gives 0, 0, 1/3, 1/3, 1/3, 2/3, 2/3, 2/3, 1, 1; from the top down the running means
    # are 1, 1, .889, .833, .8, .722, .667, .625, .556, .5: 0.9 is last reached at score 0.9, 0.6 at 0.3.
    calibration = fit_calibration(SCORES, SAME, {"duplicate": 0.9, "related": 0.6})
    assert calibration.thresholds == {"duplicate": pytest.approx(0.9), "related": pytest.approx(0.3)}
    np.testing.assert_allclose(calibration.precision([0.05, 0.25, 0.55, 0.85, 2.0]), [0, 1 / 6, 0.5, 5 / 6, 1])
    assert [calibration.tier(s) for s in (0.95, 0.9, 0.5, 0.3, 0.29)] == ["duplicate", "duplicate", "related",
                                                                          "related", "none"]
    assert calibration.fitted_on == {"results": 10, "same_group": 5}


def test_an_unreachable_target_leaves_the_tier_out():
    calibration = fit_calibration(SCORES, SAME[::-1], {"duplicate": 0.95, "related": 0.5})
    assert calibration.thresholds["duplicate"] is None and calibration.tier(1.0) in ("related", "none")
    assert "duplicate: no score reaches precision 0.95" in calibration_lines(calibration)[0]


def test_measure_counts_precision_and_recall_on_other_results():
    calibration = fit_calibration(SCORES, SAME, {"duplicate": 0.9, "related": 0.6})
    held_scores = np.array([[0.95, 0.92, 0.5], [0.91, 0.2, 0.1]])
    held_same = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    seen = measure(calibration, held_scores, held_same)
    # duplicate: 0.95, 0.92, 0.91 kept, 2 of them same-group, of 4 same-group results; related adds 0.5.
    assert seen["duplicate"]["precision"] == pytest.approx(2 / 3) and seen["duplicate"]["recall"] == 0.5
    assert seen["related"]["precision"] == 0.75 and seen["related"]["recall"] == 0.75
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
    vectors = centres[groups] + rng.normal(scale=0.9, size=(len(groups), 16))
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
