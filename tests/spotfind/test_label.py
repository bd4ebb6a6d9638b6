"""Sparse connected components and spot moments vs scipy.ndimage / direct sums."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from jfx.spotfind.label import label_pixels, label_strong


def test_components_equal_ndimage_label():
    rng = np.random.default_rng(2)
    for shape, p in (((50, 60), 0.2), ((50, 60), 0.45), ((7, 300), 0.3), ((1, 9), 0.6)):
        m = rng.random(shape) < p
        m[:, -1] |= m[:, 0]  # pixels on both edges must not wrap around
        flat = np.flatnonzero(m)
        n, lab = label_pixels(flat, shape)
        ref, n_ref = ndimage.label(m, structure=np.ones((3, 3)))
        assert n == n_ref
        # ndimage numbers components in raster order of their first pixel, as label_pixels
        np.testing.assert_array_equal(lab, ref.reshape(-1)[flat] - 1)
    assert label_pixels(np.zeros(0, np.int64), (4, 4))[0] == 0


def test_moments_equal_direct_sums():
    rng = np.random.default_rng(3)
    shape = (40, 50)
    strong = rng.random(shape) < 0.15
    frame = rng.integers(5, 100, shape).astype(np.int32)
    mean = rng.random(shape).astype(np.float32) * 4
    s = label_strong(strong, frame, mean)
    ref, n = ndimage.label(strong, structure=np.ones((3, 3)))
    assert s.n == n
    for k in range(n):
        yy, xx = np.nonzero(ref == k + 1)
        w = frame[yy, xx] - mean[yy, xx].astype(np.float64)
        assert np.isclose(s.intensity[k], w.sum())
        assert np.isclose(s.x_px[k], (w * xx).sum() / w.sum())
        assert np.isclose(s.y_px[k], (w * yy).sum() / w.sum())
        assert s.n_pixels[k] == yy.size and s.max_value[k] == frame[yy, xx].max()
        assert (s.x_min[k], s.x_max[k], s.y_min[k], s.y_max[k]) == (
            xx.min(), xx.max(), yy.min(), yy.max())


def test_grown_centroid_region():
    # one strong pixel with a brighter right neighbour that is not strong: growing by 1
    # pulls the centroid towards it, exactly by the weights
    frame = np.zeros((9, 9), np.int32)
    frame[4, 4] = 10
    frame[4, 5] = 5
    frame[3, 3] = -7  # error value: excluded from the grown region
    strong = np.zeros((9, 9), bool)
    strong[4, 4] = True
    mean = np.zeros((9, 9), np.float32)
    s = label_strong(strong, frame, mean, grow=1, error_value=-7)
    assert np.isclose(s.x_px[0], (10 * 4 + 5 * 5) / 15) and np.isclose(s.y_px[0], 4.0)
    assert s.intensity[0] == 10 and s.n_pixels[0] == 1
