"""Tests of jfx.integrate.reference (empirical reference profiles) on radially elongated,
tailed spots rendered independently (numpy sub-pixel sampling)."""

from __future__ import annotations

import numpy as np
import pytest

import jfx  # noqa: F401
from jfx.integrate import reference as R
from jfx.integrate.summation import integrate_frame

SHAPE = (480, 480)
BEAM = (240.3, 239.6)
RADII = (3.0, 5.0, 9.0)


def _render(x, y, photons, s_rad, s_tan, tail=0.0, tail_scale=2.5, half=9, sub=5):
    """Expected photons per pixel (SHAPE) of spots elongated along the beam → spot radius:
    Gaussian σ_rad × σ_tan (px) plus a ``tail`` fraction ``tail_scale`` times wider,
    integrated over each pixel by sub × sub sampling."""
    img = np.zeros(SHAPE)
    o = (np.arange(sub) + 0.5) / sub - 0.5
    for xi, yi, n in zip(x, y, photons):
        cx, cy = xi - BEAM[0], yi - BEAM[1]
        rr = np.hypot(cx, cy)
        cx, cy = cx / rr, cy / rr
        ix, iy = round(xi), round(yi)
        py, px = np.mgrid[iy - half: iy + half + 1, ix - half: ix + half + 1]
        sx = px[..., None, None] + o[None, None, None, :] - xi
        sy = py[..., None, None] + o[None, None, :, None] - yi
        u, w = sx * cx + sy * cy, -sx * cy + sy * cx
        val = 0.0
        for frac, k in ((1.0 - tail, 1.0), (tail, tail_scale)):
            if frac:
                su, sw = s_rad * k, s_tan * k
                val = val + frac * np.exp(-0.5 * ((u / su) ** 2 + (w / sw) ** 2)) / (
                    2 * np.pi * su * sw)
        img[py, px] += n * val.mean(axis=(2, 3))
    return img


def _field(rng, tail):
    g = np.arange(20, 461, 22.0)
    gx, gy = np.meshgrid(g, g)
    x = (gx + rng.uniform(-0.5, 0.5, gx.shape)).ravel()
    y = (gy + rng.uniform(-0.5, 0.5, gy.shape)).ravel()
    keep = np.hypot(x - BEAM[0], y - BEAM[1]) > 30
    x, y = x[keep], y[keep]
    strong = (np.arange(x.size) % 3) == 0
    N = np.where(strong, 4000.0, 40.0)
    expected = 2.0 + _render(x, y, N, 1.3, 0.8, tail)
    # expected photons of each spot in its disc (pixel centres within r1)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    spots = expected - 2.0
    disc = np.array([spots[(xx - a) ** 2 + (yy - b) ** 2 < RADII[0] ** 2].sum()
                     for a, b in zip(x, y)])
    return expected, x, y, strong, disc


def _run(frames, x, y, d, edges):
    """Summation + empirical profile fit of every frame, the reference pooled over frames."""
    gs, sums, ref = [], [], None
    for fr in frames:
        s = integrate_frame(fr, None, x, y, None, RADII)
        g = R.gather(fr, np.zeros(fr.shape, bool), x, y, d, RADII, s, edges, beam_xy=BEAM)
        ref = R.deposit(g, edges, RADII[0]) + ref
        gs.append(g)
        sums.append(s)
    P = R.reference_profiles(ref)
    out = [R.fit(g, P, ref.step_px) for g in gs]
    return sums, out, ref, P


@pytest.mark.parametrize("tail", [0.0, 0.08])
def test_elongated_spots_unbiased_with_calibrated_errors(tail):
    rng = np.random.default_rng(3)
    expected, x, y, strong, disc = _field(rng, tail)
    frames = [rng.poisson(expected).astype(np.int32) for _ in range(8)]
    d = np.full(x.size, 2.0)
    edges = R.shell_edges(1.5, 2)
    sums, out, ref, _ = _run(frames, x, y, d, edges)
    assert ref.n_strong.sum() == 8 * strong.sum()
    I = np.array([o[0] for o in out])
    V = np.array([o[1] for o in out])
    Is = np.array([np.asarray(s.intensity) for s in sums])
    Vs = np.array([np.asarray(s.variance) for s in sums])
    assert np.all(np.isfinite(I)) and np.all(V > 0)
    weak = ~strong
    if tail == 0.0:
        # no tail: the disc photons are the truth (the annulus holds no signal)
        for m in (strong, weak):
            ratio = I[:, m].mean() / disc[m].mean()
            err = np.std(I[:, m] - disc[m]) / np.sqrt(I[:, m].size) / disc[m].mean()
            assert abs(ratio - 1.0) < max(0.01, 3 * err), (ratio, err)
        z = (I[:, weak] - disc[weak]) / np.sqrt(V[:, weak])
        assert 0.9 < np.std(z) < 1.1
        # elongated spots: profile fitting beats summation for weak spots
        assert np.var(I[:, weak] - disc[weak]) < 0.8 * np.var(Is[:, weak] - disc[weak])
    else:
        # tail reaching the annulus: the fit estimates what summation estimates (same disc
        # photons, same background): weak and strong alike, within 1 % of the strong spots
        for m in (strong, weak):
            assert I[:, m].mean() == pytest.approx(Is[:, m].mean(), rel=0.01,
                                                   abs=3 * np.sqrt(Vs[:, m].mean() / I[:, m].size))
        z = (I[:, weak] - Is[:, weak].mean(0)) / np.sqrt(V[:, weak])
        assert np.std(z) < 1.1


