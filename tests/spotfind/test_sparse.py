"""The sparse (candidate-only) strong-pixel path equals the dense kernel and the reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jfx.models import Beam, Detector, Geometry
from jfx.models.pixels import special_values
from jfx.spotfind.find import ThresholdSpotFinder
from jfx.spotfind.settings import ThresholdSpotFinderSettings
from jfx.spotfind.stats import image_stats
from jfx.spotfind.strong import (
    candidate_strong,
    dilate,
    host_pass,
    window_sums,
)
from tests.spot_frames import spot_frames
from tests.spotfind.conftest import random_frame, reference_strong


def _geometry(shape):
    det = Detector.create(80.0, (shape[1] / 2 - 3.3, shape[0] / 2 + 2.1), shape)
    return Geometry(Beam.create(1.0), det)


def _sparse_mask(f, mask, err, sat, sigma, thr, window):
    has_err, e, has_sat, s = special_values(f.dtype, err, sat)
    cand, st = host_pass(f, mask, thr, has_err=has_err, err=e, has_sat=has_sat, sat=s)
    sums = window_sums(f, mask, cand, window=window, has_err=has_err, err=e, has_sat=has_sat,
                       sat=s)
    flat, mean_c = candidate_strong(f, cand, cand, sums, sigma=sigma, pixel_mask=mask,
                                    has_err=has_err, err=e, has_sat=has_sat, sat=s)
    mean = mean_c[np.searchsorted(cand, flat)]
    out = np.zeros(f.size, bool)
    out[flat] = True
    return out.reshape(f.shape), flat, mean, st


@pytest.mark.parametrize("shape,window,sigma,thr", [
    ((97, 131), 31, 3.0, 5.0),
    ((97, 131), 7, 2.5, 3.0),
    ((64, 40), 11, 4.0, 0.0),      # threshold 0: every valid pixel is a candidate
    ((20, 300), 31, 3.0, 10.0),    # frame thinner than the window (edges everywhere)
])
def test_sparse_mask_equals_reference(shape, window, sigma, thr):
    rng = np.random.default_rng(abs(hash((shape, window))) % 2 ** 32)
    for dtype, err, sat in ((np.int32, -1, 1000), (np.uint16, 65535, 1000), (np.int16, None, None)):
        f, mask = random_frame(rng, shape, dtype=dtype, err=-1 if err is None else err,
                               sat=1000 if sat is None else sat)
        strong, flat, mean, st = _sparse_mask(f, mask, err, sat, sigma, thr, window)
        ref = reference_strong(f, mask, err, sat, sigma, thr, window)
        assert ref.sum() > 20
        np.testing.assert_array_equal(strong, ref)
        # local mean at the strong pixels = independent S/n
        from scipy.ndimage import correlate

        valid = ~mask if err is None else ~mask & (f != err)
        stat = valid if sat is None else valid & (f < sat)
        k = np.ones((window, window))
        k[window // 2, window // 2] = 0
        S = correlate(np.where(stat, f, 0).astype(np.float64), k, mode="constant")
        n = correlate(stat.astype(np.float64), k, mode="constant")
        np.testing.assert_allclose(mean, (S / np.maximum(n, 1)).reshape(-1)[flat], rtol=1e-6)
        # host-pass statistics = image_stats
        mx, me, nm, ns = (np.asarray(a)[0] for a in image_stats(f[None], mask, err, sat))
        assert (st[0], st[2], st[3]) == (mx, nm, ns)
        np.testing.assert_allclose(st[1], me, rtol=1e-6)


def test_local_mean_at_arbitrary_pixels():
    """candidate_strong returns m = S/n (centre excluded) at every window-sum pixel."""
    rng = np.random.default_rng(3)
    f, mask = random_frame(rng, (50, 70), dtype=np.int32, err=-1, sat=1000)
    pix = np.sort(rng.choice(f.size, 300, replace=False))
    sums = window_sums(f, mask, pix, window=9, has_err=True, err=-1, has_sat=True, sat=1000)
    _, m = candidate_strong(f, pix[:0], pix, sums, sigma=3.0, pixel_mask=mask, has_err=True,
                            err=-1, has_sat=True, sat=1000)
    from scipy.ndimage import correlate

    valid = ~mask & (f != -1)
    stat = valid & (f < 1000)
    k = np.ones((9, 9))
    k[4, 4] = 0
    S = correlate(np.where(stat, f, 0).astype(np.float64), k, mode="constant")
    n = correlate(stat.astype(np.float64), k, mode="constant")
    np.testing.assert_allclose(m, (S / np.maximum(n, 1)).reshape(-1)[pix], rtol=1e-6)


@pytest.mark.parametrize("grow", [0, 1])
def test_finder_dense_sparse_auto_identical(grow):
    """Whole spot-finding stage: same spots, stats and order with every kernel choice."""
    rng = np.random.default_rng(7)
    shape = (160, 200)
    frames = spot_frames(rng, 3, shape, 25)
    mask = np.zeros(shape, bool)
    mask[70:75] = True
    frames[:, mask] = np.iinfo(np.int32).min
    frames[0, 10, 10] = 10**6  # saturated
    base = ThresholdSpotFinderSettings(high_resolution_A=None, centroid_grow_px=grow)
    geom = _geometry(shape)
    res = {}
    for kernel in ("dense", "sparse", "auto"):
        s = dataclasses.replace(base, kernel=kernel)
        finder = ThresholdSpotFinder.create(s, geom, mask, np.iinfo(np.int32).min, 10**5)
        res[kernel] = finder(frames, np.arange(3))
    d = res["dense"]
    assert int(d.stats["n_spots"].sum()) > 40
    for kernel in ("sparse", "auto"):
        r = res[kernel]
        for k in d.stats:
            np.testing.assert_array_equal(r.stats[k], d.stats[k], err_msg=k)
        for field in ("x_px", "y_px", "intensity"):
            np.testing.assert_allclose(getattr(r.spots, field), getattr(d.spots, field),
                                       rtol=2e-6, equal_nan=True, err_msg=field)
        np.testing.assert_array_equal(r.spots.valid, d.spots.valid)


def test_dilate_equals_binary_dilation():
    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(0)
    for _ in range(100):
        ny, nx = rng.integers(3, 40, 2)
        m = rng.random((ny, nx)) < rng.uniform(0.01, 0.3)
        g = int(rng.integers(1, 3))
        ref = np.flatnonzero(binary_dilation(m, np.ones((2 * g + 1, 2 * g + 1))))
        np.testing.assert_array_equal(dilate(np.flatnonzero(m), (ny, nx), g), ref)
