"""Differentiable crystal-lattice parametrisation (pure JAX): a rotation vector and the
internal cell of a lattice system → rotation matrix, cell, real-space basis.

Shared by geometry refinement (:mod:`jfx.refine.params`, which adds the host-side
conversions from a basis) and pixel refinement (:mod:`jfx.pixelrefine.fit`). Internal cell
parameters per lattice system: :data:`jfx.refine.params.CELL_PARAMS`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def rotvec_to_matrix(v: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix (3, 3) of a rotation vector ``v`` (3,) (rad), exact derivatives at 0.

    Rodrigues: R = I + (sin θ/θ) K + ((1 − cos θ)/θ²) K², K = [v]×, θ = |v|; Taylor series
    below θ² = 1e-12 so that jacfwd/grad at v = 0 is finite.
    """
    v = jnp.asarray(v)
    t2 = jnp.sum(v * v)
    small = t2 < 1e-12
    t2s = jnp.where(small, 1.0, t2)
    t = jnp.sqrt(t2s)
    a = jnp.where(small, 1.0 - t2 / 6.0, jnp.sin(t) / t)
    b = jnp.where(small, 0.5 - t2 / 24.0, (1.0 - jnp.cos(t)) / t2s)
    z = jnp.zeros((), v.dtype)
    K = jnp.stack([jnp.stack([z, -v[2], v[1]]), jnp.stack([v[2], z, -v[0]]),
                   jnp.stack([-v[1], v[0], z])])
    return jnp.eye(3, dtype=v.dtype) + a * K + b * (K @ K)


def cell_from_internal(cell_u: jnp.ndarray, system: str) -> jnp.ndarray:
    """(6,) cell (a, b, c Å; α, β, γ rad) from the internal parameters of ``system``."""
    u = jnp.asarray(cell_u)
    h = jnp.asarray(0.5 * np.pi, u.dtype)
    if system == "triclinic":
        return jnp.concatenate([jnp.exp(u[:3]), u[3:6]])
    if system == "monoclinic":
        e = jnp.exp(u[:3])
        return jnp.stack([e[0], e[1], e[2], h, u[3], h])
    if system == "orthorhombic":
        e = jnp.exp(u[:3])
        return jnp.stack([e[0], e[1], e[2], h, h, h])
    if system == "tetragonal":
        a, c = jnp.exp(u[0]), jnp.exp(u[1])
        return jnp.stack([a, a, c, h, h, h])
    if system == "hexagonal":
        a, c = jnp.exp(u[0]), jnp.exp(u[1])
        return jnp.stack([a, a, c, h, h, jnp.asarray(2.0 * np.pi / 3.0, u.dtype)])
    if system == "cubic":
        a = jnp.exp(u[0])
        return jnp.stack([a, a, a, h, h, h])
    raise ValueError(f"unknown lattice system {system!r}")


def cell_to_basis_jax(cell: jnp.ndarray) -> jnp.ndarray:
    """JAX version of :func:`jfx.models.lattice.cell_to_basis`; cell angles in **rad**.

    Returns (3, 3) rows a, b, c (Å), a ∥ x, b in the xy plane.
    """
    a, b, c, al, be, ga = (cell[i] for i in range(6))
    ca, cb, cg, sg = jnp.cos(al), jnp.cos(be), jnp.cos(ga), jnp.sin(ga)
    cx = c * cb
    cy = c * (ca - cb * cg) / sg
    cz = jnp.sqrt(jnp.maximum(c * c - cx * cx - cy * cy, 1e-30))
    z = jnp.zeros((), cell.dtype)
    return jnp.stack([jnp.stack([a, z, z]), jnp.stack([b * cg, b * sg, z]),
                      jnp.stack([cx, cy, cz])])
