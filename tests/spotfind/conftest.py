"""Independent numpy references and simulated data for the spot-finder tests."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate
from scipy.special import erf


def _box_uniform(a, window):
    """Box sums via scipy.ndimage.uniform_filter (float64, rounded back to exact ints)."""
    from scipy.ndimage import uniform_filter

    s = uniform_filter(a.astype(np.float64), window, mode="constant") * window * window
    return np.rint(s).astype(np.int64)


def reference_strong(frame, mask, err, sat, sigma, thr, window, fast=False):
    """The strong-pixel criterion in exact int64 arithmetic (scipy correlate box sums, or
    uniform_filter with ``fast``, exact while the float64 sums are < 2^52)."""
    frame = np.asarray(frame).astype(np.int64)
    valid = ~mask
    if err is not None:
        valid &= frame != err
    stat = valid.copy()
    if sat is not None:
        stat &= frame < sat
    v = np.where(valid, frame, 0)
    x = np.where(stat, v, 0)
    if fast:
        st = stat.astype(np.int64)
        n = _box_uniform(st, window) - st
        S = _box_uniform(x, window) - x
        S2 = _box_uniform(x * x, window) - x * x
    else:
        k = np.ones((window, window), np.int64)
        k[window // 2, window // 2] = 0
        n = correlate(stat.astype(np.int64), k, mode="constant")
        S = correlate(x, k, mode="constant")
        S2 = correlate(x * x, k, mode="constant")
    diff = n * v - S
    disp = n * S2 - S * S
    # (v - m)^2 > sigma^2 var n/(n-1), m = S/n, var = disp/n^2, multiplied out (exact ints)
    lhs = (n - 1) * diff * diff
    return valid & (n >= 2) & (v >= thr) & (diff > 0) & (lhs > sigma ** 2 * n * disp)


def brute_force_strong(frame, mask, err, sat, sigma, thr, window):
    """Pixel-by-pixel loop of the criterion as quoted (float64 mean/variance)."""
    ny, nx = frame.shape
    r = window // 2
    out = np.zeros((ny, nx), bool)
    valid = ~mask & (frame != err)
    stat = valid & (frame < sat)
    for i in range(ny):
        for j in range(nx):
            if not valid[i, j] or frame[i, j] < thr:
                continue
            i0, i1, j0, j1 = max(0, i - r), min(ny, i + r + 1), max(0, j - r), min(nx, j + r + 1)
            sel = stat[i0:i1, j0:j1].copy()
            sel[i - i0, j - j0] = False
            vals = frame[i0:i1, j0:j1][sel].astype(np.float64)
            n = vals.size
            if n < 2:
                continue
            m = vals.mean()
            var = vals.var()  # (n S2 - S^2)/n^2
            v = float(frame[i, j])
            out[i, j] = v > m and (v - m) ** 2 > sigma ** 2 * var * n / (n - 1)
    return out


def random_frame(rng, shape, dtype=np.int32, err=-1, sat=1000, lam=2.0):
    """Poisson background + bright pixels/blobs + masked, error and saturated pixels."""
    f = rng.poisson(lam, shape).astype(np.int64)
    hot = rng.random(shape) < 0.01
    f[hot] += rng.integers(5, 200, hot.sum())
    mask = rng.random(shape) < 0.03
    mask[:, :2] |= rng.random((shape[0], 2)) < 0.5  # edge columns partly masked
    f[rng.random(shape) < 0.01] = err
    f[rng.random(shape) < 0.003] = sat
    return f.astype(dtype), mask


def render_spots(shape, xs, ys, ns, sigma=1.0, bg=0.0):
    """Expected photons of pixel-integrated Gaussian spots (first pixel centre = 0)."""
    ny, nx = shape
    jx = np.arange(nx)
    iy = np.arange(ny)
    img = np.full(shape, float(bg))
    s = np.sqrt(2.0) * sigma
    for x, y, n in zip(xs, ys, ns):
        px = 0.5 * (erf((jx + 0.5 - x) / s) - erf((jx - 0.5 - x) / s))
        py = 0.5 * (erf((iy + 0.5 - y) / s) - erf((iy - 0.5 - y) / s))
        img += n * np.outer(py, px)
    return img
