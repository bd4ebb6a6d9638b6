"""Unit cell ↔ real-space basis (numpy, no JAX: the symmetry layer and the settings checks
use them before any kernel runs; :mod:`jfx.lazy`). The basis convention is that of
:class:`jfx.models.lattice.Lattice` (rows a, b, c in Å)."""

from __future__ import annotations

import numpy as np


def cell_to_basis(cell: np.ndarray) -> np.ndarray:
    """Standard (PDB/Rollett) orthogonalisation: a ∥ x, b in the xy plane.

    Args:
        cell: (6,) a, b, c (Å), α, β, γ (deg).
    Returns:
        (3, 3) rows a, b, c (Å).
    """
    if cell.shape != (6,) or not np.all(np.isfinite(cell)):
        raise ValueError(f"a unit cell needs 6 finite numbers, got {cell.tolist()}")
    if np.any(cell[:3] <= 0) or np.any(cell[3:] <= 0) or np.any(cell[3:] >= 180):
        raise ValueError(f"impossible unit cell {tuple(float(v) for v in cell)}")
    a, b, c = cell[:3]
    al, be, ga = np.deg2rad(cell[3:6])
    ca, cb, cg, sg = np.cos(al), np.cos(be), np.cos(ga), np.sin(ga)
    cx = c * cb
    cy = c * (ca - cb * cg) / sg
    cz2 = c * c - cx * cx - cy * cy
    if not cz2 > 0:
        raise ValueError(f"impossible unit cell {tuple(float(v) for v in cell)}")
    return np.array([[a, 0.0, 0.0], [b * cg, b * sg, 0.0], [cx, cy, np.sqrt(cz2)]])


def basis_to_cell(basis: np.ndarray) -> np.ndarray:
    """(…, 3, 3) rows a, b, c → (…, 6) a, b, c (Å), α, β, γ (deg)."""
    basis = np.asarray(basis, dtype=np.float64)
    a, b, c = basis[..., 0, :], basis[..., 1, :], basis[..., 2, :]
    la, lb, lc = (np.linalg.norm(v, axis=-1) for v in (a, b, c))

    def ang(u, v, lu, lv):
        return np.rad2deg(np.arccos(np.clip(np.sum(u * v, axis=-1) / (lu * lv), -1.0, 1.0)))

    return np.stack([la, lb, lc, ang(b, c, lb, lc), ang(a, c, la, lc), ang(a, b, la, lb)], -1)
