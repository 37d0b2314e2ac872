"""Bootstrap intervals and paired gains against values worked out by hand."""

import math
import random

import pytest

from selfalign import stats


def prompt_level(sample):
    return stats.mean([float(met == asked) for met, asked in sample])


def test_percentile_interpolates_between_ranks():
    assert stats.percentile([0.0, 1.0, 2.0, 3.0], 0.5) == 1.5
    assert stats.percentile([0.0, 1.0, 2.0, 3.0], 0.0) == 0.0
    assert stats.percentile([0.0, 1.0, 2.0, 3.0], 1.0) == 3.0
    assert stats.percentile([5.0, 7.0], 0.25) == 5.5
    with pytest.raises(ValueError):
        stats.percentile([], 0.5)


def test_one_resample_is_the_draw_worked_out_by_hand():
    items = [0.0, 1.0, 1.0, 0.0, 1.0]
    rng = random.Random(3)
    drawn = [items[rng.randrange(5)] for _ in range(5)]
    estimate = stats.bootstrap(items, stats.mean, resamples=1, seed=3)
    assert estimate.value == 0.6 and estimate.n == 5
    assert estimate.low == estimate.high == pytest.approx(sum(drawn) / 5)


def test_two_values_give_the_full_range_and_a_constant_gives_no_width():
    # resampling [0, 1] twice: means 0, 0.5, 1 with chances 1/4, 1/2, 1/4, so the 2.5 % and 97.5 %
    # points of 2000 draws are 0 and 1
    estimate = stats.bootstrap([0.0, 1.0], stats.mean)
    assert (estimate.value, estimate.low, estimate.high) == (0.5, 0.0, 1.0)
    constant = stats.bootstrap([0.4] * 30, stats.mean)
    assert constant.low == constant.high == pytest.approx(0.4)


def test_interval_of_a_large_sample_matches_the_normal_approximation():
    values = [1.0] * 150 + [0.0] * 350  # p = 0.3, n = 500
    estimate = stats.bootstrap(values, stats.mean, resamples=4000)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 500)  # 0.0402
    assert estimate.value == pytest.approx(0.3)
    assert estimate.low == pytest.approx(0.3 - half, abs=0.006)
    assert estimate.high == pytest.approx(0.3 + half, abs=0.006)


def test_ratio_is_constraints_met_over_constraints_asked():
    assert stats.ratio([(1, 2), (0, 1), (2, 2)]) == pytest.approx(3 / 5)
    assert stats.ratio([]) == 0.0


def test_paired_gain_point_values_by_hand():
    before = [(1, 2), (0, 1), (2, 2)]  # prompt level 1/3, instruction level 3/5
    after = [(2, 2), (1, 1), (1, 2)]  # prompt level 2/3, instruction level 4/5
    assert stats.paired_gain(before, after, prompt_level).value == pytest.approx(1 / 3)
    assert stats.paired_gain(before, after, stats.ratio).value == pytest.approx(1 / 5)


def test_paired_gain_cancels_what_the_prompts_share():
    # every prompt improves by exactly one met constraint out of two: the gain is certain even though
    # the prompts differ widely in how many constraints were met
    before = [(0, 2), (1, 2)] * 20
    after = [(1, 2), (2, 2)] * 20
    gain = stats.paired_gain(before, after, stats.ratio)
    assert (gain.value, gain.low, gain.high) == pytest.approx((0.5, 0.5, 0.5))
    # unpaired, the same figures would carry the spread between prompts
    alone = stats.bootstrap(after, stats.ratio)
    assert alone.high - alone.low > 0.1


def test_paired_gain_needs_the_same_prompts():
    with pytest.raises(ValueError, match="same prompts"):
        stats.paired_gain([(1, 1)], [(1, 1), (0, 1)], stats.ratio)
    with pytest.raises(ValueError):
        stats.bootstrap([], stats.mean)


def test_estimate_formats_points():
    assert stats.Estimate(0.125, 0.1, 0.15, 8).fmt(scale=100, digits=1, signed=True) == "+12.5 [+10.0, +15.0]"
