"""The swappable parts of the pixel forward model (``-r pixelrefine``): spot profile,
partiality and background, each a small class chosen by config.

Config groups (one option file per class, ``_target_`` naming it; docs/extending.md):

* ``pixel_profile`` → :class:`SpotProfile` (default ``gaussian``: :class:`GaussianProfile`),
* ``pixel_partiality`` → :class:`PixelPartiality` (default ``gaussian``:
  :class:`EwaldOffsetPartiality`; ``lorentzian``),
* ``pixel_background`` → :class:`Background` (default ``plane``: :class:`PlaneBackground`).

A profile or partiality model owns a dict of per-still scalar parameters (its
:meth:`init_params`, :meth:`free`) and a pure JAX ``__call__``; the fit
(:mod:`jfx.pixelrefine.fit`) gets their gradients from JAX, so a new model is one class and
one YAML file. A background model runs once per box on the host before the fit (numpy).

Units and frames: pixel offsets in px (first pixel centre = 0), Ewald offsets and |q| in
Å⁻¹, angles in rad inside, degrees in config.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from jfx.lazy import LazyModule
from jfx.validate import Settings, setting

jnp = LazyModule("jax.numpy")

Params = dict[str, Any]


class _Part(Settings):
    """Common face of the parametrised parts: per-still scalar parameters."""

    name: ClassVar[str] = ""

    def init_params(self, bandwidth_fwhm: float) -> Params:
        """Starting values of this part's per-still parameters (floats), given the beam's
        relative bandwidth (FWHM; from the file or ``--bandwidth``)."""
        return {}

    def free(self) -> dict[str, bool]:
        """Which of :meth:`init_params`' parameters the fit moves (default: all)."""
        return {k: True for k in self.init_params(0.0)}

    def describe(self, params: Params) -> dict[str, Any]:
        """Physical values of the parameters (for summaries and ``_process.h5``): one entry
        per parameter, in the parameters' order (uncertainties are propagated to first
        order, relative for the ``log_`` parameters); arrays of any leading shape. Default:
        the parameters as they are."""
        return dict(params)


# ----------------------------------------------------------------------------- partiality
@dataclasses.dataclass(frozen=True)
class PixelPartiality(_Part):
    """Interface of the config group ``pixel_partiality``: the fraction P ∈ [0, 1] of a
    reflection's full intensity recorded on a still, from its Ewald offset.

    ``__call__(params, eps, q_norm, two_theta, wavelength_A)`` → P, all arrays (R,);
    ``eps`` = |s0 + q| − |s0| (Å⁻¹), ``q_norm`` = 1/d (Å⁻¹), ``two_theta`` (rad).
    ``sigma_eps`` gives the model's Ewald-offset width (Å⁻¹) for the prediction envelope.
    """

    config_node = "pixel_partiality"

    def __call__(self, params: Params, eps, q_norm, two_theta, wavelength_A):
        raise NotImplementedError

    def sigma_eps(self, params: Params, q_norm, two_theta, wavelength_A):
        raise NotImplementedError


MIN_BANDWIDTH_FWHM = 1e-5
"""A free bandwidth starts here when the file says 0 (its logarithm is the parameter)."""


