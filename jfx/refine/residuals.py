"""Geometry-refinement residuals, written once in JAX (differentiable, fixed shapes).

Observations live in padded arrays of a fixed capacity ``n`` with a weight ``w`` (n,)
(0 for padded rows; padded rows contribute exactly 0 and never NaN, whatever they hold).

* Stills: per spot (x_obs − x_pred, y_obs − y_pred) in px, where the prediction of the
  assigned hkl is the detector intersection of s1 ∥ s0 + q (the Ewald-sphere point on the
  line from the sphere centre through the rlp; :func:`jfx.physics.diffraction.predict_still`).
* Rotation: additionally (φ_obs − φ_pred)·``phi_scale_px`` with φ_obs the goniometer angle of
  the spot's frame coordinate and φ_pred the diffraction angle of the hkl's event closest to
  φ_obs (:func:`jfx.physics.diffraction.predict_rotation`); ``phi_scale_px`` (px/rad) turns
  angles into px-equivalents (default in :mod:`jfx.refine.refine`: distance / pixel size).

Robust losses act on the spot's whole residual vector r (2 or 3 components, norm |r|) by
rescaling it to r̃ = r · sqrt(2ρ(|r|))/|r|, so that ½|r̃|² = ρ(|r|) and any least-squares
solver minimises Σρ:

* ``l2``: ρ = ½r².
* ``huber`` (Huber 1964, Ann. Math. Stat. 35, 73): ρ = ½r² for r ≤ k, k·r − ½k² beyond.
* ``trimmed`` (truncated quadratic): ρ = ½r² for r ≤ k, ½k² beyond — observations further
  than k contribute a constant, i.e. they are rejected. Its cost is flat beyond k, so the
  start must already be within k of the solution for most spots (e.g. after a ``huber`` pass).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jfx.models.geometry import Geometry
from jfx.physics.diffraction import predict_rotation, predict_still
from jfx.refine.params import RefineParams, to_basis, to_geometry

LOSSES = ("l2", "huber", "trimmed")


def robust_scale(norm: jnp.ndarray, loss: str, k: float | jnp.ndarray) -> jnp.ndarray:
    """Factor sqrt(2ρ(r))/r (…) applied to a residual vector of norm ``norm`` (…).

    Args:
        norm: residual norms (px or px-equivalents), ≥ 0.
        loss: one of :data:`LOSSES`.
        k: threshold of ``huber`` / ``trimmed`` (same units as ``norm``), > 0.
    """
    if loss == "l2":
        return jnp.ones_like(norm)
    big = norm > k
    ns = jnp.where(big, norm, k)  # safe (> 0) where used
    if loss == "huber":
        return jnp.where(big, jnp.sqrt(2.0 * k * ns - k * k) / ns, 1.0)
    if loss == "trimmed":
        return jnp.where(big, k / ns, 1.0)
    raise ValueError(f"unknown robust loss {loss!r} (known: {', '.join(LOSSES)})")


def robust_weight(norm: jnp.ndarray, loss: str, k: float | jnp.ndarray) -> jnp.ndarray:
    """IRLS weight ρ'(r)/r of a residual of norm ``norm``: 1 inside k; k/r (huber) or 0
    (trimmed) beyond. Used to report which observations were down-weighted."""
    if loss == "l2":
        return jnp.ones_like(norm)
    big = norm > k
    ns = jnp.where(big, norm, k)
    if loss == "huber":
        return jnp.where(big, k / ns, 1.0)
    if loss == "trimmed":
        return jnp.where(big, 0.0, 1.0)
    raise ValueError(f"unknown robust loss {loss!r} (known: {', '.join(LOSSES)})")


def still_raw_residuals(params: RefineParams, template: Geometry, hkl: jnp.ndarray,
                        x_obs: jnp.ndarray, y_obs: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """(n, 2) raw residuals obs − pred (px) of one still; 0 where ``w`` = 0 or the
    prediction misses the detector plane.

    Args:
        params: refinement parameters (with a crystal).
        template: geometry supplying the fixed detector/beam fields.
        hkl: (n, 3) Miller indices (any dtype); x_obs, y_obs: (n,) px; w: (n,) weights ≥ 0.
    """
    geom = to_geometry(params, template)
    basis = to_basis(params)
    use = w > 0
    hkl = jnp.where(use[:, None], hkl, jnp.asarray([1, 0, 0], hkl.dtype))
    p = predict_still(geom, basis, hkl)
    ok = use & jnp.isfinite(p["x"]) & jnp.isfinite(p["y"])
    r = jnp.stack([x_obs - p["x"], y_obs - p["y"]], axis=-1)
    return jnp.where(ok[:, None], r, 0.0)


def rotation_raw_residuals(params: RefineParams, template: Geometry, hkl: jnp.ndarray,
                           x_obs: jnp.ndarray, y_obs: jnp.ndarray, frame_obs: jnp.ndarray,
                           w: jnp.ndarray) -> jnp.ndarray:
    """(n, 3) raw residuals (Δx px, Δy px, Δφ rad) of a rotation scan (scan-static model).

    The basis of ``params`` is the crystal at goniometer angle 0. Of the two diffraction
    events of each hkl, the one whose angle is closest (mod 2π) to the observed angle
    ``goniometer.angle_rad(frame_obs)`` is used. Rows with ``w`` = 0 or no valid event are 0.

    Args:
        frame_obs: (n,) fractional image coordinate of each spot centroid.
    """
    geom = to_geometry(params, template)
    basis0 = to_basis(params)
    use = w > 0
    # Rows without a diffraction event (padding, blind region) would give NaN reverse-mode
    # gradients (arccos at the clip limit inside the angle solver): give them the hkl of a
    # row that has events (their residual is zeroed below anyway).
    p0 = predict_rotation(jax.lax.stop_gradient(geom), jax.lax.stop_gradient(basis0), hkl)
    has = use & jnp.all(jnp.isfinite(p0["phi"]), axis=1)
    hkl = jnp.where(has[:, None], hkl, hkl[jnp.argmax(has)])
    p = predict_rotation(geom, basis0, hkl)
    phi_obs = geom.goniometer.angle_rad(frame_obs)
    dphi = phi_obs[:, None] - p["phi"]
    dphi = jnp.mod(dphi + jnp.pi, 2.0 * jnp.pi) - jnp.pi  # (n, 2)
    finite = jnp.isfinite(dphi) & jnp.isfinite(p["x"]) & jnp.isfinite(p["y"])
    score = jnp.where(finite, jnp.abs(dphi), jnp.inf)
    k = jnp.argmin(score, axis=1)
    take = lambda a: jnp.take_along_axis(a, k[:, None], axis=1)[:, 0]
    ok = has & jnp.isfinite(jnp.min(score, axis=1))
    r = jnp.stack([x_obs - take(p["x"]), y_obs - take(p["y"]), take(dphi)], axis=-1)
    return jnp.where(ok[:, None], r, 0.0)


def robustify(raw: jnp.ndarray, w: jnp.ndarray, loss: str, k: float | jnp.ndarray,
              scale: jnp.ndarray | None = None) -> jnp.ndarray:
    """Flattened robust residual vector (n·c,) of raw residuals (n, c).

    Each row is multiplied by ``scale`` (c,) or (n, c) (e.g. (1, 1, phi_scale_px), one row per
    observation when the φ precision differs between spots) and by sqrt(w), then
    rescaled with :func:`robust_scale` of its norm.
    """
    r = raw if scale is None else raw * scale
    r = r * jnp.sqrt(jnp.maximum(w, 0.0))[:, None]
    n2 = jnp.sum(r * r, axis=-1)
    nz = n2 > 0
    norm = jnp.sqrt(jnp.where(nz, n2, 1.0))
    s = jnp.where(nz, robust_scale(norm, loss, k), 1.0)
    return (r * s[:, None]).reshape(-1)


def still_residuals(params: RefineParams, template: Geometry, hkl: jnp.ndarray,
                    x_obs: jnp.ndarray, y_obs: jnp.ndarray, w: jnp.ndarray,
                    loss: str = "huber", k: float = 1.0) -> jnp.ndarray:
    """(2n,) robust residual vector of one still (see :func:`still_raw_residuals`)."""
    raw = still_raw_residuals(params, template, hkl, x_obs, y_obs, w)
    return robustify(raw, w, loss, k)


def rotation_residuals(params: RefineParams, template: Geometry, hkl: jnp.ndarray,
                       x_obs: jnp.ndarray, y_obs: jnp.ndarray, frame_obs: jnp.ndarray,
                       w: jnp.ndarray, phi_scale_px: float | jnp.ndarray, loss: str = "huber",
                       k: float = 1.0) -> jnp.ndarray:
    """(3n,) robust residual vector of a rotation scan; Δφ is multiplied by
    ``phi_scale_px`` (px/rad) before the robust loss (see :func:`rotation_raw_residuals`)."""
    raw = rotation_raw_residuals(params, template, hkl, x_obs, y_obs, frame_obs, w)
    scale = jnp.stack([jnp.ones_like(phi_scale_px), jnp.ones_like(phi_scale_px),
                       jnp.asarray(phi_scale_px)])
    return robustify(raw, w, loss, k, scale)
