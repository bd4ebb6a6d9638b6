"""Host-side rotation-scan geometry (jfx.physics.rotation): spot vectors, angle-0 frame,
image angles."""

from __future__ import annotations

import numpy as np

from jfx.models.geometry import Beam, Detector, Geometry, Goniometer
from jfx.physics.diffraction import lab_to_pixel
from jfx.physics.rotation import (
    axis_rotation,
    image_angles,
    lattice_at,
    spot_vectors,
    to_angle_zero,
)

AXIS = np.array([1.0, 0.0, 0.0])


def test_spot_vectors_round_trip():
    geo = Geometry(Beam.create(1.0), Detector.create(100.0, (500.0, 510.0), (1000, 1030)))
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1000, 50), rng.uniform(0, 1000, 50)
    q = spot_vectors(geo, x, y)
    # |s0 + q| = 1/λ and q maps back to the same pixel
    np.testing.assert_allclose(np.linalg.norm(q + np.array([0, 0, 1.0]), axis=1), 1.0,
                               atol=1e-12)
    xb, yb = lab_to_pixel(geo.detector, geo.beam, q + np.array([0, 0, 1.0]))[:2]
    np.testing.assert_allclose(np.asarray(xb), x, atol=1e-6)
    np.testing.assert_allclose(np.asarray(yb), y, atol=1e-6)


def test_to_angle_zero_inverts_lattice_at():
    rng = np.random.default_rng(1)
    b0 = rng.normal(size=(3, 3)) * 30
    phi = 0.7
    b = lattice_at(b0, AXIS, phi)
    qs = rng.normal(size=(10, 3)) * 0.1
    # fractional indices are frame independent: q·b(φ) = q0·b0
    np.testing.assert_allclose(qs @ b.T, to_angle_zero(qs, AXIS, phi) @ b0.T, atol=1e-12)


def test_image_angles_use_the_goniometer():
    geo = Geometry(Beam.create(1.0), Detector.create(100.0, (5.0, 5.0), (10, 10)),
                   Goniometer.create(AXIS, 10.0, 0.25))
    np.testing.assert_allclose(image_angles(geo, np.array([0.5, 4.5])),
                               np.radians([10.125, 11.125]))


def test_axis_rotation_is_right_handed_and_proper():
    R = axis_rotation(np.array([0.0, 0.0, 2.0]), np.radians([90.0, 30.0]))
    np.testing.assert_allclose(R[0] @ np.array([1.0, 0.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(np.linalg.det(R), 1.0)
    np.testing.assert_allclose(R[1] @ R[1].T, np.eye(3), atol=1e-15)
