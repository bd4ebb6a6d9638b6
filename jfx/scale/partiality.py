"""Partiality models for scaling (config group ``partiality``: ``-P auto | fixed | rot | unity``).

Each model is a frozen dataclass behind :class:`jfx.scale.base.PartialityModel`, named by its
option file (``conf/partiality/<name>.yaml``, ``_target_``); its config fields are the keys of
the ``partiality`` node.

* :class:`AutoPartiality` (``-P auto``, the default): ``rot`` for stills, ``fixed`` for
  rotation runs (:meth:`AutoPartiality.bind`).
* :class:`FixedPartiality` (``-P fixed``): the partiality stored at integration time, no
  free parameters.
* :class:`UnityPartiality` (``-P unity``): P = 1.
* :class:`RotationPartiality` (``-P rot``): rotation rows follow the Gaussian rocking curve of
  Kabsch (1988, J. Appl. Cryst. 21, 916; 2010, Acta Cryst. D66, 125 — XDS): the fraction of a
  reflection centred at φc recorded over the summed frames [φ_lo, φ_hi] is
  P = ½[erf(|ζ|(φ_hi − φc)/(√2σ_M)) − erf(|ζ|(φ_lo − φc)/(√2σ_M))], with a refinable global
  mosaicity σ_M (log-parameterised) and an optional per-image wedge w_i (deg): φ_hi = φ_lo +
  frames·w_i for the reflection's centroid image (default w = the scan increment; refined with
  ``-w``, start ``-w=v``). Still rows use the still limit of the same model, the Ewald-offset
  Gaussian exp(−ε²/2σ_ε²) with σ_ε(q = 1/d, 2θ, λ, σ_M, bandwidth) (Kabsch 2014, Acta Cryst.
  D70, 2204 — nXDS; :func:`jfx.physics.partiality.still_sigma_eps`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from jfx.lazy import LazyModule
from jfx.scale.base import Params, PartialityModel, all_fixed, empty_params
from jfx.validate import setting

if TYPE_CHECKING:
    from jfx.scale.observations import Observations

# config classes load without JAX (jfx.lazy); the physics is imported where it is used
jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")


@dataclasses.dataclass(frozen=True)
class FixedPartiality(PartialityModel):
    """The integration-time partiality ``obs.partiality_stored``; no parameters (``-P fixed``)."""

    name = "fixed"

    def init_params(self, obs: Observations) -> Params:
        return empty_params()

    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        return obs.partiality_stored

    def free(self, settings: Any = None) -> Params:
        return empty_params()


@dataclasses.dataclass(frozen=True)
class UnityPartiality(PartialityModel):
    """P = 1 for every observation; no parameters (``-P unity``)."""

    name = "unity"

    def init_params(self, obs: Observations) -> Params:
        return empty_params()

    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        return jnp.ones_like(obs.intensity)

    def free(self, settings: Any = None) -> Params:
        return empty_params()


PROFILE_MIX_START = 0.2
"""Starting Lorentzian fraction η of the stills pseudo-Voigt profile (``-P rot``)."""

DOMAIN_START_INVA = 1e-4
"""Starting width σ₀ (Å⁻¹) of the resolution-independent Ewald-offset term of still rows
(finite mosaic-domain size; :func:`jfx.physics.partiality.still_sigma_eps`)."""


@dataclasses.dataclass(frozen=True)
class RotationPartiality(PartialityModel):
    """Kabsch rotation partiality (rotation rows) / Ewald-offset Gaussian (still rows).

    Parameters: ``global.log_mosaicity`` = ln σ_M (σ_M in rad); ``image.wedge_deg`` (n_img,)
    per-image wedge (deg, magnitude; the sign of the scan increment is applied);
    ``image.rot_a``, ``image.rot_b`` (n_img,) small crystal rotations (rad) about two axes
    perpendicular to the beam for still rows (post-refinement of the orientation against the
    intensities, as partialator's, White et al. 2016: a still's spot positions fix the
    rotation about those axes only weakly, yet it moves every Ewald offset):
    ε' = ε + ∂ε/∂δ_a·δ_a + ∂ε/∂δ_b·δ_b (``Observations.eps_grad_a/b``).

    Still rows, per image also ``image.cell`` (n_img,): a small isotropic change of the
    crystal's cell relative to the refined one, ε' = ε − (λ/2d²)·c (a real-space change c
    moves every offset by −c·q²λ/2: cell spread between crystals), and globally
    ``global.logit_lorentz``: the Lorentzian fraction η of a pseudo-Voigt Ewald-offset
    profile P = (1 − η)·exp(−ε²/2σ_ε²) + η/(1 + (ε/γ)²), γ = √(2 ln 2)·σ_ε (the Lorentzian of
    the same FWHM; Sauter et al. 2014 and Uervirojnangkoorn et al. 2015, eLife 4, e05421, use
    the Lorentzian; nXDS the Gaussian) — the shape is fitted to the data, not assumed.

    Attributes (config keys ``partiality.*``):
        mosaicity_deg: starting σ_M (deg), > 0.
        refine_mosaicity: σ_M is free.
        divergence_deg: beam divergence σ_div (deg, per transverse axis; stills, fixed):
            adds (sin 2θ/λ · σ_div)² to σ_ε² (:func:`jfx.physics.partiality.still_sigma_eps`);
            nearly degenerate with σ_M, which absorbs it when left at 0.
        refine_profile: the Lorentzian fraction η of still rows is free (starts at
            ``PROFILE_MIX_START``); False keeps the Gaussian.
        refine_crystal_width: each still's own width terms are free around the global ones
            (``image.log_width`` w_i: σ_ε,i² = e^{2w_i}((q σ_M)² + σ₀²) + σ_bw² + σ_div²,
            mean w = 0 over the stills) — crystals differ in mosaicity and domain size, as
            cctbx.xfel's per-crystal post-refinement of mosaic angle and block size allows.

    Set from the data by :meth:`bind` (not config keys):
        refine_wedge: per-image wedge is free (``-w``, ``scale.refine_wedge``).
        wedge_start_deg: starting wedge (``-w=v``); ``None`` = |scan increment|.
        bandwidth_fwhm: relative bandwidth FWHM (stills; the runs' own).
        refine_orientation: per-image δ_a, δ_b are free (stills with a refined beam centre).
        refine_domain: ``global.log_domain`` = ln σ₀ is free (stills): the
            resolution-independent Ewald-offset width of a finite mosaic domain,
            σ_ε² = (q σ_M)² + σ_bw² + σ₀² (Kabsch 2014; Sauter et al. 2014, Acta Cryst. D70,
            3299). Without it the low-resolution partialities of crystals with small domains
            come out too narrow and their intensities too strong (issue 13 diagnostic,
            independent stills: merged/true 2.7× at d > 10 Å, merged CC 0.73 → 1.000 with it).
    """

    name = "rot"
    uses_wedge = True

    mosaicity_deg: float = setting(0.1, positive=True)
    refine_mosaicity: bool = True
    divergence_deg: float = setting(0.0, minimum=0.0)
    refine_profile: bool = True
    refine_crystal_width: bool = True
    refine_wedge: bool = setting(False, config=False)
    wedge_start_deg: float | None = setting(None, minimum=0.0, config=False)
    bandwidth_fwhm: float = setting(0.0, minimum=0.0, config=False)
    refine_orientation: bool = setting(False, config=False)
    refine_domain: bool = setting(False, config=False)

    def bind(self, settings: Any, *, bandwidth_fwhm: float,
             stills: bool) -> RotationPartiality:
        """The wedge options of ``settings`` (``-w[=v]``), the runs' bandwidth and the
        orientation post-refinement of stills."""
        return dataclasses.replace(self, refine_wedge=bool(settings.refine_wedge),
                                   wedge_start_deg=settings.wedge_start_deg,
                                   bandwidth_fwhm=float(bandwidth_fwhm),
                                   refine_orientation=bool(stills),
                                   refine_domain=bool(stills))

    def init_params(self, obs: Observations) -> Params:
        w0 = self.wedge_start_deg
        if w0 is None:
            w0 = abs(np.degrees(obs.phi_increment_rad))
        z = jnp.zeros((obs.n_img,), jnp.float64)
        glob = {"log_mosaicity": jnp.asarray(np.log(np.radians(self.mosaicity_deg)))}
        img = {"wedge_deg": jnp.full((obs.n_img,), float(w0), jnp.float64),
               "rot_a": z, "rot_b": z}
        if self.refine_domain:  # stills
            glob["log_domain"] = jnp.asarray(np.log(DOMAIN_START_INVA))
            if self.refine_profile:
                glob["logit_lorentz"] = jnp.asarray(
                    np.log(PROFILE_MIX_START / (1.0 - PROFILE_MIX_START)))
            img["cell"] = z
            if self.refine_crystal_width:
                img["log_width"] = z
        return {"global": glob, "image": img}

    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        from jfx.physics.partiality import rotation_fraction, still_partiality, still_sigma_eps

        sig_m = jnp.exp(params["global"]["log_mosaicity"])
        img = params["image"]
        w = img["wedge_deg"][obs.image]
        sgn = 1.0 if obs.phi_increment_rad >= 0 else -1.0
        phi_hi = obs.phi_lo_rad + obs.frames * sgn * jnp.radians(w)
        p_rot = rotation_fraction(obs.phi_c_rad, obs.zeta, sig_m, obs.phi_lo_rad, phi_hi)
        g = params["global"]
        sig0 = jnp.exp(g["log_domain"]) if "log_domain" in g else 0.0
        div = float(np.radians(self.divergence_deg))
        if "log_width" in img:  # the crystal's own terms (σ_M, σ₀) scale per still
            crystal = still_sigma_eps(1.0 / obs.d_A, obs.two_theta_rad, obs.wavelength_A,
                                      sig_m, 0.0, sig0)
            beam = still_sigma_eps(1.0 / obs.d_A, obs.two_theta_rad, obs.wavelength_A, 0.0,
                                   self.bandwidth_fwhm, 0.0, divergence_rad=div)
            sig_eps = jnp.sqrt((crystal * jnp.exp(img["log_width"][obs.image])) ** 2
                               + beam**2)
        else:
            sig_eps = still_sigma_eps(1.0 / obs.d_A, obs.two_theta_rad, obs.wavelength_A,
                                      sig_m, self.bandwidth_fwhm, sig0, divergence_rad=div)
        eps = obs.eps_invA
        if "rot_a" in img:  # parameter sets written without the orientation leaves work too
            eps = (eps + obs.eps_grad_a * img["rot_a"][obs.image]
                   + obs.eps_grad_b * img["rot_b"][obs.image])
        if "cell" in img:
            eps = eps - 0.5 * obs.wavelength_A / (obs.d_A * obs.d_A) * img["cell"][obs.image]
        p_still = still_partiality(eps, sig_eps)
        if "logit_lorentz" in g:
            eta = jax.nn.sigmoid(g["logit_lorentz"])
            p_still = ((1.0 - eta) * p_still
                       + eta * still_partiality(eps, sig_eps, profile="lorentzian"))
        return jnp.where(obs.is_still, p_still, p_rot)

    def free(self, settings: Any = None) -> Params:
        wedge = self.refine_wedge if settings is None else bool(settings.refine_wedge)
        o = bool(self.refine_orientation)
        glob = {"log_mosaicity": bool(self.refine_mosaicity)}
        img = {"wedge_deg": wedge, "rot_a": o, "rot_b": o}
        if self.refine_domain:
            glob["log_domain"] = True
            if self.refine_profile:
                glob["logit_lorentz"] = True
            img["cell"] = True
            if self.refine_crystal_width:
                img["log_width"] = True
        return {"global": glob, "image": img}

    def fix_gauge(self, params: Params, image_ok: Any) -> Params:
        """Mean per-still log width change 0 over the fitted stills; the common factor moves
        into the global σ_M and σ₀ (exactly: both scale with it), so the model is unchanged."""
        img = params["image"]
        if "log_width" not in img:
            return params
        ok = jnp.asarray(image_ok)
        w = img["log_width"]
        m = jnp.sum(jnp.where(ok, w, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
        g = dict(params["global"])
        g["log_mosaicity"] = g["log_mosaicity"] + m
        if "log_domain" in g:
            g["log_domain"] = g["log_domain"] + m
        return {"global": g, "image": {**img, "log_width": jnp.where(ok, w - m, 0.0)}}

    def describe(self, params: Params) -> dict[str, Any]:
        g = params["global"]
        return {"mosaicity_deg": float(np.degrees(np.exp(float(g["log_mosaicity"])))),
                "domain_invA": float(np.exp(float(g["log_domain"]))) if "log_domain" in g
                else 0.0,
                "lorentz_fraction": float(jax.nn.sigmoid(float(g["logit_lorentz"])))
                if "logit_lorentz" in g else 0.0,
                "cell_change": np.asarray(params["image"]["cell"]) if "cell" in params["image"]
                else np.zeros_like(np.asarray(params["image"]["rot_a"])),
                "width_factor": np.exp(np.asarray(params["image"]["log_width"]))
                if "log_width" in params["image"]
                else np.ones_like(np.asarray(params["image"]["rot_a"])),
                "wedge_deg": np.asarray(params["image"]["wedge_deg"]),
                "rot_a": np.asarray(params["image"]["rot_a"]),
                "rot_b": np.asarray(params["image"]["rot_b"])}


@dataclasses.dataclass(frozen=True)
class AutoPartiality(RotationPartiality):
    """The default (``-P auto``): the model that fits the data being scaled.

    Rule (:meth:`bind`): still runs (and rotation runs with ``-w``) are scaled with
    :class:`RotationPartiality` (``rot``: Ewald-offset partiality with σ_M, σ₀ and the
    per-still orientation post-refined against the intensities); rotation runs otherwise
    with :class:`FixedPartiality` (``fixed``: the recorded fraction from integration, whose
    rocking-curve width was refined there). Measured on independent stills (issue 13,
    docs/scaling.md): merged CC to the true intensities 1.000 with ``rot`` against 0.991
    ``unity`` and 0.896 ``fixed`` (integration-time widths lack the mosaic-domain term).
    Config keys are those of ``rot`` (``partiality.mosaicity_deg`` …), used when it is chosen.
    """

    name = "auto"

    def bind(self, settings: Any, *, bandwidth_fwhm: float,
             stills: bool) -> PartialityModel:
        if stills or bool(settings.refine_wedge):
            rot = RotationPartiality(mosaicity_deg=self.mosaicity_deg,
                                     refine_mosaicity=self.refine_mosaicity,
                                     divergence_deg=self.divergence_deg,
                                     refine_profile=self.refine_profile,
                                     refine_crystal_width=self.refine_crystal_width)
            return rot.bind(settings, bandwidth_fwhm=bandwidth_fwhm, stills=stills)
        return FixedPartiality()


__all__ = [
    "AutoPartiality",
    "FixedPartiality",
    "RotationPartiality",
    "UnityPartiality",
    "all_fixed",
]
