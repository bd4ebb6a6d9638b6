"""Residuals: exact at the truth, Jacobians/gradients vs finite differences, robust losses,
padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jfx.physics.diffraction import predict_rotation
from jfx.refine import params as P
from jfx.refine.residuals import (
    robust_scale,
    robust_weight,
    robustify,
    rotation_raw_residuals,
    rotation_residuals,
    still_raw_residuals,
    still_residuals,
)
from jfx.refine.settings import RefineSettings
from jfx.solvers import _split
from tests.refine import geometry, simulate_still, simulate_sweep

ALL_FREE = RefineSettings(free=("detector.beam_center_px",
                          "detector.distance_mm", "detector.orientation", "beam.wavelength_A",
                          "lattice.orientation", "lattice.cell"))


@pytest.fixture(scope="module")
def still():
    rng = np.random.default_rng(5)
    g = geometry()
    basis, hkl, _, _, _, x, y = simulate_still(rng, g, n_spots=60)
    p = P.from_models(g, basis, "tetragonal")
    return g, p, jnp.asarray(hkl), jnp.asarray(x), jnp.asarray(y)


@pytest.fixture(scope="module")
def sweep():
    rng = np.random.default_rng(6)
    g = geometry(rotation=True)
    basis, hkl, x, y, fr, _ = simulate_sweep(rng, g, n_spots=80, noise_px=0.0,
                                             noise_frames=0.0, outlier_frac=0.0)
    p = P.from_models(g, basis, "tetragonal")
    return g, p, jnp.asarray(hkl), jnp.asarray(x), jnp.asarray(y), jnp.asarray(fr)


def _perturbed(p):
    d = p.detector
    det = P.DetectorParams(d.beam_center_px + jnp.array([1.3, -0.7]), d.distance_mm * 1.01,
                           jnp.array([0.004, -0.003]), d.fast0, d.slow0)
    c = p.crystal
    cr = P.CrystalParams(jnp.array([0.003, -0.002, 0.001]), c.cell_u + 0.004, c.U0, c.system)
    return P.RefineParams(det, P.BeamParams(p.beam.wavelength_A * 1.001), cr)


def test_still_residuals_vanish_at_truth(still):
    g, p, hkl, x, y = still
    raw = still_raw_residuals(p, g, hkl, x, y, jnp.ones(x.shape))
    assert np.max(np.abs(np.asarray(raw))) < 1e-8


def test_rotation_residuals_vanish_at_truth(sweep):
    g, p, hkl, x, y, fr = sweep
    raw = rotation_raw_residuals(p, g, hkl, x, y, fr, jnp.ones(x.shape))
    assert np.max(np.abs(np.asarray(raw))) < 1e-8


def _fd_check(fun, p):
    mask = P.free_mask(p, ALL_FREE)
    x0, unflatten = _split(p, mask)
    f = jax.jit(lambda z: fun(unflatten(z)))
    J = np.asarray(jax.jit(jax.jacfwd(f))(x0))
    assert np.all(np.isfinite(J))
    h = np.array([1e-4, 1e-4, 1e-4, 1e-6, 1e-6, 1e-8, 1e-7, 1e-7, 1e-7, 1e-7, 1e-7])
    assert x0.shape == h.shape
    for i in range(x0.shape[0]):
        e = np.zeros(x0.shape[0])
        e[i] = h[i]
        fd = (np.asarray(f(x0 + e)) - np.asarray(f(x0 - e))) / (2 * h[i])
        np.testing.assert_allclose(J[:, i], fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())
    # reverse mode (used by lbfgs) agrees with forward mode
    r = np.asarray(f(x0))
    g = np.asarray(jax.jit(jax.grad(lambda z: 0.5 * jnp.sum(f(z) ** 2)))(x0))
    np.testing.assert_allclose(g, J.T @ r, rtol=1e-8, atol=1e-10 * np.abs(J.T @ r).max())


def test_still_jacobian_matches_finite_differences(still):
    g, p, hkl, x, y = still
    w = jnp.ones(x.shape)
    _fd_check(lambda q: still_residuals(q, g, hkl, x, y, w, "l2"), _perturbed(p))


def test_rotation_jacobian_matches_finite_differences(sweep):
    g, p, hkl, x, y, fr = sweep
    w = jnp.ones(x.shape)
    _fd_check(lambda q: rotation_residuals(q, g, hkl, x, y, fr, w, 1000.0, "l2"),
              _perturbed(p))


def test_padding_rows_contribute_nothing(still, sweep):
    g, p, hkl, x, y = still
    n = x.shape[0]
    pad = 20
    rng = np.random.default_rng(0)
    # garbage padded rows: blind / zero hkl, NaN positions
    hkl2 = jnp.concatenate([hkl, jnp.asarray(rng.integers(-40, 40, (pad, 3)))]).at[n].set(0)
    x2 = jnp.concatenate([x, jnp.full(pad, jnp.nan)])
    y2 = jnp.concatenate([y, jnp.full(pad, 1e9)])
    w2 = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)])
    pp = _perturbed(p)
    r1 = still_residuals(pp, g, hkl, x, y, jnp.ones(n))
    r2 = still_residuals(pp, g, hkl2, x2, y2, w2)
    np.testing.assert_array_equal(np.asarray(r2[2 * n:]), 0.0)
    np.testing.assert_allclose(np.asarray(r2[:2 * n]), np.asarray(r1), rtol=1e-12)
    gr = jax.jit(jax.grad(lambda q: jnp.sum(still_residuals(q, g, hkl2, x2, y2, w2) ** 2)))(pp)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(gr))
    # rotation: padded rows with hkl along the axis (blind) keep gradients finite
    g, p, hkl, x, y, fr = sweep
    n = x.shape[0]
    # hkl ∝ (a·x̂, b·x̂, c·x̂) gives q ∥ x̂ = the goniometer axis: blind (no event)
    hkl_blind = jnp.asarray(np.round(np.asarray(P.to_basis(p)) @ np.array([1.0, 0, 0]) /
                                     2.0)).astype(hkl.dtype)
    assert np.all(np.isnan(np.asarray(predict_rotation(g, P.to_basis(p),
                                                       hkl_blind[None])["phi"])))
    hkl3 = jnp.concatenate([hkl, jnp.tile(hkl_blind, (pad, 1))])
    z = jnp.zeros(pad)
    w3 = jnp.concatenate([jnp.ones(n), z])
    f = jax.jit(lambda q: rotation_residuals(q, g, hkl3, jnp.concatenate([x, z]),
                                     jnp.concatenate([y, z]), jnp.concatenate([fr, z]), w3,
                                     1000.0))
    gr = jax.jit(jax.grad(lambda q: jnp.sum(f(q) ** 2)))(_perturbed(p))
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(gr))
    np.testing.assert_array_equal(np.asarray(f(_perturbed(p))[3 * n:]), 0.0)


@pytest.mark.parametrize("loss", ["l2", "huber", "trimmed"])
def test_robust_losses_match_their_rho(loss):
    k = 1.5
    r = np.linspace(0.0, 10.0, 101)[1:]
    s = np.asarray(robust_scale(jnp.asarray(r), loss, k))
    rho = {"l2": 0.5 * r ** 2,
           "huber": np.where(r <= k, 0.5 * r ** 2, k * r - 0.5 * k * k),
           "trimmed": np.where(r <= k, 0.5 * r ** 2, 0.5 * k * k)}[loss]
    np.testing.assert_allclose(0.5 * (s * r) ** 2, rho, rtol=1e-12)
    # IRLS weight = rho'(r)/r
    wt = np.asarray(robust_weight(jnp.asarray(r), loss, k))
    drho = np.gradient(rho, r)
    inner = (np.abs(r - k) > 0.2) & (r > 0.2) & (r < 9.8)
    np.testing.assert_allclose(wt[inner], (drho / r)[inner], rtol=2e-2, atol=1e-3)


def test_robustify_acts_on_the_vector_norm():
    raw = jnp.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out = np.asarray(robustify(raw, jnp.array([1.0, 1.0, 0.0]), "huber", 1.0)).reshape(3, 2)
    # |r| = 5: ½|r̃|² = 5 − ½ → |r̃| = 3, same direction
    np.testing.assert_allclose(out[0], np.array([3.0, 4.0]) * 3.0 / 5.0, rtol=1e-12)
    np.testing.assert_allclose(out[1], [0.3, 0.4], rtol=1e-12)
    np.testing.assert_array_equal(out[2], 0.0)
    with pytest.raises(ValueError):
        robust_scale(jnp.ones(2), "cauchy", 1.0)
