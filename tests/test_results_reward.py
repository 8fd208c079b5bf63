import math

import pytest

from effnas.results.reward import reward


def test_reference_candidate_scores_its_accuracy():
    assert reward(0.83, 12.5, 1_000_000, 12.5, 1_000_000) == pytest.approx(0.83)


def test_formula_matches_paper_exponents():
    # Twice as slow and three times as large as the reference, default w = -0.07, v = -0.05.
    expected = 0.9 * 2.0 ** -0.07 * 3.0 ** -0.05
    assert reward(0.9, 20.0, 300, 10.0, 100) == pytest.approx(expected, rel=1e-12)
    assert reward(0.9, 20.0, 300, 10.0, 100) < 0.9


def test_faster_and_smaller_is_rewarded():
    base = reward(0.8, 10.0, 100, 10.0, 100)
    assert reward(0.8, 5.0, 100, 10.0, 100) > base
    assert reward(0.8, 10.0, 50, 10.0, 100) > base
    assert reward(0.8, 5.0, 50, 10.0, 100) == pytest.approx(0.8 * 0.5 ** -0.07 * 0.5 ** -0.05)


def test_custom_exponents():
    assert reward(0.5, 40.0, 100, 10.0, 100, w=-0.5, v=0.0) == pytest.approx(0.5 * 4.0 ** -0.5)
    assert reward(0.5, 40.0, 400, 10.0, 100, w=0.0, v=-1.0) == pytest.approx(0.5 / 4.0)


def test_zero_accuracy_scores_zero():
    assert reward(0.0, 3.0, 10, 1.0, 1) == 0.0


@pytest.mark.parametrize("kwargs", [
    dict(accuracy=1.5), dict(accuracy=math.nan), dict(step_time_ms=0.0), dict(params=-1),
    dict(ref_step_time_ms=math.inf), dict(ref_params=0),
])
def test_invalid_inputs_raise(kwargs):
    args = dict(accuracy=0.5, step_time_ms=1.0, params=10, ref_step_time_ms=1.0, ref_params=10) | kwargs
    with pytest.raises(ValueError):
        reward(**args)
