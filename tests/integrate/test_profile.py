"""Tests of jfx.integrate.profile (profile fitting with per-shell widths) on simulated spots."""

from __future__ import annotations

import numpy as np
import pytest

import jfx  # noqa: F401
from jfx.integrate.profile import integrate_profile, pixel_profile
from jfx.integrate.summation import integrate_frame
from jfx.models.reflections import ReflectionFlag as F
from tests.integrate.test_summation import spot_image


def test_pixel_profile_normalised_and_matches_sim_renderer():
    o = np.arange(-12, 13)
    dy, dx = (a.ravel() for a in np.meshgrid(o, o, indexing="ij"))
    p = pixel_profile((dx - 0.3)[None], (dy + 0.2)[None], np.array([1.3]))
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    img = spot_image((25, 25), 12.3, 11.8, 1.0, sigma=1.3, patch=25)
    np.testing.assert_allclose(p.reshape(25, 25), img, atol=1e-7)


def _field(rng, n_frames, photons_weak):
    """Spots on a 30 × 30 grid (24 px apart): d = 4 Å (σ 0.9 px) on the left half,
    d = 2 Å (σ 1.4 px) on the right half; every 3rd spot strong (3000 photons)."""
    sp = 24
    gy, gx = np.mgrid[0:30, 0:30]
    x = (gx * sp + 12 + rng.uniform(-0.5, 0.5, gx.shape)).ravel()
    y = (gy * sp + 12 + rng.uniform(-0.5, 0.5, gy.shape)).ravel()
    d = np.where(gx.ravel() < 15, 4.0, 2.0)
    sig = np.where(d > 3, 0.9, 1.4)
    strong = (np.arange(x.size) % 3) == 0
    N = np.where(strong, 3000.0, photons_weak)
    expected = 1.0 + sum(spot_image((720, 720), x[m], y[m], N[m], sigma=s)
                         for s, m in ((0.9, sig == 0.9), (1.4, sig == 1.4)))
    frames = [rng.poisson(expected).astype(np.int32) for _ in range(n_frames)]
    return frames, x, y, d, N, strong


def test_profile_fit_widths_unbiased_and_better_than_summation_for_weak():
    rng = np.random.default_rng(11)
    frames, x, y, d, N, strong = _field(rng, 3, 40.0)
    radii = (4.5, 6.0, 9.0)
    I_prf, V_prf, I_sum, V_sum = [], [], [], []
    for fr in frames:
        s = integrate_frame(fr, None, x, y, None, radii)
        p = integrate_profile(fr, None, x, y, None, d, radii, summation=s, n_shells=2)
        # widths per shell recovered (shell 0 = low resolution, d = 4 Å)
        assert p.shell_sigma_px[0] == pytest.approx(0.9, rel=0.03)
        assert p.shell_sigma_px[1] == pytest.approx(1.4, rel=0.03)
        assert np.all(p.flags == F.INTEGRATED_PRF)
        # strong spots: full-spot photons
        np.testing.assert_allclose(np.median(p.intensity[strong] / N[strong]), 1.0, atol=0.01)
        I_prf.append(p.intensity[~strong])
        V_prf.append(p.variance[~strong])
        I_sum.append(s.intensity[~strong])
        V_sum.append(s.variance[~strong])
    I_prf, V_prf, I_sum = (np.concatenate(a) for a in (I_prf, V_prf, I_sum))
    emp = np.var(I_prf, ddof=1)
    # weak spots (40 photons): unbiased, variance model right, better than summation
    assert I_prf.mean() == pytest.approx(40.0, abs=4 * np.sqrt(emp / I_prf.size))
    assert emp == pytest.approx(V_prf.mean(), rel=0.15)
    assert emp < 0.8 * np.var(I_sum, ddof=1)


def test_fixed_widths_and_masked_pixel():
    rng = np.random.default_rng(5)
    frames, x, y, d, N, _ = _field(rng, 1, 40.0)
    fr = frames[0]
    mask = np.zeros(fr.shape, bool)
    i = 0  # strong spot 0: mask its brightest pixel, profile fit still recovers it
    mask[round(y[i]), round(x[i])] = True
    p = integrate_profile(fr, mask, x, y, None, d, (4.5, 6.0, 9.0),
                          shell_sigma_px=[0.9, 1.4], shell_edges_invd2=[0.0, 0.1, 1.0])
    assert p.intensity[0] == pytest.approx(N[0], rel=0.05)
    assert np.all(p.sigma_px[d == 4.0] == 0.9) and np.all(p.sigma_px[d == 2.0] == 1.4)
    with pytest.raises(ValueError):
        integrate_profile(fr, None, x, y, None, d[:5], (4.5,))


def test_disc_profile_equals_pixel_profile():
    from jfx.integrate.profile import _disc_profile
    from jfx.integrate.summation import box_offsets

    rng = np.random.default_rng(2)
    oy, ox, _, _ = box_offsets((3.5, 5.0, 7.0))
    fx, fy = rng.uniform(-0.5, 0.5, (2, 20))
    sig = rng.uniform(0.5, 2.0, 20)
    a = _disc_profile(fx, fy, sig, oy, ox)
    b = pixel_profile(ox[None, :] + fx[:, None], oy[None, :] + fy[:, None], sig)
    np.testing.assert_allclose(a, b, atol=1e-15)
