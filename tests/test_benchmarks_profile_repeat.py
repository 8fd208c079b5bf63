"""The arithmetic behind profile_repeat's verdict, on medians whose answer is known."""

import pytest

from benchmarks.profile_repeat import largest_gap, result_name


def test_largest_gap_is_the_largest_median_over_the_smallest_minus_one():
    assert largest_gap([100.0, 105.0, 110.0]) == pytest.approx(0.10)
    assert largest_gap([90.0, 90.0]) == 0.0
    assert largest_gap([120.0, 100.0, 111.0]) == pytest.approx(0.20)  # order does not matter


def test_each_setting_writes_its_own_results_file():
    assert result_name(None, None) == "profile_repeat"
    assert result_name(30, None) == "profile_repeat-steps30"  # the file docs/performance.md quotes
    assert result_name(None, 10) == "profile_repeat-warmup10"
    assert result_name(30, 10) == "profile_repeat-steps30-warmup10"
