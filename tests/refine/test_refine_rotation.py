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
from jfx.refine.settings import BEAM_AND_LATTICE_FREE, RefineSettings
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
                 RefineSettings("beam_and_lattice", free))
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
                 RefineSettings("orientation", ("lattice.orientation",)))
    assert orientation_error_deg(res.basis, sweep["basis"]) < 0.01
    np.testing.assert_allclose(basis_to_cell(res.basis), basis_to_cell(b_rot), atol=1e-9)
    np.testing.assert_array_equal(np.asarray(res.geometry.detector.beam_center_px),
                                  np.asarray(g.detector.beam_center_px))
    np.testing.assert_array_equal(float(res.geometry.detector.distance_mm),
                                  float(g.detector.distance_mm))
