"""Simulation helpers for the refinement tests (exact predictions from known geometry)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jfx.models.geometry import Beam, Detector, Geometry, Goniometer
from jfx.models.lattice import Lattice
from jfx.physics.diffraction import predict_rotation, predict_still, rotation_matrix

CELL = (78.0, 78.0, 37.5, 90.0, 90.0, 90.0)  # tetragonal (P 43 21 2, sg 96)
SPACE_GROUP = 96


def geometry(rotation: bool = False, distance_mm: float = 80.0) -> Geometry:
    det = Detector.create(distance_mm, (514.3, 520.7), shape=(1040, 1030), pixel_size_mm=0.075)
    gon = Goniometer.create((1.0, 0.0, 0.0), 0.0, 0.5) if rotation else None
    return Geometry(beam=Beam.create(1.0), detector=det, goniometer=gon)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def small_rotation(rng: np.random.Generator, angle_rad: float) -> np.ndarray:
    ax = rng.normal(size=3)
    return np.asarray(rotation_matrix(jnp.asarray(ax / np.linalg.norm(ax)),
                                      jnp.asarray(angle_rad)))


def hkl_grid(dmin: float, cell=CELL) -> np.ndarray:
    r = [int(np.ceil(c / dmin)) for c in cell[:3]]
    h, k, l = np.meshgrid(*[np.arange(-m, m + 1) for m in r], indexing="ij")
    hkl = np.stack([h.ravel(), k.ravel(), l.ravel()], 1)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    q2 = (hkl[:, 0] / cell[0]) ** 2 + (hkl[:, 1] / cell[1]) ** 2 + (hkl[:, 2] / cell[2]) ** 2
    return hkl[q2 <= 1.0 / dmin ** 2]


def _corrupt(rng, x, y, noise_px, outlier_frac, shape):
    n = x.shape[0]
    x = x + rng.normal(0.0, noise_px, n)
    y = y + rng.normal(0.0, noise_px, n)
    out = rng.random(n) < outlier_frac
    # outliers: displaced by 5-30 px in a random direction
    ang = rng.uniform(0, 2 * np.pi, n)
    dist = rng.uniform(5.0, 30.0, n)
    x = np.where(out, x + dist * np.cos(ang), x)
    y = np.where(out, y + dist * np.sin(ang), y)
    return x, y, out


def simulate_still(rng, geom, n_spots=200, noise_px=0.3, outlier_frac=0.05, dmin=1.6):
    """One still: (basis, hkl (n,3), x, y, outlier mask) with exact predictions + noise."""
    B = Lattice.from_cell(CELL).basis
    U = random_rotation(rng)
    basis = np.asarray(B) @ U.T
    hkl = hkl_grid(dmin)
    p = predict_still(geom, jnp.asarray(basis), jnp.asarray(hkl))
    x, y, eps = (np.asarray(p[k]) for k in ("x", "y", "eps"))
    ny, nx = geom.detector.shape
    on = np.isfinite(x) & (x > 5) & (x < nx - 6) & (y > 5) & (y < ny - 6)
    idx = np.flatnonzero(on)
    idx = idx[np.argsort(np.abs(eps[idx]))[:n_spots]]
    xo, yo, out = _corrupt(rng, x[idx], y[idx], noise_px, outlier_frac, (ny, nx))
    return basis, hkl[idx], xo, yo, out, x[idx], y[idx]


def simulate_sweep(rng, geom, n_spots=5000, noise_px=0.3, noise_frames=0.1,
                   outlier_frac=0.05, n_images=180, dmin=1.8):
    """Rotation sweep: (basis0, hkl, x, y, frame, outlier mask)."""
    B = Lattice.from_cell(CELL).basis
    basis = np.asarray(B) @ random_rotation(rng).T
    hkl = hkl_grid(dmin)
    p = predict_rotation(geom, jnp.asarray(basis), jnp.asarray(hkl))
    x, y, fr = (np.asarray(p[k]).ravel() for k in ("x", "y", "frame"))
    h2 = np.repeat(hkl, 2, axis=0)
    ny, nx = geom.detector.shape
    on = (np.isfinite(x) & (x > 5) & (x < nx - 6) & (y > 5) & (y < ny - 6)
          & (fr >= 0) & (fr < n_images))
    idx = np.flatnonzero(on)
    idx = rng.permutation(idx)[:n_spots]
    xo, yo, out = _corrupt(rng, x[idx], y[idx], noise_px, outlier_frac, (ny, nx))
    fo = fr[idx] + rng.normal(0.0, noise_frames, idx.size)
    return basis, h2[idx], xo, yo, fo, out
