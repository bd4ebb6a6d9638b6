"""Real spherical harmonics of unit vectors (the absorption surface of the physical scale
model, :class:`jfx.scale.models.PhysicalScale`).

Orthonormal real harmonics on the unit sphere (∫ Y_lm Y_l'm' dΩ = δ δ), without the
Condon–Shortley phase:

    Y_l0 = N_l0 P_l(z),  Y_lm = √2 N_lm P_l^m(z) cos(mϕ),  Y_l,−m = √2 N_lm P_l^m(z) sin(mϕ),
    N_lm = √((2l+1)/(4π) · (l−m)!/(l+m)!),

evaluated in Cartesian form: P_l^m(z) (sin θ)^−m by the three-term recurrence in l and
(sin θ)^m e^{imϕ} = (x + iy)^m, so there is no division by sin θ at the poles.
"""

from __future__ import annotations

import math

import jax.numpy as jnp


def n_harmonics(lmax: int, *, skip_l0: bool = True) -> int:
    """Number of real harmonics of orders 1..lmax (0..lmax without ``skip_l0``)."""
    return (int(lmax) + 1) ** 2 - (1 if skip_l0 else 0)


def real_harmonics(v: jnp.ndarray, lmax: int, *, skip_l0: bool = True) -> jnp.ndarray:
    """Real spherical harmonics of the directions ``v``.

    Args:
        v: (..., 3) vectors (normalised here; a zero vector gives zeros).
        lmax: highest order l (static, ≥ 0).
        skip_l0: leave out the constant Y_00.
    Returns:
        (..., n_harmonics(lmax)) float64, ordered by l, then m = −l..l.
    """
    v = jnp.asarray(v, jnp.float64)
    r = jnp.linalg.norm(v, axis=-1)
    ok = r > 0
    u = v / jnp.where(ok, r, 1.0)[..., None]
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    L = int(lmax)
    # Q[l][m] = P_l^m(z) / sin^m θ (no Condon-Shortley phase)
    Q = [[None] * (L + 1) for _ in range(L + 1)]
    for m in range(L + 1):
        Q[m][m] = jnp.full_like(z, float(math.prod(range(1, 2 * m, 2))) if m else 1.0)
        if m + 1 <= L:
            Q[m + 1][m] = z * (2 * m + 1) * Q[m][m]
        for l in range(m + 2, L + 1):
            Q[l][m] = ((2 * l - 1) * z * Q[l - 1][m] - (l + m - 1) * Q[l - 2][m]) / (l - m)
    # (x + iy)^m: real and imaginary parts
    cm, sm = [jnp.ones_like(x)], [jnp.zeros_like(x)]
    for _ in range(L):
        c, s = cm[-1], sm[-1]
        cm.append(c * x - s * y)
        sm.append(c * y + s * x)
    out = []
    for l in range(0 if not skip_l0 else 1, L + 1):
        for m in range(-l, l + 1):
            a = abs(m)
            n = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - a)
                          / math.factorial(l + a))
            if m == 0:
                out.append(n * Q[l][0])
            elif m > 0:
                out.append(math.sqrt(2.0) * n * Q[l][a] * cm[a])
            else:
                out.append(math.sqrt(2.0) * n * Q[l][a] * sm[a])
    if not out:
        return jnp.zeros((*z.shape, 0), jnp.float64)
    Y = jnp.stack(out, axis=-1)
    return jnp.where(ok[..., None], Y, 0.0)
