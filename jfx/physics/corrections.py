"""Intensity corrections: Lorentz, polarisation (pure, differentiable JAX)."""

from __future__ import annotations

import jax.numpy as jnp

from jfx.models.geometry import Beam


def polarization_factor(beam: Beam, s1: jnp.ndarray) -> jnp.ndarray:
    """Polarisation factor P for diffracted directions ``s1`` (..., 3).

    With a fraction p of the intensity polarised along ê (``beam.polarization_axis``) and
    1 − p along n̂ = b̂ × ê:  P = p (1 − (ê·ŝ1)²) + (1 − p)(1 − (n̂·ŝ1)²).
    p = 0.5 gives the unpolarised (1 + cos² 2θ)/2 (Kahn et al. (1982), J. Appl. Cryst.
    15, 330–337).
    """
    u = s1 / jnp.linalg.norm(s1, axis=-1, keepdims=True)
    e = beam.polarization_axis
    n = jnp.cross(beam.direction, e)
    p = beam.polarization_fraction
    return p * (1.0 - jnp.sum(u * e, -1) ** 2) + (1.0 - p) * (1.0 - jnp.sum(u * n, -1) ** 2)


def lorentz_rotation(axis: jnp.ndarray, s0: jnp.ndarray, s1: jnp.ndarray) -> jnp.ndarray:
    """Rotation Lorentz factor L = 1 / |e · (ŝ1 × ŝ0)|.

    The rate at which a reciprocal-lattice point crosses the Ewald sphere is
    ω |s0| |e·(ŝ1 × ŝ0)|; the integrated intensity is proportional to its inverse
    (equatorial reflections: L = 1/sin 2θ). Kabsch, W. (2010). Acta Cryst. D66, 133–144.
    """
    a = s0 / jnp.linalg.norm(s0)
    b = s1 / jnp.linalg.norm(s1, axis=-1, keepdims=True)
    return 1.0 / jnp.abs(jnp.sum(jnp.cross(b, a) * axis, axis=-1))
