"""Scan-static refinement of a simulated rotation sweep."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from jfx.index.common import orientation_error_deg
from jfx.models.lattice import Lattice, basis_to_cell
from jfx.refine import params as P
from jfx.refine.refine import RefineSpots, RefineStatus, refine
from jfx.refine.settings import BEAM_AND_LATTICE_FREE, OrientationRefinement, RefineSettings
from tests.refine import CELL, SPACE_GROUP, geometry, simulate_sweep, small_rotation


@pytest.fixture(scope="module")
def sweep():
    rng = np.random.default_rng(11)
    g = geometry(rotation=True)
    basis, hkl, x, y, fr, out = simulate_sweep(rng, g, n_spots=3000)
    d = g.detector
    tilt = np.asarray(P.rotvec_to_matrix(jnp.asarray(np.deg2rad([0.3, -0.3, 0.0]))))
    g0 = dataclasses.replace(g, detector=dataclasses.replace(
        d, beam_center_px=d.beam_center_px + jnp.array([2.0, -1.5]),
        distance_mm=d.distance_mm * 1.01, fast_axis=jnp.asarray(tilt @ np.asarray(d.fast_axis)),
        slow_axis=jnp.asarray(tilt @ np.asarray(d.slow_axis))))
    b0 = basis @ small_rotation(rng, np.deg2rad(0.3)).T * 1.005
    return {"g": g, "basis": basis, "spots": RefineSpots.create(hkl, x, y, fr), "out": out, "g0": g0,
                "b0": b0}


def test_scan_static_recovers_detector_and_crystal(sweep):
    free = BEAM_AND_LATTICE_FREE + ("detector.orientation",)
    res = refine(sweep["spots"], sweep["g0"], Lattice(jnp.asarray(sweep["b0"]), SPACE_GROUP),
                 RefineSettings(free=free))
    d = sweep["g"].detector
    assert int(res.status) == RefineStatus.OK
    assert np.abs(res.geometry.detector.beam_center_px - np.asarray(d.beam_center_px)).max() < 0.05
    assert abs(float(res.geometry.detector.distance_mm) / 80.0 - 1.0) < 5e-4
    for ax in ("fast_axis", "slow_axis"):
        c = np.clip(np.asarray(getattr(res.geometry.detector, ax)) @ np.asarray(getattr(d, ax)),
                    -1, 1)
        assert np.rad2deg(np.arccos(c)) < 0.02  # start 0.3°
    assert orientation_error_deg(res.basis, sweep["basis"]) < 0.01  # start 0.3°
    cell = basis_to_cell(res.basis)
    np.testing.assert_allclose(cell[:3], CELL[:3], rtol=3e-4)  # start 0.5 % off
    # residuals at the noise level: √2·0.3 px in (x, y); φ noise 0.1 frame = 0.05°
    assert 0.38 < float(res.rmsd_px) < 0.47
    assert 0.035 < float(res.rmsd_phi_deg) < 0.065
    n_in = int((~sweep["out"]).sum())
    assert 0.85 * n_in < int(res.n_used) <= n_in
    # goniometer and beam untouched
    np.testing.assert_array_equal(np.asarray(res.geometry.goniometer.axis),
                                  np.asarray(sweep["g"].goniometer.axis))
    assert float(res.geometry.beam.wavelength_A) == 1.0


def test_orientation_only_sweep(sweep):
    g = sweep["g"]
    b_rot = sweep["basis"] @ small_rotation(np.random.default_rng(2), np.deg2rad(0.5)).T
    res = refine(sweep["spots"], g, Lattice(jnp.asarray(b_rot), SPACE_GROUP),
                 OrientationRefinement())
    assert orientation_error_deg(res.basis, sweep["basis"]) < 0.01
    np.testing.assert_allclose(basis_to_cell(res.basis), basis_to_cell(b_rot), atol=1e-9)
    np.testing.assert_array_equal(np.asarray(res.geometry.detector.beam_center_px),
                                  np.asarray(g.detector.beam_center_px))
    np.testing.assert_array_equal(float(res.geometry.detector.distance_mm),
                                  float(g.detector.distance_mm))


def test_scan_varying_orientation_follows_a_drifting_crystal():
    """The crystal turns by 0.05°/image about an axis perpendicular to the spindle (slippage,
    radiation damage). Scan-static refinement cannot follow it; block-wise scan-varying
    refinement (blocks of 20 images) recovers each block's orientation."""
    from jfx.physics.diffraction import predict_rotation
    from jfx.refine.refine import refine_scan_varying
    from tests.refine import _corrupt, hkl_grid, random_rotation

    rng = np.random.default_rng(5)
    g = geometry(rotation=True)
    basis = np.asarray(Lattice.from_cell(CELL).basis) @ random_rotation(rng).T
    hkl = hkl_grid(1.8)
    n_img, block, rate = 120, 20, np.deg2rad(0.05)
    ny, nx = g.detector.shape
    truth, cols = [], []
    for b in range(n_img // block):
        # orientation at the block centre (piecewise constant inside the block)
        ang = rate * (b * block + block / 2)
        R = np.asarray(P.rotvec_to_matrix(jnp.asarray([0.0, ang, 0.0])))
        bb = basis @ R.T
        truth.append(bb)
        p = predict_rotation(g, jnp.asarray(bb), jnp.asarray(hkl))
        x, y, fr = (np.asarray(p[k]).ravel() for k in ("x", "y", "frame"))
        on = (np.isfinite(x) & (x > 5) & (x < nx - 6) & (y > 5) & (y < ny - 6)
              & (fr >= b * block) & (fr < (b + 1) * block))
        idx = rng.permutation(np.flatnonzero(on))[:400]
        xo, yo, _ = _corrupt(rng, x[idx], y[idx], 0.3, 0.0, (ny, nx))
        cols.append((np.repeat(hkl, 2, axis=0)[idx], xo, yo,
                     fr[idx] + rng.normal(0.0, 0.1, idx.size)))
    h, x, y, f = (np.concatenate([c[i] for c in cols]) for i in range(4))
    spots = RefineSpots.create(h, x, y, f)
    lat = Lattice(jnp.asarray(truth[len(truth) // 2]), SPACE_GROUP)
    static = refine(spots, g, lat, OrientationRefinement())
    sv = refine_scan_varying(spots, g, Lattice(jnp.asarray(static.basis), SPACE_GROUP), block,
                             n_images=(0, n_img - 1))
    assert len(sv.basis) == n_img // block and np.all(sv.status == RefineStatus.OK)
    err_sv = [orientation_error_deg(sv.basis[b], truth[b]) for b in range(len(truth))]
    err_static = [orientation_error_deg(np.asarray(static.basis), t) for t in truth]
    assert max(err_sv) < 0.02  # the drift is 1° per block
    assert max(err_static) > 0.5
    assert np.nanmax(sv.rmsd_px) < 0.5 < float(static.rmsd_px)
    np.testing.assert_array_equal(sv.block_of(np.array([0.0, 19.9, 20.0, 119.5, 500.0])),
                                  [0, 0, 1, 5, 5])
