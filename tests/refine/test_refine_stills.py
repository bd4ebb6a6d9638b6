"""Still refinement on simulated spots: recovery of a perturbed geometry, presets, solvers,
robustness, batching."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jfx.index.common import orientation_error_deg
from jfx.models.lattice import Lattice, basis_to_cell
from jfx.refine import params as P
from jfx.refine.refine import RefineSpots, RefineStatus, refine
from jfx.refine.residuals import robust_weight, still_raw_residuals
from jfx.refine.settings import (
    BEAM_AND_LATTICE_FREE,
    NoRefinement,
    OrientationRefinement,
    RefineSettings,
)
from tests.refine import CELL, SPACE_GROUP, geometry, simulate_still, small_rotation

N_IMG = 4
DIST = 50.0


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    g = geometry(distance_mm=DIST)
    sims = [simulate_still(rng, g, n_spots=400, dmin=1.3) for _ in range(N_IMG)]
    bases = np.stack([s[0] for s in sims])
    spots = RefineSpots.create(np.stack([s[1] for s in sims]), np.stack([s[2] for s in sims]),
                               np.stack([s[3] for s in sims]))
    outliers = np.stack([s[4] for s in sims])
    d = g.detector
    tilt = np.asarray(P.rotvec_to_matrix(jnp.asarray(np.deg2rad([0.3, -0.3, 0.0]))))
    g_start = dataclasses.replace(g, detector=dataclasses.replace(
        d, beam_center_px=d.beam_center_px + jnp.array([2.0, -1.5]),
        distance_mm=d.distance_mm * 1.01))
    g_tilted = dataclasses.replace(g_start, detector=dataclasses.replace(
        g_start.detector, fast_axis=jnp.asarray(tilt @ np.asarray(d.fast_axis)),
        slow_axis=jnp.asarray(tilt @ np.asarray(d.slow_axis))))
    rot = [small_rotation(rng, np.deg2rad(0.3)) for _ in range(N_IMG)]
    b_rot = np.stack([b @ r.T for b, r in zip(bases, rot)])  # orientation off by 0.3°
    b_start = b_rot * 1.005  # and the cell by 0.5 %
    return {"g": g, "bases": bases, "spots": spots, "outliers": outliers, "g_start": g_start,
                "g_tilted": g_tilted, "b_rot": b_rot, "b_start": b_start}


def _lat(b):
    return Lattice(basis=jnp.asarray(b), space_group=SPACE_GROUP)


def _check_recovery(res, data, bc_px=0.2, dist_rel=2e-3, cell_rel=2e-3, orient_deg=0.05):
    true_det = data["g"].detector
    assert np.all(res.status == RefineStatus.OK)
    bc = np.asarray(res.geometry.detector.beam_center_px)
    assert np.abs(bc - np.asarray(true_det.beam_center_px)).max() < bc_px
    assert np.abs(res.geometry.detector.distance_mm / DIST - 1.0).max() < dist_rel
    cell = basis_to_cell(res.basis)
    assert np.abs(cell[:, :3] / np.array(CELL[:3]) - 1.0).max() < cell_rel
    np.testing.assert_allclose(cell[:, 3:], 90.0, atol=1e-9)  # tetragonal constraint
    for i in range(N_IMG):
        assert orientation_error_deg(res.basis[i], data["bases"][i]) < orient_deg
    # rms of the (x, y) residual vector ≈ √2 · 0.3 px for the inliers
    assert np.all((res.rmsd_px > 0.36) & (res.rmsd_px < 0.5))


@pytest.fixture(scope="module")
def lm_result(data):
    """Preset beam_and_lattice, LM, Huber: shared by several tests (one compile)."""
    return refine(data["spots"], data["g_start"], _lat(data["b_start"]), RefineSettings())


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_beam_and_lattice_recovers_truth(data, lm_result, solver):
    res = lm_result if solver == "lm" else refine(
        data["spots"], data["g_start"], _lat(data["b_start"]), RefineSettings(), solver=solver)
    _check_recovery(res, data)
    assert res.geometry.detector.beam_center_px.shape == (N_IMG, 2)
    # detector axes are not free in this preset: bit-identical to the start
    np.testing.assert_array_equal(res.geometry.detector.fast_axis[0],
                                  np.asarray(data["g_start"].detector.fast_axis))


def test_tilts_free_recovers_detector_orientation(data):
    free = BEAM_AND_LATTICE_FREE + ("detector.orientation",)
    res = refine(data["spots"], data["g_tilted"], _lat(data["b_start"]),
                 RefineSettings(free=free))
    # stills pin the orientation about axes ⊥ the beam weakly; free tilts correlate with it
    _check_recovery(res, data, orient_deg=0.1)
    d = data["g"].detector
    for ax, ref in (("fast_axis", d.fast_axis), ("slow_axis", d.slow_axis)):
        cosang = np.clip(np.asarray(getattr(res.geometry.detector, ax)) @ np.asarray(ref), -1, 1)
        assert np.rad2deg(np.arccos(cosang)).max() < 0.1  # start: 0.3°


def test_orientation_preset_moves_only_the_orientation(data):
    # detector and cell exact; orientation off by 0.3°
    res = refine(data["spots"], data["g"], _lat(data["b_rot"] / 1.0),
                 OrientationRefinement())
    assert np.all(res.status == RefineStatus.OK)
    for i in range(N_IMG):
        assert orientation_error_deg(res.basis[i], data["bases"][i]) < 0.02  # start 0.3°
    d = data["g"].detector
    for name in ("beam_center_px", "distance_mm", "fast_axis", "slow_axis"):
        got = np.asarray(getattr(res.geometry.detector, name))
        np.testing.assert_array_equal(got, np.broadcast_to(np.asarray(getattr(d, name)),
                                                           got.shape))
    start_cell_u = np.stack([P.from_basis(b, "tetragonal").cell_u for b in data["b_rot"]])
    np.testing.assert_array_equal(res.params.crystal.cell_u, start_cell_u)  # bit-identical
    # cell of the refined basis = the start cell (only a rotation was applied)
    np.testing.assert_allclose(basis_to_cell(res.basis), basis_to_cell(data["b_rot"]),
                               atol=1e-9)


def test_none_moves_nothing(data):
    res = refine(data["spots"], data["g_start"], _lat(data["b_start"]),
                 NoRefinement())
    np.testing.assert_allclose(res.basis, data["b_start"], atol=1e-12)
    d = data["g_start"].detector
    np.testing.assert_array_equal(res.geometry.detector.beam_center_px,
                                  np.broadcast_to(np.asarray(d.beam_center_px), (N_IMG, 2)))
    np.testing.assert_array_equal(res.geometry.detector.distance_mm,
                                  np.full(N_IMG, float(d.distance_mm)))
    assert np.all(res.iterations == 0)
    assert np.all(res.rmsd_px > 1.0)  # the perturbed start does not fit


def test_batch_equals_single_image(data, lm_result):
    """vmap lanes are independent: an image's result does not depend on the other images in
    its batch (here: a permuted batch with duplicates) and equals a single-image solve."""
    full = lm_result
    order = np.array([2, 0, 2, 3, 1, 2])
    sp = jax.tree_util.tree_map(lambda a: np.asarray(a)[order], data["spots"])
    perm = refine(sp, data["g_start"], _lat(data["b_start"][order]), RefineSettings())
    for j, i in enumerate(order):
        np.testing.assert_allclose(perm.basis[j], full.basis[i], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(perm.geometry.detector.beam_center_px[j],
                                   full.geometry.detector.beam_center_px[i], atol=1e-8)
        assert perm.iterations[j] == full.iterations[i]
    # one image alone, solved with the unbatched solver (no vmap), agrees
    from jfx.refine.refine import _still_residual
    from jfx.solvers import solve
    i = 1
    p0 = P.from_models(data["g_start"], data["b_start"][i], "tetragonal")
    mask = P.free_mask(p0, RefineSettings())
    w = jnp.asarray(data["spots"].valid[i], jnp.float64)
    args = (data["g_start"], jnp.asarray(data["spots"].hkl[i]),
            jnp.asarray(data["spots"].x_px[i]), jnp.asarray(data["spots"].y_px[i]), w,
            jnp.asarray(1.0))
    res = functools.partial(_still_residual, loss="huber")
    p1, _ = jax.jit(lambda p, a: solve(res, p, mask, a, "lm", 50))(p0, args)
    np.testing.assert_allclose(np.asarray(P.to_basis(p1)), full.basis[i], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(np.asarray(p1.detector.beam_center_px),
                               full.geometry.detector.beam_center_px[i], atol=1e-7)


def test_huber_rejects_outliers_and_beats_l2(data, lm_result):
    full = lm_result
    sp, out = data["spots"], data["outliers"]
    for i in range(N_IMG):
        p = jax.tree_util.tree_map(lambda a, i=i: jnp.asarray(a[i]), full.params)
        raw = still_raw_residuals(p, data["g_start"], jnp.asarray(sp.hkl[i]),
                                  jnp.asarray(sp.x_px[i]), jnp.asarray(sp.y_px[i]),
                                  jnp.ones(sp.x_px.shape[1]))
        wt = np.asarray(robust_weight(jnp.linalg.norm(raw, axis=1), "huber", 1.0))
        assert np.all(wt[out[i]] < 0.25)  # outliers (≥ 5 px off) strongly down-weighted
        assert np.mean(wt[~out[i]] == 1.0) > 0.97
    assert np.all(full.n_used <= (~out).sum(axis=1))
    assert np.all(full.n_used >= 0.97 * (~out).sum(axis=1))
    l2 = refine(sp, data["g_start"], _lat(data["b_start"]), RefineSettings(), loss="l2")
    true_bc = np.asarray(data["g"].detector.beam_center_px)
    err_h = np.abs(full.geometry.detector.beam_center_px - true_bc).max(axis=1)
    err_l2 = np.abs(l2.geometry.detector.beam_center_px - true_bc).max(axis=1)
    assert np.mean(err_l2) > 2.0 * np.mean(err_h)
    assert np.all(l2.rmsd_px > full.rmsd_px)


def test_too_few_spots_is_reported_and_left_unchanged(data):
    sp = jax.tree_util.tree_map(lambda a: np.array(a), data["spots"])
    valid = sp.valid.copy()
    valid[1, 4:] = False  # image 1 keeps 4 spots
    sp = RefineSpots.create(sp.hkl, sp.x_px, sp.y_px, valid=valid)
    res = refine(sp, data["g_start"], _lat(data["b_start"]), RefineSettings())
    assert res.status[1] == RefineStatus.TOO_FEW_SPOTS
    assert res.n_spots[1] == 4
    np.testing.assert_allclose(res.basis[1], data["b_start"][1], atol=1e-12)
    np.testing.assert_array_equal(res.geometry.detector.distance_mm[1],
                                  float(data["g_start"].detector.distance_mm))
    assert np.all(res.status[[0, 2, 3]] == RefineStatus.OK)


def test_trimmed_loss_from_a_close_start(data):
    """Truncated least squares rejects the outliers outright (needs a start within k)."""
    res = refine(data["spots"], data["g"], _lat(data["b_rot"]), RefineSettings(),
                 loss="trimmed", huber_px=3.0)
    assert np.all(res.status == RefineStatus.OK)
    true_bc = np.asarray(data["g"].detector.beam_center_px)
    assert np.abs(res.geometry.detector.beam_center_px - true_bc).max() < 0.2
    assert np.abs(res.geometry.detector.distance_mm / DIST - 1.0).max() < 2e-3
    # every outlier (≥ 5 px off) is beyond k = 3 px: exactly the inliers are used
    assert np.all(res.n_used == (~data["outliers"]).sum(axis=1))
