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

  Optional terms (simulator, :mod:`jfx.sim`): beam divergence adds (k sin 2θ · σ_div)² to
  σ_ε² — a tilt δ of the incident beam (k = 1/λ) moves ε = |s0 + q| − k by k δ ŝ1·t̂ (t̂ ⟂
  s0), and ŝ1 has the component sin 2θ across the beam, so an isotropic Gaussian divergence
  of σ_div per transverse axis widens ε by k sin 2θ σ_div = |q| cos θ σ_div (the |q|·div
  widening of the excitation-error limits in CrystFEL, White et al. 2013; XDS's σ_D,
  Kabsch 2010). The rocking-curve shape may be the Lorentzian of the same FWHM instead of
  the Gaussian, 1/(1 + (ε/γ)²) with γ = √(2 ln 2) σ_ε (the "Lorentzian" partiality
  rs²/(2rh² + rs²) of cctbx.xfel post-refinement: Sauter et al. 2014, Acta Cryst. D70, 3299;
  Uervirojnangkoorn et al. 2015, eLife 4, e05421 (PRIME)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# a Python float, not a JAX array: this module may first be imported inside a jitted function
# (the stage packages load lazily), where a module-level JAX value would leak as a tracer
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

STILL_PROFILES = ("gaussian", "lorentzian")
"""Rocking-curve (Ewald-offset) shapes of :func:`still_partiality`."""


def rotation_fraction(phi_c, zeta, mosaicity_rad, phi1, phi2) -> jnp.ndarray:
    """Fraction of a reflection (centre ``phi_c``) recorded between ``phi1`` and ``phi2``.

    All angles in rad; broadcasts. ``phi2`` may be smaller than ``phi1`` (negative
    increment): the result is always ≥ 0.
    """
    s = jnp.sqrt(2.0) * mosaicity_rad / jnp.abs(zeta)
    f = 0.5 * (jax.scipy.special.erf((phi2 - phi_c) / s) - jax.scipy.special.erf((phi1 - phi_c) / s))
    return jnp.abs(f)


def still_sigma_eps(q_norm, two_theta, wavelength_A, mosaicity_rad, bandwidth_fwhm, sigma0=0.0,
                    divergence_rad=0.0):
    """Width σ_ε (Å⁻¹) of the Ewald-offset profile (see module docstring).

    Args (broadcast): q_norm |q| = 1/d (Å⁻¹); two_theta (rad); wavelength_A (Å);
    mosaicity_rad σ_M (rad); bandwidth_fwhm (Δλ/λ FWHM); sigma0 domain term σ0 (Å⁻¹);
    divergence_rad σ_div of the incident direction per transverse axis (rad; 0 adds exactly
    nothing).
    """
    sig_bw = 2.0 * jnp.sin(0.5 * two_theta) ** 2 * bandwidth_fwhm * FWHM_TO_SIGMA / wavelength_A
    sig_div = jnp.sin(two_theta) / wavelength_A * divergence_rad
    return jnp.sqrt((q_norm * mosaicity_rad) ** 2 + sig_bw**2 + sigma0**2 + sig_div**2)


def still_partiality(eps, sigma_eps, profile: str = "gaussian") -> jnp.ndarray:
    """Peak-normalised still partiality (1 at ε = 0).

    ``profile`` (static): ``gaussian`` exp(−ε²/(2σ_ε²)) or ``lorentzian`` 1/(1 + (ε/γ)²) with
    γ = √(2 ln 2)·σ_ε, the Lorentzian of the same FWHM (module docstring).
    """
    if profile == "gaussian":
        return jnp.exp(-0.5 * (eps / sigma_eps) ** 2)
    if profile == "lorentzian":
        gamma = sigma_eps * jnp.sqrt(2.0 * jnp.log(2.0))
        return 1.0 / (1.0 + (eps / gamma) ** 2)
    raise ValueError(f"unknown still profile {profile!r} (known: {', '.join(STILL_PROFILES)})")
