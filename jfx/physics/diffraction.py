"""Diffraction geometry: pixels ↔ lab vectors, reciprocal-lattice points, Ewald sphere.

All functions are pure, differentiable JAX and broadcast over leading axes. Frame and pixel
conventions are those of :mod:`jfx.models.geometry`. Units: lengths mm, reciprocal Å⁻¹,
angles rad.
"""

from __future__ import annotations

import jax.numpy as jnp

from jfx.models.geometry import Beam, Detector, Geometry
from jfx.physics.detector import parallax_offset_mm


def rotation_matrix(axis: jnp.ndarray, angle: jnp.ndarray) -> jnp.ndarray:
    """Right-handed rotation by ``angle`` (rad, shape (...)) about unit ``axis`` (3,).

    Returns (..., 3, 3) (Rodrigues' formula).
    """
    axis = axis / jnp.linalg.norm(axis)
    angle = jnp.asarray(angle)
    c, s = jnp.cos(angle)[..., None, None], jnp.sin(angle)[..., None, None]
    K = jnp.array(
        [[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]],
        dtype=axis.dtype,
    )
    eye = jnp.eye(3, dtype=axis.dtype)
    return eye + s * K + (1.0 - c) * (K @ K)


def detector_origin_mm(detector: Detector, beam: Beam) -> jnp.ndarray:
    """(3,) lab position (mm) of the centre of pixel (0, 0)."""
    px, py = detector.pixel_size_mm
    bx, by = detector.beam_center_px[0], detector.beam_center_px[1]
    return (
        detector.distance_mm * beam.direction
        - bx * px * detector.fast_axis
        - by * py * detector.slow_axis
    )


