"""The arithmetic behind profile_repeat's verdict, on medians whose answer is known."""

import pytest

from benchmarks.profile_repeat import largest_gap


def test_largest_gap_is_the_largest_median_over_the_smallest_minus_one():
    assert largest_gap([100.0, 105.0, 110.0]) == pytest.approx(0.10)
    assert largest_gap([90.0, 90.0]) == 0.0
    assert largest_gap([120.0, 100.0, 111.0]) == pytest.approx(0.20)  # order does not matter
