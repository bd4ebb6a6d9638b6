"""Strong-pixel kernel vs independent numpy references; fused statistics vs image_stats."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.spotfind.stats import image_stats
from jfx.spotfind.strong import box_sum, strong_pixels
from tests.spotfind.conftest import brute_force_strong, random_frame, reference_strong


def test_box_sum_matches_scipy():
    from scipy.ndimage import uniform_filter

    rng = np.random.default_rng(0)
    a = rng.integers(0, 50, (37, 53)).astype(np.float32)
    for w in (3, 7, 31, 61):
        ref = np.rint(uniform_filter(a.astype(np.float64), w, mode="constant") * w * w)
        np.testing.assert_array_equal(np.asarray(box_sum(a, w)), ref)


@pytest.mark.parametrize("shape,window,strip,sigma,thr", [
    ((97, 131), 31, 0, 3.0, 5.0),
    ((97, 131), 31, 16, 3.0, 5.0),   # row strips with halo, last strip partial
    ((97, 131), 7, 0, 2.5, 3.0),
    ((64, 40), 11, 24, 4.0, 0.0),
    ((20, 300), 31, 8, 3.0, 10.0),   # frame thinner than the window
])
def test_kernel_equals_reference(shape, window, strip, sigma, thr):
    rng = np.random.default_rng(hash((shape, window, strip)) % 2 ** 32)
    for dtype, err, sat in ((np.int32, -1, 1000), (np.uint16, 65535, 1000)):
        f, mask = random_frame(rng, shape, dtype=dtype, err=err, sat=sat)
        r = strong_pixels(f, mask, err, sat, sigma=sigma, threshold=thr, window=window,
                          strip=strip)
        ref = reference_strong(f, mask, err, sat, sigma, thr, window)
        assert ref.sum() > 20  # the test frames do have strong pixels
        np.testing.assert_array_equal(r.strong, ref)
        assert r.strong_pixels == ref.sum()


def test_kernel_equals_brute_force_loop():
    rng = np.random.default_rng(5)
    f, mask = random_frame(rng, (23, 29))
    for window in (5, 31):
        r = strong_pixels(f, mask, -1, 1000, sigma=3.0, threshold=3.0, window=window)
        ref = brute_force_strong(f, mask, -1, 1000, 3.0, 3.0, window)
        assert ref.sum() > 3
        np.testing.assert_array_equal(r.strong, ref)


def test_saturated_pixel_can_be_strong_but_is_not_in_statistics():
    f = np.ones((41, 41), np.int32)
    f[20, 20] = 1000  # saturated
    f[20, 22] = 30
    r = strong_pixels(f, None, None, 1000, sigma=3.0, threshold=10.0, window=11)
    assert r.strong[20, 20] and r.strong[20, 22]
    # the saturated pixel does not raise its neighbour's local mean/variance
    # window of (20, 21): 121 px - centre - saturated = 119 statistics pixels: 30 + 118 ones
    assert r.local_mean[20, 21] == pytest.approx(148.0 / 119.0, rel=1e-6)
    assert r.n_saturated == 1


def test_fused_stats_equal_image_stats():
    rng = np.random.default_rng(11)
    for dtype, err, sat in ((np.int32, -1, 1000), (np.uint16, 65535, 1000), (np.int32, None, None)):
        f, mask = random_frame(rng, (61, 77), dtype=dtype, err=-1 if err is None else err,
                               sat=1000)
        r = strong_pixels(f, mask, err, sat, threshold=5.0, window=15, strip=16)
        vmax, mean, n_masked, n_sat = image_stats(f[None], mask, err, sat)
        assert r.max == vmax[0] and r.n_masked == n_masked[0] and r.n_saturated == n_sat[0]
        assert r.mean == mean[0]
        # background estimate: mean of valid, non-saturated, non-strong pixels
        valid = ~mask if err is None else ~mask & (f != err)
        bk = valid & ~r.strong & ((f < sat) if sat is not None else True)
        assert r.bkg_estimate == pytest.approx(f[bk].astype(np.float64).mean(), rel=1e-6)
    # fully masked frame: mean NaN, max 0, no strong pixels
    f = np.full((30, 30), -1, np.int32)
    r = strong_pixels(f, None, -1, 1000)
    assert r.max == 0 and np.isnan(r.mean) and r.n_masked == 900 and r.strong_pixels == 0
    assert np.isnan(r.bkg_estimate)


def test_bad_arguments():
    with pytest.raises(ValueError):
        strong_pixels(np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError):
        strong_pixels(np.zeros((5, 5), np.int32), window=4)
    with pytest.raises(ValueError):
        strong_pixels(np.zeros((5, 5), np.int32), np.zeros((4, 5), bool))