def pixel_to_lab(detector: Detector, beam: Beam, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Lab position (mm), shape (..., 3), of pixel coordinates x, y (...)."""
    px, py = detector.pixel_size_mm
    o = detector_origin_mm(detector, beam)
    x = jnp.asarray(x)[..., None]
    y = jnp.asarray(y)[..., None]
    return o + x * px * detector.fast_axis + y * py * detector.slow_axis


def lab_to_pixel(detector: Detector, beam: Beam, v: jnp.ndarray):
    """Intersect rays from the sample along ``v`` (..., 3) with the detector plane.

    With ``detector.parallax`` the position is moved to where the sensor absorbs the ray on
    average (:func:`jfx.physics.detector.parallax_offset_mm`), as observed.

    Returns:
        x, y: (...) pixel coordinates; NaN where the ray does not hit the plane in front.
    """
    px, py = detector.pixel_size_mm
    o = detector_origin_mm(detector, beam)
    n = detector.normal
    vn = jnp.sum(v * n, axis=-1)
    t = jnp.dot(o, n) / vn
    ok = (vn * jnp.dot(o, n)) > 0
    p = t[..., None] * v - o
    if detector.parallax:
        p = p + parallax_offset_mm(detector, beam, v)
    x = jnp.sum(p * detector.fast_axis, axis=-1) / px
    y = jnp.sum(p * detector.slow_axis, axis=-1) / py
    return jnp.where(ok, x, jnp.nan), jnp.where(ok, y, jnp.nan)


def pixel_s1(detector: Detector, beam: Beam, x, y) -> jnp.ndarray:
    """Diffracted wave vector s1 (..., 3), |s1| = 1/λ, of the ray observed at pixel (x, y).

    With ``detector.parallax`` the inverse of :func:`lab_to_pixel`'s parallax shift: the
    surface point p = P(x, y) − offset(p) by fixed-point iteration (the offset changes by
    < 1e-3 of itself per pixel of p, so four steps reach < 1e-9 px).
    """
    p = pixel_to_lab(detector, beam, x, y)
    if detector.parallax:
        p_obs = p
        for _ in range(4):
            p = p_obs - parallax_offset_mm(detector, beam, p)
    return p / jnp.linalg.norm(p, axis=-1, keepdims=True) / beam.wavelength_A


def pixel_two_theta(detector: Detector, beam: Beam, x, y) -> jnp.ndarray:
    """Scattering angle 2θ (rad) of pixel (x, y)."""
    p = pixel_to_lab(detector, beam, x, y)
    c = jnp.sum(p * beam.direction, axis=-1) / jnp.linalg.norm(p, axis=-1)
    return jnp.arccos(jnp.clip(c, -1.0, 1.0))


def pixel_resolution(detector: Detector, beam: Beam, x, y) -> jnp.ndarray:
    """Resolution d (Å) of pixel (x, y): d = λ / (2 sin θ)."""
    tth = pixel_two_theta(detector, beam, x, y)
    return beam.wavelength_A / (2.0 * jnp.sin(0.5 * tth))


def pixel_q(detector: Detector, beam: Beam, x, y) -> jnp.ndarray:
    """Scattering vector q = s1 − s0 (..., 3) (Å⁻¹) of pixel (x, y); |q| = 1/d."""
    return pixel_s1(detector, beam, x, y) - beam.s0


def solid_angle(detector: Detector, beam: Beam, x, y) -> jnp.ndarray:
    """Solid angle (sr) subtended by pixel (x, y): Ω = px·py·|o·n̂| / r³."""
    px, py = detector.pixel_size_mm
    p = pixel_to_lab(detector, beam, x, y)
    r = jnp.linalg.norm(p, axis=-1)
    perp = jnp.abs(jnp.dot(detector_origin_mm(detector, beam), detector.normal))
    return px * py * perp / r**3


def rlp(hkl: jnp.ndarray, basis: jnp.ndarray) -> jnp.ndarray:
    """Reciprocal-lattice points q = hkl @ A* (..., 3), Å⁻¹, for a real-space ``basis``."""
    astar = jnp.linalg.inv(basis).T
    return jnp.asarray(hkl, dtype=astar.dtype) @ astar


def excitation_error(s0: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
    """Signed distance (Å⁻¹) of q from the Ewald sphere: |s0 + q| − |s0| (>0 outside)."""
    return jnp.linalg.norm(s0 + q, axis=-1) - jnp.linalg.norm(s0)


def predict_still(geometry: Geometry, basis: jnp.ndarray, hkl: jnp.ndarray):
    """Still-image prediction.

    The ray of a reflection points along s0 + q (the direction of the nearest Ewald-sphere
    point on the line from the sphere centre through the rlp).

    Args:
        geometry: beam and detector (the goniometer is ignored).
        basis: (3, 3) real-space lattice (rows a, b, c, Å) at this image, lab frame.
        hkl: (..., 3) Miller indices.
    Returns:
        dict with x, y (px), eps (Å⁻¹, excitation error), q (..., 3), d (Å), s1 (..., 3,
        |s1| = 1/λ).
    """
    beam, det = geometry.beam, geometry.detector
    q = rlp(hkl, basis)
    s0 = beam.s0
    v = s0 + q
    s1 = v / jnp.linalg.norm(v, axis=-1, keepdims=True) / beam.wavelength_A
    x, y = lab_to_pixel(det, beam, s1)
    return dict(
        x=x,
        y=y,
        eps=excitation_error(s0, q),
        q=q,
        d=1.0 / jnp.linalg.norm(q, axis=-1),
        s1=s1,
    )


def rotation_diffraction_angles(s0: jnp.ndarray, axis: jnp.ndarray, q0: jnp.ndarray):
    """Rotation angles at which q0 (at ω = 0) lies on the Ewald sphere.

    Solves |s0 + R(ω) q0| = |s0| with R right-handed about ``axis``. Writing
    q0 = q∥ + q⊥, s0·R(ω)q0 = s0·q∥ + cos ω (s0·q⊥) + sin ω (s0·(e × q0)) = −|q|²/2.

    Args:
        s0: (3,) incident wave vector; axis: (3,) unit axis; q0: (..., 3) rlps at ω = 0.
    Returns:
        omega: (..., 2) the two solutions (rad, in (−π, π]); NaN where none exists
        (blind region or beyond the resolution sphere).
    """
    e = axis / jnp.linalg.norm(axis)
    qpar = jnp.sum(q0 * e, axis=-1, keepdims=True) * e
    qperp = q0 - qpar
    A = jnp.sum(qperp * s0, axis=-1)
    B = jnp.sum(jnp.cross(e, q0) * s0, axis=-1)
    C = -0.5 * jnp.sum(q0 * q0, axis=-1) - jnp.sum(qpar * s0, axis=-1)
    R = jnp.sqrt(A * A + B * B)
    ratio = C / jnp.where(R > 0, R, 1.0)
    ok = (R > 0) & (jnp.abs(ratio) <= 1.0)
    base = jnp.arctan2(B, A)
    # where no event exists the arccos argument is replaced (not just clipped) so reverse-mode
    # gradients stay finite (d arccos/dx is infinite at ±1)
    delta = jnp.arccos(jnp.where(ok, jnp.clip(ratio, -1.0, 1.0), 0.0))
    om = jnp.stack([base + delta, base - delta], axis=-1)
    om = jnp.mod(om + jnp.pi, 2 * jnp.pi) - jnp.pi
    return jnp.where(ok[..., None], om, jnp.nan)


def zeta(axis: jnp.ndarray, s0: jnp.ndarray, s1: jnp.ndarray) -> jnp.ndarray:
    """Kabsch's ζ = e · (ŝ1 × ŝ0)/|ŝ1 × ŝ0| (signed; |ζ| = |cos ρ|).

    Kabsch, W. (2010). Acta Cryst. D66, 133–144 (XDS), eq. (3).
    """
    c = jnp.cross(s1, s0)
    return jnp.sum(c * axis, axis=-1) / jnp.linalg.norm(c, axis=-1)


def predict_rotation(geometry: Geometry, basis0: jnp.ndarray, hkl: jnp.ndarray):
    """Rotation-scan prediction of both diffraction events of every reflection.

    Args:
        geometry: with a goniometer.
        basis0: (3, 3) real-space basis at ω = 0, lab frame.
        hkl: (n, 3) Miller indices.
    Returns:
        dict with arrays of shape (n, 2) (one column per event): phi (rad), frame
        (fractional image coordinate), x, y (px), zeta, and s1 (n, 2, 3), d (n,).
    """
    beam, det, gon = geometry.beam, geometry.detector, geometry.goniometer
    q0 = rlp(hkl, basis0)
    s0 = beam.s0
    phi = rotation_diffraction_angles(s0, gon.axis, q0)
    R = rotation_matrix(gon.axis, jnp.nan_to_num(phi))  # (n, 2, 3, 3)
    q = jnp.einsum("nkij,nj->nki", R, q0)
    s1 = s0 + q
    x, y = lab_to_pixel(det, beam, s1)
    nan = jnp.isnan(phi)
    # Unwrap each angle into the scan's first turn: [start, start + 2π) for a positive
    # increment, (start − 2π, start] for a negative one.
    sgn = jnp.sign(gon.increment_rad)
    phi_u = phi - sgn * 2 * jnp.pi * jnp.floor(sgn * (phi - gon.start_rad) / (2 * jnp.pi))
    frame = gon.image_of_angle(phi_u)
    z = zeta(gon.axis, s0, s1)
    return dict(
        phi=phi_u,
        frame=frame,
        x=jnp.where(nan, jnp.nan, x),
        y=jnp.where(nan, jnp.nan, y),
        zeta=z,
        s1=s1,
        d=1.0 / jnp.linalg.norm(q0, axis=-1),
    )
