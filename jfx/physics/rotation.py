"""Rotation-scan geometry on the host (numpy): spot vectors, goniometer rotations, frames.

Frames: a spot at pixel (x, y) of image i has the lab-frame scattering vector
q = s1 − s0 (Å⁻¹) at the goniometer angle φ of that spot; for rotation data φ is the angle at
the spot's frame coordinate (image number + 0.5 for a spot seen in one image), and
q₀ = R(φ)ᵀ q is the same vector at angle 0 — the frame of the angle-0 lattice (rows a, b, c,
Å). The lattice at angle φ is ``basis0 @ R(φ)ᵀ`` (:mod:`jfx.models.lattice`). R(φ) is the
right-handed rotation about the goniometer axis (Rodrigues).

Used by rotation indexing (:mod:`jfx.index.rotation`), the pipeline and the simulator.
"""

from __future__ import annotations

import numpy as np

from jfx.models.geometry import Geometry
from jfx.physics.diffraction import pixel_q


def spot_vectors(geometry: Geometry, x_px: np.ndarray, y_px: np.ndarray) -> np.ndarray:
    """Lab-frame q = s1 − s0 (…, 3) float64 (Å⁻¹) of detector positions (px, first pixel
    centre = 0). NaN positions give NaN vectors."""
    x = np.asarray(x_px, dtype=np.float64)
    y = np.asarray(y_px, dtype=np.float64)
    return np.asarray(pixel_q(geometry.detector, geometry.beam, x, y), dtype=np.float64)


def axis_rotation(axis: np.ndarray, angle_rad: np.ndarray) -> np.ndarray:
    """Right-handed rotations (…, 3, 3) about the unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    t = np.asarray(angle_rad, dtype=np.float64)[..., None, None]
    K = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(t) * K + (1.0 - np.cos(t)) * (K @ K)


def to_angle_zero(q: np.ndarray, axis: np.ndarray, phi_rad: np.ndarray) -> np.ndarray:
    """q₀ = R(φ)ᵀ q for vectors q (…, 3) observed at angles φ (…)."""
    R = axis_rotation(axis, phi_rad)
    return np.einsum("...ji,...j->...i", R, q)


def lattice_at(basis0: np.ndarray, axis: np.ndarray, phi_rad: float) -> np.ndarray:
    """The basis (rows a, b, c) at goniometer angle φ: ``basis0 @ R(φ)ᵀ``."""
    return np.asarray(basis0, dtype=np.float64) @ axis_rotation(axis, phi_rad).T


def image_angles(geometry: Geometry, frame: np.ndarray) -> np.ndarray:
    """Goniometer angle (rad) of fractional frame coordinates (image i spans [i, i+1))."""
    g = geometry.goniometer
    if g is None:
        raise ValueError("rotation indexing needs a goniometer scan (the data are stills)")
    return float(g.start_rad) + np.asarray(frame, dtype=np.float64) * float(g.increment_rad)
