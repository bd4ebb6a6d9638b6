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
from jfx.models.cell import basis_to_cell as basis_to_cell
from jfx.models.cell import cell_to_basis as cell_to_basis


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

