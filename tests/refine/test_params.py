"""Parameterisation: params ↔ models round trips, rotations, cell constraints, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jfx.models.geometry import Beam, Detector, Geometry
from jfx.models.lattice import basis_to_cell, cell_to_basis
from jfx.physics.diffraction import rotation_matrix
from jfx.refine import params as P
from jfx.refine.settings import BEAM_AND_LATTICE_FREE, NoRefinement, RefineSettings
from tests.refine import random_rotation

CELLS = {
    "triclinic": (51.0, 62.0, 73.0, 81.0, 97.0, 103.0),
    "monoclinic": (51.0, 62.0, 73.0, 90.0, 104.0, 90.0),
    "orthorhombic": (51.0, 62.0, 73.0, 90.0, 90.0, 90.0),
    "tetragonal": (78.0, 78.0, 37.5, 90.0, 90.0, 90.0),
    "hexagonal": (60.0, 60.0, 90.0, 90.0, 90.0, 120.0),
    "cubic": (100.0, 100.0, 100.0, 90.0, 90.0, 90.0),
}


@pytest.mark.parametrize("system", sorted(CELLS))
def test_basis_round_trip(system):
    rng = np.random.default_rng(3)
    U = random_rotation(rng)
    basis = cell_to_basis(np.array(CELLS[system])) @ U.T
    cp = P.from_basis(basis, system)
    assert cp.cell_u.shape == (P.CELL_PARAMS[system],)
    params = P.RefineParams(detector=None, beam=None, crystal=cp)
    np.testing.assert_allclose(np.asarray(P.to_basis(params)), basis, atol=1e-10)
    # a rotation vector rotates the basis rows by R(v)
    v = jnp.array([0.01, -0.02, 0.005])
    b2 = np.asarray(P.to_basis(P.RefineParams(None, None, cp.__class__(
        rotvec=v, cell_u=cp.cell_u, U0=cp.U0, system=system))))
    R = np.asarray(rotation_matrix(v / jnp.linalg.norm(v), jnp.linalg.norm(v)))
    np.testing.assert_allclose(b2, basis @ R.T, atol=1e-10)


def test_cell_is_symmetrised_to_system():
    cell = np.array([78.3, 77.7, 37.5, 90.2, 89.9, 90.1])
    cp = P.from_basis(cell_to_basis(cell), "tetragonal")
    got = basis_to_cell(np.asarray(P.to_basis(P.RefineParams(None, None, cp))))
    np.testing.assert_allclose(got, [78.0, 78.0, 37.5, 90, 90, 90], atol=1e-9)


def test_cell_to_basis_jax_matches_numpy():
    for cell in CELLS.values():
        c = np.array(cell)
        cj = jnp.asarray(np.concatenate([c[:3], np.deg2rad(c[3:])]))
        np.testing.assert_allclose(np.asarray(P.cell_to_basis_jax(cj)), cell_to_basis(c),
                                   atol=1e-10)


def test_rotvec_matches_rodrigues_and_is_differentiable_at_zero():
    v = jnp.array([0.3, -0.2, 0.5])
    t = jnp.linalg.norm(v)
    np.testing.assert_allclose(np.asarray(P.rotvec_to_matrix(v)),
                               np.asarray(rotation_matrix(v / t, t)), atol=1e-13)
    J = jax.jacfwd(P.rotvec_to_matrix)(jnp.zeros(3))  # (3, 3, 3): dR/dv_k = [e_k]x
    assert np.all(np.isfinite(np.asarray(J)))
    # dR/dv_k at 0 is the generator [e_k]x
    for k in range(3):
        e = np.eye(3)[k]
        K = np.array([[0, -e[2], e[1]], [e[2], 0, -e[0]], [-e[1], e[0], 0]])
        np.testing.assert_allclose(np.asarray(J[..., k]), K, atol=1e-14)


def test_geometry_round_trip_and_tilts():
    g = Geometry(beam=Beam.create(0.9), detector=Detector.create(
        120.0, (500.5, 510.25), shape=(1000, 1000), pixel_size_mm=0.075,
        fast_axis=(-1, 0, 0), slow_axis=(0, -1, 0)))
    det, beam = P.from_geometry(g)
    p = P.RefineParams(det, beam)
    g2 = P.to_geometry(p, g)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-15)
    assert g2.detector.pixel_size_mm == g.detector.pixel_size_mm
    # tilt about the fast axis keeps the fast axis and turns the slow axis by the angle
    t = 0.01
    p2 = P.RefineParams(P.DetectorParams(det.beam_center_px, det.distance_mm,
                                         jnp.array([t, 0.0]), det.fast0, det.slow0), beam)
    d2 = P.to_geometry(p2, g).detector
    np.testing.assert_allclose(np.asarray(d2.fast_axis), np.asarray(det.fast0), atol=1e-15)
    cosang = float(jnp.dot(d2.slow_axis, det.slow0))
    np.testing.assert_allclose(np.arccos(cosang), t, rtol=1e-6)
    np.testing.assert_allclose(float(jnp.dot(d2.fast_axis, d2.slow_axis)), 0.0, atol=1e-15)


def _params():
    g = Geometry(beam=Beam.create(1.0), detector=Detector.create(100.0, (50, 50), (100, 100)))
    return P.from_models(g, np.diag([50.0, 50.0, 70.0]), "tetragonal")


@pytest.mark.parametrize("preset,free,expected", [
    ("none", (), set()),
    ("orientation", ("lattice.orientation",), {"rotvec"}),
    ("beam_and_lattice", BEAM_AND_LATTICE_FREE,
     {"beam_center_px", "distance_mm", "rotvec", "cell_u"}),
    ("beam_and_lattice", BEAM_AND_LATTICE_FREE + ("detector.orientation", "beam.wavelength_A",
                                                  "crystal.mosaicity"),
     {"beam_center_px", "distance_mm", "rotvec", "cell_u", "tilt_rad", "wavelength_A"}),
])
def test_free_mask_from_settings(preset, free, expected):
    p = _params()
    cls = NoRefinement if preset == "none" else RefineSettings
    mask = P.free_mask(p, cls(free=free))
    got = set()
    for grp in (mask.detector, mask.beam, mask.crystal):
        for name, val in vars(grp).items():
            if val is True:
                got.add(name)
    assert got == expected
    # same tree structure as the parameters (a filter over their leaves)
    assert (jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(p))
    n = sum({"beam_center_px": 2, "distance_mm": 1, "rotvec": 3, "cell_u": 2, "tilt_rad": 2,
             "wavelength_A": 1}[k] for k in expected)
    assert P.n_free(p, mask) == n


def test_system_of_space_group_and_bad_input():
    assert P.system_of_space_group(None) == "triclinic"
    assert P.system_of_space_group(96) == "tetragonal"
    assert P.system_of_space_group(146) == "hexagonal"  # R3 on hexagonal axes
    assert P.system_of_space_group(4) == "monoclinic"
    assert P.system_of_space_group(197) == "cubic"
    with pytest.raises(ValueError):
        P.from_basis(np.eye(3), "rhombic")
    with pytest.raises(ValueError):
        P.from_basis(-np.eye(3), "cubic")