def test_reference_profile_recovers_elongation_and_prior_fills_empty_shell():
    rng = np.random.default_rng(4)
    expected, x, y, _, _ = _field(rng, 0.0)
    frames = [rng.poisson(expected).astype(np.int32) for _ in range(3)]
    d = np.full(x.size, 2.0)
    edges = R.shell_edges(1.2, 3)  # d = 2 Å falls in the first shell only
    _, _, ref, P = _run(frames, x, y, d, edges)
    assert ref.n_strong[0] > 0 and ref.n_strong[1:].sum() == 0
    G = P.shape[1]
    c = (np.arange(G) - (G - 1) // 2) * ref.step_px
    prof = P[0]
    # second moments along u (radial) and w (tangential): σ² + 1/12 (pixel) + step²/12 (bins)
    var_u = np.sum(prof * c[:, None] ** 2) / prof.sum()
    var_w = np.sum(prof * c[None, :] ** 2) / prof.sum()
    assert var_u > 1.8 * var_w
    assert var_w == pytest.approx(0.8 ** 2 + 1 / 12, rel=0.15)
    # an empty shell gets the pooled profile
    np.testing.assert_allclose(P[2], P[1])
    assert np.corrcoef(P[1].ravel(), P[0].ravel())[0, 1] > 0.99


def test_combine_partials_weights_by_fraction_and_pools_background():
    """Partials A_k = Poisson(f_k·I + n_px·b) − n_px·b̂_k (b̂_k from n_b pixels of the same
    background on each image): the fraction-weighted combination is unbiased and its variance
    describes the scatter, with and without pooling the background over the images; it beats
    the plain sum for weak reflections spread over images (pooling more so), and strong ones
    get the plain sum."""
    rng = np.random.default_rng(7)
    n, fr = 4000, np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    n_px, b, n_b = 12.0, 3.0, 20.0
    group = np.repeat(np.arange(n), fr.size)
    for I, tol in ((30.0, 0.02), (5000.0, 0.003)):
        counts = rng.poisson(fr[None, :] * I + n_px * b, (n, fr.size))
        b_hat = rng.poisson(n_b * b, (n, fr.size)) / n_b
        A = counts - n_px * b_hat
        F = fr.sum()
        plain = A.sum(1)
        spread = {}
        for pool in (False, True):
            got, var, var_bg = R.combine_partials(
                A.ravel(), np.full(A.size, n_px * b), np.full(A.size, n_px), b_hat.ravel(),
                np.full(A.size, n_b), np.tile(fr, n), group, np.ones(A.size, bool), n,
                pool_background=pool)
            assert got.mean() == pytest.approx(F * I, rel=tol)
            assert np.std((got - F * I) / np.sqrt(var)) == pytest.approx(1.0, abs=0.05)
            spread[pool] = (np.var(got), var.mean())
            # var_bg (at I = 0) is the background part: ≤ var; for strong reflections
            # (plain-sum weights) var − var_bg is the recorded signal's Poisson term F·I
            assert np.all(var_bg <= var * (1 + 1e-12))
            if I > 1000:
                assert np.median(var - var_bg) == pytest.approx(F * I, rel=0.05)
            if I > 1000:
                np.testing.assert_allclose(got, plain, rtol=0.02)
        if I < 100:
            assert spread[False][0] < 0.8 * np.var(plain)
            # pooling: the predicted gain (shared background term) is the measured one
            gain = spread[True][0] / spread[False][0]
            assert gain < 0.93
            assert gain == pytest.approx(spread[True][1] / spread[False][1], abs=0.04)