@dataclasses.dataclass(frozen=True)
class EwaldOffsetPartiality(PixelPartiality):
    """Ewald-offset partiality P = f(ε/σ_ε) with σ_ε² = (|q| σ_M)² + σ_bw² + σ₀² (mosaic
    spread, band, finite domain; :func:`jfx.physics.partiality.still_sigma_eps`) and the
    rocking-curve shape ``shape`` (:func:`jfx.physics.partiality.still_partiality`).

    Kabsch (2014), Acta Cryst. D70, 2204 (nXDS); Sauter et al. (2014), Acta Cryst. D70, 3299
    (mosaic spread and domain size); White et al. (2013), Acta Cryst. D69, 1231.

    Per-still parameters: ``log_mosaicity`` ln σ_M (rad), ``log_domain`` ln σ₀ (Å⁻¹, σ₀ ≈
    1/domain size), ``log_bandwidth`` ln of the relative FWHM Δλ/λ.

    Attributes:
        shape: ``gaussian`` or ``lorentzian`` (same FWHM).
        mosaicity_deg: starting σ_M (deg).
        domain_invA: starting σ₀ (Å⁻¹).
        refine_bandwidth: the bandwidth is free (else fixed at the file's / ``--bandwidth``).
    """

    name = "gaussian"
    shape: str = setting("gaussian", choices=("gaussian", "lorentzian"))
    mosaicity_deg: float = setting(0.05, positive=True)
    domain_invA: float = setting(2e-4, positive=True)
    refine_bandwidth: bool = True

    def init_params(self, bandwidth_fwhm: float) -> Params:
        return {"log_mosaicity": math.log(math.radians(self.mosaicity_deg)),
                "log_domain": math.log(self.domain_invA),
                "log_bandwidth": math.log(max(float(bandwidth_fwhm), MIN_BANDWIDTH_FWHM))}

    def free(self) -> dict[str, bool]:
        return {"log_mosaicity": True, "log_domain": True,
                "log_bandwidth": bool(self.refine_bandwidth)}

    def sigma_eps(self, params: Params, q_norm, two_theta, wavelength_A):
        from jfx.physics.partiality import still_sigma_eps

        return still_sigma_eps(q_norm, two_theta, wavelength_A,
                               jnp.exp(params["log_mosaicity"]),
                               jnp.exp(params["log_bandwidth"]), jnp.exp(params["log_domain"]))

    def __call__(self, params: Params, eps, q_norm, two_theta, wavelength_A):
        from jfx.physics.partiality import still_partiality

        return still_partiality(eps, self.sigma_eps(params, q_norm, two_theta, wavelength_A),
                                profile=self.shape)

    def describe(self, params: Params) -> dict[str, Any]:
        return {"mosaicity_deg": np.degrees(np.exp(np.asarray(params["log_mosaicity"]))),
                "domain_invA": np.exp(np.asarray(params["log_domain"])),
                "bandwidth_fwhm": np.exp(np.asarray(params["log_bandwidth"]))}


@dataclasses.dataclass(frozen=True)
class LorentzianPartiality(EwaldOffsetPartiality):
    """:class:`EwaldOffsetPartiality` with the Lorentzian rocking curve of the same FWHM,
    1/(1 + (ε/γ)²), γ = √(2 ln 2)·σ_ε (the partiality of cctbx.xfel post-refinement,
    Sauter et al. 2014; ``pixel_partiality=lorentzian``)."""

    name = "lorentzian"
    shape: str = setting("lorentzian", choices=("gaussian", "lorentzian"))


# ----------------------------------------------------------------------------- spot profile
@dataclasses.dataclass(frozen=True)
class SpotProfile(_Part):
    """Interface of the config group ``pixel_profile``: the fraction of a spot's photons
    in each pixel of its box.

    ``__call__(params, dx, dy, radial, two_theta)`` → (R, B, B) fractions (normalised over
    the whole detector plane: the box holds ≤ 1); ``dx``, ``dy`` (R, B, B) pixel centre −
    spot centre (px), ``radial`` (R, 2) unit vector from the beam centre to the spot on the
    detector, ``two_theta`` (R,) rad. ``tangential_sigma_px(params)`` is the width the
    integration aperture scales (``--profile-multiplier``).
    """

    config_node = "pixel_profile"

    def __call__(self, params: Params, dx, dy, radial, two_theta):
        raise NotImplementedError

    def tangential_sigma_px(self, params: Params):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class GaussianProfile(SpotProfile):
    """Elliptical Gaussian spot: tangential width σ_t (point spread, divergence, mosaic
    spread across the ray), radial width σ_r = σ_t + g·sin 2θ (the band and the mosaic
    spread along 2θ stretch spots radially, more at high angle), integrated over the pixel
    in the Gaussian approximation of the box-car (variance + 1/12 px² per axis).

    Per-still parameters: ``log_sigma_px`` ln σ_t (px), ``radial_growth_px`` g (px).

    Attributes:
        sigma_px: starting σ_t (px).
        refine_radial: g is free (else 0).
    """

    name = "gaussian"
    sigma_px: float = setting(1.0, positive=True)
    refine_radial: bool = True

    def init_params(self, bandwidth_fwhm: float) -> Params:
        return {"log_sigma_px": math.log(self.sigma_px), "radial_growth_px": 0.0}

    def free(self) -> dict[str, bool]:
        return {"log_sigma_px": True, "radial_growth_px": bool(self.refine_radial)}

    def tangential_sigma_px(self, params: Params):
        return jnp.exp(params["log_sigma_px"])

    def __call__(self, params: Params, dx, dy, radial, two_theta):
        st = jnp.exp(params["log_sigma_px"])
        sr = st + params["radial_growth_px"] * jnp.sin(two_theta)
        vt = st * st + 1.0 / 12.0
        vr = (sr * sr + 1.0 / 12.0)[:, None, None]
        cx, cy = radial[:, 0, None, None], radial[:, 1, None, None]
        u = dx * cx + dy * cy  # radial offset
        v = -dx * cy + dy * cx  # tangential offset
        return jnp.exp(-0.5 * (u * u / vr + v * v / vt)) / (2.0 * jnp.pi * jnp.sqrt(vr * vt))

    def describe(self, params: Params) -> dict[str, Any]:
        return {"sigma_px": np.exp(np.asarray(params["log_sigma_px"])),
                "radial_growth_px": np.asarray(params["radial_growth_px"])}


