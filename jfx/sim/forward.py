"""Differentiable forward model: expected photons per pixel for rotation and still images.

Pure JAX (no I/O). Geometry math in float64; the image is accumulated in float32.
Everything is differentiable with respect to the :class:`~jfx.models.Geometry` pytree, the
lattice basis, the intensities and the :class:`SpotParams` (scale, mosaicity, B, spot width),
so pixel refinement can reuse it.

Model (one row per *observation* = a reflection on one image):

* Rotation (Kabsch 2010, Acta Cryst. D66, 133–144): the reflection's diffraction event
  (``event`` 0/1 of :func:`jfx.physics.diffraction.predict_rotation`) happens at φc; its
  Gaussian rocking curve (σ = σ_M/|ζ|) puts the fraction
  ``f = rotation_fraction(φc, ζ, σ_M, φ_i, φ_i+1)`` on image i. Expected photons:

      N = scale · I_true · L · P · QE · f · exp(−2 B s²),  L = 1/|e·(ŝ1×ŝ0)|, s² = 1/(4d²)

  with QE the sensor's detection efficiency at the ray's angle of incidence
  (:func:`jfx.physics.detector.detection_efficiency`; 1 unless
  ``SpotParams.detection_efficiency``). Spot positions come from the prediction, which places
  them at the mean absorption depth when ``detector.parallax`` is set.

* Stills (Kabsch 2014 (nXDS), Acta Cryst. D70, 2204; White et al. 2013, Acta Cryst. D69,
  1231): excitation error ε, width σ_ε (mosaicity + bandwidth + σ0 + divergence,
  ``still_sigma_eps``), peak-normalised partiality p = exp(−ε²/2σ_ε²) (or, with
  ``SpotParams.profile = "lorentzian"``, 1/(1 + (ε/γ)²), γ = √(2 ln 2) σ_ε: same FWHM):

      N = scale · I_true · P · QE · p · exp(−2 B s²)

  (no Lorentz factor and no profile-width factor: a still reflection exactly in the
  diffraction condition records scale · I_true · P · DW photons).
* Spot profile: an isotropic 2D Gaussian of σ = σ_px (1 + g·tan 2θ) pixels centred on the
  predicted (x, y), integrated exactly over each pixel of a P × P patch (product of erf
  differences) — the patch holds N · (1 − truncation) photons (P ≥ ±4σ: < 1e-4 lost).
* Background: (b0 + b_ring · exp(−(|q| − q_ring)²/(2σ_q²))) · Ω/Ω0 · P_pol, with Ω the pixel
  solid angle relative to a pixel at the beam centre (Ω0 = p²/D²) and P_pol the polarisation
  factor of the pixel.

Pixel i covers [i − 0.5, i + 0.5] (centre of the first pixel = 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import pytree_dataclass, static
from jfx.models.geometry import Geometry
from jfx.physics.corrections import lorentz_rotation, polarization_factor
from jfx.physics.detector import detection_efficiency
from jfx.physics.diffraction import (
    pixel_q,
    pixel_to_lab,
    predict_rotation,
    predict_still,
    solid_angle,
)
from jfx.physics.partiality import rotation_fraction, still_partiality, still_sigma_eps


@pytree_dataclass
class SpotParams:
    """Per-experiment model parameters (all differentiable except ``patch``).

    Attributes:
        scale: photons per unit I_true (e²) for a fully recorded reflection with L·P = 1.
        mosaicity_rad: mosaic spread σ_M (rad, Gaussian σ).
        bfactor_A2: overall B (Å²) applied as exp(−2 B s²) to intensities (0 = none).
        sigma_px: spot Gaussian σ (px) at 2θ = 0.
        sigma_growth: g in σ = σ_px (1 + g tan 2θ).
        sigma0_invA: still-only extra Ewald-offset width σ0 (Å⁻¹, finite domain size).
        divergence_rad: still-only beam divergence σ_div (rad, Gaussian σ per transverse
            axis; widens σ_ε by k sin 2θ σ_div, :func:`jfx.physics.partiality.still_sigma_eps`).
        patch: static odd patch size P (pixels per side).
        profile: static still rocking-curve shape, ``gaussian`` or ``lorentzian`` (same FWHM;
            :func:`jfx.physics.partiality.still_partiality`).
        detection_efficiency: static; multiply the photons of each reflection by the sensor's
            detection efficiency QE at its ray (material and thickness of the detector).
    """

    scale: jnp.ndarray
    mosaicity_rad: jnp.ndarray
    bfactor_A2: jnp.ndarray
    sigma_px: jnp.ndarray
    sigma_growth: jnp.ndarray
    sigma0_invA: jnp.ndarray
    divergence_rad: jnp.ndarray
    patch: int = static(11)
    profile: str = static("gaussian")
    detection_efficiency: bool = static(False)

    @staticmethod
    def create(
        scale: float = 1.0,
        mosaicity_deg: float = 0.1,
        bfactor_A2: float = 0.0,
        sigma_px: float = 1.0,
        sigma_growth: float = 0.0,
        sigma0_invA: float = 0.0,
        patch: int | None = None,
        divergence_deg: float = 0.0,
        profile: str = "gaussian",
        detection_efficiency: bool = False,
    ) -> "SpotParams":
        if patch is None:
            s_max = sigma_px * (1.0 + sigma_growth * 2.0)
            patch = max(9, 2 * int(np.ceil(4.5 * s_max)) + 1)
        if patch % 2 == 0:
            patch += 1
        f = lambda v: jnp.asarray(v, dtype=jnp.float64)  # noqa: E731
        return SpotParams(
            scale=f(scale),
            mosaicity_rad=f(np.deg2rad(mosaicity_deg)),
            bfactor_A2=f(bfactor_A2),
            sigma_px=f(sigma_px),
            sigma_growth=f(sigma_growth),
            sigma0_invA=f(sigma0_invA),
            divergence_rad=f(np.deg2rad(divergence_deg)),
            patch=int(patch),
            profile=str(profile),
            detection_efficiency=bool(detection_efficiency),
        )


@pytree_dataclass
class BackgroundParams:
    """Background model (photons per pixel at the beam centre).

    Attributes:
        constant: flat level b0.
        ring: water-ring peak height b_ring.
        ring_q_invA: ring position |q| = 1/d (Å⁻¹), ~0.27–0.31 for liquid water.
        ring_sigma_q_invA: Gaussian width in |q| (Å⁻¹).
    """

    constant: jnp.ndarray
    ring: jnp.ndarray
    ring_q_invA: jnp.ndarray
    ring_sigma_q_invA: jnp.ndarray

    @staticmethod
    def create(constant=0.5, ring=1.0, ring_d_A=3.45, ring_sigma_q_invA=0.02) -> "BackgroundParams":
        f = lambda v: jnp.asarray(v, dtype=jnp.float64)  # noqa: E731
        return BackgroundParams(f(constant), f(ring), f(1.0 / ring_d_A), f(ring_sigma_q_invA))


def _dw(params: SpotParams, d):
    return jnp.exp(-2.0 * params.bfactor_A2 * 0.25 / d**2)


def _sigma_px(params: SpotParams, geometry: Geometry, s1):
    u = s1 / jnp.linalg.norm(s1, axis=-1, keepdims=True)
    c = jnp.clip(jnp.sum(u * geometry.beam.direction, -1), -1.0, 1.0)
    tan2t = jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0)) / jnp.maximum(c, 1e-6)
    return params.sigma_px * (1.0 + params.sigma_growth * tan2t)


def rotation_observations(
    geometry: Geometry,
    basis0: jnp.ndarray,
    params: SpotParams,
    hkl: jnp.ndarray,
    event: jnp.ndarray,
    image: jnp.ndarray,
    i_true: jnp.ndarray,
) -> dict:
    """Model of rotation observations (one row per reflection event on one image).

    Args:
        geometry: with goniometer.
        basis0: (3, 3) real-space basis (Å, rows a, b, c) at ω = 0, lab frame.
        params: spot parameters.
        hkl: (n, 3) Miller indices; event: (n,) int 0/1 which diffraction event;
        image: (n,) int image number; i_true: (n,) |F|² (e²).
    Returns:
        dict of (n,) arrays: x, y (px), phi (rad, centroid), frame (centroid, image units),
        zeta, fraction, lorentz, polarization, dw, d (Å), sigma_px, expected (photons on
        this image).
    """
    beam, gon = geometry.beam, geometry.goniometer
    pred = predict_rotation(geometry, basis0, hkl)
    ev = jnp.asarray(event)[:, None]
    take = lambda a: jnp.take_along_axis(a, ev, axis=1)[:, 0]  # noqa: E731
    phi, frame, x, y, z = (take(pred[k]) for k in ("phi", "frame", "x", "y", "zeta"))
    s1 = jnp.take_along_axis(pred["s1"], ev[:, :, None], axis=1)[:, 0]
    d = pred["d"]
    image = jnp.asarray(image)
    phi1 = gon.angle_rad(image)
    phi2 = gon.angle_rad(image + 1)
    frac = rotation_fraction(phi, z, params.mosaicity_rad, phi1, phi2)
    L = lorentz_rotation(gon.axis, beam.s0, s1)
    P = polarization_factor(beam, s1)
    qe = _qe(params, geometry, s1)
    dw = _dw(params, d)
    expected = params.scale * i_true * L * P * qe * frac * dw
    return dict(
        x=x, y=y, phi=phi, frame=frame, zeta=z, fraction=frac, lorentz=L, polarization=P, qe=qe,
        dw=dw, d=d, sigma_px=_sigma_px(params, geometry, s1), expected=expected,
    )


def still_observations(
    geometry: Geometry,
    basis: jnp.ndarray,
    params: SpotParams,
    hkl: jnp.ndarray,
    i_true: jnp.ndarray,
) -> dict:
    """Model of still observations.

    Args:
        basis: (3, 3) real-space basis (Å) of this image, lab frame.
        hkl: (n, 3); i_true: (n,) |F|² (e²).
    Returns:
        dict of (n,) arrays: x, y (px), eps (Å⁻¹), sigma_eps (Å⁻¹), partiality,
        polarization, dw, d (Å), sigma_px, expected (photons).
    """
    beam = geometry.beam
    pred = predict_still(geometry, basis, hkl)
    d = pred["d"]
    two_theta = 2.0 * jnp.arcsin(jnp.clip(beam.wavelength_A / (2.0 * d), -1.0, 1.0))
    sig = still_sigma_eps(
        1.0 / d, two_theta, beam.wavelength_A, params.mosaicity_rad, beam.bandwidth_fwhm,
        params.sigma0_invA, params.divergence_rad,
    )
    part = still_partiality(pred["eps"], sig, params.profile)
    P = polarization_factor(beam, pred["s1"])
    qe = _qe(params, geometry, pred["s1"])
    dw = _dw(params, d)
    expected = params.scale * i_true * P * qe * part * dw
    return dict(
        x=pred["x"], y=pred["y"], eps=pred["eps"], sigma_eps=sig, partiality=part,
        polarization=P, qe=qe, dw=dw, d=d, sigma_px=_sigma_px(params, geometry, pred["s1"]),
        expected=expected,
    )


def _qe(params: SpotParams, geometry: Geometry, s1: jnp.ndarray) -> jnp.ndarray:
    """Detection efficiency of rays ``s1`` (..., 3) (ones unless
    ``params.detection_efficiency``)."""
    if not params.detection_efficiency:
        return jnp.ones(s1.shape[:-1], dtype=s1.dtype)
    return detection_efficiency(geometry.detector, geometry.beam, s1)


def gaussian_patches(x, y, sigma, photons, patch: int):
    """Pixel-integrated 2D Gaussian patches.

    Args:
        x, y: (n,) centres (px); sigma: (n,) σ (px); photons: (n,) integral.
        patch: odd patch size P.
    Returns:
        iy0, ix0: (n,) int32 first row/column of each patch; values: (n, P, P) float64
        photons per pixel (= photons · ∫pixel Gaussian; sums to photons up to truncation).
    """
    half = patch // 2
    x = jnp.nan_to_num(x)
    y = jnp.nan_to_num(y)
    ix0 = jax.lax.stop_gradient(jnp.floor(x + 0.5)).astype(jnp.int32) - half
    iy0 = jax.lax.stop_gradient(jnp.floor(y + 0.5)).astype(jnp.int32) - half
    k = jnp.arange(patch + 1, dtype=x.dtype) - 0.5  # pixel edges relative to ix0
    s = jnp.sqrt(2.0) * sigma[:, None]
    ex = jax.scipy.special.erf((ix0[:, None] + k[None, :] - x[:, None]) / s)
    ey = jax.scipy.special.erf((iy0[:, None] + k[None, :] - y[:, None]) / s)
    wx = 0.5 * (ex[:, 1:] - ex[:, :-1])
    wy = 0.5 * (ey[:, 1:] - ey[:, :-1])
    return iy0, ix0, photons[:, None, None] * wy[:, :, None] * wx[:, None, :]


def splat(shape: tuple[int, int], iy0, ix0, values, valid) -> jnp.ndarray:
    """Scatter-add (n, P, P) patches into a float32 (ny, nx) image (rows with !valid ignored).

    A frame padded by P on every side receives the patches (``.at[].add``), so parts that
    fall off the detector are dropped exactly.
    """
    ny, nx = shape
    P = values.shape[-1]
    canvas = jnp.zeros((ny + 2 * P, nx + 2 * P), dtype=jnp.float32)
    r0 = jnp.clip(iy0 + P, 0, ny + P)
    c0 = jnp.clip(ix0 + P, 0, nx + P)
    ar = jnp.arange(P, dtype=jnp.int32)
    rows = r0[:, None, None] + ar[None, :, None]
    cols = c0[:, None, None] + ar[None, None, :]
    v = jnp.where(valid[:, None, None], values, 0.0).astype(jnp.float32)
    rows, cols = jnp.broadcast_arrays(rows, cols)
    canvas = canvas.at[rows, cols].add(v)
    return canvas[P : P + ny, P : P + nx]


def background_image(geometry: Geometry, bg: BackgroundParams) -> jnp.ndarray:
    """(ny, nx) float32 expected background photons per pixel (see module docstring)."""
    det, beam = geometry.detector, geometry.beam
    ny, nx = det.shape
    yy, xx = jnp.meshgrid(
        jnp.arange(ny, dtype=jnp.float64), jnp.arange(nx, dtype=jnp.float64), indexing="ij"
    )
    qn = jnp.linalg.norm(pixel_q(det, beam, xx, yy), axis=-1)
    omega0 = det.pixel_size_mm[0] * det.pixel_size_mm[1] / det.distance_mm**2
    rel_omega = solid_angle(det, beam, xx, yy) / omega0
    p = pixel_to_lab(det, beam, xx, yy)
    pol = polarization_factor(beam, p)
    ring = bg.ring * jnp.exp(-0.5 * ((qn - bg.ring_q_invA) / bg.ring_sigma_q_invA) ** 2)
    return ((bg.constant + ring) * rel_omega * pol).astype(jnp.float32)


def render_rotation(
    geometry: Geometry,
    basis0: jnp.ndarray,
    params: SpotParams,
    hkl: jnp.ndarray,
    event: jnp.ndarray,
    image: jnp.ndarray,
    i_true: jnp.ndarray,
    valid: jnp.ndarray,
    background: jnp.ndarray,
) -> jnp.ndarray:
    """Expected rotation image (float32 (ny, nx)) = background + Σ observation patches.

    Rows (padded to a fixed capacity) are the observations of this image; ``valid`` masks
    padding (pad with a copy of a real reflection so the geometry stays finite).
    """
    o = rotation_observations(geometry, basis0, params, hkl, event, image, i_true)
    iy0, ix0, v = gaussian_patches(o["x"], o["y"], o["sigma_px"], o["expected"], params.patch)
    return background + splat(background.shape, iy0, ix0, v, valid)


def render_still(
    geometry: Geometry,
    basis: jnp.ndarray,
    params: SpotParams,
    hkl: jnp.ndarray,
    i_true: jnp.ndarray,
    valid: jnp.ndarray,
    background: jnp.ndarray,
) -> jnp.ndarray:
    """Expected still image (float32 (ny, nx)) = background + Σ reflection patches."""
    o = still_observations(geometry, basis, params, hkl, i_true)
    iy0, ix0, v = gaussian_patches(o["x"], o["y"], o["sigma_px"], o["expected"], params.patch)
    return background + splat(background.shape, iy0, ix0, v, valid)


rotation_observations_jit = jax.jit(rotation_observations)
still_observations_jit = jax.jit(still_observations)
render_rotation_jit = jax.jit(render_rotation)
render_still_jit = jax.jit(render_still)
background_image_jit = jax.jit(background_image)


# Still observations for a whole hkl list (host-side selection helper).
predict_still_all = still_observations_jit


@jax.jit
def predict_rotation_all(geometry: Geometry, basis0: jnp.ndarray, hkl: jnp.ndarray) -> dict:
    """Both rotation events of every hkl (host-side selection helper); see predict_rotation."""
    return predict_rotation(geometry, basis0, hkl)


def capacity(n: int, minimum: int = 64) -> int:
    """Power-of-two padding bucket ≥ n (bounded number of compiled shapes)."""
    c = minimum
    while c < n:
        c *= 2
    return c


def pad_rows(n_cap: int, *arrays: np.ndarray):
    """Pad each (n, ...) array to ``n_cap`` rows by repeating row 0; returns arrays + valid."""
    n = len(arrays[0])
    out = []
    for a in arrays:
        a = np.asarray(a)
        if n == 0:
            fill = np.zeros((n_cap,) + a.shape[1:], dtype=a.dtype)
            if a.ndim == 2 and a.shape[1] == 3:
                fill[:, 0] = 1  # a harmless finite reflection (1, 0, 0)
            out.append(fill)
            continue
        pad = np.repeat(a[:1], n_cap - n, axis=0)
        out.append(np.concatenate([a, pad], axis=0))
    valid = np.zeros(n_cap, dtype=bool)
    valid[:n] = True
    return (*out, valid)
