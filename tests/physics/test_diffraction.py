"""Diffraction geometry against independent numpy/analytic expectations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jfx.models import Beam, Detector, Geometry, Goniometer, Lattice
from jfx.models.lattice import basis_to_cell, cell_to_basis
from jfx.physics import corrections, diffraction as dif, partiality


def _geom(fast=(1, 0, 0), slow=(0, 1, 0), rotation=True, wavelength=1.0):
    det = Detector.create(120.0, (515.3, 250.7), (514, 1030), 0.075, fast, slow)
    gon = Goniometer.create((1.0, 0.0, 0.0), 10.0, 0.5) if rotation else None
    return Geometry(Beam.create(wavelength), det, gon)


def _rot_np(axis, ang):
    """Independent right-handed rotation matrix (axis-angle via matrix exponential series)."""
    from scipy.linalg import expm

    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return expm(K * ang)


def test_rotation_matrix_right_handed():
    R = np.asarray(dif.rotation_matrix(jnp.array([0.0, 0.0, 1.0]), np.pi / 2))
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)  # x → y about +z
    axis = np.array([0.3, -0.5, 0.8])
    np.testing.assert_allclose(
        np.asarray(dif.rotation_matrix(jnp.asarray(axis / np.linalg.norm(axis)), 0.7)),
        _rot_np(axis, 0.7),
        atol=1e-12,
    )


@pytest.mark.parametrize("fast,slow", [((1, 0, 0), (0, 1, 0)), ((-1, 0, 0), (0, -1, 0))])
def test_pixel_lab_roundtrip_and_convention(fast, slow):
    g = _geom(fast, slow)
    det, beam = g.detector, g.beam
    # The beam centre lies on the beam at distance D.
    p = np.asarray(dif.pixel_to_lab(det, beam, 515.3, 250.7))
    np.testing.assert_allclose(p, [0, 0, 120.0], atol=1e-12)
    # FORMATS.md: P = ((x − bx)·p·f, (y − by)·p·s, D) for an untilted detector.
    p = np.asarray(dif.pixel_to_lab(det, beam, 600.0, 100.0))
    expect = (600 - 515.3) * 0.075 * np.array(fast) + (100 - 250.7) * 0.075 * np.array(slow)
    np.testing.assert_allclose(p, expect + [0, 0, 120.0], atol=1e-12)
    x, y = dif.lab_to_pixel(det, beam, jnp.asarray(p) * 3.7)  # any ray length
    np.testing.assert_allclose([float(x), float(y)], [600.0, 100.0], atol=1e-9)
    # Rays going backwards do not hit the detector.
    x, y = dif.lab_to_pixel(det, beam, -jnp.asarray(p))
    assert np.isnan(float(x)) and np.isnan(float(y))


def test_tilted_detector_roundtrip():
    R = _rot_np([0, 1, 0], np.deg2rad(20.0))
    g = _geom(R @ [1, 0, 0], R @ [0, 1, 0])
    xs, ys = np.meshgrid(np.linspace(0, 1029, 7), np.linspace(0, 513, 5))
    p = dif.pixel_to_lab(g.detector, g.beam, xs, ys)
    x, y = dif.lab_to_pixel(g.detector, g.beam, p)
    np.testing.assert_allclose(np.asarray(x), xs, atol=1e-8)
    np.testing.assert_allclose(np.asarray(y), ys, atol=1e-8)
    # beam centre still on the beam
    np.testing.assert_allclose(np.asarray(dif.pixel_to_lab(g.detector, g.beam, 515.3, 250.7)), [0, 0, 120], atol=1e-9)


def test_resolution_and_solid_angle_analytic():
    g = _geom()
    det, beam = g.detector, g.beam
    # pixel 200 px along x from the beam centre: r = 15 mm, D = 120 mm
    x, y = 515.3 + 200.0, 250.7
    tth = np.arctan2(15.0, 120.0)
    np.testing.assert_allclose(float(dif.pixel_two_theta(det, beam, x, y)), tth, rtol=1e-12)
    np.testing.assert_allclose(float(dif.pixel_resolution(det, beam, x, y)), 1.0 / (2 * np.sin(tth / 2)), rtol=1e-12)
    q = np.asarray(dif.pixel_q(det, beam, x, y))
    np.testing.assert_allclose(np.linalg.norm(q), 2 * np.sin(tth / 2) / 1.0, rtol=1e-12)
    omega = 0.075**2 * np.cos(tth) / (120.0**2 + 15.0**2)
    np.testing.assert_allclose(float(dif.solid_angle(det, beam, x, y)), omega, rtol=1e-12)


def test_cell_basis_roundtrip_and_reciprocal():
    cell = np.array([40.0, 55.0, 60.0, 90.0, 105.0, 90.0])
    B = cell_to_basis(cell)
    np.testing.assert_allclose(basis_to_cell(B), cell, rtol=1e-12)
    lat = Lattice.from_cell(cell, U=_rot_np([1, 2, 3], 0.4), space_group=4)
    np.testing.assert_allclose(lat.cell(), cell, rtol=1e-12)
    # a·a* = 1, a·b* = 0
    np.testing.assert_allclose(np.asarray(lat.basis) @ np.asarray(lat.reciprocal).T, np.eye(3), atol=1e-12)
    # d-spacing of (0 0 1) in monoclinic = c sin β
    q = np.asarray(dif.rlp(jnp.array([0, 0, 1]), lat.basis))
    np.testing.assert_allclose(1 / np.linalg.norm(q), 60.0 * np.sin(np.deg2rad(105.0)), rtol=1e-12)
    with pytest.raises(ValueError):
        cell_to_basis(np.array([10, 10, 10, 90, 90, 200.0]))


def test_still_prediction_on_ewald_sphere_direction():
    g = _geom(rotation=False)
    lat = Lattice.from_cell([79, 79, 38, 90, 90, 90], U=_rot_np([1, 1, 0], 0.3))
    hkl = jnp.array([[3, -2, 5], [10, 4, -3], [0, 0, 2]])
    pr = dif.predict_still(g, lat.basis, hkl)
    q = np.asarray(hkl, float) @ np.linalg.inv(np.asarray(lat.basis)).T
    s0 = np.array([0, 0, 1.0])
    np.testing.assert_allclose(np.asarray(pr["eps"]), np.linalg.norm(s0 + q, axis=1) - 1.0, atol=1e-12)
    # the predicted pixel's ray is parallel to s0 + q
    for i in range(3):
        if np.isnan(float(pr["x"][i])):
            continue
        p = np.asarray(dif.pixel_to_lab(g.detector, g.beam, pr["x"][i], pr["y"][i]))
        v = s0 + q[i]
        np.testing.assert_allclose(p / np.linalg.norm(p), v / np.linalg.norm(v), atol=1e-12)


def test_rotation_prediction_solutions_are_on_sphere_and_in_scan():
    g = _geom()
    lat = Lattice.from_cell([79, 79, 38, 90, 90, 90], U=_rot_np([0.2, 1, 0.3], 1.1))
    rng = np.random.default_rng(1)
    hkl = rng.integers(-15, 16, size=(400, 3))
    hkl = hkl[np.any(hkl != 0, axis=1)]
    pr = dif.predict_rotation(g, lat.basis, jnp.asarray(hkl))
    phi = np.asarray(pr["phi"])
    q0 = hkl @ np.linalg.inv(np.asarray(lat.basis)).T
    s0 = np.array([0, 0, 1.0])
    ok = ~np.isnan(phi)
    assert ok.mean() > 0.5
    start = np.deg2rad(10.0)
    assert np.all((phi[ok] >= start - 1e-12) & (phi[ok] < start + 2 * np.pi))
    for n, k in zip(*np.nonzero(ok)):
        q = _rot_np([1, 0, 0], phi[n, k]) @ q0[n]
        assert abs(np.linalg.norm(s0 + q) - 1.0) < 1e-10
    frame = np.asarray(pr["frame"])
    np.testing.assert_allclose(frame[ok], (phi[ok] - start) / np.deg2rad(0.5), rtol=1e-12)
    # Beyond the resolution sphere (|q| > 2/λ) there is no solution.
    far = dif.rotation_diffraction_angles(g.beam.s0, g.goniometer.axis, jnp.array([[0.0, 2.5, 0.0]]))
    assert np.all(np.isnan(np.asarray(far)))


def test_lorentz_polarization_analytic():
    beam = Beam.create(1.0, polarization_fraction=0.5)
    axis = jnp.array([1.0, 0.0, 0.0])
    # Equatorial reflection: s1 in the y-z plane (⊥ axis) → L = 1/sin 2θ.
    tth = 0.4
    s1 = jnp.array([0.0, np.sin(tth), np.cos(tth)])
    np.testing.assert_allclose(float(corrections.lorentz_rotation(axis, beam.s0, s1)), 1 / np.sin(tth), rtol=1e-12)
    np.testing.assert_allclose(float(corrections.polarization_factor(beam, s1)), (1 + np.cos(tth) ** 2) / 2, rtol=1e-12)
    # Fully polarised along x, scattering in the x-z plane: P = cos² 2θ.
    beam_x = Beam.create(1.0, polarization_fraction=1.0)
    s1x = jnp.array([np.sin(tth), 0.0, np.cos(tth)])
    np.testing.assert_allclose(float(corrections.polarization_factor(beam_x, s1x)), np.cos(tth) ** 2, rtol=1e-12)


def test_rotation_fraction_sums_to_one_and_matches_erf():
    from scipy.special import erf

    phi_c, z, m = 0.3, 0.6, np.deg2rad(0.2)
    edges = np.deg2rad(np.arange(10.0, 25.0, 0.1))
    fr = np.asarray(partiality.rotation_fraction(phi_c, z, m, edges[:-1], edges[1:]))
    np.testing.assert_allclose(fr.sum(), 1.0, rtol=1e-9)
    s = np.sqrt(2) * m / z
    np.testing.assert_allclose(fr, 0.5 * (erf((edges[1:] - phi_c) / s) - erf((edges[:-1] - phi_c) / s)), atol=1e-14)


def test_geometry_is_a_pytree_usable_under_jit_and_grad():
    g = _geom()

    @jax.jit
    def f(geom, x, y):
        return jnp.sum(dif.pixel_resolution(geom.detector, geom.beam, x, y))

    xs = jnp.linspace(0.0, 1000.0, 11)
    v = f(g, xs, xs * 0.5)
    assert np.isfinite(float(v))
    grad = jax.grad(lambda geom: f(geom, xs, xs * 0.5))(g)
    # d(resolution)/d(distance) > 0: moving the detector away increases d at a fixed pixel.
    assert float(grad.detector.distance_mm) > 0
    eps = 1e-4
    g2 = Geometry(g.beam, Detector.create(120.0 + eps, (515.3, 250.7), (514, 1030)), g.goniometer)
    fd = (float(f(g2, xs, xs * 0.5)) - float(v)) / eps
    np.testing.assert_allclose(float(grad.detector.distance_mm), fd, rtol=1e-4)
    leaves = jax.tree_util.tree_leaves(g)
    assert len(leaves) == 5 + 4 + 3