# ----------------------------------------------------------------------------- background
@dataclasses.dataclass(frozen=True)
class Background(Settings):
    """Interface of the config group ``pixel_background``: the background under each box,
    estimated once on the host before the fit and held fixed.

    ``estimate(counts, usable, r_px, r_inner_px)`` → (background (R, B, B) photons/pixel,
    variance of its mean under the spot (R,) photons²); ``counts`` (R, B, B) float, ``usable``
    (R, B, B) bool (not masked, not saturated, on the detector), ``r_px`` (R, B, B) distance
    of each pixel centre from the predicted spot centre (px); pixels with
    ``r_px < r_inner_px`` are spot pixels and never used.
    """

    config_node = "pixel_background"
    name: ClassVar[str] = ""

    def estimate(self, counts: np.ndarray, usable: np.ndarray, r_px: np.ndarray,
                 r_inner_px: float) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class PlaneBackground(Background):
    """A plane b0 + bx·Δx + by·Δy per box, least squares over the box's background pixels
    (r ≥ the inner radius) with outliers beyond ``reject_sigma`` √b rejected and the fit
    repeated (neighbouring spots, hot pixels); a constant where fewer than
    ``min_pixels`` pixels remain.

    Attributes:
        reject_sigma: outlier threshold in Poisson σ of the first fit.
        min_pixels: background pixels a plane needs.
    """

    name = "plane"
    reject_sigma: float = setting(3.0, positive=True)
    min_pixels: int = setting(12, minimum=3)

    def estimate(self, counts, usable, r_px, r_inner_px):
        c = np.asarray(counts, np.float64)
        R, B, _ = c.shape
        if R == 0:
            return np.zeros(c.shape), np.zeros(0)
        h = (B - 1) / 2.0
        yy, xx = np.mgrid[0:B, 0:B].astype(np.float64) - h
        use = np.asarray(usable, bool) & (np.asarray(r_px) >= r_inner_px)
        A = np.stack([np.ones((B, B)), xx, yy], -1).reshape(-1, 3)  # (B², 3)
        AA = (A[:, :, None] * A[:, None, :]).reshape(-1, 9)  # (B², 9) products
        cf = c.reshape(R, B * B)
        coef = np.zeros((R, 3))
        for _ in range(2):
            w = use.reshape(R, B * B).astype(np.float64)
            n = w.sum(1)
            plane = n >= self.min_pixels
            ata = (w @ AA).reshape(R, 3, 3) + 1e-9 * np.eye(3)
            atb = (w * cf) @ A
            sol = np.linalg.solve(ata, atb[..., None])[..., 0]
            const = np.where(n > 0, (w * cf).sum(1) / np.maximum(n, 1), 0.0)
            coef = np.where(plane[:, None], sol, np.stack([const, 0 * const, 0 * const], 1))
            model = (coef @ A.T).reshape(R, B, B)
            dev = np.abs(c - model) > self.reject_sigma * np.sqrt(np.maximum(model, 1.0))
            use = use & ~dev
        bg = np.maximum((coef @ A.T).reshape(R, B, B), 0.0)
        n = np.maximum(use.reshape(R, B * B).sum(1), 1)
        var_mean = np.maximum(coef[:, 0], 0.0) / n  # the plane at the box centre (x, y centred)
        return bg, var_mean


__all__ = ["Background", "EwaldOffsetPartiality", "GaussianProfile", "LorentzianPartiality",
           "PixelPartiality",
           "PlaneBackground", "SpotProfile"]
