"""Partiality: the fraction of a reflection's integrated intensity recorded on an image.

Two physical cases, both pure and differentiable:

* Rotation (Kabsch 2010, XDS): the rocking curve of a reflection centred at φc is a
  Gaussian of standard deviation σ_M / |ζ| in φ (σ_M = mosaicity, rad); the fraction on an
  image spanning [φ1, φ2] is ½[erf(|ζ|(φ2 − φc)/(√2 σ_M)) − erf(|ζ|(φ1 − φc)/(√2 σ_M))].
* Stills (Ewald offset; Kabsch 2014, Acta Cryst. D70, 2204–2216 (nXDS); White et al. 2013
  Acta Cryst. D69, 1231): a Gaussian in the excitation error ε with variance
  σ_ε² = (|q| σ_M)² + (2 sin²θ · σ_λ/λ · 1/λ)² + σ_0², the terms being mosaic spread,
  beam bandwidth (σ_λ/λ = FWHM/2.3548) and a finite-domain width. Partiality is
  exp(−ε² / (2 σ_ε²)) (peak value 1), and the integrated Ewald-offset profile has width
  √(2π)·σ_ε, which the simulator uses to convert |F|² to photons.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


FWHM_TO_SIGMA = 1.0 / (2.0 * jnp.sqrt(2.0 * jnp.log(2.0)))


def rotation_fraction(phi_c, zeta, mosaicity_rad, phi1, phi2) -> jnp.ndarray:
    """Fraction of a reflection (centre ``phi_c``) recorded between ``phi1`` and ``phi2``.

    All angles in rad; broadcasts. ``phi2`` may be smaller than ``phi1`` (negative
    increment): the result is always ≥ 0.
    """
    s = jnp.sqrt(2.0) * mosaicity_rad / jnp.abs(zeta)
    f = 0.5 * (jax.scipy.special.erf((phi2 - phi_c) / s) - jax.scipy.special.erf((phi1 - phi_c) / s))
    return jnp.abs(f)


def still_sigma_eps(q_norm, two_theta, wavelength_A, mosaicity_rad, bandwidth_fwhm, sigma0=0.0):
    """Width σ_ε (Å⁻¹) of the Ewald-offset profile (see module docstring)."""
    sig_bw = 2.0 * jnp.sin(0.5 * two_theta) ** 2 * bandwidth_fwhm * FWHM_TO_SIGMA / wavelength_A
    return jnp.sqrt((q_norm * mosaicity_rad) ** 2 + sig_bw**2 + sigma0**2)


def still_partiality(eps, sigma_eps) -> jnp.ndarray:
    """Peak-normalised Gaussian partiality exp(−ε²/(2σ_ε²))."""
    return jnp.exp(-0.5 * (eps / sigma_eps) ** 2)
