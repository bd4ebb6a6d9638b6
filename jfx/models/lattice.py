"""Crystal lattice: real-space basis in the lab frame.

``Lattice.basis`` is a (3, 3) matrix whose rows are the real-space vectors a, b, c (Å) in the
lab frame (the 9 floats of ``latticeIndexed`` / ``--force-rotation-lattice``, row major).
For rotation data the basis is the crystal setting at goniometer angle 0; the basis at angle
ω is ``basis @ R(ω)ᵀ`` (each row rotated). The reciprocal basis A* has rows a*, b*, c*
(Å⁻¹) with A* = (basis⁻¹)ᵀ, so a reciprocal-lattice point is q = hkl @ A*.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import pytree_dataclass, static


@pytree_dataclass
class Lattice:
    """Real-space lattice basis.

    Attributes:
        basis: (3, 3) rows a, b, c (Å), lab frame.
        space_group: static space-group number (1–230) or ``None`` if unknown.
    """

    basis: jnp.ndarray
    space_group: int | None = static(None)

    @staticmethod
    def from_cell(cell, U=None, space_group: int | None = None) -> "Lattice":
        """Lattice from (a, b, c, α, β, γ) (Å, deg), optionally rotated by U (3, 3)."""
        B = cell_to_basis(np.asarray(cell, dtype=np.float64))
        if U is not None:
            B = B @ np.asarray(U, dtype=np.float64).T
        return Lattice(basis=jnp.asarray(B), space_group=space_group)

    @property
    def reciprocal(self) -> jnp.ndarray:
        """(3, 3) rows a*, b*, c* (Å⁻¹)."""
        return jnp.linalg.inv(self.basis).T

    @property
    def volume(self) -> jnp.ndarray:
        return jnp.abs(jnp.linalg.det(self.basis))

    def cell(self) -> np.ndarray:
        """(6,) a, b, c (Å), α, β, γ (deg) — host-side numpy."""
        return basis_to_cell(np.asarray(self.basis))

    def rotated(self, R) -> "Lattice":
        """Lattice with every basis vector rotated by R (3, 3): rows ← rows @ Rᵀ."""
        return Lattice(basis=self.basis @ jnp.asarray(R).T, space_group=self.space_group)


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
