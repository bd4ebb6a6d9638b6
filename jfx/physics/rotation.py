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

import dataclasses

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


@dataclasses.dataclass(frozen=True)
class LabFrame:
    """The lab-frame geometry of a rotation run that turns predicted detector positions
    into beam directions in the crystal frame (the absorption surface of the physical scale
    model). NXmx/McStas lab frame; a pixel (x, y) (first pixel centre = 0) lies at
    ``origin_mm + x·pixel_mm[0]·fast + y·pixel_mm[1]·slow``.

    Attributes:
        origin_mm: (3,) lab position of pixel (0, 0) (mm).
        fast, slow: (3,) unit vectors of increasing x / y.
        pixel_mm: (px, py) pixel pitch (mm).
        beam: (3,) unit direction of the incident beam.
        axis: (3,) unit goniometer axis; the crystal is at R(axis, φ) (right-handed), so a
            lab vector v is ``R(φ)ᵀ v`` in the crystal frame
            (:func:`jfx.physics.rotation.to_angle_zero`).
    """

    origin_mm: tuple[float, float, float]
    fast: tuple[float, float, float]
    slow: tuple[float, float, float]
    pixel_mm: tuple[float, float]
    beam: tuple[float, float, float]
    axis: tuple[float, float, float]

    @staticmethod
    def create(*, distance_mm: float, beam_center_px, fast, slow, pixel_mm, beam, axis
               ) -> LabFrame:
        """From the detector description of NXmx/``_process.h5`` (distance along the beam,
        beam centre in pixels)."""
        f, sl, b, a = (np.asarray(v, np.float64) for v in (fast, slow, beam, axis))
        f, sl, b, a = (v / np.linalg.norm(v) for v in (f, sl, b, a))
        px, py = (float(v) for v in pixel_mm)
        bx, by = (float(v) for v in beam_center_px)
        origin = float(distance_mm) * b - bx * px * f - by * py * sl
        tup = lambda v: tuple(float(x) for x in v)  # noqa: E731
        return LabFrame(origin_mm=tup(origin), fast=tup(f), slow=tup(sl), pixel_mm=(px, py),
                        beam=tup(b), axis=tup(a))

    def crystal_directions(self, x_px, y_px, phi_rad) -> tuple[np.ndarray, np.ndarray]:
        """(−ŝ0, ŝ1) in the crystal frame, each (n, 3), of rays predicted at pixel (x, y)
        and goniometer angle φ (rad); NaN inputs give zero vectors."""
        x, y, phi = (np.asarray(v, np.float64).reshape(-1) for v in (x_px, y_px, phi_rad))
        ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(phi)
        x, y, phi = (np.where(ok, v, 0.0) for v in (x, y, phi))
        p = (np.asarray(self.origin_mm)[None] + (x * self.pixel_mm[0])[:, None]
             * np.asarray(self.fast)[None] + (y * self.pixel_mm[1])[:, None]
             * np.asarray(self.slow)[None])
        s1 = p / np.linalg.norm(p, axis=1, keepdims=True)
        s0 = np.broadcast_to(-np.asarray(self.beam), s1.shape)
        axis = np.asarray(self.axis)
        s0c = to_angle_zero(s0, axis, phi)
        s1c = to_angle_zero(s1, axis, phi)
        return np.where(ok[:, None], s0c, 0.0), np.where(ok[:, None], s1c, 0.0)
